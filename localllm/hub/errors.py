"""Every error of talking to the Hub (or a mirror) and of downloading from it, and the one mapping
onto them.

:func:`status_error` turns an HTTP status, the Hub's ``X-Error-Code`` and what was asked into an
exception; listings (through huggingface_hub), header reads and downloads (through urllib) all end
there, so a missing file is the same exception whichever way it was asked for. :func:`map_error`
turns library and transport exceptions (huggingface_hub, httpx, urllib, sockets) into the same
classes. Messages name the endpoint in use: "on the Hub", or "on <mirror url>" when
``HF_ENDPOINT`` points elsewhere, and only send people to huggingface.co pages when it is the Hub.

An error whose ``transient`` is true (server errors, rate limits, no connection, a dropped
transfer) is worth retrying; :meth:`localllm.hub.client.Hub.retrying` does that.
"""

from __future__ import annotations

import errno
import sys
import time

from localllm import config
from localllm.errors import LocalLLMError, NetworkError

# Local file-system errors: never a network problem, never retried.
LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


# --- the Hub -----------------------------------------------------------------------------------


class HubError(NetworkError):
    """The Hub answered with an error, or could not be reached."""

    transient = False

    def __init__(
        self, message: str, hint: str | None = None, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint)
        self.status = status  # the HTTP status, when there was one
        self.retry_after = retry_after  # seconds the server asked us to wait (429, 503)


class RepoNotFoundError(HubError):
    """No such repository (or it is private and no token was sent)."""


class HubFileNotFoundError(HubError):
    """The repository exists but not the file, quantization or revision asked for."""


class GatedRepoError(HubError):
    """The repository requires accepting its licence on the Hub first."""


class HubAuthError(HubError):
    """401 or 403: the token is missing, invalid or lacks access."""


class HubServerError(HubError):
    """The Hub answered 5xx or 429 (rate limited): retried, then given up on."""

    transient = True


class NoNetworkError(HubError):
    """The Hub could not be reached at all (DNS, refused connection, timeout, proxy)."""

    transient = True


class UnreachableError(NoNetworkError):
    """No connection could be made at all: the name did not resolve, or the connection was refused
    or had no route. Offline, retrying only makes the user wait: it is given up on at once, unless
    the same operation had reached the Hub before (a download whose connection dropped)."""

    transient = False


class OfflineError(HubError):
    """Offline mode is on and what was asked for is not available locally."""


# --- downloads ---------------------------------------------------------------------------------


class DownloadError(NetworkError):
    """A download failed after its retries; the partial data is kept for the next pull."""

    transient = False


class TransferInterrupted(DownloadError):
    """The connection closed early or answered an unexpected range: retried from the bytes on disk."""

    transient = True


class DiskFullError(LocalLLMError):
    """Not enough free disk space for the download."""


class DownloadPermissionError(LocalLLMError):
    """The models directory (or the destination) cannot be written."""


class IntegrityError(LocalLLMError):
    """The downloaded data did not match the Hub's sha256 and was deleted."""


class DownloadBusyError(LocalLLMError):
    """Another process is downloading the same file."""


class DownloadCancelled(LocalLLMError):
    """Stopped on request; the partial data is kept and the next pull resumes."""

    exit_code = 130


# --- naming the endpoint -------------------------------------------------------------------------


def _is_mirror(endpoint: str | None) -> bool:
    endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
    return endpoint != config.DEFAULT_HF_ENDPOINT


def place(endpoint: str | None = None) -> str:
    """``the Hub``, or the mirror's url: where a request went, for messages."""
    endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
    return endpoint if _is_mirror(endpoint) else "the Hub"


def _token_hint(endpoint: str | None) -> str:
    if _is_mirror(endpoint):
        return f"set HF_TOKEN to a token {place(endpoint)} accepts (or run `hf auth login`)"
    return "create a token at https://huggingface.co/settings/tokens and set HF_TOKEN (or run `hf auth login`)"


# Offline mode is HF_HUB_OFFLINE=1 for every command, or `pull --offline`: the hints name only these.
OFFLINE_OFF_HINT = "turn offline mode off (unset HF_HUB_OFFLINE, or leave out pull's --offline)"


def offline_error(what: str) -> OfflineError:
    return OfflineError(
        f"{what} is not installed and offline mode is on",
        hint=f"to download it, connect and {OFFLINE_OFF_HINT}; `localllm list` shows what is installed",
    )


def offline_request(endpoint: str | None = None) -> OfflineError:
    """The error for any request attempted while offline (none is made)."""
    return OfflineError(
        f"offline mode is on: no request to {place(endpoint)} is made",
        hint=f"to reach it, {OFFLINE_OFF_HINT}",
    )


# --- the one mapping ---------------------------------------------------------------------------


