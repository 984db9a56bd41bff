"""The store never reaches outside the models directory, keeps what it does not understand, and
never loses an entry to a concurrent writer (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.hubfixtures import write_tiny_gguf

from localllm import paths
from localllm.cli import main
from localllm.models import store

REPO = Path(__file__).resolve().parents[2]


def _write_manifest(home: Path, entries: list, **top) -> Path:
    path = home / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, **top, "models": entries}))
    return path


def _entry(name: str, files: list, **more) -> dict:
    return {"name": name, "quant": "Q4_K_M", "files": files, "size": 10, "source": "test", **more}


def _good(home: Path, name: str = "good") -> dict:
    f = home / "models" / name / f"{name}.gguf"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"x" * 10)
    return _entry(name, [f"{name}/{name}.gguf"])


# --- paths out of the store ---------------------------------------------------------------------

ESCAPES = [
    "../../victim.gguf",
    "../victim.gguf",
    "{abs}",
    "m/../../victim.gguf",
    "m/../../../victim.gguf",
    "..\\..\\victim.gguf",
    ".partial/victim.gguf",
    "m/sub/../../../victim.gguf",
    "",
    "m/",
    "./victim.gguf",
]


@pytest.mark.parametrize("relative", ESCAPES)
def test_a_manifest_path_out_of_the_store_is_shown_as_bad_and_never_deleted(isolated_home, tmp_path, capsys, relative):
    victim = tmp_path / "victim.gguf"  # beside the data directory: ../../victim.gguf from models/m
    victim.write_bytes(b"precious")
    (isolated_home / "models" / ".partial").mkdir(parents=True)
    (isolated_home / "models" / ".partial" / "victim.gguf").write_bytes(b"precious")
    relative = relative.replace("{abs}", str(victim))
    _write_manifest(isolated_home, [_good(isolated_home), _entry("evil", [relative])])

    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "error" not in rows["good"] and "not a path inside the models directory" in rows["evil"]["error"]
    assert main(["rm", "evil"]) == 0  # forgets the entry only
    assert victim.read_bytes() == b"precious"
    assert (isolated_home / "models" / ".partial" / "victim.gguf").read_bytes() == b"precious"
    assert [m.name for m in store.installed()] == ["good"] and store.bad_entries() == []


def test_a_symlinked_folder_is_not_followed_by_rm(isolated_home, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.gguf").write_bytes(b"precious")
    (isolated_home / "models").mkdir(parents=True)
    (isolated_home / "models" / "evil").symlink_to(outside, target_is_directory=True)
    _write_manifest(isolated_home, [_good(isolated_home), _entry("evil", ["evil/victim.gguf"])])

    assert [m.name for m in store.installed()] == ["good"]  # not runnable either
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "! evil:Q4_K_M" in out and "symbolic link" in out
    with pytest.raises(store.UnsafePathError):
        store.remove(store.find_all("evil")[0])
    assert main(["rm", "evil"]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert (outside / "victim.gguf").read_bytes() == b"precious"


BAD_NAMES = [
    "..",
    ".",
    "../x",
    "/tmp/x",
    ".partial",
    "a/b/c",
    "a/..",
    "x\x1b[2J",
    "con",
    "",
    "a b",
    "x" * 300,
    "history.sqlite3/..",
    "name:Q8_0",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_import_refuses_a_name_that_is_not_one_safe_folder(isolated_home, tmp_path, capsys, name):
    src = write_tiny_gguf(tmp_path / "history.sqlite3")  # a GGUF named like a data-dir file
    isolated_home.mkdir(parents=True)
    for data_file in ("history.sqlite3", "manifest.json", "loads.jsonl"):
        (isolated_home / data_file).write_text("keep me")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert main(["import", str(src), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a usable model name" in err and "\x1b" not in err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    for data_file in ("history.sqlite3", "manifest.json", "loads.jsonl"):
        assert (isolated_home / data_file).read_text() == "keep me"


def test_every_path_from_a_name_is_one_folder_inside_the_store(isolated_home):
    base = paths.models_dir()
    for name in ("smollm2", "Owner/Repo-GGUF", "a_b.c+d-1"):
        path = store.file_path(store.relative_path(name, "f.gguf"))
        assert path.parent.parent == base and path.name == "f.gguf"
    for name in BAD_NAMES:
        with pytest.raises(store.UnsafePathError):
            store.relative_path(name, "f.gguf")
    for file_name in ("..", ".", "a/b", "a\\b", "x\x00", ""):
        with pytest.raises(store.UnsafePathError):
            store.relative_path("m", file_name)
    with pytest.raises(store.UnsafePathError):
        store.record(store.InstalledModel(name="m", quant=None, files=["../x.gguf"]))
    assert not (isolated_home / "manifest.json").exists()


# --- damaged manifests ----------------------------------------------------------------------------

BAD_ENTRIES = [
    42,
    "text",
    None,
    [],
    {},
    {"name": "nofiles", "quant": None},
    _entry("s", ["s/s.gguf"], size="big"),
    _entry("f", "f/f.gguf"),
    _entry("f2", [1]),
    _entry("e", []),
    _entry("t", ["t/t.gguf"], installed_at="yesterday"),
    _entry("n", ["n/n.gguf"], last_used=float("inf")),
    _entry("l", ["l/l.gguf"], link="junction"),
    _entry("x\x1b[2Jx", ["x/x.gguf"]),
    _entry("b", ["b/b.gguf"], size=True),
    {**_entry("q", ["q/q.gguf"]), "quant": 4},
]


@pytest.mark.parametrize("bad", BAD_ENTRIES, ids=range(len(BAD_ENTRIES)))
def test_one_bad_entry_is_shown_as_bad_and_the_rest_still_works(isolated_home, capsys, bad):
    _write_manifest(isolated_home, [_good(isolated_home, "a"), bad, _good(isolated_home, "z")])
    assert [m.name for m in store.installed()] == ["a", "z"]
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[1].startswith("a ") and lines[2].startswith("z ") and lines[3].startswith("! ")
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r.get("error") is None for r in rows] == [True, True, False]
    # a change elsewhere writes the bad entry back exactly as it was
    store.touch(store.find_installed("a"))
    store.record(store.InstalledModel(name="new", quant=None, files=["new/new.gguf"]))
    saved = json.loads((isolated_home / "manifest.json").read_text())["models"]
    assert bad in saved and {m.get("name") for m in saved if isinstance(m, dict)} >= {"a", "z", "new"}


def test_unknown_fields_of_a_newer_release_are_kept(isolated_home):
    entry = {**_good(isolated_home), "future": {"nested": [1, 2]}, "rating": 5}
    _write_manifest(isolated_home, [entry], generator="localllm 9.0")
    model = store.find_installed("good")
    assert model is not None and model.extra == {"future": {"nested": [1, 2]}, "rating": 5}
    store.touch(model)
    store.record(store.InstalledModel(name="other", quant=None, files=["other/o.gguf"]))
    raw = json.loads((isolated_home / "manifest.json").read_text())
    assert raw["generator"] == "localllm 9.0"
    saved = next(m for m in raw["models"] if m["name"] == "good")
    assert saved["future"] == {"nested": [1, 2]} and saved["rating"] == 5 and saved["last_used"] is not None


DAMAGED = [
    b"{not json",
    b"\xff\xfe\x00garbage",
    b"[1, 2]",
    b'"text"',
    b'{"models": 3}',
    b'{"models": {"a": 1}}',
    b"[" * 100_000 + b"]" * 100_000,
    b"",
]


@pytest.mark.parametrize("content", DAMAGED, ids=range(len(DAMAGED)))
def test_a_damaged_manifest_is_one_line_and_is_never_overwritten(isolated_home, tmp_path, capsys, content):
    isolated_home.mkdir(parents=True)
    (isolated_home / "manifest.json").write_bytes(content)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json is damaged" in err
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert main(["import", str(src)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert (isolated_home / "manifest.json").read_bytes() == content
    assert not (isolated_home / "models").exists()  # refused before anything was copied


# --- concurrency and kills ------------------------------------------------------------------------

_IMPORT = """
import sys
from pathlib import Path
from localllm import app
app.import_file(Path(sys.argv[1]), name=sys.argv[2])
"""
_TOUCH = """
from localllm.models import store
model = store.find_installed("busy")
for _ in range(40):
    store.touch(model)
