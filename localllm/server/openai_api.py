"""OpenAI's API: ``/v1/chat/completions``, ``/v1/completions`` (streamed as server-sent events or
not), ``/v1/models`` and ``/v1/embeddings``. Usage counts come in the response, and in the last
streamed chunk (the one with the finish reason)."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localllm.app.serving import Reply

from . import fields, problems
from .common import answers_errors, body, dumps, manager, pieces, problem_of, read_all, start
from .middleware import log_of

MAX_EMBED_INPUTS = 2048


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _finish_reason(reply: Reply) -> str:
    return "length" if reply.finish_reason == "length" else "stop"


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
        stream = fields.Fields(data).boolean("stream") or False
        reply = await start(request, wanted)
        ident = f"{shape.prefix}{uuid.uuid4().hex}"
        created = int(time.time())
        if stream:
            events = _events(request, reply, shape, ident, created)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
        text = await read_all(request, reply)
        return JSONResponse(
            {
                "id": ident,
                "object": shape.object,
                "created": created,
                "model": reply.model,
                "choices": [shape.choice(text, _finish_reason(reply))],
                "usage": _usage(reply),
            }
        )

    return handler


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


@answers_errors
async def list_models(request: Request) -> Response:
    installed = await run_in_threadpool(manager(request).installed)
    pairs = await run_in_threadpool(manager(request).combinations)
    named = [(m.key, m) for m in installed] + pairs
    data = [{"id": key, "object": "model", "created": int(m.installed_at), "owned_by": "localllm"} for key, m in named]
    return JSONResponse({"object": "list", "data": data})


def _embed_inputs(data: dict[str, Any]) -> list[str]:
    value = data.get("input")
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_EMBED_INPUTS
        or not all(isinstance(v, str) for v in value)
    ):
        raise problems.RequestError(
            f"'input' must be a string or a list of 1 to {MAX_EMBED_INPUTS} strings", param="input"
        )
    return value


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding of a vector: little-endian float32s (what the openai client asks for)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@answers_errors
async def embeddings(request: Request) -> Response:
    data = await body(request)
    texts = _embed_inputs(data)
    f = fields.Fields(data)
    model = f.string("model")
    encoding = f.string("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise problems.RequestError('\'encoding_format\' must be "float" or "base64"', param="encoding_format")
    key, vectors, n_tokens = await run_in_threadpool(manager(request).embed, model, texts)
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
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
