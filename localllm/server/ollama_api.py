"""Ollama's API: ``/api/chat`` and ``/api/generate`` (newline-delimited JSON, streamed unless
``"stream": false``), ``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/embed``, ``/api/version``,
and ``GET /``, so Ollama's own clients and the apps built on them work unchanged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from localllm import __version__
from localllm.app.serving import GenerateRequest, ModelFacts, Reply, facts
from localllm.chat.toolcalls import ContentDelta, ReasoningDelta, ToolCall
from localllm.errors import LocalLLMError

from . import fields, problems, tooling
from .common import answers_errors, body, dumps, events, manager, pieces, problem_of, read_all, read_parsed, start
from .middleware import log_of


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _final(reply: Reply, total_s: float) -> dict[str, Any]:
    """The fields of the last line: why it stopped, the counts and durations (nanoseconds); the
    ``sources`` of a request with ``docs`` (localllm's own field)."""
    result = reply.result
    sources = {"sources": reply.sources} if getattr(reply, "sources", None) is not None else {}
    return {
        **sources,
        "done": True,
        "done_reason": "length" if reply.finish_reason == "length" else "stop",
        "total_duration": _ns(total_s),
        "load_duration": 0,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": _ns(result.prompt_s) if result else 0,
        "eval_count": reply.completion_tokens,
        "eval_duration": _ns(result.generation_s) if result else 0,
    }


class _Shape:
    def __init__(self, chat: bool) -> None:
        self.chat = chat

    def piece(self, text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}} if self.chat else {"response": text}


def _endpoint(chat: bool):
    shape = _Shape(chat)

    @answers_errors
    async def handler(request: Request) -> Response:
        started = time.perf_counter()
        data = await body(request)
        wanted = fields.ollama_request(data, chat=chat)
        _refuse_images(data, chat)
        stream = fields.Fields(data).boolean("stream")
        if _only_loads(data, chat):
            return await _load(request, wanted, shape)
        if chat:
            wanted = tooling.ollama_chat(data, wanted)
        reply = await start(request, wanted)
        if stream is None or stream:
            lines = _chat_lines(request, reply, started) if chat else _lines(request, reply, shape, started)
            return StreamingResponse(lines, media_type="application/x-ndjson")
        if chat:
            parsed = await read_parsed(request, reply)
            return JSONResponse(
                {
                    "model": reply.model,
                    "created_at": _now(),
                    "message": _message(parsed.content, parsed.reasoning, parsed.tool_calls),
                    **_final(reply, time.perf_counter() - started),
                }
            )
        text = await read_all(request, reply)
        return JSONResponse(
            {
                "model": reply.model,
                "created_at": _now(),
                **shape.piece(text),
                **_final(reply, time.perf_counter() - started),
            }
        )

    return handler


def _refuse_images(data: dict[str, Any], chat: bool) -> None:
    """A 400 for ``images`` (on the request, or on a chat message): no model served here reads them."""
    places = [(f"messages[{i}].images", m) for i, m in enumerate(data.get("messages") or ()) if isinstance(m, dict)]
    for where, holder in places if chat else [("images", data)]:
        if holder.get("images"):
            raise problems.RequestError(
                f"'{where}': this model cannot see images (localllm serves text-only models)", param=where
            )


def _only_loads(data: dict[str, Any], chat: bool) -> bool:
    """Ollama loads (or, with keep_alive 0, unloads) a model for a request with nothing to say."""
    return not data.get("messages") if chat else not data.get("prompt")


async def _load(request: Request, wanted: GenerateRequest, shape: _Shape) -> Response:
    key = await run_in_threadpool(manager(request).load, wanted.model, wanted.keep_alive_s)
    log_of(request.scope).model = key
    reason = "unload" if wanted.keep_alive_s == 0 else "load"
    return JSONResponse({"model": key, "created_at": _now(), **shape.piece(""), "done": True, "done_reason": reason})


async def _lines(request: Request, reply: Reply, shape: _Shape, started: float) -> AsyncIterator[str]:
    try:
        async for piece in pieces(request, reply):
            yield dumps({"model": reply.model, "created_at": _now(), **shape.piece(piece), "done": False}) + "\n"
    except Exception as exc:  # after the status was sent: the error goes in the stream
        yield dumps(problems.ollama_body(problem_of(request, exc))) + "\n"
        return
    last = {
        "model": reply.model,
        "created_at": _now(),
        **shape.piece(""),
        **_final(reply, time.perf_counter() - started),
    }
    yield dumps(last) + "\n"


