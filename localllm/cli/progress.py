"""Download progress on stderr: a redrawn bar on a terminal, plain lines every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from localllm.format import format_bytes, format_clock, format_rate


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
        text = f"{format_bytes(p.done)} / {format_bytes(p.total)}  {format_rate(p.speed)}  ETA {format_clock(p.eta)}"
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
            print(f"{p.label}: resuming at {format_bytes(p.resumed_from)}", file=self.stream, flush=True)
        if first or p.done >= p.total or now - self._last_line >= self.interval:
            self._last_line = now
            self._label = p.label
            print(f"{p.label}: {fraction:.0%} {text}", file=self.stream, flush=True)

    def end(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
