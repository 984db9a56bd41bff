"""Download progress on stderr: a redrawn bar on a terminal, plain lines every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # unreachable


def human_time(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressPrinter:
    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self._last_line = 0.0
        self._label: str | None = None
        self._drawn = False

    def __call__(self, p) -> None:  # p: localllm.download.Progress
        fraction = p.done / p.total if p.total else 1.0
        text = (f"{human_bytes(p.done)} / {human_bytes(p.total)}  {human_bytes(p.speed)}/s  "
                f"ETA {human_time(p.eta)}")
        if self.tty:
            width = 24
            filled = int(width * fraction)
            bar = "█" * filled + "░" * (width - filled)
            self.stream.write(f"\r\x1b[2K{p.label[:40]} {bar} {fraction:4.0%} {text}")
            self.stream.flush()
            self._drawn = True
            if p.done >= p.total:
                self.end()
            return
        now = time.monotonic()
        first = p.label != self._label
        if first and p.resumed_from:
            print(f"{p.label}: resuming at {human_bytes(p.resumed_from)}", file=self.stream, flush=True)
        if first or p.done >= p.total or now - self._last_line >= self.interval:
            self._last_line = now
            self._label = p.label
            print(f"{p.label}: {fraction:.0%} {text}", file=self.stream, flush=True)

    def end(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
