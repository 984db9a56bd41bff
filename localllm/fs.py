"""Inter-process file locks (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows).

A lock is held on an open file descriptor, so the operating system releases it when the process
dies, SIGKILL included: a crashed pull never leaves a stale lock behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from localllm import paths


class FileLock:
    """An exclusive lock on ``path`` (created if missing; the file itself stays empty)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False when another process holds it."""
        paths.ensure_dir(self.path.parent)
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