"""


def _env(home: Path) -> dict:
    return {**os.environ, "LOCALLLM_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def test_twenty_concurrent_imports_are_all_listed(isolated_home, tmp_path):
    store.record(store.InstalledModel(name="busy", quant=None, files=["busy/busy.gguf"]))
    (isolated_home / "models" / "busy").mkdir(parents=True)
    (isolated_home / "models" / "busy" / "busy.gguf").write_bytes(b"x")
    sources = [write_tiny_gguf(tmp_path / f"m{i}.gguf", i) for i in range(20)]
    env = _env(isolated_home)
    procs = [subprocess.Popen([sys.executable, "-c", _TOUCH], env=env) for _ in range(3)]
    procs += [
        subprocess.Popen([sys.executable, "-c", _IMPORT, str(s), f"model-{i}"], env=env) for i, s in enumerate(sources)
    ]
    assert [p.wait(300) for p in procs] == [0] * len(procs)
    names = sorted(m.name for m in store.installed())
    assert names == sorted(["busy"] + [f"model-{i}" for i in range(20)])
    assert store.find_installed("busy").last_used is not None


def _big_gguf(path: Path, n_floats: int = 256 << 20) -> Path:
    """A valid GGUF with one tensor of ``n_floats`` f32 (1 GiB by default), sparse on disk."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor_info("big", [n_floats], np.dtype(np.float32), n_floats * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    aligned = (path.stat().st_size + 31) // 32 * 32
    os.truncate(path, aligned + n_floats * 4)
    return path


