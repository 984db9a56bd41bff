"""The one client of the Hugging Face Hub (or a mirror): metadata, file bytes, retries.

A :class:`Hub` holds the endpoint (``HF_ENDPOINT``, passed explicitly because huggingface_hub reads
it only at import), the token (``HF_TOKEN`` or ``hf auth login``), the offline flag and one
:class:`RetryPolicy`, all read through :mod:`localllm.config` when it is made.

- Metadata (:meth:`Hub.list_files`) goes through huggingface_hub's ``HfApi``: it knows the Hub's
  API and error codes.
- File bytes (:meth:`Hub.open`: range reads of headers, downloads) go through one urllib opener:
  its ``read1`` moves bytes several times faster than httpx (see docs/benchmarks.md), and it
  honours HTTP(S)_PROXY / NO_PROXY from the environment. The token is an unredirected header, so
  it is never sent on to a CDN after a redirect.
- Every request runs under :meth:`Hub.retrying`: transient failures (no connection, 5xx, 429 with
  its Retry-After, a dropped transfer) are retried with exponential backoff; every failure ends as
  one exception of :mod:`localllm.hub.errors`.

Offline (``--offline`` or ``HF_HUB_OFFLINE=1``) no request is made at all: :class:`OfflineError`.
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from localllm import __version__, config

from . import errors
from .errors import offline_error  # noqa: F401 - part of this module's API for callers

if TYPE_CHECKING:
    from huggingface_hub import HfApi

T = TypeVar("T")
USER_AGENT = f"localllm/{__version__}"
METADATA_RETRIES = 3


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 6  # attempts in a row without progress before giving up
    backoff: float = 1.0  # first wait; doubles each time
    max_backoff: float = 60.0
    stall_timeout: float = 30.0  # no byte for this long: reconnect
    connect_timeout: float = 20.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Defaults, overridable (mostly for tests) by LOCALLLM_DOWNLOAD_RETRIES / _BACKOFF / _STALL."""
        return cls(
            retries=config.download_retries(cls.retries),
            backoff=config.download_backoff(cls.backoff),
            stall_timeout=config.download_stall(cls.stall_timeout),
        )

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        if retry_after is not None:
            wait = min(self.max_backoff, max(wait, retry_after))
        return wait


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
    """One endpoint, one token, one retry policy. Makes no request while offline."""

    def __init__(
        self,
        *,
        offline: bool = False,
        endpoint_url: str | None = None,
        token: str | None = None,
        policy: RetryPolicy | None = None,
        retries: int | None = None,
        backoff: float | None = None,
    ) -> None:
        self.offline = config.offline(offline)
        self.endpoint = (endpoint_url or config.hf_endpoint()).rstrip("/")
        self._token = token if token is not None else config.hf_token()
        policy = policy or RetryPolicy.from_env()
        if retries is not None:
            policy = dataclasses.replace(policy, retries=retries)
        if backoff is not None:
            policy = dataclasses.replace(policy, backoff=backoff)
        self.policy = policy
        # Listings and header reads are small and nothing is lost by failing: give up after a few
        # seconds (1 + 2 + 4 s by default), not after a download's minute of patience.
        self.metadata_policy = dataclasses.replace(policy, retries=min(policy.retries, METADATA_RETRIES))
        self._api: HfApi | None = None
        self._opener: urllib.request.OpenerDirector | None = None

    @property
    def token(self) -> str | None:
        if self._token is None and not self.offline:
            from huggingface_hub import get_token

            self._token = get_token() or ""  # the token `hf auth login` stored
        return self._token or None

    @property
    def retries(self) -> int:
        return self.policy.retries

    def check_online(self) -> None:
        if self.offline:
            raise errors.offline_request(self.endpoint)

    def resolve_url(self, repo: str, path: str, revision: str = "main") -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    # --- metadata (huggingface_hub) ------------------------------------------------------------

    def api(self) -> HfApi:
        self.check_online()
        if self._api is None:
            from huggingface_hub import HfApi, constants

            # The library froze HF_HUB_OFFLINE at import; we decided above, from the live environment.
            constants.HF_HUB_OFFLINE = False
            self._api = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api

    def list_files(self, repo: str, revision: str = "main") -> RepoListing:
        """Every file of ``repo`` at ``revision`` with its size and LFS sha256."""
        api = self.api()
        info = self.retrying(lambda: api.model_info(repo, revision=revision), repo)
        commit = info.sha or revision
        entries = self.retrying(
            lambda: list(api.list_repo_tree(repo, revision=commit, recursive=True, expand=True)), repo
        )
        from huggingface_hub import RepoFolder

        files = []
        for entry in entries:
            if isinstance(entry, RepoFolder):
                continue
            lfs = getattr(entry, "lfs", None)
            files.append(HubFile(path=entry.path, size=int(entry.size), sha256=lfs.sha256 if lfs else None))
        return RepoListing(repo=repo, revision=commit, files=tuple(files))

    # --- file bytes (urllib) --------------------------------------------------------------------

    def open(
        self,
        url: str,
        start: int = 0,
        end: int | None = None,
        *,
        what: str | None = None,
        repo: str | None = None,
        method: str = "GET",
        timeout: float | None = None,
    ) -> http.client.HTTPResponse:
        """One request for ``url``, bytes ``start``..``end`` (inclusive; None: to the end).

        Returns the response (200 when the server ignored the range, else 206); raises a
        :mod:`~localllm.hub.errors` exception naming ``what`` (default the url) and, for errors
        about the repository, ``repo``. Not retried: run it under :meth:`retrying`."""
        self.check_online()
        request = urllib.request.Request(url, method=method)
        request.add_header("User-Agent", USER_AGENT)
        if self.token:
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        if start or end is not None:
            request.add_header("Range", f"bytes={start}-{'' if end is None else end}")
        if self._opener is None:
            self._opener = urllib.request.build_opener()  # proxies from the environment
        try:
            return self._opener.open(request, timeout=timeout or self.policy.stall_timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise errors.response_error(
                    exc.code, exc.headers, what or url, repo=repo, endpoint=self.endpoint
                ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise errors.no_network_error(exc, self.endpoint) from exc

    # --- the one retry loop ---------------------------------------------------------------------

    def retrying(
        self,
        fn: Callable[[], T],
        what: str,
        *,
        policy: RetryPolicy | None = None,
        cancel: threading.Event | None = None,
        progressed: Callable[[], bool] | None = None,
        give_up: Callable[[errors.LocalLLMError], errors.LocalLLMError] | None = None,
    ) -> T:
        """``fn()``, retried while it fails transiently; every failure ends as a mapped error.

        ``progressed`` (asked after each failure) says whether the attempt moved forward: then the
        count of retries starts afresh. ``give_up`` may replace the error raised once retries are
        spent. A set ``cancel`` cuts a wait short; ``fn`` is then called once more and should stop.
        """
        policy = policy or self.metadata_policy
        attempt = 0
        reached = False  # whether this operation ever got bytes through (then an unreachable Hub is a blip)
        while True:
            try:
                return fn()
            except Exception as exc:  # mapped, or re-raised as it is
                error = errors.map_error(exc, what, endpoint=self.endpoint)
                if error is None:
                    raise
                moved = progressed is not None and progressed()
                reached = reached or moved
                unreachable_blip = isinstance(error, errors.UnreachableError) and reached
                if not getattr(error, "transient", False) and not unreachable_blip:
                    if error is exc:
                        raise
                    raise error from exc
                if moved:
                    attempt = 0
                attempt += 1
                if attempt > policy.retries:
                    final = give_up(error) if give_up is not None else error
                    if final is exc:
                        raise
                    raise final from exc
                wait = policy.wait(attempt, getattr(error, "retry_after", None))
            if cancel is not None:
                cancel.wait(wait)
            else:
                time.sleep(wait)
