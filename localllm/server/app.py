"""The ASGI application: every API's routes behind the API key, CORS (only when asked), the
access log and the metrics it feeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from localllm.app.serving import ModelManager

from . import anthropic_api, ollama_api, openai_api, ops, problems, rerank, responses_api
from .middleware import AccessLog, ApiKey

MAX_BODY = 8 << 20  # bytes: a long conversation is a few hundred KiB


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None  # None: no key needed (the server binds 127.0.0.1 by default)
    cors: tuple[str, ...] = ()  # origins a browser page may call from; none: no CORS headers
    max_body: int = MAX_BODY
    log: TextIO | None = None  # where the access log (and the tracebacks of 500s) go (None: stderr)
    debug: bool = False  # log the traceback of every error answered with a 5xx (serve --debug)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths (404) and wrong methods (405) in the API's error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = exc.detail if isinstance(exc, HTTPException) else "internal server error"
    return problems.response(
        problems.RequestError(f"{message}: {request.method} {request.url.path}", status=status), request.url.path
    )


def create_app(manager: ModelManager, settings: ServerSettings | None = None) -> Starlette:
    settings = settings or ServerSettings()
    routes = [
        *ollama_api.routes(),
        *openai_api.routes(),
        *anthropic_api.routes(),
        *responses_api.routes(),
        *rerank.routes(),
        *ops.routes(),
    ]
    metrics = ops.Metrics(manager, (r.path for r in routes))
    middleware = [Middleware(AccessLog, stream=settings.log, observe=metrics.observe)]
    if settings.cors:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["*"],
            )
        )
    if settings.api_key:
        middleware.append(Middleware(ApiKey, key=settings.api_key))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.manager = manager
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.responses = responses_api.ResponseStore()
    return app
