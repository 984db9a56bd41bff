"""Files for tests: damaged copies of real models."""

from __future__ import annotations

from pathlib import Path


def damaged_copy(src: Path, dest: Path, *, truncate_to: int | None = None, patch: tuple[int, bytes] | None = None) -> Path:
    data = bytearray(src.read_bytes() if truncate_to is None else src.read_bytes()[:truncate_to])
    if patch is not None:
        offset, replacement = patch
        data[offset : offset + len(replacement)] = replacement
    dest.write_bytes(bytes(data))
    return dest
