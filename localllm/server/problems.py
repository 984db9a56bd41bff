"""Every error a request can meet, mapped to an HTTP status and each API's error body.

OpenAI routes answer ``{"error": {"message", "type", "param", "code"}}`` (what the ``openai``
client turns into its exceptions); Anthropic's ``/v1/messages`` routes answer ``{"type": "error",
"error": {"type", "message"}}``; Ollama routes answer ``{"error": "..."}``. Nothing answers
with a traceback.
"""

from __future__ import annotations

import math
import sys
import traceback
from typing import TextIO

from starlette.responses import JSONResponse

from localllm import errors


class RequestError(Exception):
    """A request the server cannot take as it is (HTTP 400 unless ``status`` says otherwise)."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        status: int = 400,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.headers = headers or {}


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def _retry_after(exc: Exception) -> dict[str, str]:
    seconds = getattr(exc, "retry_after_s", 1.0) or 1.0
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _status_of(exc: errors.LocalLLMError) -> tuple[int, str | None, dict[str, str]]:
    if isinstance(exc, errors.ModelNotFoundError):
        return 404, "model_not_found", {}
    if isinstance(exc, errors.ContextOverflowError):
        return 400, "context_length_exceeded", {}
    if isinstance(exc, errors.CollectionNotFoundError):
        return 404, "collection_not_found", {}
    if isinstance(exc, (errors.GrammarError, errors.UsageError, errors.DocumentsError)):
        return 400, None, {}
    if isinstance(exc, (errors.ServerBusyError, errors.QueueFullError, errors.EngineClosedError)):
        return 503, "server_busy", _retry_after(exc)
    if isinstance(exc, errors.DoesNotFitError):
        return 500, "model_does_not_fit", {}
    return 500, None, {}


def from_exception(exc: BaseException, *, debug: bool = False, log: TextIO | None = None) -> RequestError:
    """The RequestError for any exception a route raised. A 500 from an unexpected exception is a
    bug: its whole traceback goes to the log (``log``, else stderr), the client gets a message
    without it. With ``debug`` (``serve --debug``) every error answered with a 5xx logs its
    traceback too."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, errors.LocalLLMError):
        status, code, headers = _status_of(exc)
        if debug and status >= 500:
            _log_traceback(f"error answered with {status}:", exc, log)
        param = exc.field if isinstance(exc, errors.UsageError) else None
        return RequestError(errors.one_line(exc), param, status=status, code=code, headers=headers)
    _log_traceback("internal error:", exc, log)
    return RequestError("internal server error (see the server's log)", status=500)


def _log_traceback(what: str, exc: BaseException, log: TextIO | None) -> None:
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    print(f"localllm serve: {what}\n{stack}", file=log or sys.stderr, flush=True)


def openai_body(problem: RequestError) -> dict:
    return {
        "error": {
            "message": problem.message,
            "type": _TYPES.get(problem.status, "server_error"),
            "param": problem.param,
            "code": problem.code,
        }
    }


def ollama_body(problem: RequestError) -> dict:
    return {"error": problem.message}


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_body(problem: RequestError) -> dict:
    """``{"type": "error", "error": {"type", "message"}}``, what the ``anthropic`` client reads."""
    kind = _ANTHROPIC_TYPES.get(problem.status, "invalid_request_error" if problem.status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": problem.message}}


def is_ollama(path: str) -> bool:
    return path.startswith("/api/")


def is_anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def response(problem: RequestError, path: str) -> JSONResponse:
    """The error response for a route under ``path``, in that API's shape."""
    if is_ollama(path):
        body = ollama_body(problem)
    elif is_anthropic(path):
        body = anthropic_body(problem)
    else:
        body = openai_body(problem)
    return JSONResponse(body, status_code=problem.status, headers=problem.headers)
