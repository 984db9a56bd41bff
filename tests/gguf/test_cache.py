"""The cache of parsed headers: plain JSON, a miss whenever it is not exactly what it should be."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest

from localllm.gguf import cache
from localllm.gguf import header as ggufmeta


def _copy(smollm2_path: Path, tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, path)
    return path


def test_a_cached_header_is_the_parsed_one_without_parsing_again(smollm2_path, tmp_path, monkeypatch):
    path = _copy(smollm2_path, tmp_path)
    first = cache.read_header(path)
    monkeypatch.setattr(ggufmeta, "read_header", lambda *_: pytest.fail("parsed again"))
    again = cache.read_header(path)
    assert again == first and again.metadata == first.metadata and again.tensors == first.tensors
    assert isinstance(again.metadata["tokenizer.ggml.tokens"], ggufmeta.ArrayInfo)


class _Boom:
    """What a hostile pickle does: run code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickles_left_by_earlier_releases_are_never_opened(smollm2_path, tmp_path, isolated_home):
    path = _copy(smollm2_path, tmp_path)
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    folder = isolated_home / "cache" / "parsed-headers"
    folder.mkdir(parents=True)
    # Where the 0.1 release kept this file's header, holding code instead of a header.
    marker = tmp_path / "code-ran"
    (folder / (hashlib.sha256(ident.encode()).hexdigest()[:32] + ".pickle")).write_bytes(pickle.dumps(_Boom(marker)))
    assert cache.read_header(path).architecture == "llama"
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        "not json",
        "[]",
        '{"format": 1}',
        '{"format": 99}',
        "same-ident-wrong-shapes",
    ],
)
def test_a_damaged_cache_entry_is_a_miss(smollm2_path, tmp_path, damage):
    path = _copy(smollm2_path, tmp_path)
    header = cache.read_header(path)
    [entry] = (cache.paths.cache_dir() / "parsed-headers").glob("*.json")
    if damage == "same-ident-wrong-shapes":
        data = json.loads(entry.read_text())
        data["tensors"] = [["x", "not a shape", 0, 0, 0, 0]]
        damage = json.dumps(data)
    entry.write_text(damage)
    assert cache.read_header(path) == header
    assert json.loads(entry.read_text())["format"] == cache.FORMAT  # rewritten


def test_a_replaced_file_is_parsed_again(smollm2_path, tmp_path):
    from support.hubfixtures import write_tiny_gguf

    path = _copy(smollm2_path, tmp_path)
    assert cache.read_header(path).architecture == "llama"
    write_tiny_gguf(path)
    assert cache.read_header(path).name == "tiny-0"
