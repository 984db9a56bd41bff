"""Hugging Face Hub metadata: which files a repository holds, their sizes and sha256.

huggingface_hub does what it does well here: the endpoint (``HF_ENDPOINT``, passed explicitly
because the library reads it only at import), the token (``HF_TOKEN`` or ``hf auth login``),
proxies and certificates (its httpx client reads the environment), and the error codes the Hub
sends. The bytes themselves are fetched by :mod:`localllm.download`.

Every failure becomes one :class:`HubError` subclass with a one-line message and a hint. Offline
mode (``--offline`` or ``HF_HUB_OFFLINE=1``) is decided here, from the environment at call time,
and makes no request at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from localllm.errors import LocalLLMError, NetworkError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
T = TypeVar("T")


# --- errors --------------------------------------------------------------------------------


class HubError(NetworkError):
    """The Hub answered with an error, or could not be reached."""


class RepoNotFoundError(HubError):
    """No such repository (or it is private and no token was sent)."""


class HubFileNotFoundError(HubError):
    """The repository exists but not the file, quantization or revision asked for."""


class GatedRepoError(HubError):
    """The repository requires accepting its licence on the Hub first."""


class HubAuthError(HubError):
    """401 or 403: the token is missing, invalid or lacks access."""


class HubServerError(HubError):
    """The Hub kept answering 5xx."""


class NoNetworkError(HubError):
    """The Hub could not be reached at all (DNS, refused connection, timeout, proxy)."""


class OfflineError(HubError):
    """Offline mode is on and the model is not installed."""


# --- environment -----------------------------------------------------------------------------


def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_offline(flag: bool = False) -> bool:
    """``--offline`` or ``HF_HUB_OFFLINE=1`` (read now, not at import)."""
    return flag or _true(os.environ.get("HF_HUB_OFFLINE"))


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_error(what: str) -> OfflineError:
    return OfflineError(
        f"{what} is not installed and offline mode is on",
        hint="connect and run without --offline / HF_HUB_OFFLINE=1 to download it; `localllm list` shows what is installed",
    )


# --- metadata --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    path: str  # inside the repository
    size: int
    sha256: str | None  # the LFS oid; None for small files kept in git


@dataclass(frozen=True)
class RepoListing:
    repo: str
    revision: str  # the commit the listing was taken at
    files: tuple[HubFile, ...]

    def gguf_files(self) -> list[HubFile]:
        return [f for f in self.files if f.path.lower().endswith(".gguf")]

    def get(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)


class Hub:
    """Metadata calls against one endpoint with one token. Makes no request while offline."""

    def __init__(self, *, offline: bool = False, endpoint_url: str | None = None, token: str | None = None,
                 retries: int = 3, backoff: float = 1.0) -> None:
        self.offline = is_offline(offline)
        self.endpoint = (endpoint_url or endpoint()).rstrip("/")
        self._token = token
        self.retries = retries
        self.backoff = backoff
        self._api: HfApi | None = None

    @property
    def token(self) -> str | None:
        if self._token is None and not self.offline:
            from huggingface_hub import get_token

            self._token = get_token() or ""  # HF_TOKEN, or the token `hf auth login` stored
        return self._token or None

    def api(self) -> HfApi:
        if self.offline:
            raise OfflineError("offline mode is on: no request to the Hub is made")
        if self._api is None:
            from huggingface_hub import HfApi, constants

            # The library froze HF_HUB_OFFLINE at import; we decided above, from the live environment.
            constants.HF_HUB_OFFLINE = False
            self._api = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api

    def resolve_url(self, repo: str, path: str, revision: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def headers(self) -> dict[str, str]:
        """Headers for file downloads: user agent and, when there is one, the token."""
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token or False, library_name="localllm")

    def list_files(self, repo: str, revision: str = "main") -> RepoListing:
        """Every file of ``repo`` at ``revision`` with its size and LFS sha256."""
        api = self.api()
        info = self._call(repo, lambda: api.model_info(repo, revision=revision))
        commit = info.sha or revision
        entries = self._call(repo, lambda: list(api.list_repo_tree(repo, revision=commit, recursive=True, expand=True)))
        files = []
        for entry in entries:
            if not hasattr(entry, "blob_id"):  # a folder
                continue
            lfs = getattr(entry, "lfs", None)
            files.append(HubFile(path=entry.path, size=int(entry.size), sha256=lfs.sha256 if lfs else None))
        return RepoListing(repo=repo, revision=commit, files=tuple(files))

    def _call(self, repo: str, fn: Callable[[], T]) -> T:
        """Run one metadata call, retrying 5xx and network errors with backoff; map errors."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - every library error is mapped or re-raised
                mapped = map_error(exc, repo)
                if mapped is None:
                    raise
                if isinstance(mapped, (HubServerError, NoNetworkError)) and attempt < self.retries:
                    time.sleep(self.backoff * (2**attempt))
                    attempt += 1
                    continue
                raise mapped from exc


