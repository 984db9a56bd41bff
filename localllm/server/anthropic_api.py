"""Anthropic's Messages API: ``POST /v1/messages`` (streamed as Anthropic's server-sent events, or
not) and ``POST /v1/messages/count_tokens``, what the ``anthropic`` client and the agents built on
it (``ANTHROPIC_BASE_URL``) speak. Errors come in Anthropic's shape (problems.anthropic_body).

A request is converted into the internal OpenAI-shaped messages plus tools and thinking
(:func:`to_request`); the reply's events are converted back into content blocks
(:func:`to_message`, :class:`_Stream`). Generation knows nothing of either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localllm.app.options import SAMPLING
from localllm.app.serving import GenerateRequest, Reply

from . import problems
from .common import answers_errors, body, dumps, manager, problem_of, start
from .fields import MAX_STOP, Fields
from .middleware import log_of
from .toolbridge import (
    ContentDelta,
    Event,
    ParsedReply,
    ReasoningDelta,
    Tool,
    ToolCallDelta,
    ToolChoice,
    arguments_of,
    collect,
    generate_request,
    stream_events,
)

MAX_TOKENS = 1 << 24

# -- the request, in the internal form ---------------------------------------------------------


def _bad(where: str, what: str) -> problems.RequestError:
    return problems.RequestError(f"'{where}' {what}", param=where)


def _text(value: object, where: str) -> str:
    """A string, or a list of text blocks joined (``system``, a tool result's content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [b.get("text") if isinstance(b, dict) and b.get("type") == "text" else None for b in value]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)  # type: ignore[arg-type]
    raise _bad(where, "must be a string or a list of text blocks (images and documents are not supported)")


def _user(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """A user turn's blocks: tool results become tool messages (first, as the model saw its calls
    answered), text the user message."""
    tools: list[dict[str, Any]] = []
    texts: list[str] = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_result" and isinstance(block.get("tool_use_id"), str):
            content = block.get("content")
            text = "" if content is None else _text(content, f"{at}.content")
            if block.get("is_error") is True:
                text = f"Error: {text}"
            tools.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        elif kind in ("text", "tool_result"):
            raise _bad(at, "lacks its text or tool_use_id")
        else:
            raise _bad(at, f"is a {kind!r} block: a user turn may hold text and tool_result blocks")
    return tools + ([{"role": "user", "content": "".join(texts)}] if texts or not tools else [])


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    texts, thoughts, calls = [], [], []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "redacted_thinking":
            continue  # encrypted by Anthropic: nothing a local model can read
        elif kind == "tool_use" and isinstance(block.get("name"), str) and isinstance(block.get("input"), dict):
            ident = block.get("id") if isinstance(block.get("id"), str) else f"toolu_{uuid.uuid4().hex[:24]}"
            arguments = json.dumps(block["input"], ensure_ascii=False)
            calls.append({"id": ident, "type": "function", "function": {"name": block["name"], "arguments": arguments}})
        else:
            raise _bad(at, "must be a text, thinking or tool_use block (tool_use with a name and an input object)")
    message["content"] = "".join(texts)
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message


def to_messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``system`` and ``messages`` as the internal chat messages."""
    value = data.get("messages")
    if not isinstance(value, list) or not value:
        raise _bad("messages", 'must be a non-empty list of {"role": "user" | "assistant", "content"} objects')
    result: list[dict[str, Any]] = []
    system = data.get("system")
    if system is not None:
        text = _text(system, "system")
        if text:
            result.append({"role": "system", "content": text})
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _bad(where, 'must be an object with "role": "user" or "assistant"')
        content = message.get("content")
        if isinstance(content, str):
            result.append({"role": role, "content": content})
        elif isinstance(content, list):
            at = f"{where}.content"
            result.extend(_user(content, at) if role == "user" else [_assistant(content, at)])
        else:
            raise _bad(f"{where}.content", "must be a string or a list of content blocks")
    return result


def _tools(data: dict[str, Any]) -> tuple[Tool, ...]:
    value = data.get("tools")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("tools", "must be a list of tools")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _bad(where, 'must be {"name", "description", "input_schema"}')
        if tool.get("type") not in (None, "custom"):
            raise _bad(where, f"is Anthropic's server tool {tool['type']!r}: only client tools (input_schema) run here")
        schema = tool.get("input_schema", {"type": "object", "properties": {}})
        if not isinstance(schema, dict):
            raise _bad(f"{where}.input_schema", "must be a JSON schema object")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise _bad(f"{where}.description", "must be a string")
        tools.append(Tool(tool["name"], description, schema))
    return tuple(tools)


_CHOICES = {"auto": "auto", "any": "required", "none": "none", "tool": "function"}


def _tool_choice(data: dict[str, Any], tools: tuple[Tool, ...]) -> tuple[ToolChoice, bool]:
    """(the choice, whether calls may come in parallel) from ``tool_choice``."""
    value = data.get("tool_choice")
    if value is None:
        return ToolChoice(), True
    if not isinstance(value, dict) or value.get("type") not in _CHOICES:
        raise _bad("tool_choice", 'must be {"type": "auto" | "any" | "tool" | "none"}')
    parallel = not Fields(value, "tool_choice.").boolean("disable_parallel_tool_use")
    mode = _CHOICES[value["type"]]
    if mode != "function":
        return ToolChoice(mode), parallel  # type: ignore[arg-type]
    name = value.get("name")
    if not isinstance(name, str) or name not in {t.name for t in tools}:
        raise _bad("tool_choice.name", "must name one of the request's tools")
    return ToolChoice("function", name), parallel


def _thinking(data: dict[str, Any], max_tokens: int | None) -> tuple[bool | None, int | None]:
    """(think, budget_tokens) from ``thinking``: no ``thinking`` is off, as on Anthropic's older
    models; "adaptive" (and "between_tools") leave it to the model's template (None)."""
    value = data.get("thinking")
    if value is None:
        return False, None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "disabled":
        return False, None
    if kind in ("adaptive", "between_tools"):
        return None, None
    if kind != "enabled":
        raise _bad("thinking", 'must be {"type": "enabled", "budget_tokens": N}, "adaptive" or "disabled"')
    budget = Fields(value, "thinking.").integer("budget_tokens", 1, MAX_TOKENS)
    if budget is None:
        raise _bad("thinking.budget_tokens", "is required when thinking is enabled")
    if max_tokens is not None and budget >= max_tokens:
        raise _bad("thinking.budget_tokens", f"must be less than max_tokens ({max_tokens})")
    return True, budget


def _schema(data: dict[str, Any]) -> object | None:
    """``output_config.format``: a JSON schema the reply must match (structured outputs)."""
    config = data.get("output_config")
    if config is None:
        return None
    fmt = config.get("format") if isinstance(config, dict) else "?"
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _bad("output_config.format", 'must be {"type": "json_schema", "schema": {...}}')
    return fmt["schema"]


def to_request(data: dict[str, Any], *, counting: bool = False) -> GenerateRequest:
    """A Messages request (``counting``: a count_tokens one, without max_tokens), checked."""
    f = Fields(data)
    max_tokens = None if counting else f.option(SAMPLING["max_tokens"], "max_tokens")
    if max_tokens is None and not counting:
        raise _bad("max_tokens", "is required: an integer of at least 1")
    stop = data.get("stop_sequences")
    if stop is not None and (
        not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) for s in stop)
    ):
        raise _bad("stop_sequences", f"must be a list of at most {MAX_STOP} strings")
    tools = _tools(data)
    choice, parallel = _tool_choice(data, tools)
    think, budget = _thinking(data, max_tokens)
    if not counting:
        f.boolean("stream")
    return generate_request(
        model=f.string("model"),
        messages=to_messages(data),
        max_tokens=max_tokens,
        temperature=f.option(SAMPLING["temperature"], "temperature"),
        top_p=f.option(SAMPLING["top_p"], "top_p"),
        top_k=f.option(SAMPLING["top_k"], "top_k"),
        stop=tuple(s for s in stop or () if s),
        schema=_schema(data),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        reasoning=think,
        reasoning_budget=budget,
        docs=f.string("docs"),
    )


