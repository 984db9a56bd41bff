"""The conversation database carries its schema version: older databases open and are migrated
without losing anything, newer ones are refused untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from localllm.chat import history as history_mod
from localllm.chat.history import History, HistoryError

# The schema exactly as released before versioning (localllm/history.py ``_SCHEMA``), copied as a
# literal so this test keeps describing the databases users have, whatever the code becomes.
RELEASED_SCHEMA = """
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

CONVERSATIONS = [
    (
        1,
        "Bonjour ☕ — café",
        "smollm2-135m",
        "/m/a.gguf",
        "Réponds en français.",
        '{"temperature": 0.7}',
        1700000000.5,
        1700000100.25,
    ),
    (2, "New chat", "", "", "", "{}", 1700000200.0, 1700000300.0),
]
MESSAGES = [
    (1, 1, "user", "Un café, s'il vous plaît 🙂", "complete", None, 1700000001.0),
    (2, 1, "assistant", "Voilà ! 日本語も", "complete", '{"tokens": 5, "tok_s": 41.5}', 1700000002.0),
    (3, 1, "user", "Encore", "complete", None, 1700000003.0),
    (4, 1, "assistant", "Bien s", "partial", None, 1700000004.0),  # the app died mid-reply
    (5, 2, "system", "line one\nline two", "complete", None, 1700000201.0),
]


def released_database(path: Path) -> Path:
    """A history database exactly as the release before versioning left it."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(RELEASED_SCHEMA)
    db.executemany("INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", CONVERSATIONS)
    db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", MESSAGES)
    db.commit()
    db.close()
    return path


def rows(path: Path) -> tuple[list[tuple], list[tuple]]:
    db = sqlite3.connect(path)
    try:
        return (
            db.execute("SELECT * FROM conversations ORDER BY id").fetchall(),
            db.execute("SELECT * FROM messages ORDER BY id").fetchall(),
        )
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_released_database_is_version_1_and_keeps_everything(tmp_path: Path) -> None:
    path = released_database(tmp_path / "history.sqlite3")
    assert user_version(path) == 0

    h = History(path)
    try:
        assert [c.id for c in h.conversations()] == [2, 1]
        first = h.get(1)
        assert first.info.title == "Bonjour ☕ — café"
        assert first.info.system_prompt == "Réponds en français."
        assert first.info.settings == {"temperature": 0.7}
        assert first.info.created_at == 1700000000.5
        assert [(m.id, m.role, m.content, m.status) for m in first.messages] == [
            (1, "user", "Un café, s'il vous plaît 🙂", "complete"),
            (2, "assistant", "Voilà ! 日本語も", "complete"),
            (3, "user", "Encore", "complete"),
            (4, "assistant", "Bien s", "partial"),
        ]
        assert first.messages[1].stats == {"tokens": 5, "tok_s": 41.5}
        assert h.get(2).messages[0].content == "line one\nline two"
    finally:
        h.close()

    # byte for byte what was there; migration 2 adds each message an empty reasoning
    assert rows(path) == (CONVERSATIONS, [(*m, "") for m in MESSAGES])
    assert user_version(path) == history_mod.SCHEMA_VERSION >= 2

    h = History(path)  # a second open migrates nothing and changes nothing
    try:
        new_id = h.create(title="after")
        h.add_message(new_id, "user", "still writable")
    finally:
        h.close()
    conversations, messages = rows(path)
    assert conversations[:2] == CONVERSATIONS and messages[:5] == [(*m, "") for m in MESSAGES]
    assert user_version(path) == history_mod.SCHEMA_VERSION


def test_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "new" / "history.sqlite3"
    h = History(path)
    h.close()
    assert user_version(path) == history_mod.SCHEMA_VERSION == len(history_mod.MIGRATIONS)
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    db.close()
    assert {"conversations", "messages", "messages_by_conversation"} <= tables


def test_fresh_database_has_the_released_schema(tmp_path: Path) -> None:
    """Migration 1 makes the same tables the release did (compared column by column); a migrated
    released database and a fresh one end up alike."""

    def columns(path: Path) -> dict[str, list[tuple]]:
        db = sqlite3.connect(path)
        try:
            return {t: db.execute(f"PRAGMA table_info({t})").fetchall() for t in ("conversations", "messages")}
        finally:
            db.close()

    db = sqlite3.connect(tmp_path / "v1.sqlite3", isolation_level=None)
    history_mod.migrate(db, history_mod.MIGRATIONS[:1])
    db.close()
    assert columns(tmp_path / "v1.sqlite3") == columns(released_database(tmp_path / "old.sqlite3"))
    History(tmp_path / "fresh.sqlite3").close()
    History(tmp_path / "old.sqlite3").close()
    fresh = columns(tmp_path / "fresh.sqlite3")
    assert fresh == columns(tmp_path / "old.sqlite3")
    assert fresh["messages"][-1][1:5] == ("reasoning", "TEXT", 1, "''")  # migration 2


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = released_database(tmp_path / "history.sqlite3")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {history_mod.SCHEMA_VERSION + 1}")
    db.execute("CREATE TABLE from_the_future (x)")
    db.commit()
    db.close()
    before = path.read_bytes()

    with pytest.raises(HistoryError, match="newer localllm") as info:
        History(path)
    assert info.value.hint and "upgrade" in info.value.hint
    assert path.read_bytes() == before
    assert user_version(path) == history_mod.SCHEMA_VERSION + 1


def test_only_missing_migrations_run_each_in_a_transaction(tmp_path: Path) -> None:
    """A later migration runs once on an older database; one that fails leaves it as it was."""
    path = released_database(tmp_path / "history.sqlite3")
    History(path).close()
    ran = []

    def m_next_add_pinned(db: sqlite3.Connection) -> None:
        ran.append("next")
        db.execute("ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")

    def m_then_broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("boom")

    db = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="boom"):
            history_mod.migrate(db, [*history_mod.MIGRATIONS, m_next_add_pinned, m_then_broken])
        assert ran == ["next"]
        known = len(history_mod.MIGRATIONS)
        assert history_mod.schema_version(db) == known + 1  # the next one committed, the broken one rolled back
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in names
        assert history_mod.migrate(db, [*history_mod.MIGRATIONS, m_next_add_pinned]) == known + 1
        assert ran == ["next"]  # not run again
        assert db.execute("SELECT id, pinned FROM conversations ORDER BY id").fetchall() == [(1, 0), (2, 0)]
    finally:
        db.close()
