"""Writing files so that a crash, a kill or a second process never leaves a half-written one, and
inter-process locks.

- :func:`replacing` / :func:`atomic_write`: data goes to a uniquely named temporary file beside
  the destination, is synced, and is renamed over it: readers see the old file or the new one.
- :class:`FileLock`: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows. A lock is held on an
  open file descriptor, so the operating system releases it when the process dies, SIGKILL
  included: a crashed process never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def temp_beside(dest: Path, suffix: str = ".tmp") -> Path:
    """A new, uniquely named empty file in ``dest``'s folder (two writers never share one)."""
    ensure_dir(dest.parent)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def replacing(dest: Path, *, sync: bool = True) -> Iterator[BinaryIO]:
    """Write ``dest`` through a temporary file: it replaces ``dest`` only if the block ends without
    an exception; otherwise it is deleted and ``dest`` is untouched."""
    tmp = temp_beside(dest)
    try:
        with open(tmp, "wb") as out:
            yield out
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(dest: Path, data: bytes | str, *, sync: bool = True) -> None:
    """Replace ``dest`` with ``data`` (str is written as UTF-8), all or nothing."""
    with replacing(dest, sync=sync) as out:
        out.write(data.encode("utf-8") if isinstance(data, str) else data)


class FileLock:
    """An exclusive lock on ``path`` (created if missing; the file itself stays empty)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""
        ensure_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire(self, cancel: threading.Event | None = None, poll: float = 0.2) -> bool:
        """Wait for the lock; returns False if ``cancel`` is set first."""
        while not self.try_acquire():
            if cancel is not None and cancel.wait(poll):
                return False
            if cancel is None:
                time.sleep(poll)
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if sys.platform == "win32":  # pragma: no cover
            import msvcrt

            try:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            except OSError:
                pass  # closing the descriptor below releases it as well
        os.close(fd)  # releases a flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
