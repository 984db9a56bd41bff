"""Resumable, verified downloads of one file.

huggingface_hub neither resumes a download across calls nor hashes what it fetched, so the bytes
are ours to fetch. Data is appended to ``<models>/.partial/<sha256>.part`` (a JSON sidecar beside it
records the url, size and ETag) while it is hashed; an interrupted download (Ctrl-C, SIGKILL, a
dropped connection, a reboot) continues from the bytes on disk: the existing prefix is re-hashed
once (hashlib cannot save its state) and the rest is fetched with ``Range``. Transient failures
(connection reset, stalls, 5xx, 429) are retried with exponential backoff. Only a file whose size
and sha256 match is renamed into place, atomically; a mismatch deletes the data and says so.

A lock file keeps two processes from writing one download; free disk space is checked before the
first byte. ``cancel`` (a :class:`threading.Event`) stops between chunks and keeps the partial.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm import paths
from localllm.errors import LocalLLMError, NetworkError
from localllm.fs import FileLock
from localllm.models import store

CHUNK = 1 << 20
DISK_MARGIN = 64 << 20  # keep this much free beyond the download itself
PROGRESS_INTERVAL = 0.1  # seconds between progress callbacks


# --- errors --------------------------------------------------------------------------------


class DownloadError(NetworkError):
    """A download failed after its retries; the partial data is kept for the next pull."""


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


# --- progress and policy -------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    label: str
    done: int
    total: int
    speed: float  # bytes per second over the last few seconds
    eta: float | None  # seconds left, None while the speed is unknown
    resumed_from: int = 0  # bytes that were already on disk when this download started


ProgressCallback = Callable[[Progress], None]


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
        env = os.environ
        return cls(
            retries=int(env.get("LOCALLLM_DOWNLOAD_RETRIES", cls.retries)),
            backoff=float(env.get("LOCALLLM_DOWNLOAD_BACKOFF", cls.backoff)),
            stall_timeout=float(env.get("LOCALLLM_DOWNLOAD_STALL", cls.stall_timeout)),
        )


class _Speed:
    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0


class _Complete(Exception):
    """The server says the range starts at the end: everything is already on disk."""


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.status = status


def _retry_after(value: str | None) -> float | None:
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


# --- partial files ---------------------------------------------------------------------------


def partial_paths(key: str) -> tuple[Path, Path, Path]:
    """(data, sidecar, lock) of the download identified by ``key`` (the sha256).

    A completed download waits as ``<key>.gguf`` until its model is installed."""
    base = store.partial_dir()
    return base / f"{key}.part", base / f"{key}.json", base / f"{key}.lock"


def partials() -> list[dict[str, Any]]:
    """Downloads in progress or interrupted: their sidecars, with ``bytes`` on disk added."""
    found = []
    base = store.partial_dir()
    if not base.is_dir():
        return found
    for side in sorted(base.glob("*.json")):
        try:
            info = json.loads(side.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        part, done = side.with_suffix(".part"), side.with_suffix(".gguf")
        info["bytes"] = done.stat().st_size if done.exists() else part.stat().st_size if part.exists() else 0
        info["key"] = side.stem
        found.append(info)
    return found


def discard_partial(key: str) -> None:
    part, side, _ = partial_paths(key)
    for path in (part, part.with_suffix(".gguf"), side):
        path.unlink(missing_ok=True)


def _write_sidecar(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info), "utf-8")
    os.replace(tmp, path)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def check_disk_space(folder: Path, needed: int) -> None:
    paths.ensure_dir(folder)
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise DiskFullError(
            f"not enough disk space in {folder}: {_mb(needed)} needed, {_mb(free)} free",
            hint="free some space (or set LOCALLLM_HOME to a bigger disk) and run the pull again",
        )


# --- the download ----------------------------------------------------------------------------


def download(
    url: str,
    *,
    size: int,
    sha256: str | None,
    headers: dict[str, str] | None = None,
    label: str = "file",
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    policy: RetryPolicy | None = None,
    meta: dict[str, Any] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Path:
    """Fetch ``url`` (resuming, verified); returns the complete file, ``.partial/<sha256>.gguf``.

    The caller moves the returned file into place (:func:`localllm.store.install_file`) once every
    file of a model is there, so a model with several parts is never half-installed. Without a
    ``sha256`` (a small file kept in git, not LFS) only the size is checked. ``meta`` is stored in
    the sidecar (the model the file belongs to, for ``localllm rm``). ``on_wait`` is told when
    another process holds this download; without it that is an error.
    """
    policy = policy or RetryPolicy.from_env()
    key = sha256.lower() if sha256 else hashlib.sha256(url.encode()).hexdigest()
    part, side, lock_path = partial_paths(key)
    done = part.with_suffix(".gguf")
    try:
        paths.ensure_dir(part.parent)
    except PermissionError as exc:
        raise _permission(exc) from exc
    lock = FileLock(lock_path)
    if not lock.try_acquire():
        if on_wait is None:
            raise DownloadBusyError(
                f"{label} is already being downloaded by another localllm process",
                hint="wait for it to finish, or stop it; this pull can then resume its data",
            )
        on_wait(f"another localllm process is downloading {label}; waiting for it")
        if not lock.acquire(cancel):
            raise DownloadCancelled(f"stopped waiting for {label}")
    try:
        if done.is_file() and done.stat().st_size == size:
            return done  # finished earlier (by us or by the process we waited for)
        _fetch(url, part, side, size=size, sha256=sha256.lower() if sha256 else None, headers=headers or {},
               label=label, progress=progress, cancel=cancel, policy=policy, meta=meta or {})
        os.replace(part, done)
        return done
    finally:
        lock.release()


def finish(done: Path) -> None:
    """Forget the bookkeeping of a completed download once its file has moved into place."""
    key = done.name.removesuffix(".gguf")
    for path in partial_paths(key)[1:]:
        path.unlink(missing_ok=True)


def _permission(exc: OSError) -> DownloadPermissionError:
    return DownloadPermissionError(
        f"permission denied: {exc.filename or exc}",
        hint="make the models directory writable, or set LOCALLLM_HOME to a folder you own",
    )


def _fetch(url: str, part: Path, side: Path, *, size: int, sha256: str | None, headers: dict[str, str], label: str,
           progress: ProgressCallback | None, cancel: threading.Event | None, policy: RetryPolicy,
           meta: dict[str, Any]) -> None:
    from .client import OfflineError, is_offline

    if is_offline():
        raise OfflineError("offline mode is on: no request to the Hub is made")

    info = _read_sidecar(side)
    have = part.stat().st_size if part.exists() else 0
    if info is None or info.get("size") != size or have > size:
        have = 0
    info = {"url": url, "size": size, "sha256": sha256, "etag": (info or {}).get("etag"), **meta}
    try:
        _write_sidecar(side, info)
        out = open(part, "r+b" if part.exists() else "w+b", buffering=0)  # noqa: SIM115 - closed below
    except PermissionError as exc:
        raise _permission(exc) from exc
    hasher = hashlib.sha256()
    try:
        out.truncate(have)
        # Re-hash what is already on disk (hashlib cannot persist its state across processes).
        out.seek(0)
        remaining = have
        while remaining:
            block = out.read(min(CHUNK * 4, remaining))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)
        have -= remaining
        out.seek(have)
        out.truncate(have)
        check_disk_space(part.parent, size - have)

        resumed_from = have
        speed = _Speed()
        last_report = 0.0
        attempt = 0

        def report(force: bool = False) -> None:
            nonlocal last_report
            now = time.monotonic()
            if progress is None or (not force and now - last_report < PROGRESS_INTERVAL):
                return
            last_report = now
            rate = speed.add(now, have)
            eta = (size - have) / rate if rate > 0 else None
            progress(Progress(label, have, size, rate, eta, resumed_from))

        while have < size:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"download of {label} stopped", hint=_resume_hint(have, size))
            start = have
            try:
                with _open(url, headers, have, policy) as response:
                    if have and response.status != 206:
                        # The server ignored the range: start over rather than append a second copy.
                        have = 0
                        hasher = hashlib.sha256()
                        out.seek(0)
                        out.truncate(0)
                    elif have and not (response.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
                        raise _Transient(f"server answered an unexpected range {response.headers.get('Content-Range')}")
                    etag = response.headers.get("X-Linked-Etag") or response.headers.get("ETag")
                    if etag and etag != info.get("etag"):
                        info["etag"] = etag
                        _write_sidecar(side, info)
                    sink = _Sink(out, hasher, label, have)
                    try:
                        # read1: whatever has arrived (up to CHUNK), so a dropped connection or a
                        # stall loses nothing already received.
                        while chunk := response.read1(CHUNK):
                            if have + len(chunk) > size:
                                chunk = chunk[: size - have]
                            sink.put(chunk)
                            have += len(chunk)
                            report()
                            if cancel is not None and cancel.is_set():
                                raise DownloadCancelled(f"download of {label} stopped", hint=_resume_hint(have, size))
                            if have >= size:
                                break
                    finally:
                        try:
                            sink.drain()  # what was received is on disk before anything else happens
                        finally:
                            sink.close()
                if have < size:
                    raise _Transient("connection closed early")
            except _Complete:
                break
            except urllib.error.HTTPError as exc:
                status = exc.code
                if status == 429 or status >= 500:
                    exc = _Transient(f"server answered {status}", _retry_after(exc.headers.get("Retry-After")), status)
                else:
                    from .client import status_error

                    code = exc.headers.get("X-Error-Code")
                    what = meta.get("repo") if code in ("GatedRepo", "RepoNotFound") else None
                    raise status_error(status, what or label, code) from None
                error: BaseException = exc
            except (_Transient, OSError, http.client.HTTPException) as exc:
                # OSError covers refused/reset connections, timeouts (stalls) and URLError.
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                error = exc
            else:
                continue
            exc = error
            if have > start:
                attempt = 0  # it was making progress: a fresh run of retries
            attempt += 1
            if attempt > policy.retries:
                status = getattr(exc, "status", None)
                if status is not None and status >= 500:
                    from .client import status_error

                    raise status_error(status, label) from exc
                raise DownloadError(
                    f"download of {label} failed after {policy.retries} retries: {exc or type(exc).__name__}",
                    hint=_resume_hint(have, size),
                ) from exc
            wait = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                wait = min(policy.max_backoff, max(wait, retry_after))
            if cancel is not None:
                if cancel.wait(wait):
                    raise DownloadCancelled(f"download of {label} stopped", hint=_resume_hint(have, size)) from exc
            else:
                time.sleep(wait)
        report(force=True)
        os.fsync(out.fileno())
    finally:
        out.close()

    digest = hasher.hexdigest()
    if have != size or (sha256 is not None and digest != sha256):
        part.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        raise IntegrityError(
            f"{label} failed verification: sha256 {digest[:12]}… ({have} bytes), expected {sha256[:12]}… "
            f"({size} bytes); the corrupt data was deleted",
            hint="run the pull again to download it afresh",
        )


class _Sink:
    """Writes each chunk at once and hashes it on a thread of its own.

    The receiving thread does what curl does (receive, write); sha256 runs beside it (hashlib
    releases the GIL), so on two cores hashing costs little wall time. What has been handed over
    is on disk when :meth:`put` returns; :meth:`drain` waits for the hash to catch up.
    """

    def __init__(self, out: Any, hasher: Any, label: str, at: int) -> None:
        import queue

        self.out, self.hasher, self.label = out, hasher, label
        self.written = at
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self.thread = threading.Thread(target=self._run, name="localllm-sha256", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            chunk = self.queue.get()
            try:
                if chunk is None:
                    return
                self.hasher.update(chunk)
            finally:
                self.queue.task_done()

    def put(self, chunk: bytes) -> None:
        _write(self.out, chunk, self.label, self.written)
        self.written += len(chunk)
        self.queue.put(chunk)

    def drain(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


_OPENER: urllib.request.OpenerDirector | None = None


def _open(url: str, headers: dict[str, str], have: int, policy: RetryPolicy) -> http.client.HTTPResponse:
    """GET ``url`` from byte ``have``. urllib, not httpx: its ``read1`` moves bytes several times
    faster (see docs/benchmarks.md), and it honours HTTP(S)_PROXY / NO_PROXY from the environment."""
    global _OPENER
    if _OPENER is None:
        _OPENER = urllib.request.build_opener()
    request = urllib.request.Request(url)
    for key, value in headers.items():
        if key.lower() == "authorization":
            request.add_unredirected_header(key, value)  # never sent on to a CDN after a redirect
        else:
            request.add_header(key, value)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        return _OPENER.open(request, timeout=policy.stall_timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            exc.close()
            raise _Complete() from None
        raise


def _write(out: Any, chunk: bytes, label: str, at: int) -> None:
    try:
        view = memoryview(chunk)
        while view:
            written = out.write(view)
            view = view[written:]
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"disk full while downloading {label} ({_mb(at)} written so far, kept for resume)",
                hint="free some space and run the pull again: it continues where it stopped",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _permission(exc) from exc
        raise


def _resume_hint(have: int, size: int) -> str:
    return f"{_mb(have)} of {_mb(size)} kept; the next pull resumes from there"
