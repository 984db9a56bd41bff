"""Parsed GGUF headers of local files, kept between runs so listing many models stays fast.

Parsing a header walks the whole tokenizer vocabulary (16 ms for SmolLM2's 49k tokens, 44 ms for
Gemma 3's 262k); ``localllm list`` judges every installed model, so it reads them from here: one
JSON file per model file under the cache directory, keyed by the file's path, size and
modification time, so a replaced file is parsed again.

The cache is data, never code: it is plain JSON read back with strict type checks, and anything
unexpected in it (a damaged file, another version's layout) is a cache miss, never an error.
Releases before 0.2 kept pickles here (``*.pickle``); they are never opened.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from localllm import fs, paths

from . import header as ggufmeta
from . import validate

FORMAT = 1  # bump when the layout below changes: older files then read as misses


def _key(path: Path) -> tuple[Path, str] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    name = hashlib.sha256(os.fsencode(ident)).hexdigest()[:32] + ".json"  # the path as the OS has it
    return paths.cache_dir() / "parsed-headers" / name, ident


def read_header(path: str | os.PathLike[str]) -> ggufmeta.GGUFHeader:
    """:func:`localllm.gguf.header.read_header`, from the cache when the file has not changed."""
    path = Path(path)
    key = _key(path)
    if key is not None:
        cached = _load(*key)
        if cached is not None:
            validate.check(cached, str(path))  # an entry written before a check was added
            return cached
    header = ggufmeta.read_header(path)
    if key is not None:
        try:
            fs.atomic_write(key[0], json.dumps(_encode(key[1], header)), sync=False)
        except (OSError, RecursionError):
            pass  # a read-only or full disk, or arrays nested too deep to store: parse again next time
    return header


# --- the JSON layout ---------------------------------------------------------------------------


def _value(v: object) -> object:
    if isinstance(v, ggufmeta.ArrayInfo):
        return {"array": [v.element_type, v.count, v.offset]}
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _encode(ident: str, h: ggufmeta.GGUFHeader) -> dict[str, Any]:
    return {
        "format": FORMAT, "ident": ident, "version": h.version, "alignment": h.alignment,
        "data_offset": h.data_offset, "header_size": h.header_size, "file_size": h.file_size,
        "metadata": {k: _value(v) for k, v in h.metadata.items()},
        "tensors": [[t.name, list(t.shape), t.ggml_type, t.offset, t.n_elements, t.n_bytes] for t in h.tensors],
    }  # fmt: skip


class _Miss(Exception):
    """The cached file is not what this version writes."""


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Miss
    return v


def _decode_value(v: object) -> object:
    if isinstance(v, dict):
        if set(v) != {"array"} or not isinstance(v["array"], list) or len(v["array"]) != 3:
            raise _Miss
        element_type, count, offset = v["array"]
        return ggufmeta.ArrayInfo(_int(element_type), _int(count), None if offset is None else _int(offset))
    if isinstance(v, list):
        return [_decode_value(x) for x in v]
    if isinstance(v, (str, int, float)) or v is None:
        return v
    raise _Miss


def _tensor(row: object) -> ggufmeta.TensorInfo:
    if not isinstance(row, list) or len(row) != 6 or not isinstance(row[0], str) or not isinstance(row[1], list):
        raise _Miss
    name, shape, ggml_type, offset, n_elements, n_bytes = row
    return ggufmeta.TensorInfo(
        name, tuple(_int(d) for d in shape), _int(ggml_type), _int(offset), _int(n_elements), _int(n_bytes)
    )


def _load(file: Path, ident: str) -> ggufmeta.GGUFHeader | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # not cached yet, or damaged
    try:
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("ident") != ident:
            raise _Miss
        metadata = data["metadata"]
        if not isinstance(metadata, dict) or not isinstance(data["tensors"], list):
            raise _Miss
        file_size = data["file_size"]
        return ggufmeta.GGUFHeader(
            version=_int(data["version"]),
            metadata={str(k): _decode_value(v) for k, v in metadata.items()},
            tensors=tuple(_tensor(row) for row in data["tensors"]),
            alignment=_int(data["alignment"]),
            data_offset=_int(data["data_offset"]),
            header_size=_int(data["header_size"]),
            file_size=None if file_size is None else _int(file_size),
        )
    except (_Miss, KeyError, RecursionError):
        return None
