"""Where the Anthropic and Responses APIs meet tool calls and reasoning: the types their requests
convert to (Tool, ToolChoice) and their replies convert from (events while streaming, a
ParsedReply at the end), and the one place that reads those from a started Reply.

Both APIs convert their requests into the internal OpenAI-shaped messages plus these values
(:func:`generate_request`), and their responses from these events (:func:`stream_events`,
:func:`collect`); no API parses tool-call markup itself: the tool-call parser
(``localllm.chat.toolcalls``) does, behind ``Reply.aevents()`` / ``Reply.parsed()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request

from localllm.app.serving import GenerateRequest, Reply

from .common import finished
from .problems import RequestError

# ---- STAND-IN: the types of localllm/chat/toolcalls/types.py (branch ``tools``) -----------------
# Same names and fields as /work/status/TOOLCALL_INTERFACE.md. When ``tools`` merges, replace
# this block with:
#   from localllm.chat.toolcalls import (
#       ContentDelta, Event, ParsedReply, ReasoningDelta, Tool, ToolCall, ToolCallDelta, ToolChoice)
# and, below, ``stream_events`` / ``collect`` may become that branch's ``common.events`` /
# ``common.read_parsed`` (the same loops, plus its warnings); ``_APP_FIELDS`` then holds ``tools``.


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool = False


@dataclass(frozen=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ParsedReply:
    content: str
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str


Event = ContentDelta | ReasoningDelta | ToolCallDelta
# ---- end of STAND-IN -------------------------------------------------------------------------

__all__ = [  # the types are re-exported: the APIs import them from here
    "ContentDelta",
    "Event",
    "ParsedReply",
    "ReasoningDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "arguments_of",
    "collect",
    "generate_request",
    "parsed",
    "stream_events",
]

_AUTO = ToolChoice()
_APP_FIELDS = frozenset(f.name for f in dataclasses.fields(GenerateRequest))
NO_TOOLS = "tools need localllm's tool-call support (localllm.chat.toolcalls), which this build lacks"
NO_THINKING = "thinking needs localllm's reasoning support (localllm.chat.toolcalls), which this build lacks"


def generate_request(
    *,
    tools: tuple[Tool, ...] = (),
    tool_choice: ToolChoice = _AUTO,
    parallel_tool_calls: bool = True,
    reasoning: bool | None = None,
    reasoning_budget: int | None = None,
    **common: Any,
) -> GenerateRequest:
    """The GenerateRequest for a converted request. Tools, or thinking asked for, in a build whose
    app layer lacks them: a 400 that says so (thinking turned off needs nothing)."""
    extra: dict[str, Any] = {}
    if tools and tool_choice.mode != "none":
        if "tools" not in _APP_FIELDS:
            raise RequestError(NO_TOOLS, param="tools")
        extra.update(tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls)
    if "reasoning" in _APP_FIELDS:
        extra.update(reasoning=reasoning, reasoning_budget=reasoning_budget)
    elif reasoning:
        raise RequestError(NO_THINKING, param="thinking")
    return GenerateRequest(**common, **extra)


async def _events(reply: Reply) -> AsyncIterator[Event]:
    aevents = getattr(reply, "aevents", None)
    if aevents is not None:
        async for event in aevents():
            yield event
        return
    async for piece in reply:  # an app layer without the parser: all text is content
        yield ContentDelta(piece)


async def stream_events(request: Request, reply: Reply) -> AsyncIterator[Event]:
    """The reply's events; a client that goes away cancels the sequence at once."""
    try:
        async for event in _events(reply):
            yield event
    finally:
        reply.close()  # cancels the sequence unless it ended, and frees its slot
        finished(request, reply)


async def collect(request: Request, reply: Reply) -> ParsedReply:
    """The whole reply, parsed (not streamed); a client that goes away meanwhile cancels it."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        reply.cancel()

    watcher = asyncio.create_task(watch())
    content: list[str] = []
    try:
        async for event in stream_events(request, reply):
            if isinstance(event, ContentDelta):
                content.append(event.text)
    finally:
        watcher.cancel()
    return parsed(reply, "".join(content))


def parsed(reply: Reply, content: str) -> ParsedReply:
    """The finished reply's parts (``content``: its text, for an app layer without the parser)."""
    method = getattr(reply, "parsed", None)
    return method() if method is not None else ParsedReply(content, "", (), ())


def arguments_of(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as an object (``{}`` for text that is not one)."""
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
