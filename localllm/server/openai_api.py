"""OpenAI's API: ``/v1/chat/completions``, ``/v1/completions`` (streamed as server-sent events or
not), ``/v1/models`` and ``/v1/embeddings``. Usage counts come in the response, and in the last
streamed chunk (the one with the finish reason)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localllm.app.serving import GenerateRequest, Reply
from localllm.chat.toolcalls import ContentDelta, Event, ParsedReply, ReasoningDelta
from localllm.errors import ModelNotFoundError

from . import fields, problems, tooling
from .common import (
    answers_errors,
    body,
    dumps,
    events,
    finished,
    manager,
    pieces,
    problem_of,
    read_all,
    read_parsed,
    start,
)
from .middleware import log_of

MAX_EMBED_INPUTS = 2048


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
    }


def _sources(reply: Reply) -> dict[str, Any]:
    """A request with ``docs`` (localllm's own field): the chunks its answer was asked over."""
    return {"sources": reply.sources} if getattr(reply, "sources", None) is not None else {}


def _finish_reason(reply: Reply) -> str:
    if reply.finish_reason == "tool_calls":
        return "tool_calls"
    return "length" if reply.finish_reason == "length" else "stop"


def _message(parsed: ParsedReply) -> dict[str, Any]:
    """The assistant message of a chat completion: content, reasoning and tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if parsed.reasoning:
        message["reasoning_content"] = parsed.reasoning
    if parsed.tool_calls:
        message["content"] = parsed.content or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in parsed.tool_calls
        ]
    return message


def _logprobs_wanted(data: dict[str, Any], chat: bool) -> int | None:
    """Chat: ``logprobs: true`` and ``top_logprobs`` (0-20); completions: ``logprobs`` (0-5)."""
    f = fields.Fields(data)
    if not chat:
        return f.integer("logprobs", 0, 5)
    top = f.integer("top_logprobs", 0, 20)
    if not f.boolean("logprobs"):
        if top:
            raise problems.RequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        return None
    return top or 0


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _chat_logprobs(reply: Reply) -> dict[str, Any] | None:
    rows = reply.result.logprobs if reply.result is not None else None
    if rows is None:
        return None
    return {
        "content": [
            {
                "token": _text(raw),
                "logprob": lp,
                "bytes": list(raw),
                "top_logprobs": [{"token": _text(b), "logprob": x, "bytes": list(b)} for b, x in best],
            }
            for raw, lp, best in rows
        ],
        "refusal": None,
    }


def _completion_logprobs(reply: Reply) -> dict[str, Any] | None:
    rows = reply.result.logprobs if reply.result is not None else None
    if rows is None:
        return None
    offsets, at = [], 0
    for raw, _, _ in rows:
        offsets.append(at)
        at += len(_text(raw))
    return {
        "tokens": [_text(raw) for raw, _, _ in rows],
        "token_logprobs": [lp for _, lp, _ in rows],
        "top_logprobs": [{_text(b): x for b, x in best} for _, _, best in rows],
        "text_offset": offsets,
    }


def _event_delta(event: Event) -> dict[str, Any]:
    if isinstance(event, ContentDelta):
        return {"content": event.text}
    if isinstance(event, ReasoningDelta):
        return {"reasoning_content": event.text}
    call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
    if event.id is not None:
        call["id"], call["type"] = event.id, "function"
    if event.name is not None:
        call["function"]["name"] = event.name
    return {"tool_calls": [call]}


class _Shape:
    """What differs between chat completions and completions."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.prefix = "chatcmpl-" if chat else "cmpl-"

    def choice(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            return {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    def delta(self, text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}


def _completions(chat: bool):
    shape = _Shape(chat)

    @answers_errors
    async def handler(request: Request) -> Response:
        data = await body(request)
        wanted = fields.openai_request(data, chat=chat)
        if chat:
            wanted = tooling.openai_chat(data, wanted)
        wanted = dataclasses.replace(wanted, logprobs=_logprobs_wanted(data, chat))
        stream = fields.Fields(data).boolean("stream") or False
        options = data.get("stream_options")
        usage_chunk = isinstance(options, dict) and options.get("include_usage") is True
        asks = _asks(data, wanted, chat)
        ident = f"{shape.prefix}{uuid.uuid4().hex}"
        created = int(time.time())
        if len(asks) > 1:
            return await _many(request, asks, shape, ident, created, stream)
        reply = await start(request, wanted)
        if stream:
            chunks = (
                _chat_events(request, reply, ident, created, usage_chunk)
                if chat
                else _events(request, reply, shape, ident, created)
            )
            return StreamingResponse(
                chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
        if chat:
            parsed = await read_parsed(request, reply)
            choice = {
                "index": 0,
                "message": _message(parsed),
                "logprobs": _chat_logprobs(reply),
                "finish_reason": _finish_reason(reply),
            }
            return JSONResponse(
                {
                    "id": ident,
                    "object": shape.object,
                    "created": created,
                    "model": reply.model,
                    "choices": [choice],
                    "usage": _usage(reply),
                    **_sources(reply),
                }
            )
        text = await read_all(request, reply)
        return JSONResponse(
            {
                "id": ident,
                "object": shape.object,
                "created": created,
                "model": reply.model,
                "choices": [{**shape.choice(text, _finish_reason(reply)), "logprobs": _completion_logprobs(reply)}],
                "usage": _usage(reply),
            }
        )

    return handler


def _asks(data: dict[str, Any], wanted: GenerateRequest, chat: bool) -> list[GenerateRequest]:
    """One request per choice: each prompt (a list of prompts on completions) ``n`` times, each
    sampled on its own (a given seed is seed + i for the i-th of the n)."""
    n = fields.choices(data)
    prompts: list[str | tuple[int, ...] | None] = [None]
    if not chat:
        prompts = [*fields.token_inputs(data.get("prompt"), "prompt", fields.MAX_PROMPTS)]
    asks = []
    for prompt in prompts:
        if isinstance(prompt, tuple):
            ask = dataclasses.replace(wanted, prompt=None, prompt_ids=prompt)
        else:
            ask = wanted if prompt is None else dataclasses.replace(wanted, prompt=prompt, prompt_ids=None)
        for i in range(n):
            asks.append(ask if ask.seed is None else dataclasses.replace(ask, seed=ask.seed + i))
    return asks


async def _many(
    request: Request, asks: list[GenerateRequest], shape: _Shape, ident: str, created: int, stream: bool
) -> Response:
    """Several choices (``n`` > 1, or a list of prompts), decoded side by side; choice ``index`` in
    the order of the prompts, then of the n."""
    replies: list[Reply] = []
    try:
        for ask in asks:
            replies.append(await start(request, ask))
    except BaseException:
        for reply in replies:
            reply.close()
        raise
    head = {"id": ident, "object": shape.chunk_object if stream else shape.object, "created": created}
    head["model"] = replies[0].model
    head.update(_sources(replies[0]))
    usage = {
        "prompt_tokens": sum(r.prompt_tokens for r in replies),
        "completion_tokens": 0,
        "total_tokens": 0,
    }

    def total() -> dict[str, int]:
        done = sum(r.completion_tokens for r in replies)
        return {**usage, "completion_tokens": done, "total_tokens": usage["prompt_tokens"] + done}

    if not stream:
        texts = await _read_many(request, replies, shape.chat)
        choices = []
        for i, (reply, text) in enumerate(zip(replies, texts)):
            choice: dict[str, Any]
            if shape.chat:
                choice = {"index": i, "message": _message(text), "logprobs": _chat_logprobs(reply)}
            else:
                choice = {"index": i, "text": text, "logprobs": _completion_logprobs(reply)}
            choices.append({**choice, "finish_reason": _finish_reason(reply)})
        return JSONResponse({**head, "choices": choices, "usage": total()})

    async def chunks() -> AsyncIterator[str]:
        try:
            async for i, item in _merged(replies, shape.chat):
                choice: dict[str, Any]
                if item is None:
                    end: dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": _finish_reason(replies[i])}
                    choice = {**end, "delta": {}} if shape.chat else {**end, "text": ""}
                elif shape.chat:
                    choice = {"index": i, "delta": _event_delta(item), "logprobs": None, "finish_reason": None}
                else:
                    choice = {"index": i, "text": item, "logprobs": None, "finish_reason": None}
                yield f"data: {dumps({**head, 'choices': [choice]})}\n\n"
        except Exception as exc:  # after the status was sent: the error goes in the stream
            yield f"data: {dumps(problems.openai_body(problem_of(request, exc)))}\n\n"
            return
        finally:
            for reply in replies:
                reply.close()
                finished(request, reply)
        yield f"data: {dumps({**head, 'choices': [], 'usage': total()})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def _read_many(request: Request, replies: list[Reply], chat: bool) -> list[Any]:
    """Each reply whole (chat: parsed); a client that goes away cancels them all."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        for reply in replies:
            reply.cancel()

    async def one(reply: Reply) -> Any:
        try:
            if not chat:
                return "".join([piece async for piece in reply])
            async for _ in reply.aevents():
                pass
        finally:
            reply.close()
            finished(request, reply)
        return reply.parsed()

    watcher = asyncio.create_task(watch())
    try:
        return await asyncio.gather(*(one(r) for r in replies))
    finally:
        watcher.cancel()


async def _merged(replies: list[Reply], chat: bool) -> AsyncIterator[tuple[int, Any]]:
    """(choice index, text piece or chat event) as each reply makes them; (index, None) when one ends."""
    queue: asyncio.Queue[tuple[int, Any, BaseException | None]] = asyncio.Queue()

    async def feed(i: int, reply: Reply) -> None:
        try:
            async for item in reply.aevents() if chat else reply:
                await queue.put((i, item, None))
            await queue.put((i, None, None))
        except Exception as exc:
            await queue.put((i, None, exc))

    tasks = [asyncio.create_task(feed(i, r)) for i, r in enumerate(replies)]
    try:
        left = len(tasks)
        while left:
            i, item, error = await queue.get()
            if error is not None:
                raise error
            if item is None:
                left -= 1
            yield i, item
    finally:
        for task in tasks:
            task.cancel()


async def _events(request: Request, reply: Reply, shape: _Shape, ident: str, created: int) -> AsyncIterator[str]:
    head = {"id": ident, "object": shape.chunk_object, "created": created, "model": reply.model}
    first = True
    try:
        async for piece in pieces(request, reply):
            yield f"data: {dumps({**head, 'choices': [shape.delta(piece, None, first)]})}\n\n"
            first = False
    except Exception as exc:  # after the status was sent: the error goes in the stream
        yield f"data: {dumps(problems.openai_body(problem_of(request, exc)))}\n\n"
        return
    last = {**head, "choices": [shape.delta(None, _finish_reason(reply), first)], "usage": _usage(reply)}
    yield f"data: {dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


async def _chat_events(
    request: Request, reply: Reply, ident: str, created: int, usage_chunk: bool
) -> AsyncIterator[str]:
    """Chat chunks: content, reasoning_content and tool-call deltas (with their index); the
    usage in a last chunk of its own (``choices: []``) when the client asked for it, as OpenAI does."""
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": reply.model}

    def chunk(delta: dict[str, Any], finish: str | None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {dumps({**head, 'choices': [choice]})}\n\n"

    first = {"role": "assistant", "content": ""}
    choice = {"index": 0, "delta": first, "logprobs": None, "finish_reason": None}
    yield f"data: {dumps({**head, 'choices': [choice], **_sources(reply)})}\n\n"  # sources in the first chunk
    try:
        async for event in events(request, reply):
            yield chunk(_event_delta(event), None)
    except Exception as exc:  # after the status was sent: the error goes in the stream
        yield f"data: {dumps(problems.openai_body(problem_of(request, exc)))}\n\n"
        return
    if usage_chunk:
        yield chunk({}, _finish_reason(reply))
        yield f"data: {dumps({**head, 'choices': [], 'usage': _usage(reply)})}\n\n"
    else:
        last = {
            **head,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": _finish_reason(reply)}],
        }
        yield f"data: {dumps({**last, 'usage': _usage(reply)})}\n\n"
    yield "data: [DONE]\n\n"


@answers_errors
async def list_models(request: Request) -> Response:
    installed = await run_in_threadpool(manager(request).installed)
    pairs = await run_in_threadpool(manager(request).combinations)
    named = [(m.key, m) for m in installed] + pairs
    data = [{"id": key, "object": "model", "created": int(m.installed_at), "owned_by": "localllm"} for key, m in named]
    return JSONResponse({"object": "list", "data": data})


@answers_errors
async def get_model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one installed model (404 for one that is not)."""
    wanted = request.path_params["model"]
    installed = await run_in_threadpool(manager(request).installed)
    for m in installed:
        if m.key == wanted or m.key.partition(":")[0] == wanted:
            return JSONResponse(
                {"id": m.key, "object": "model", "created": int(m.installed_at), "owned_by": "localllm"}
            )
    raise ModelNotFoundError(f"model {wanted!r} is not installed", hint=f"download it with: localllm pull {wanted}")


def _truncated(vector: list[float], dimensions: int | None) -> list[float]:
    """The first ``dimensions`` values scaled back to unit length (OpenAI's ``dimensions``)."""
    if dimensions is None or dimensions == len(vector):
        return vector
    if dimensions > len(vector):
        raise problems.RequestError(
            f"'dimensions' must be at most {len(vector)}, this model's embedding size", param="dimensions"
        )
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return [x / norm for x in head]


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding of a vector: little-endian float32s (what the openai client asks for)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@answers_errors
async def embeddings(request: Request) -> Response:
    data = await body(request)
    texts = fields.token_inputs(data.get("input"), "input", MAX_EMBED_INPUTS)
    f = fields.Fields(data)
    model = f.string("model")
    dimensions = f.integer("dimensions", 1, 1 << 20)
    encoding = f.string("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise problems.RequestError('\'encoding_format\' must be "float" or "base64"', param="encoding_format")
    key, vectors, n_tokens = await run_in_threadpool(manager(request).embed, model, texts)
    vectors = [_truncated(v, dimensions) for v in vectors]
    log = log_of(request.scope)
    log.model, log.prompt_tokens = key, n_tokens
    rows = [
        {"object": "embedding", "index": i, "embedding": _base64(v) if encoding == "base64" else v}
        for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {"object": "list", "data": rows, "model": key, "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
    )


def routes() -> list[Route]:
    return [
        Route("/v1/chat/completions", _completions(chat=True), methods=["POST"]),
        Route("/v1/completions", _completions(chat=False), methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
