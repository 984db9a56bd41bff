"""Parsed GGUF headers of local files, kept between runs so listing many models stays fast.

Parsing a header walks the whole tokenizer vocabulary (16 ms for SmolLM2's 49k tokens, 44 ms for
Gemma 3's 262k); ``localllm list`` judges every installed model, so it reads them from here: one
pickle per file under the cache directory, keyed by the file's path, size and modification time,
so a replaced file is parsed again. Only this process writes what it reads back.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from localllm import fs, paths

from . import header as ggufmeta


def _key(path: Path) -> tuple[Path, str] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return paths.cache_dir() / "parsed-headers" / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".pickle"), ident


def read_header(path: str | os.PathLike[str]) -> ggufmeta.GGUFHeader:
    """:func:`localllm.ggufmeta.read_header`, from the cache when the file has not changed."""
    path = Path(path)
    key = _key(path)
    if key is not None:
        cached, ident = key
        try:
            with open(cached, "rb") as f:
                stored_ident, header = pickle.load(f)
            if stored_ident == ident and isinstance(header, ggufmeta.GGUFHeader):
                return header
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
            pass  # not cached yet, or written by another version: parse again
    header = ggufmeta.read_header(path)
    if key is not None:
        cached, ident = key
        try:
            with fs.replacing(cached, sync=False) as f:  # a cache: losing it in a crash costs a parse
                pickle.dump((ident, header), f, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError:
            pass  # a read-only or full disk: parse again next time
    return header
