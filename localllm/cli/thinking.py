"""A reasoning model's thinking in the terminal, apart from its answer, as ``ollama run`` shows it:
"Thinking..." dimmed, the thoughts dimmed, "...done thinking." and then the answer.

``run`` and the terminal chat write the reasoning here (never into the answer); where it goes is
:func:`thinking_stream`'s choice: stdout on a terminal, stderr when stdout is piped but stderr is a
terminal (the pipe gets only the answer), nowhere otherwise or with ``--hide-thinking``.
"""

from __future__ import annotations

import sys
from typing import TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"


def thinking_stream(*, hide: bool = False) -> TextIO | None:
    """Where a reply's reasoning is shown (None: not shown)."""
    if hide:
        return None
    for stream in (sys.stdout, sys.stderr):
        if stream.isatty():
            return stream
    return None


class ThinkingShown:
    """Writes one reply's reasoning to ``out``, dimmed, between "Thinking..." and "...done thinking."."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.opened = self.closed = False

    def write(self, text: str) -> None:
        if self.closed:
            return
        if not self.opened:
            text = text.lstrip()
            if not text:
                return
            self.out.write(f"{DIM}Thinking...{RESET}\n")
            self.opened = True
        self.out.write(f"{DIM}{text}{RESET}")  # reset each time: Ctrl-C never leaves the terminal dim
        self.out.flush()

    def done(self) -> None:
        """The answer begins (or the reply ended): close the thinking, if any was shown."""
        if self.opened and not self.closed:
            self.out.write(f"\n{DIM}...done thinking.{RESET}\n\n")
            self.out.flush()
        self.closed = True
