"""Reading the terminal chat's lines: editing, history across sessions, multi-line input, and
writing replies wrapped at word boundaries.

On a terminal, prompt_toolkit reads each line: arrows and the usual Emacs keys edit it, Up and Down
walk the lines typed before (kept in the data directory, so across sessions), and a paste is kept
whole (bracketed paste: its newlines stay in the message, nothing is sent until Enter). A message
may also span lines typed between ``\"\"\"`` and ``\"\"\"``, as in ``ollama run``. When stdin is not a
terminal the lines are read as they come (``input``), so a script can pipe a chat in.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

Read = Callable[[str], str]

FENCE = '"""'
CONTINUATION = "... "


def terminal_reader(history_file: Path) -> Read:
    """Read a line with editing and history (``history_file``, created on first use)."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history_file.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession[str] = PromptSession(history=FileHistory(str(history_file)))

    def read(prompt: str) -> str:
        return session.prompt(prompt)

    return read


def reader(history_file: Path) -> Read:
    """The way to read the chat's lines here: editing and history on a terminal, else ``input``."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return terminal_reader(history_file)
    return input


def read_message(read: Read, prompt: str) -> str:
    """One message: a line, or every line between a line starting with ``\"\"\"`` and one ending
    with it (the fences left out). EOFError and KeyboardInterrupt reach the caller."""
    line = read(prompt)
    if not line.lstrip().startswith(FENCE):
        return line
    text = line.lstrip()[len(FENCE) :]
    if text.rstrip().endswith(FENCE) and text.strip():  # """one line"""
        return text.rstrip()[: -len(FENCE)]
    lines = [text] if text else []
    while True:
        line = read(CONTINUATION)
        if line.rstrip().endswith(FENCE):
            lines.append(line.rstrip()[: -len(FENCE)])
            return "\n".join(lines).strip("\n")
        lines.append(line)


class WordWrap:
    """Writes streamed text to ``out`` broken at spaces before a word would cross the terminal's
    edge (the terminal itself would cut the word in two). Text that is not going to a terminal is
    written as it comes."""

    def __init__(self, out=None, width: int | None = None) -> None:
        self.out = out or sys.stdout
        tty = self.out.isatty() if hasattr(self.out, "isatty") else False
        self.width = width if width is not None else (shutil.get_terminal_size().columns if tty else 0)
        self.column = 0
        self.word = ""  # the word being written, held until it ends
        self.spaces = ""  # the spaces after the last word written

    def write(self, piece: str) -> None:
        if self.width <= 1:
            self.out.write(piece)
            self.out.flush()
            if piece:
                self.column = 0 if piece.endswith("\n") else self.column + len(piece)
            return
        for char in piece:
            if char == "\n":
                self._word_out()
                self.out.write("\n")
                self.column, self.spaces = 0, ""
            elif char in " \t":
                self._word_out()
                self.spaces += char  # written before the next word, if it goes on this line
            else:
                self.word += char
                if len(self.word) >= self.width:  # longer than a line: it has to be cut
                    self._word_out()
        self.out.flush()

    def end(self) -> None:
        """The reply is over: write the word held back, and end the line."""
        self._word_out()
        if self.column:
            self.out.write("\n")
        self.column, self.spaces = 0, ""
        self.out.flush()

    def _word_out(self) -> None:
        if not self.word:
            return
        if self.column and self.column + len(self.spaces) + len(self.word) > self.width:
            self.out.write("\n")
            self.column, self.spaces = 0, ""
        self.out.write(self.spaces + self.word)
        self.column += len(self.spaces) + len(self.word)
        self.word = self.spaces = ""
