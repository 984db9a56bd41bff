"""What both APIs' routes share: the manager, starting a reply, and errors inside routes."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from localllm.app.serving import GenerateRequest, ModelManager, Reply
from localllm.chat.toolcalls import Event, ParsedReply

from . import problems
from .fields import read_json
from .middleware import log_of

Handler = Callable[[Request], Awaitable[Response]]


def manager(request: Request) -> ModelManager:
    return request.app.state.manager


async def body(request: Request) -> dict[str, Any]:
    return await read_json(request, request.app.state.settings.max_body)


def problem_of(request: Request, exc: BaseException) -> problems.RequestError:
    """The error answer for ``exc``, logged as the server's settings say (``--debug``)."""
    settings = request.app.state.settings
    return problems.from_exception(exc, debug=settings.debug, log=settings.log)


def answers_errors(handler: Handler) -> Handler:
    """Turn any error a route raises before its response starts into that API's error response."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # every error becomes a status and a message, never a traceback
            return problems.response(problem_of(request, exc), request.url.path)

    return wrapped


async def start(request: Request, wanted: GenerateRequest) -> Reply:
    """Start the reply (loading its model in a worker thread) and note it for the log line."""
    log = log_of(request.scope)
    log.model = wanted.model
    reply = await run_in_threadpool(manager(request).start, wanted)
    log.model, log.prompt_tokens = reply.model, reply.prompt_tokens
    return reply


def finished(request: Request, reply: Reply) -> None:
    """Note a reply's generated tokens and time for the log line."""
    log = log_of(request.scope)
    log.completion_tokens = reply.completion_tokens
    log.finish = reply.finish_reason
    log.first_token_at = reply.first_token_at
    if reply.result is not None:
        log.generation_s = reply.result.generation_s
        log.drafted_tokens = getattr(reply.result, "drafted_tokens", 0)
        log.accepted_tokens = getattr(reply.result, "accepted_tokens", 0)


async def read_all(request: Request, reply: Reply) -> str:
    """The whole reply's text (not streamed); a client that goes away meanwhile cancels it."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        reply.cancel()

    watcher = asyncio.create_task(watch())
    try:
        text = "".join([piece async for piece in reply])
    finally:
        watcher.cancel()
        reply.close()
        finished(request, reply)
    return text


async def pieces(request: Request, reply: Reply) -> AsyncIterator[str]:
    """The reply's text pieces; a client that goes away cancels the sequence at once."""
    try:
        async for piece in reply:
            yield piece
    finally:
        reply.close()  # cancels the sequence unless it ended, and frees its slot
        finished(request, reply)


def warn(request: Request, reply: Reply) -> None:
    """Log what the parser noticed (a tool call it could not parse, kept as content)."""
    import sys

    log = request.app.state.settings.log or sys.stderr
    try:
        parsed = reply.parsed()
    except RuntimeError:  # the reply did not end (the client went away)
        return
    for warning in parsed.warnings:
        print(f"localllm serve: warning: {request.url.path} model={reply.model}: {warning}", file=log, flush=True)


async def read_parsed(request: Request, reply: Reply) -> ParsedReply:
    """The whole reply, split into content, reasoning and tool calls (not streamed)."""

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        reply.cancel()

    watcher = asyncio.create_task(watch())
    try:
        async for _ in reply.aevents():
            pass
    finally:
        watcher.cancel()
        reply.close()
        finished(request, reply)
    warn(request, reply)
    return reply.parsed()


async def events(request: Request, reply: Reply) -> AsyncIterator[Event]:
    """The reply's events; a client that goes away cancels the sequence at once."""
    try:
        async for event in reply.aevents():
            yield event
    finally:
        reply.close()
        finished(request, reply)
    warn(request, reply)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