def status_error(
    status: int,
    what: str,
    code: str | None = None,
    *,
    repo: str | None = None,
    endpoint: str | None = None,
    retry_after: float | None = None,
) -> HubError:
    """The error for an HTTP status and the Hub's ``X-Error-Code`` (when it sent one).

    ``what`` names what was asked (a repository, a file); ``repo`` is named instead when the code
    is about the repository itself."""
    where, hub = place(endpoint), not _is_mirror(endpoint)
    token_hint = _token_hint(endpoint)
    subject = repo or what
    if code == "GatedRepo":
        page = (
            "open the model's page on the Hub, accept the licence while logged in"
            if hub
            else (f"accept the model's licence on {where} while logged in")
        )
        return GatedRepoError(
            f"{subject} is gated: its licence must be accepted on {where} before download",
            hint=f"{page}, then {token_hint}",
            status=status,
        )
    if code == "RepoNotFound":
        return RepoNotFoundError(
            f"repository {subject} not found on {where}",
            hint=f"check the owner/repo spelling; if it is private, {token_hint}",
            status=status,
        )
    if code in ("EntryNotFound", "RevisionNotFound") or status == 404:
        return HubFileNotFoundError(
            f"{what}: not found on {where}", hint="check the file name or revision", status=status
        )
    if status == 401:
        return HubAuthError(
            f"{what}: not authorized (401) by {where}",
            hint=f"the token is missing or invalid: {token_hint}",
            status=status,
        )
    if status == 403:
        licence = "accept the model's licence on the Hub" if hub else f"accept the model's licence on {where}"
        return HubAuthError(
            f"{what}: access forbidden (403) by {where}",
            hint=f"your token lacks access: {licence} or use a token with read access",
            status=status,
        )
    if status == 429:
        return HubServerError(
            f"{what}: {where} answered 429 (rate limited, server error)",
            hint="wait a while and try again",
            status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return HubServerError(
            f"{what}: {where} answered {status} (server error)",
            hint="try again later",
            status=status,
            retry_after=retry_after,
        )
    return HubError(f"{what}: {where} answered {status}", status=status)


def response_error(
    status: int, headers, what: str, *, repo: str | None = None, endpoint: str | None = None
) -> HubError:
    """:func:`status_error` for a response's status and headers (any mapping with ``get``)."""
    code = headers.get("X-Error-Code") if headers is not None else None
    retry_after = retry_after_seconds(headers.get("Retry-After")) if headers is not None else None
    return status_error(status, what, code, repo=repo, endpoint=endpoint, retry_after=retry_after)


# errno values of a connection that could not be made at all (as opposed to one that dropped).
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)


def _connect_failure(exc: BaseException) -> str | None:
    """Why no connection could be made, in words, if that is what ``exc`` (or what it wraps) says;
    None for a failure after connecting (a reset, a read timeout), which is worth retrying."""
    import socket
    import urllib.error

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "the name does not resolve (no network, or no DNS)"
        if isinstance(current, OSError) and current.errno in _UNREACHABLE_ERRNOS:
            return {
                errno.ECONNREFUSED: "the connection was refused",
                errno.ENETUNREACH: "the network is unreachable",
                errno.ENETDOWN: "the network is down",
            }.get(current.errno, "there is no route to the host")
        if isinstance(current, urllib.error.URLError) and isinstance(current.reason, BaseException):
            current = current.reason
            continue
        current = current.__cause__ or current.__context__
    return None


def no_network_error(exc: BaseException, endpoint: str | None = None) -> NoNetworkError:
    endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
    at = f"the Hub at {endpoint}" if not _is_mirror(endpoint) else f"the Hub mirror at {endpoint}"
    why = _connect_failure(exc)
    kind = NoNetworkError if why is None else UnreachableError
    return kind(
        f"cannot reach {at}: {why or short(exc)}",
        hint="check your connection, proxy (HTTPS_PROXY) or HF_ENDPOINT; installed models still work offline "
        "(HF_HUB_OFFLINE=1)",
    )


def map_error(exc: BaseException, what: str, *, endpoint: str | None = None) -> LocalLLMError | None:
    """The error for a library or transport exception; None for anything else (a bug, a local
    file-system error), which the caller re-raises as it is."""
    if isinstance(exc, LocalLLMError):
        return exc
    if "huggingface_hub" in sys.modules:
        mapped = _map_hf(exc, what, endpoint)
        if mapped is not None:
            return mapped
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if response is not None and status is not None:
        return response_error(status, response.headers, what, endpoint=endpoint)
    import http.client
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return response_error(exc.code, exc.headers, what, endpoint=endpoint)
    if "httpx2" in sys.modules:
        import httpx2

        if isinstance(exc, httpx2.TransportError):
            return no_network_error(exc, endpoint)
    if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
        return None
    if isinstance(exc, (OSError, http.client.HTTPException)):  # refused, reset, timeouts, URLError
        return no_network_error(exc, endpoint)
    return None


def _map_hf(exc: BaseException, what: str, endpoint: str | None) -> LocalLLMError | None:
    from huggingface_hub import errors as hf

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    headers = response.headers if response is not None else {}
    code = headers.get("X-Error-Code")
    # GatedRepoError subclasses RepositoryNotFoundError: check it first.
    if isinstance(exc, hf.GatedRepoError):
        return status_error(status or 401, what, "GatedRepo", endpoint=endpoint)
    if isinstance(exc, (hf.RevisionNotFoundError, hf.EntryNotFoundError, hf.RemoteEntryNotFoundError)):
        return status_error(status or 404, what, code or "EntryNotFound", endpoint=endpoint)
    if isinstance(exc, hf.RepositoryNotFoundError):
        if code is None and status == 401:  # a 401 without the Hub's code: a bad token
            return status_error(401, what, endpoint=endpoint)
        return status_error(status or 404, what, "RepoNotFound", endpoint=endpoint)
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return offline_request(endpoint)
    if isinstance(exc, hf.HfHubHTTPError):
        return response_error(status or 0, headers, what, endpoint=endpoint)
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) in seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def short(exc: BaseException) -> str:
    """The first line of what an exception says, without urllib's ``<urlopen error ...>`` wrapper."""
    import urllib.error

    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return short(reason)
        text = str(reason).strip().splitlines()
    else:
        text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
