"""ASGI middleware: the API key, and one log line per request on stderr."""

from __future__ import annotations

import hmac
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import problems

LOG_KEY = "localllm.log"  # the scope key under which a route notes what the log line reports


@dataclass
class RequestLog:
    """What a route knows about its request, for the log line."""

    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    generation_s: float | None = None  # from the first token to the last
    finish: str | None = None  # stop, length, or cancelled (the client went away)
    first_token_at: float | None = None  # time.perf_counter() of the first generated token
    drafted_tokens: int = 0  # speculative decoding: tokens drafted, and of those accepted
    accepted_tokens: int = 0

    def tokens(self) -> str:
        if self.prompt_tokens is None:
            return ""
        text = f" prompt={self.prompt_tokens} generated={self.completion_tokens or 0}"
        if self.finish:
            text += f" ({self.finish})"
        if self.generation_s and self.completion_tokens and self.completion_tokens > 1:
            text += f" {(self.completion_tokens - 1) / self.generation_s:.1f} tok/s"
        if self.drafted_tokens:
            text += f" drafts={self.accepted_tokens}/{self.drafted_tokens} accepted"
        return text


def log_of(scope: Scope) -> RequestLog:
    return scope.setdefault(LOG_KEY, RequestLog())


# Called once per finished request: (method, path, status (0: the client went away), log, started).
Observer = Callable[[str, str, int, RequestLog, float], None]


class AccessLog:
    """Writes ``METHOD PATH model=... prompt=N generated=N X tok/s STATUS N ms`` when a request
    ends (its last byte sent, or the client gone), and tells ``observe`` (the metrics)."""

    def __init__(self, app: ASGIApp, stream: TextIO | None = None, observe: Observer | None = None) -> None:
        self.app = app
        self.stream = stream
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        log = log_of(scope)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ms = (time.perf_counter() - started) * 1000
            model = f" model={log.model}" if log.model else ""
            line = f"{scope['method']} {scope['path']}{model}{log.tokens()} {status or 'disconnected'} {ms:.0f} ms"
            print(line, file=self.stream or sys.stderr, flush=True)
            if self.observe is not None:
                self.observe(scope["method"], scope["path"], status, log, started)


OPEN_PATHS = frozenset({"/", "/health", "/v1/health"})  # load balancers probe these without a key


class ApiKey:
    """Requires ``Authorization: Bearer KEY`` (or Anthropic's ``x-api-key: KEY``) on every route
    but ``GET /`` and the health checks (401 otherwise)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        problem = problems.RequestError(
            "a valid API key is required: send 'Authorization: Bearer KEY' (or 'x-api-key: KEY')",
            status=401,
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await problems.response(problem, scope["path"])(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, token = value.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return True
        other = next((v for k, v in headers if k == b"x-api-key"), None)
        return other is not None and hmac.compare_digest(other.strip(), self.key)
