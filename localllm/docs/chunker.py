"""Text to chunks that keep headings and code blocks whole, each with its 1-based line range.

A block is a heading line, a fenced code block (```` ``` ```` to ```` ``` ````) or a paragraph
(lines up to a blank line). Blocks are packed into chunks of up to ``max_chars``; a chunk never
starts in the middle of a block, and a heading starts a new chunk. Every chunk carries the path of
headings above it (``# Guide > ## Install``), which is embedded with it, so a chunk about
"the install step" is found under its section's name. A single block longer than ``max_chars`` (a
huge code block, a log without blank lines) is the only thing cut, at line boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 1200
_HEADING = re.compile(r"^(#{1,6})\s+\S")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    start_line: int  # 1-based, inclusive
    end_line: int
    heading: str
    text: str

    def embedding_text(self) -> str:
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def _blocks(lines: list[str], markdown: bool):
    """(start index, end index exclusive, heading level or 0) per block."""
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        heading = _HEADING.match(line) if markdown else None
        if heading:
            yield i, i + 1, len(heading.group(1))
            i += 1
            continue
        fence = _FENCE.match(line) if markdown else None
        if fence:
            j = i + 1
            while j < n and not lines[j].lstrip().startswith(fence.group(1)):
                j += 1
            yield i, min(j + 1, n), 0
            i = j + 1
            continue
        j = i
        while (
            j < n
            and lines[j].strip()
            and not (markdown and (j > i) and (_HEADING.match(lines[j]) or _FENCE.match(lines[j])))
        ):
            j += 1
        yield i, j, 0
        i = j


def chunk(text: str, *, markdown: bool = True, max_chars: int = MAX_CHARS) -> list[Chunk]:
    lines = text.splitlines()
    chunks: list[Chunk] = []
    headings: list[tuple[int, str]] = []
    current: list[tuple[int, int]] = []  # blocks in the chunk being built
    size = 0
    heading_of_current = ""

    def flush() -> None:
        nonlocal current, size
        if current:
            start, end = current[0][0], current[-1][1]
            body = "\n".join(lines[start:end]).strip("\n")[: 2 * max_chars]  # a line of megabytes: its start
            if body.strip():
                chunks.append(Chunk(start + 1, end, heading_of_current, body))
        current, size = [], 0

    for start, end, level in _blocks(lines, markdown):
        if level:
            flush()
            headings = [h for h in headings if h[0] < level] + [(level, lines[start].strip())]
            heading_of_current = " > ".join(h for _, h in headings[:-1])
            current, size = [(start, end)], len(lines[start])
            heading_of_current = " > ".join(h for _, h in headings[:-1])
            continue
        block_size = sum(len(line) + 1 for line in lines[start:end])
        if size and size + block_size > max_chars:
            flush()
            heading_of_current = " > ".join(h for _, h in headings)
        if not current:
            heading_of_current = " > ".join(h for _, h in headings) if not current else heading_of_current
        if block_size > max_chars:  # one block too big on its own: cut it at line boundaries
            flush()
            piece_start, piece_size = start, 0
            for k in range(start, end):
                if piece_size and piece_size + len(lines[k]) + 1 > max_chars:
                    current = [(piece_start, k)]
                    flush()
                    piece_start, piece_size = k, 0
                piece_size += min(len(lines[k]) + 1, max_chars)
            current, size = [(piece_start, end)], piece_size
            continue
        current.append((start, end))
        size += block_size
    flush()
    return chunks
