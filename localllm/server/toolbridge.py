"""Where the Anthropic and Responses APIs meet tool calls and reasoning: the types their requests
convert to (Tool, ToolChoice) and their replies convert from (events while streaming, a
ParsedReply at the end), and the one place that reads those from a started Reply.

Both APIs convert their requests into the internal OpenAI-shaped messages plus these values
(:func:`generate_request`), and their responses from these events (:func:`stream_events`,
:func:`collect`); no API parses tool-call markup itself: the tool-call parser
(``localllm.chat.toolcalls``) does, behind ``Reply.aevents()`` / ``Reply.parsed()``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from localllm.app.serving import GenerateRequest, Reply
from localllm.chat.toolcalls import (
    ContentDelta,
    Event,
    ParsedReply,
    ReasoningDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)

from .common import events, read_parsed

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
    "stream_events",
]

_AUTO = ToolChoice()


def generate_request(
    *,
    tools: tuple[Tool, ...] = (),
    tool_choice: ToolChoice = _AUTO,
    parallel_tool_calls: bool = True,
    reasoning: bool | None = None,
    reasoning_budget: int | None = None,
    **common: Any,
) -> GenerateRequest:
    """The GenerateRequest for a converted request (tool_choice ``none``: the tools are not offered)."""
    if tools and tool_choice.mode == "none":
        tools = ()
    return GenerateRequest(
        **common,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
        reasoning=reasoning,
        reasoning_budget=reasoning_budget,
    )


async def stream_events(request: Request, reply: Reply) -> AsyncIterator[Event]:
    """The reply's events; a client that goes away cancels the sequence at once."""
    async for event in events(request, reply):
        yield event


async def collect(request: Request, reply: Reply) -> ParsedReply:
    """The whole reply, parsed (not streamed); a client that goes away meanwhile cancels it."""
    return await read_parsed(request, reply)


def arguments_of(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as an object (``{}`` for text that is not one)."""
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
