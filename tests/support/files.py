"""Files for tests: damaged copies of real models."""

from __future__ import annotations

from pathlib import Path


def damaged_copy(
    src: Path, dest: Path, *, truncate_to: int | None = None, patch: tuple[int, bytes] | None = None
) -> Path:
    data = bytearray(src.read_bytes() if truncate_to is None else src.read_bytes()[:truncate_to])
    if patch is not None:
        offset, replacement = patch
        data[offset : offset + len(replacement)] = replacement
    dest.write_bytes(bytes(data))
    return dest


def cache_hub_header(home: Path, repo: str, filename: str, gguf: Path, revision: str = "main") -> None:
    """Put ``gguf``'s header in the data directory's cache of Hub headers as if ``filename`` of
    ``repo`` had been read from the Hub (the cache's on-disk format, written literally)."""
    import hashlib
    import json

    from localllm.gguf.header import read_header

    header = read_header(gguf)
    key = hashlib.sha256(f"{repo}/{filename}@{revision}".encode()).hexdigest()[:32]
    folder = home / "cache" / "headers"
    folder.mkdir(parents=True, exist_ok=True)
    with open(gguf, "rb") as f:
        (folder / f"{key}.gguf-header").write_bytes(f.read(header.data_offset))
    (folder / f"{key}.json").write_text(
        json.dumps(
            {
                "repo": repo,
                "file": filename,
                "revision": revision,
                "etag": "test",
                "size": header.file_size,
                "fetched": 1700000000.0,
            }
        )
    )
