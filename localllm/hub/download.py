"""Resumable, verified downloads of one file.

huggingface_hub neither resumes a download across calls nor hashes what it fetched, so the bytes
are ours to fetch, through :meth:`localllm.hub.client.Hub.open`. Data is appended to
``<models>/.partial/<sha256>.part`` (a JSON sidecar beside it records the url, size and ETag) while
it is hashed; an interrupted download (Ctrl-C, SIGKILL, a dropped connection, a reboot) continues
from the bytes on disk: the existing prefix is re-hashed once (hashlib cannot save its state) and
the rest is fetched with ``Range``. A server that ignores ``Range`` gets the file written afresh
from byte 0, never appended. Transient failures (connection reset, stalls, 5xx, 429) are retried
by the client's one retry loop; a run of retries starts afresh whenever bytes arrived. Only a file
whose size and sha256 match is renamed into place, atomically; a mismatch deletes the data and
says so.

A lock file keeps two processes from writing one download; free disk space is checked before the
first byte. ``cancel`` (a :class:`threading.Event`) stops between chunks and keeps the partial.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm import fs, paths
from localllm.errors import LocalLLMError
from localllm.format import format_bytes
from localllm.fs import FileLock
from localllm.models import store

from .client import Hub, RetryPolicy
from .errors import (
    DiskFullError,
    DownloadBusyError,
    DownloadCancelled,
    DownloadError,
    DownloadPermissionError,
    HubError,
    HubServerError,
    IntegrityError,
    TransferInterrupted,
)

__all__ = [
    "Progress", "ProgressCallback", "RetryPolicy", "download", "finish", "partials", "partial_paths",
    "discard_partial", "check_disk_space",
]  # fmt: skip

CHUNK = 1 << 20
DISK_MARGIN = 64 << 20  # keep this much free beyond the download itself
PROGRESS_INTERVAL = 0.1  # seconds between progress callbacks


@dataclass(frozen=True)
class Progress:
    label: str
    done: int
    total: int
    speed: float  # bytes per second over the last few seconds
    eta: float | None  # seconds left, None while the speed is unknown
    resumed_from: int = 0  # bytes that were already on disk when this download started


ProgressCallback = Callable[[Progress], None]


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


class _Reporter:
    """Progress callbacks, at most every :data:`PROGRESS_INTERVAL` seconds unless forced."""

    def __init__(self, progress: ProgressCallback | None, label: str, size: int, resumed_from: int) -> None:
        self.progress, self.label, self.size = progress, label, size
        self.resumed_from = resumed_from
        self.speed = _Speed()
        self.last = 0.0

    def restarted(self) -> None:
        """The server ignored the range: nothing was resumed after all."""
        self.resumed_from = 0
        self.speed = _Speed()

    def __call__(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is None or (not force and now - self.last < PROGRESS_INTERVAL):
            return
        self.last = now
        rate = self.speed.add(now, done)
        eta = (self.size - done) / rate if rate > 0 else None
        self.progress(Progress(self.label, done, self.size, rate, eta, self.resumed_from))


# --- partial files ---------------------------------------------------------------------------


def partial_paths(key: str) -> tuple[Path, Path, Path]:
    """(data, sidecar, lock) of the download identified by ``key`` (the sha256).

    A completed download waits as ``<key>.gguf`` until its model is installed."""
    base = store.partial_dir()
    return base / f"{key}.part", base / f"{key}.json", base / f"{key}.lock"


def partials() -> list[dict[str, Any]]:
    """Downloads in progress or interrupted: their sidecars, with ``bytes`` on disk added."""
    found: list[dict[str, Any]] = []
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
    """Record what the partial file belongs to; a disk that refuses it is one line, as for the data."""
    try:
        fs.atomic_write(path, json.dumps(info))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"disk full while recording the download in {path.parent}",
                hint="free some space and run the pull again: it continues where it stopped",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _permission(exc) from exc
        raise


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def check_disk_space(folder: Path, needed: int) -> None:
    paths.ensure_dir(folder)
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise DiskFullError(
            f"not enough disk space in {folder}: {format_bytes(needed)} needed, {format_bytes(free)} free",
            hint="free some space (or set LOCALLLM_HOME to a bigger disk) and run the pull again",
        )


# --- the download ----------------------------------------------------------------------------


def download(
    url: str,
    *,
    size: int,
    sha256: str | None,
    hub: Hub | None = None,
    label: str = "file",
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    policy: RetryPolicy | None = None,
    meta: dict[str, Any] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Path:
    """Fetch ``url`` (resuming, verified); returns the complete file, ``.partial/<sha256>.gguf``.

    The caller moves the returned file into place (:func:`localllm.models.store.install_file`) once
    every file of a model is there, so a model with several parts is never half-installed. Without
    a ``sha256`` (a small file kept in git, not LFS) only the size is checked. ``meta`` is stored in
    the sidecar (the model the file belongs to, for ``localllm rm``). ``on_wait`` is told when
    another process holds this download; without it that is an error. ``policy`` defaults to the
    hub's.
    """
    hub = hub or Hub()
    hub.check_online()
    key = sha256.lower() if sha256 else hashlib.sha256(url.encode()).hexdigest()
    part, side, lock_path = partial_paths(key)
    done = part.with_suffix(".gguf")
    try:
        paths.ensure_dir(part.parent)
    except PermissionError as exc:
        raise _permission(exc) from exc
    lock = _take_lock(lock_path, label, cancel, on_wait)
    try:
        if done.is_file() and done.stat().st_size == size:
            return done  # finished earlier (by us or by the process we waited for)
        transfer = _Transfer(hub, url, part, side, size=size, sha256=sha256.lower() if sha256 else None, label=label,
                             cancel=cancel, policy=policy or hub.policy, meta=meta or {})  # fmt: skip
        transfer.run(progress)
        os.replace(part, done)
        return done
    finally:
        lock.release()


def finish(done: Path) -> None:
    """Forget the bookkeeping of a completed download once its file has moved into place."""
    key = done.name.removesuffix(".gguf")
    for path in partial_paths(key)[1:]:
        path.unlink(missing_ok=True)


def _take_lock(
    path: Path, label: str, cancel: threading.Event | None, on_wait: Callable[[str], None] | None
) -> FileLock:
    lock = FileLock(path)
    if lock.try_acquire():
        return lock
    if on_wait is None:
        raise DownloadBusyError(
            f"{label} is already being downloaded by another localllm process",
            hint="wait for it to finish, or stop it; this pull can then resume its data",
        )
    on_wait(f"another localllm process is downloading {label}; waiting for it")
    if not lock.acquire(cancel):
        raise DownloadCancelled(f"stopped waiting for {label}")
    return lock


def _permission(exc: OSError) -> DownloadPermissionError:
    return DownloadPermissionError(
        f"permission denied: {exc.filename or exc}",
        hint="make the models directory writable, or set LOCALLLM_HOME to a folder you own",
    )


class _Transfer:
    """One download into its partial file: resume, receive, hash, verify."""

    def __init__(
        self,
        hub: Hub,
        url: str,
        part: Path,
        side: Path,
        *,
        size: int,
        sha256: str | None,
        label: str,
        cancel: threading.Event | None,
        policy: RetryPolicy,
        meta: dict[str, Any],
    ) -> None:
        self.hub, self.url, self.part, self.side = hub, url, part, side
        self.size, self.sha256, self.label = size, sha256, label
        self.cancel, self.policy, self.meta = cancel, policy, meta
        self.have = 0
        self.hasher = hashlib.sha256()
        self.info: dict[str, Any] = {}
        self.out: Any = None
        self.report = _Reporter(None, label, size, 0)
        self._checkpoint = 0

    def run(self, progress: ProgressCallback | None) -> None:
        self._open_partial()
        try:
            self._rehash()
            check_disk_space(self.part.parent, self.size - self.have)
            self.report = _Reporter(progress, self.label, self.size, self.have)
            self._checkpoint = self.have
            if self.have < self.size:
                self.hub.retrying(
                    self._attempt,
                    self.label,
                    policy=self.policy,
                    cancel=self.cancel,
                    progressed=self._progressed,
                    give_up=self._give_up,
                )
            self.report(self.have, force=True)
            os.fsync(self.out.fileno())
        finally:
            self.out.close()
        self._verify()

    def _open_partial(self) -> None:
        """Trust the bytes on disk only when the sidecar says they belong to this file."""
        info = _read_sidecar(self.side)
        have = self.part.stat().st_size if self.part.exists() else 0
        if info is None or info.get("size") != self.size or have > self.size:
            have = 0
        self.info = {"url": self.url, "size": self.size, "sha256": self.sha256, "etag": (info or {}).get("etag"),
                     **self.meta}  # fmt: skip
        try:
            _write_sidecar(self.side, self.info)
            self.out = open(self.part, "r+b" if self.part.exists() else "w+b", buffering=0)
        except PermissionError as exc:
            raise _permission(exc) from exc
        self.have = have

    def _rehash(self) -> None:
        """Hash what is already on disk (hashlib cannot persist its state across processes)."""
        self.out.truncate(self.have)
        self.out.seek(0)
        remaining = self.have
        while remaining:
            block = self.out.read(min(CHUNK * 4, remaining))
            if not block:
                break
            self.hasher.update(block)
            remaining -= len(block)
        self.have -= remaining
        self.out.seek(self.have)
        self.out.truncate(self.have)

    def _attempt(self) -> None:
        """One request, from the bytes on disk to the end of the file."""
        self._check_cancel()
        try:
            response = self.hub.open(
                self.url, self.have, what=self.label, repo=self.meta.get("repo"), timeout=self.policy.stall_timeout
            )
        except HubError as exc:
            if exc.status == 416:  # the range starts at the end: everything is on disk already
                return
            raise
        with response:
            self._accept(response)
            self._receive(response)
        if self.have < self.size:
            raise TransferInterrupted("connection closed early")

    def _accept(self, response: Any) -> None:
        """Check the answer's range; record its ETag."""
        if self.have and response.status != 206:
            self._restart()  # the server ignored the range: start over rather than append a second copy
        elif self.have and not (response.headers.get("Content-Range") or "").startswith(f"bytes {self.have}-"):
            raise TransferInterrupted(f"server answered an unexpected range {response.headers.get('Content-Range')}")
        etag = response.headers.get("X-Linked-Etag") or response.headers.get("ETag")
        if etag and etag != self.info.get("etag"):
            self.info["etag"] = etag
            _write_sidecar(self.side, self.info)

    def _restart(self) -> None:
        self.have = self._checkpoint = 0
        self.hasher = hashlib.sha256()
        self.out.seek(0)
        self.out.truncate(0)
        self.report.restarted()

    def _receive(self, response: Any) -> None:
        # read1: whatever has arrived (up to CHUNK), so a dropped connection or a stall loses
        # nothing already received.
        sink = _Sink(self.out, self.hasher, self.label, self.have)
        try:
            while chunk := response.read1(CHUNK):
                chunk = chunk[: self.size - self.have]
                sink.put(chunk)
                self.have += len(chunk)
                self.report(self.have)
                self._check_cancel()
                if self.have >= self.size:
                    break
        finally:
            try:
                sink.drain()  # what was received is on disk before anything else happens
            finally:
                sink.close()

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled(f"download of {self.label} stopped", hint=_resume_hint(self.have, self.size))

    def _progressed(self) -> bool:
        """Whether bytes arrived since the last failure (then the retries start afresh)."""
        moved = self.have > self._checkpoint
        self._checkpoint = self.have
        return moved

    def _give_up(self, error: Exception) -> LocalLLMError:
        if isinstance(error, HubServerError):
            return error
        return DownloadError(
            f"download of {self.label} failed after {self.policy.retries} retries: {error}",
            hint=_resume_hint(self.have, self.size),
        )

    def _verify(self) -> None:
        digest = self.hasher.hexdigest()
        if self.have == self.size and (self.sha256 is None or digest == self.sha256):
            return
        self.part.unlink(missing_ok=True)
        self.side.unlink(missing_ok=True)
        expected = f"{self.sha256[:12]}…" if self.sha256 else "(no sha256)"
        raise IntegrityError(
            f"{self.label} failed verification: sha256 {digest[:12]}… ({self.have} bytes), expected {expected} "
            f"({self.size} bytes); the corrupt data was deleted",
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


def _write(out: Any, chunk: bytes, label: str, at: int) -> None:
    try:
        view = memoryview(chunk)
        while view:
            written = out.write(view)
            view = view[written:]
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"disk full while downloading {label} ({format_bytes(at)} written so far, kept for resume)",
                hint="free some space and run the pull again: it continues where it stopped",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _permission(exc) from exc
        raise


def _resume_hint(have: int, size: int) -> str:
    return f"{format_bytes(have)} of {format_bytes(size)} kept; the next pull resumes from there"
