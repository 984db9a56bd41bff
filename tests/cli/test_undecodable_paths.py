"""One path policy: a path that is not valid UTF-8 (a byte such as 0xff in a folder name, common on
old disks and archives) works in every command that takes or prints one, and is printed safely.

Python hands such a path over with ``surrogateescape`` (``\\udcff`` for the byte 0xff); encoding
it strictly, for llama.cpp, a cache key or a manifest, used to end in a UnicodeEncodeError
traceback of 23-26 lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/archiv\xff \xe9t\xe9"))
    try:
        folder.mkdir()
    except (UnicodeEncodeError, OSError):  # pragma: no cover - a file system that refuses such names
        pytest.fail("this file system refuses non-UTF-8 names; the test needs one that takes them (ext4, tmpfs)")
    return folder


@pytest.fixture
def odd_model(odd_dir: Path, smollm2_path: Path) -> Path:
    dest = odd_dir / "model\xff.gguf".replace("\xff", "\udcff")
    os.link(smollm2_path, dest)
    return dest


def _ok(result) -> None:
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "UnicodeEncodeError" not in result.stderr


def _shown(text: str) -> bool:
    """The odd byte printed as an escape, never as a raw byte or a failure."""
    return "\\xff" in text


def test_inspect_and_fit_take_such_a_path(cli, odd_model):
    _ok(shown := cli("inspect", str(odd_model)))
    assert _shown(shown.stdout)
    as_json = cli("inspect", "--json", str(odd_model))
    _ok(as_json)
    assert json.loads(as_json.stdout)["path"].encode("utf-8", "surrogateescape") == os.fsencode(odd_model)
    _ok(cli("fit", str(odd_model)))


def test_run_takes_such_a_path(cli, odd_model):
    result = cli("run", "-m", str(odd_model), "--max-tokens", "4", "--temperature", "0", "Hi")
    _ok(result)
    assert result.stdout.strip()
    as_json = cli("run", "--json", "-m", str(odd_model), "--max-tokens", "4", "--temperature", "0", "Hi")
    _ok(as_json)
    json.loads(as_json.stdout)


def test_bench_takes_such_a_path(cli, odd_model):
    _ok(cli("bench", str(odd_model), "-r", "1", "-p", "16", "-n", "4", "--threads", "1"))


def test_batch_reads_and_writes_such_paths(cli, odd_model, odd_dir):
    source = odd_dir / "in\udcff.jsonl"
    source.write_text('{"id": "a", "prompt": "Hi", "max_tokens": 3}\n', encoding="utf-8")
    out = odd_dir / "out\udcff.jsonl"
    _ok(cli("batch", str(source), "-o", str(out), "-m", str(odd_model), "-q"))
    assert json.loads(out.read_text(encoding="utf-8"))["id"] == "a"


def test_import_list_and_rm_such_a_file(cli, odd_model):
    imported = cli("import", "--symlink", "--name", "odd-one", str(odd_model))
    _ok(imported)
    listed = cli("list", "--json")
    _ok(listed)
    assert "odd-one" in listed.stdout
    _ok(cli("list"))
    _ok(cli("rm", "-y", "odd-one"))


def test_a_data_directory_with_such_a_name(cli, odd_dir, smollm2_path):
    home = odd_dir / "home"
    env = {"LOCALLLM_HOME": str(home), "HOME": str(home)}
    _ok(cli("import", "--link", "--name", "odd-home", str(smollm2_path), env=env))
    _ok(cli("list", env=env))
    _ok(cli("run", "-m", "odd-home", "--max-tokens", "3", "Hi", env=env))
