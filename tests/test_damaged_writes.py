"""Damaged saved data opens with defaults, and a full disk or a read-only data directory gives one
line with the original file intact (issue 11)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.hubfixtures import write_tiny_gguf

from localllm.chat.history import History, HistoryError
from localllm.cli import main
from localllm.fit import loadlog
from localllm.models import store

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (any user, no mount needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


# --- history ----------------------------------------------------------------------------------------

BAD_JSON = ["{", "[1, 2]", '"text"', "42", "null", b"\xff\xfe", 7, "[" * 50_000]


@pytest.mark.parametrize("bad", BAD_JSON, ids=range(len(BAD_JSON)))
def test_a_history_row_with_bad_settings_or_stats_opens_with_defaults(tmp_path, bad):
    history = History(tmp_path / "h.sqlite3")
    conv = history.create(title="t", settings={"temperature": 0.5})
    history.add_message(conv, "user", "hello")
    reply = history.add_message(conv, "assistant", "hi", stats={"tokens": 3})
    other = history.create(title="other")
    history.add_message(other, "user", "kept")
    history.close()
    db = sqlite3.connect(tmp_path / "h.sqlite3")
    db.execute(
        "UPDATE conversations SET settings=?, title=? WHERE id=?", (bad, b"\xff title" if bad == 7 else "t", conv)
    )
    db.execute("UPDATE messages SET stats=? WHERE id=?", (bad, reply))
    db.commit()
    db.close()
    history = History(tmp_path / "h.sqlite3")
    loaded = history.get(conv)
    assert loaded.info.settings == {} and [m.content for m in loaded.messages] == ["hello", "hi"]
    assert loaded.messages[1].stats is None and loaded.info.title
    assert len(history.conversations()) == 2 and history.get(other).messages[0].content == "kept"
    assert json.loads(json.dumps(history.to_json(conv)))["settings"] == {}


def test_a_full_disk_while_writing_history_is_one_error_and_keeps_what_was_saved(tmp_path):
    history = History(tmp_path / "h.sqlite3")
    conv = history.create(title="t")
    history.add_message(conv, "user", "saved before")
    history._db.execute(f"PRAGMA max_page_count = {history._db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(HistoryError) as caught:
        history.add_message(conv, "assistant", "x" * 1_000_000)
    assert "\n" not in str(caught.value) and "full" in str(caught.value)
    history.close()
    reopened = History(tmp_path / "h.sqlite3")
    assert [m.content for m in reopened.get(conv).messages] == ["saved before"]


# --- loads.jsonl ------------------------------------------------------------------------------------

WRONG_SHAPES = [
    "[1, 2]",
    '"text"',
    '{"path": 5}',
    '{"path": "%s", "size": "big", "buffers_mib": {}}',
    '{"path": "%s", "size": %d, "buffers_mib": [1]}',
    '{"path": "%s", "size": %d, "buffers_mib": {"a": "b"}}',
    '{"path": "%s", "size": %d, "buffers_mib": {}, "settings": {"n_ctx": "many"}}',
    '{"path": "%s", "size": %d, "buffers_mib": {}, "settings": {"n_ctx": 1e400}}',
    '{"path": "%s", "size": %d, "buffers_mib": {}, "settings": [1]}',
    '{"path": "%s", "size": %d, "buffers_mib": {}, "peak_rss": "x"}',
    "[" * 50_000,
    "\udcff",
]


def test_loads_jsonl_lines_of_the_wrong_shape_are_skipped(isolated_home, smollm2_path):
    from localllm.app.fitting import last_load
    from localllm.fit.hardware import profile
    from localllm.gguf.header import read_header

    gguf = smollm2_path
    size = gguf.stat().st_size
    loadlog.record(gguf, size, {"n_ctx": 512, "n_gpu_layers": 0}, {"CPU KV buffer": 1.5})
    key = str(gguf.resolve())
    with open(loadlog.log_path(), "ab") as log:
        for line in WRONG_SHAPES:
            text = line.replace("%s", key).replace("%d", str(size)) if "%" in line else line
            log.write(text.encode("utf-8", "surrogateescape") + b"\n")
        log.write(b"\xff\xfe not utf-8\n")
    entry = loadlog.last_load(gguf, size)
    assert entry is not None and entry["buffers_mib"] == {"CPU KV buffer": 1.5}
    measured = last_load(read_header(gguf), gguf, profile("laptop-16gb"))
    assert measured is not None and measured["n_ctx"] == 512


# --- the manifest on a full disk ---------------------------------------------------------------------


def test_a_full_disk_while_writing_the_manifest_is_one_line_and_keeps_it(isolated_home, tmp_path, capsys):
    for i in range(40):  # a manifest bigger than the limit below
        store.record(store.InstalledModel(name=f"model-{i}", quant="Q4_K_M", files=[f"model-{i}/m.gguf"]))
    before = (isolated_home / "manifest.json").read_bytes()
    src = write_tiny_gguf(tmp_path / "new-Q4_K_M.gguf")
    with file_size_limit(len(before) // 2):
        code = main(["import", str(src), "--symlink"])  # no data copied: only the manifest is written
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "manifest.json" in err
    assert (isolated_home / "manifest.json").read_bytes() == before
    assert not [p for p in isolated_home.iterdir() if p.name.startswith(".manifest")]  # no temp left


# --- a read-only data directory ----------------------------------------------------------------------


def _read_only_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI with ``home`` read-only: chmod for an ordinary user; for root (whom permissions do
    not stop), a read-only bind mount in a private mount namespace."""
    env = {**os.environ, "LOCALLLM_HOME": str(home), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "localllm", *args]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [home, *home.rglob("*")] if not p.is_symlink()}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(home), *command], capture_output=True, text=True, env=env, timeout=300
    )


def test_a_read_only_data_directory_runs_lists_and_fits_but_refuses_imports(installed_starter, isolated_home, tmp_path):
    before = (isolated_home / "manifest.json").read_bytes()
    listed = _read_only_cli(isolated_home, "list")
    assert listed.returncode == 0 and installed_starter.name in listed.stdout, listed.stderr
    ran = _read_only_cli(isolated_home, "run", "Say hi", "-n", "4", "--seed", "1")
    assert ran.returncode == 0 and ran.stdout.strip() and "Traceback" not in ran.stderr, ran.stderr
    fitted = _read_only_cli(isolated_home, "fit", installed_starter.name)
    assert fitted.returncode == 0 and "Traceback" not in fitted.stderr, fitted.stderr
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    imported = _read_only_cli(isolated_home, "import", str(src))
    assert imported.returncode == 1 and imported.stderr.count("\n") == 1, imported.stderr
    assert "cannot write" in imported.stderr and "writable" in imported.stderr
    assert (isolated_home / "manifest.json").read_bytes() == before