# -- the reply, in Anthropic's shapes ----------------------------------------------------------


def stop_reason(reply: Reply, parsed: ParsedReply | None = None, called: bool = False) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a finished reply."""
    if called or (parsed is not None and parsed.tool_calls):
        return "tool_use", None
    if reply.finish_reason == "length":
        return "max_tokens", None
    if reply.stop_sequence is not None:
        return "stop_sequence", reply.stop_sequence
    return "end_turn", None


def _usage(reply: Reply) -> dict[str, int]:
    # Anthropic counts cache reads apart from input_tokens (input = uncached prompt tokens).
    cached = reply.cached_tokens
    return {
        "input_tokens": reply.prompt_tokens - cached,
        "output_tokens": reply.completion_tokens,
        "cache_read_input_tokens": cached,
    }


def _head(ident: str, reply: Reply) -> dict[str, Any]:
    """The Message's first fields; a request with ``docs`` (localllm's own field) gets ``sources``."""
    sources = {"sources": reply.sources} if getattr(reply, "sources", None) is not None else {}
    return {"id": ident, "type": "message", "role": "assistant", "model": reply.model, **sources}


def to_message(ident: str, reply: Reply, parsed: ParsedReply) -> dict[str, Any]:
    """The Message object of a finished reply: thinking, text and tool_use blocks."""
    content: list[dict[str, Any]] = []
    if parsed.reasoning:
        content.append({"type": "thinking", "thinking": parsed.reasoning, "signature": ""})
    if parsed.content or not parsed.tool_calls:
        content.append({"type": "text", "text": parsed.content})
    for call in parsed.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments_of(call)})
    reason, sequence = stop_reason(reply, parsed)
    return {
        **_head(ident, reply),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": _usage(reply),
    }


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {dumps({'type': kind, **data})}\n\n"


class _Stream:
    """Anthropic's streamed events from the reply's events: each run of one kind (thinking, text,
    one tool call) is a content block, opened by content_block_start and closed by
    content_block_stop; a ping follows the first block's start."""

    def __init__(self) -> None:
        self.index = -1
        self.open: tuple[str, int] | None = None  # (kind, tool-call index) of the open block
        self.pinged = False
        self.called = False

    def _start(self, kind: str, call: int, block: dict[str, Any]) -> list[str]:
        out = self.close()
        self.index += 1
        self.open = (kind, call)
        out.append(_sse("content_block_start", {"index": self.index, "content_block": block}))
        if not self.pinged:
            self.pinged = True
            out.append(_sse("ping", {}))
        return out

    def close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [_sse("content_block_stop", {"index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return _sse("content_block_delta", {"index": self.index, "delta": delta})

    def feed(self, event: Event) -> list[str]:
        out: list[str] = []
        if isinstance(event, ContentDelta):
            if not event.text:
                return out
            if self.open != ("text", -1):
                out += self._start("text", -1, {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": event.text}))
        elif isinstance(event, ReasoningDelta):
            if not event.text:
                return out
            if self.open != ("thinking", -1):
                out += self._start("thinking", -1, {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": event.text}))
        elif isinstance(event, ToolCallDelta):
            self.called = True
            if self.open != ("tool_use", event.index):
                ident = event.id or f"toolu_{uuid.uuid4().hex[:24]}"
                block = {"type": "tool_use", "id": ident, "name": event.name or "", "input": {}}
                out += self._start("tool_use", event.index, block)
            if event.arguments:
                out.append(self._delta({"type": "input_json_delta", "partial_json": event.arguments}))
        return out

    def end(self, reply: Reply) -> list[str]:
        out = [] if self.index >= 0 else self._start("text", -1, {"type": "text", "text": ""})
        out += self.close()
        reason, sequence = stop_reason(reply, called=self.called)
        out.append(
            _sse("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": _usage(reply)})
        )
        out.append(_sse("message_stop", {}))
        return out


async def _events(request: Request, reply: Reply, ident: str) -> AsyncIterator[str]:
    start_message = {
        **_head(ident, reply),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.prompt_tokens, "output_tokens": 0},
    }
    yield _sse("message_start", {"message": start_message})
    blocks = _Stream()
    try:
        async for event in stream_events(request, reply):
            for line in blocks.feed(event):
                yield line
    except Exception as exc:  # after the status was sent: the error goes in the stream
        yield _sse("error", {"error": problems.anthropic_body(problem_of(request, exc))["error"]})
        return
    for line in blocks.end(reply):
        yield line


@answers_errors
async def messages(request: Request) -> Response:
    data = await body(request)
    wanted = to_request(data)
    reply = await start(request, wanted)
    ident = f"msg_{uuid.uuid4().hex[:24]}"
    if data.get("stream"):
        return StreamingResponse(
            _events(request, reply, ident),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    parsed = await collect(request, reply)
    return JSONResponse(to_message(ident, reply, parsed))


@answers_errors
async def count_tokens(request: Request) -> Response:
    wanted = to_request(await body(request), counting=True)
    key, n_tokens = await run_in_threadpool(manager(request).count_tokens, wanted)
    log_of(request.scope).model = key  # no prompt_tokens: nothing was evaluated, so none for the metrics
    return JSONResponse({"input_tokens": n_tokens})


def routes() -> list[Route]:
    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