def _message(content: str, thinking: str = "", calls: Sequence[ToolCall] = ()) -> dict[str, Any]:
    """An assistant message: content, ``thinking`` and ``tool_calls`` with arguments as objects."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "function": {"index": i, "name": c.name, "arguments": c.args()}} for i, c in enumerate(calls)
        ]
    return message


async def _chat_lines(request: Request, reply: Reply, started: float) -> AsyncIterator[str]:
    def line(message: dict[str, Any]) -> str:
        return dumps({"model": reply.model, "created_at": _now(), "message": message, "done": False}) + "\n"

    try:
        async for event in events(request, reply):
            if isinstance(event, ContentDelta):
                yield line(_message(event.text))
            elif isinstance(event, ReasoningDelta):
                yield line(_message("", event.text))
            else:
                call = ToolCall(event.id or "", event.name or "", event.arguments)
                yield line(_message("", "", [call]))
    except Exception as exc:  # after the status was sent: the error goes in the stream
        yield dumps(problems.ollama_body(problem_of(request, exc))) + "\n"
        return
    last = {
        "model": reply.model,
        "created_at": _now(),
        "message": _message(""),
        **_final(reply, time.perf_counter() - started),
    }
    yield dumps(last) + "\n"


def _details(facts: ModelFacts | None, quant: str | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    params = facts.parameters
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"
    family = facts.architecture
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": size,
        "quantization_level": quant or facts.file_type or "",
    }


def _tags(models: list[Any], pairs: Sequence[tuple[str, Any]] = ()) -> list[dict[str, Any]]:
    """Rows of ``/api/tags``: each model, then each ``base+adapter`` pair (under its base's details)."""
    rows = []
    for key, m in [(m.key, m) for m in models] + list(pairs):
        try:
            details = _details(facts(m.path()), m.quant)
        except (LocalLLMError, OSError):  # a file that cannot be read is listed without details, not dropped
            details = None
        rows.append(
            {
                "name": key,
                "model": key,
                "modified_at": _iso(m.installed_at),
                "size": m.size,
                "digest": m.sha256 or "",
                "details": details,
            }
        )
    return rows


@answers_errors
async def tags(request: Request) -> Response:
    models = await run_in_threadpool(lambda: _tags(manager(request).installed(), manager(request).combinations()))
    return JSONResponse({"models": models})


@answers_errors
async def show(request: Request) -> Response:
    data = await body(request)
    f = fields.Fields(data)
    name = f.string("model") or f.string("name")
    if not name:
        raise problems.RequestError("'model' must name a model", param="model")
    info = await run_in_threadpool(manager(request).describe, name)
    capabilities = await run_in_threadpool(manager(request).capabilities, name)
    quant = info["name"].partition(":")[2] or None
    model_info = {
        "general.architecture": info["architecture"],
        "general.parameter_count": info["parameters"],
        f"{info['architecture']}.context_length": info["context_length"],
        f"{info['architecture']}.block_count": info["layers"],
        f"{info['architecture']}.embedding_length": info["embedding_length"],
    }
    return JSONResponse(
        {
            "modelfile": f"FROM {info['path']}\n",
            "parameters": "",
            "template": info["chat_template"] or "",
            "license": info["license"] or "",
            "details": _details(
                ModelFacts(info["architecture"] or "", info["parameters"] or 0, info["file_type"]), quant
            ),
            "model_info": model_info,
            "capabilities": sorted(capabilities),
            "modified_at": _now(),
        }
    )


@answers_errors
async def ps(request: Request) -> Response:
    running = manager(request).running()
    now = time.time()
    rows = []
    for r in running:
        expires = _iso(now + r.expires_in_s) if r.expires_in_s is not None else "2318-01-01T00:00:00Z"
        rows.append(
            {
                "name": r.name,
                "model": r.name,
                "size": r.size,
                "digest": "",
                "size_vram": 0,
                "details": _details(r.facts, r.name.partition(":")[2] or None),
                "expires_at": expires,
                "context_length": r.n_ctx_seq,
            }
        )
    return JSONResponse({"models": rows})


@answers_errors
async def embed(request: Request) -> Response:
    """``/api/embed`` ({"input": text or texts} -> "embeddings") and the older ``/api/embeddings``
    ({"prompt": text} -> "embedding")."""
    data = await body(request)
    f = fields.Fields(data)
    legacy = request.url.path == "/api/embeddings"
    value = data.get("prompt" if legacy else "input")
    texts = [value] if isinstance(value, str) else value
    name = "prompt" if legacy else "input"
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise problems.RequestError(f"'{name}' must be a non-empty string or a list of non-empty strings", param=name)
    key, vectors, n_tokens = await run_in_threadpool(manager(request).embed, f.string("model"), texts)
    log = log_of(request.scope)
    log.model, log.prompt_tokens = key, n_tokens
    if legacy:
        return JSONResponse({"embedding": vectors[0]})
    return JSONResponse({"model": key, "embeddings": vectors, "prompt_eval_count": n_tokens})


async def version(request: Request) -> Response:
    return JSONResponse({"version": __version__})


async def root(request: Request) -> Response:
    return PlainTextResponse("localllm is running")


def routes() -> list[Route]:
    return [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/chat", _endpoint(chat=True), methods=["POST"]),
        Route("/api/generate", _endpoint(chat=False), methods=["POST"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embed, methods=["POST"]),
        Route("/api/version", version, methods=["GET", "HEAD"]),
    ]