def test_a_kill_mid_copy_never_lists_a_partial_file(isolated_home, tmp_path):
    src = _big_gguf(tmp_path / "big-Q4_K_M.gguf")
    proc = subprocess.Popen([sys.executable, "-c", _IMPORT, str(src), "big"], env=_env(isolated_home))
    folder = isolated_home / "models" / "big"
    try:
        while True:  # wait until the copy is under way: a temporary file with data in it
            temps = list(folder.glob(".*.tmp")) if folder.is_dir() else []
            if temps and temps[0].stat().st_size >= 8 << 20:
                break
            assert proc.poll() is None, "the import ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
    assert temps[0].stat().st_size < src.stat().st_size
    assert store.load_manifest() == [] and store.installed() == []
    assert not (folder / src.name).exists()  # only the hidden temporary file, never the real name


def test_importing_the_same_file_again_says_it_is_installed(isolated_home, tmp_path, capsys):
    src = write_tiny_gguf(tmp_path / "tiny-Q4_K_M.gguf")
    assert main(["import", str(src)]) == 0
    capsys.readouterr()
    for flags in ([], ["--symlink"], ["--link"]):
        assert main(["import", str(src), *flags]) == 0
        assert "already installed" in capsys.readouterr().out
    assert [m.key for m in store.load_manifest()] == ["tiny:Q4_K_M"]
    assert [p.name for p in (isolated_home / "models" / "tiny").iterdir()] == [src.name]
    assert store.find_installed("tiny").link is None  # the copy stays a copy


def test_importing_another_file_under_an_installed_name_is_refused(isolated_home, tmp_path, capsys):
    first = write_tiny_gguf(tmp_path / "a" / "tiny-Q4_K_M.gguf", 1) if (tmp_path / "a").mkdir() is None else None
    second = write_tiny_gguf(tmp_path / "b" / "tiny-Q4_K_M.gguf", 2) if (tmp_path / "b").mkdir() is None else None
    assert main(["import", str(first)]) == 0
    installed = store.find_installed("tiny").path().read_bytes()
    assert main(["import", str(second)]) == 2
    assert "already installed from another file" in capsys.readouterr().err
    assert store.find_installed("tiny").path().read_bytes() == installed == first.read_bytes()


def test_a_header_only_gguf_is_refused(isolated_home, tmp_path, capsys):
    src = write_tiny_gguf(tmp_path / "empty.gguf", tensors=0)
    assert main(["import", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no tensors" in err
    assert store.load_manifest() == []
