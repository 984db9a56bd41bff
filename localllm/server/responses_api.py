"""OpenAI's Responses API: ``POST /v1/responses`` (streamed as the Responses event types, or not),
``GET /v1/responses/{id}`` and ``DELETE /v1/responses/{id}``, what the ``openai`` client's
``responses.create`` and LangChain's ``ChatOpenAI(use_responses_api=True)`` speak.

Stateful as OpenAI's is: each response made with ``store`` (the default) is kept, with the
conversation that led to it, in memory for the server's life, the last :data:`KEPT_RESPONSES`
of them (least recently used out first), so a request can go on from one by
``previous_response_id``. A request is converted into the internal OpenAI-shaped messages plus
tools (:func:`to_request`); the reply's events are converted back into output items
(:func:`to_response`, :class:`_Stream`). Generation knows nothing of either.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localllm.app.options import SAMPLING
from localllm.app.serving import GenerateRequest, Reply

from . import problems
from .common import answers_errors, body, dumps, problem_of, start
from .fields import Fields
from .toolbridge import (
    ContentDelta,
    Event,
    ParsedReply,
    ReasoningDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    collect,
    generate_request,
    stream_events,
)

KEPT_RESPONSES = 256  # responses kept for GET and previous_response_id (the least recently used go first)


@dataclass
class Stored:
    response: dict[str, Any]  # the Response object, as GET answers it
    history: list[dict[str, Any]]  # the conversation through its output, in the internal form (no instructions)


class ResponseStore:
    """The last ``size`` stored responses, by id; thread-safe."""

    def __init__(self, size: int = KEPT_RESPONSES) -> None:
        self.size = size
        self._kept: OrderedDict[str, Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, stored: Stored) -> None:
        with self._lock:
            self._kept[stored.response["id"]] = stored
            self._kept.move_to_end(stored.response["id"])
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def get(self, ident: str) -> Stored | None:
        with self._lock:
            stored = self._kept.get(ident)
            if stored is not None:
                self._kept.move_to_end(ident)
            return stored

    def delete(self, ident: str) -> bool:
        with self._lock:
            return self._kept.pop(ident, None) is not None


def _store(request: Request) -> ResponseStore:
    return request.app.state.responses


# -- the request, in the internal form ---------------------------------------------------------


def _bad(where: str, what: str) -> problems.RequestError:
    return problems.RequestError(f"'{where}' {what}", param=where)


_TEXT_PARTS = ("input_text", "output_text", "text")


def _parts_text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            key = "refusal" if kind == "refusal" else "text"
            if kind not in (*_TEXT_PARTS, "refusal") or not isinstance(part.get(key), str):
                raise _bad(
                    f"{where}[{j}]", "must be an input_text or output_text part: images and files are not supported"
                )
            texts.append(part[key])
        return "".join(texts)
    raise _bad(where, "must be a string or a list of input_text / output_text parts")


def _assistant_tail(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message a function_call item joins: the last one, if nothing followed it."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[-1]
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    messages.append(message)
    return message


def to_messages(value: object) -> list[dict[str, Any]]:
    """``input`` (a string, or a list of message, function_call and function_call_output items)
    as internal chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _bad("input", "must be a string or a non-empty list of input items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"{where}.role", 'must be "user", "assistant", "system" or "developer"')
            role = "system" if role == "developer" else role
            messages.append({"role": role, "content": _parts_text(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            f = Fields(item, f"{where}.")
            call = {
                "id": f.string("call_id", required=True),
                "type": "function",
                "function": {"name": f.string("name", required=True), "arguments": f.string("arguments") or "{}"},
            }
            _assistant_tail(messages).setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            output = _parts_text(item.get("output"), f"{where}.output")
            call_id = Fields(item, f"{where}.").string("call_id", required=True)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue  # the model's earlier reasoning: templates drop it from past turns anyway
        else:
            raise _bad(
                f"{where}.type", f"is {kind!r}: message, function_call and function_call_output items are supported"
            )
    return messages


def _tools(data: dict[str, Any]) -> tuple[Tool, ...]:
    value = data.get("tools")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("tools", "must be a list of tools")
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _bad(where, f"is a {kind!r} tool: only function tools run here")
        f = Fields(tool, f"{where}.")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise _bad(f"{where}.parameters", "must be a JSON schema object")
        tools.append(
            Tool(
                f.string("name", required=True) or "",
                f.string("description") or "",
                parameters,
                bool(f.boolean("strict")),
            )
        )
    return tuple(tools)


def _tool_choice(data: dict[str, Any], tools: tuple[Tool, ...]) -> ToolChoice:
    value = data.get("tool_choice")
    if value is None:
        return ToolChoice()
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise _bad("tool_choice.name", "must name one of the request's function tools")
        return ToolChoice("function", name)
    raise _bad("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "name"}')


def _schema(data: dict[str, Any]) -> object | None:
    """``text.format``: text (None), json_object (any object) or json_schema (its ``schema``)."""
    text = data.get("text")
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema", "must be a JSON schema object")
        return schema
    raise _bad("text.format", 'must be {"type": "text" | "json_object" | "json_schema"}')


def _reasoning(data: dict[str, Any]) -> bool | None:
    """``reasoning.effort``: "none" turns thinking off, any other effort on; absent: the model's default."""
    value = data.get("reasoning")
    if value is None:
        return None
    effort = value.get("effort") if isinstance(value, dict) else "?"
    if effort is None:
        return None
    if effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
        raise _bad("reasoning.effort", 'must be "none", "minimal", "low", "medium" or "high"')
    return effort != "none"


@dataclass
class Converted:
    """A Responses request in the internal form, with what its Response object echoes."""

    request: GenerateRequest
    history: list[dict[str, Any]]  # the conversation so far, without the instructions
    echo: dict[str, Any] = field(default_factory=dict)
    store: bool = True
    stream: bool = False


def to_request(data: dict[str, Any], previous: Stored | None) -> Converted:
    """A Responses request, checked; ``previous``: the stored response it goes on from."""
    f = Fields(data)
    instructions = f.string("instructions")
    history = [*(previous.history if previous else ()), *to_messages(data.get("input"))]
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + history
    tools = _tools(data)
    choice = _tool_choice(data, tools)
    parallel = f.boolean("parallel_tool_calls")
    store = f.boolean("store")
    max_tokens = f.option(SAMPLING["max_tokens"], "max_output_tokens")
    temperature = f.option(SAMPLING["temperature"], "temperature")
    top_p = f.option(SAMPLING["top_p"], "top_p")
    schema = _schema(data)
    request = generate_request(
        model=f.string("model"),
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        schema=schema,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel is not False,
        reasoning=_reasoning(data),
    )
    text_format = data["text"]["format"] if schema is not None else {"type": "text"}
    echo = {
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "text": {"format": text_format},
        "tools": [{"type": "function", **_tool_echo(t)} for t in tools],
        "tool_choice": data.get("tool_choice") or "auto",
        "parallel_tool_calls": parallel is not False,
        "previous_response_id": data.get("previous_response_id"),
        "metadata": data.get("metadata") if isinstance(data.get("metadata"), dict) else {},
        "store": store is not False,
    }
    return Converted(request, history, echo, store is not False, bool(f.boolean("stream")))


def _tool_echo(tool: Tool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
        "strict": tool.strict,
    }


# -- the reply, as output items ----------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    parts = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"type": "message", "id": ident, "status": status, "role": "assistant", "content": parts}


def _reasoning_item(ident: str, text: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": ident, "summary": []}
    if text is not None:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    return item


def _call_item(ident: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": ident,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(parsed: ParsedReply) -> list[dict[str, Any]]:
    items = []
    if parsed.reasoning:
        items.append(_reasoning_item(_new_id("rs"), parsed.reasoning))
    if parsed.content or not parsed.tool_calls:
        items.append(_message_item(_new_id("msg"), parsed.content))
    for call in parsed.tool_calls:
        items.append(_call_item(_new_id("fc"), call.id, call.name, call.arguments))
    return items


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def response_object(
    ident: str, created: int, model: str, echo: dict[str, Any], status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": model,
        "output": output,
        "reasoning": {"effort": None, "summary": None},
        "truncation": "disabled",
        "usage": None,
        **echo,
    }


def finished_status(reply: Reply) -> str:
    return "incomplete" if reply.finish_reason == "length" else "completed"


def to_response(ident: str, created: int, converted: Converted, reply: Reply, parsed: ParsedReply) -> dict[str, Any]:
    """The Response object of a finished reply."""
    response = response_object(
        ident, created, reply.model, converted.echo, finished_status(reply), output_items(parsed)
    )
    response["usage"] = _usage(reply)
    return response


def assistant_message(parsed: ParsedReply) -> dict[str, Any]:
    """The reply as the internal assistant message (what a later previous_response_id continues)."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if parsed.reasoning:
        message["reasoning_content"] = parsed.reasoning
    if parsed.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in parsed.tool_calls
        ]
    return message


def _keep(request: Request, converted: Converted, response: dict[str, Any], parsed: ParsedReply) -> None:
    if converted.store:
        _store(request).put(Stored(response, [*converted.history, assistant_message(parsed)]))


class _Stream:
    """The Responses event types from the reply's events: each run of one kind (reasoning, text,
    one function call) is an output item, added, filled by deltas and done."""

    def __init__(self) -> None:
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: tuple[str, int] | None = None  # (kind, tool-call index) of the open item
        self.item: dict[str, Any] = {}
        self.text = ""
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[ToolCall] = []

    def event(self, kind: str, **data: Any) -> str:
        self.seq += 1
        return f"event: {kind}\ndata: {dumps({'type': kind, 'sequence_number': self.seq - 1, **data})}\n\n"

    @property
    def index(self) -> int:
        return len(self.output)

    def _open(self, kind: str, call: int, item: dict[str, Any]) -> list[str]:
        out = self.close()
        self.open, self.item, self.text = (kind, call), item, ""
        out.append(self.event("response.output_item.added", output_index=self.index, item=item))
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self.event("response.content_part.added", **self._at(), content_index=0, part=part))
        return out

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.item["id"], "output_index": self.index}

    def close(self) -> list[str]:
        if self.open is None:
            return []
        kind, _ = self.open
        item, text, out = self.item, self.text, []
        if kind == "message":
            out.append(self.event("response.output_text.done", **self._at(), content_index=0, text=text, logprobs=[]))
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out.append(self.event("response.content_part.done", **self._at(), content_index=0, part=part))
            item = _message_item(item["id"], text)
        elif kind == "reasoning":
            out.append(self.event("response.reasoning_text.done", **self._at(), content_index=0, text=text))
            item = _reasoning_item(item["id"], text)
        else:
            done = {**self._at(), "arguments": text, "name": item["name"]}
            out.append(self.event("response.function_call_arguments.done", **done))
            item = _call_item(item["id"], item["call_id"], item["name"], text)
            self.calls.append(ToolCall(item["call_id"], item["name"], text))
        out.append(self.event("response.output_item.done", output_index=self.index, item=item))
        self.output.append(item)
        self.open = None
        return out

    def feed(self, event: Event) -> list[str]:
        out: list[str] = []
        if isinstance(event, ContentDelta) and event.text:
            if self.open != ("message", -1):
                out += self._open("message", -1, _message_item(_new_id("msg"), "", "in_progress"))
            self.text += event.text
            self.content.append(event.text)
            out.append(
                self.event("response.output_text.delta", **self._at(), content_index=0, delta=event.text, logprobs=[])
            )
        elif isinstance(event, ReasoningDelta) and event.text:
            if self.open != ("reasoning", -1):
                out += self._open("reasoning", -1, _reasoning_item(_new_id("rs"), None))
            self.text += event.text
            self.reasoning.append(event.text)
            out.append(self.event("response.reasoning_text.delta", **self._at(), content_index=0, delta=event.text))
        elif isinstance(event, ToolCallDelta):
            if self.open != ("call", event.index):
                call_id = event.id or _new_id("call")
                out += self._open(
                    "call", event.index, _call_item(_new_id("fc"), call_id, event.name or "", "", "in_progress")
                )
            if event.arguments:
                self.text += event.arguments
                out.append(self.event("response.function_call_arguments.delta", **self._at(), delta=event.arguments))
        return out

    def end(self) -> list[str]:
        out = self.close()
        if not self.output:
            out += self._open("message", -1, _message_item(_new_id("msg"), "", "in_progress")) + self.close()
        return out

    def parsed(self) -> ParsedReply:
        return ParsedReply("".join(self.content), "".join(self.reasoning), tuple(self.calls), ())


async def _events(request: Request, reply: Reply, converted: Converted, ident: str, created: int) -> AsyncIterator[str]:
    s = _Stream()
    snapshot = response_object(ident, created, reply.model, converted.echo, "in_progress", [])
    yield s.event("response.created", response=snapshot)
    yield s.event("response.in_progress", response=snapshot)
    try:
        async for event in stream_events(request, reply):
            for line in s.feed(event):
                yield line
    except Exception as exc:  # after the status was sent: the error goes in the stream
        problem = problems.openai_body(problem_of(request, exc))["error"]
        yield s.event("error", code=problem["code"], message=problem["message"], param=problem["param"])
        return
    for line in s.end():
        yield line
    status = finished_status(reply)
    response = response_object(ident, created, reply.model, converted.echo, status, s.output)
    response["usage"] = _usage(reply)
    _keep(request, converted, response, s.parsed())
    yield s.event(f"response.{status}", response=response)


def _previous(request: Request, data: dict[str, Any]) -> Stored | None:
    ident = Fields(data).string("previous_response_id")
    if ident is None:
        return None
    stored = _store(request).get(ident)
    if stored is None:
        raise problems.RequestError(
            f"previous response {ident!r} is not kept: the server keeps the last {_store(request).size} stored "
            "responses of its life (store: false keeps none)",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return stored


@answers_errors
async def create(request: Request) -> Response:
    data = await body(request)
    converted = to_request(data, _previous(request, data))
    reply = await start(request, converted.request)
    ident, created = _new_id("resp"), int(time.time())
    if converted.stream:
        return StreamingResponse(
            _events(request, reply, converted, ident, created),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    parsed = await collect(request, reply)
    response = to_response(ident, created, converted, reply, parsed)
    _keep(request, converted, response, parsed)
    return JSONResponse(response)


def _not_kept(ident: str) -> problems.RequestError:
    return problems.RequestError(f"no response {ident!r} is kept", param="response_id", status=404, code="not_found")


@answers_errors
async def retrieve(request: Request) -> Response:
    ident = request.path_params["response_id"]
    stored = _store(request).get(ident)
    if stored is None:
        raise _not_kept(ident)
    return JSONResponse(stored.response)


@answers_errors
async def delete(request: Request) -> Response:
    ident = request.path_params["response_id"]
    if not _store(request).delete(ident):
        raise _not_kept(ident)
    return JSONResponse({"id": ident, "object": "response.deleted", "deleted": True})


def routes() -> list[Route]:
    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    ]