def map_error(exc: BaseException, repo: str) -> LocalLLMError | None:
    """The HubError for a huggingface_hub / httpx exception; None for anything else."""
    from huggingface_hub import errors as hf

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    code = response.headers.get("X-Error-Code") if response is not None else None
    # GatedRepoError subclasses RepositoryNotFoundError: check it first.
    if isinstance(exc, hf.GatedRepoError):
        return status_error(status or 401, repo, "GatedRepo")
    if isinstance(exc, (hf.RevisionNotFoundError, hf.EntryNotFoundError, hf.RemoteEntryNotFoundError)):
        return HubFileNotFoundError(f"{repo}: not found on the Hub ({_short(exc)})", hint="check the file name or revision")
    if isinstance(exc, hf.RepositoryNotFoundError):
        if code is None and status == 401:  # a 401 without the Hub's code: a bad token
            return status_error(401, repo)
        return status_error(status or 404, repo, "RepoNotFound")
    if isinstance(exc, hf.OfflineModeIsEnabled):
        return OfflineError("offline mode is on: no request to the Hub is made")
    if isinstance(exc, hf.HfHubHTTPError) or status is not None:
        return status_error(status or 0, repo, code)
    import httpx2

    if isinstance(exc, httpx2.TransportError):
        return no_network_error(exc)
    if isinstance(exc, OSError):
        return no_network_error(exc)
    return None


def status_error(status: int, what: str, code: str | None = None) -> HubError:
    """The error for an HTTP status and the Hub's ``X-Error-Code`` (when it sent one)."""
    token_hint = "create a token at https://huggingface.co/settings/tokens and set HF_TOKEN (or run `hf auth login`)"
    if code == "GatedRepo":
        return GatedRepoError(
            f"{what} is gated: its licence must be accepted on the Hub before download",
            hint=f"open the model's page on the Hub, accept the licence while logged in, then {token_hint}",
        )
    if code == "RepoNotFound":
        return RepoNotFoundError(
            f"repository {what} not found on the Hub",
            hint=f"check the owner/repo spelling; if it is private, {token_hint}",
        )
    if code in ("EntryNotFound", "RevisionNotFound") or status == 404:
        return HubFileNotFoundError(f"{what}: not found on the Hub", hint="check the file name or revision")
    if status == 401:
        return HubAuthError(f"{what}: not authorized (401)", hint=f"the token is missing or invalid: {token_hint}")
    if status == 403:
        return HubAuthError(
            f"{what}: access forbidden (403)",
            hint="your token lacks access: accept the model's licence on the Hub or use a token with read access",
        )
    if status >= 500:
        return HubServerError(f"{what}: the Hub answered {status} (server error) after retries", hint="try again later")
    return HubError(f"{what}: the Hub answered {status}")


def no_network_error(exc: BaseException) -> NoNetworkError:
    return NoNetworkError(
        f"cannot reach the Hub at {endpoint()}: {_short(exc)}",
        hint="check your connection, proxy (HTTPS_PROXY) or HF_ENDPOINT; installed models still work with --offline",
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
