"""Saved conversations: what survives, in what order, and how it is exported."""

from __future__ import annotations

import json
import sqlite3

import pytest

from localllm.chat import history as hist
from localllm.chat.history import History, HistoryError


def clock():
    t = [1000.0]

    def tick() -> float:
        t[0] += 1
        return t[0]

    return tick


def test_conversation_round_trip_and_order(tmp_path):
    db = History(tmp_path / "h.sqlite3", clock=clock())
    first = db.create(title="First", model="m:Q4", system_prompt="Be brief.", settings={"temperature": 0.2})
    second = db.create(title="Second")
    db.add_message(first, "user", "Hi")  # touching it makes it the most recent
    db.add_message(first, "assistant", "Hello!", stats={"tokens_per_s": 10.0})
    assert [c.title for c in db.conversations()] == ["First", "Second"]
    conv = db.get(first)
    assert [(m.role, m.content) for m in conv.messages] == [("user", "Hi"), ("assistant", "Hello!")]
    assert conv.messages[1].stats == {"tokens_per_s": 10.0}
    assert conv.chat_messages()[0] == {"role": "system", "content": "Be brief."}
    assert conv.info.settings == {"temperature": 0.2}
    assert second in [c.id for c in db.conversations()]


def test_uses_wal_and_lives_in_the_data_dir(isolated_home):
    db = History()
    assert db.path == isolated_home / "history.sqlite3"
    mode = sqlite3.connect(db.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_partial_reply_survives_a_crash(tmp_path):
    path = tmp_path / "h.sqlite3"
    db = History(path)
    conv = db.create()
    db.add_message(conv, "user", "Tell me a story")
    reply = db.add_message(conv, "assistant", "", status=hist.PARTIAL)
    db.update_message(reply, "Once upon a time")
    # No close(): a crash. Another process opening the file sees everything committed so far.
    reopened = History(path).get(conv)
    assert [(m.content, m.status) for m in reopened.messages] == [
        ("Tell me a story", hist.COMPLETE),
        ("Once upon a time", hist.PARTIAL),
    ]


def test_rename_delete_and_truncate(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create()
    ids = [db.add_message(conv, role, text) for role, text in [("user", "a"), ("assistant", "b"), ("user", "c")]]
    db.delete_messages_from(conv, ids[1])
    assert [m.content for m in db.get(conv).messages] == ["a"]
    db.rename(conv, "  Trip   plans ")
    assert db.info(conv).title == "Trip plans"
    db.delete(conv)
    assert db.conversations() == []
    with pytest.raises(HistoryError):
        db.get(conv)


def test_export_markdown_and_json(tmp_path):
    db = History(tmp_path / "h.sqlite3", clock=clock())
    conv = db.create(title="Capitals", model="smollm2:Q4_1", system_prompt="Answer briefly.")
    db.add_message(conv, "user", "Capital of France?")
    db.add_message(conv, "assistant", "Paris.", status=hist.STOPPED)
    md = db.export(conv, tmp_path / "c.md").read_text()
    assert md.startswith("# Capitals\n")
    assert "## You\n\nCapital of France?" in md and "## Assistant (stopped)\n\nParis." in md
    assert "Answer briefly." in md
    data = json.loads(db.export(conv, tmp_path / "c.json").read_text())
    assert data["title"] == "Capitals" and data["model"] == "smollm2:Q4_1"
    assert [(m["role"], m["content"], m["status"]) for m in data["messages"]] == [
        ("user", "Capital of France?", "complete"),
        ("assistant", "Paris.", "stopped"),
    ]


def test_export_to_unwritable_place_is_a_clear_error(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create()
    with pytest.raises(HistoryError, match="cannot write"):
        db.export(conv, tmp_path / "missing-dir" / "c.md")


def test_title_from_first_message():
    assert hist.title_from("  What is the capital of France?\nmore") == "What is the capital of France?"
    long = hist.title_from("Explain in great detail how a transformer language model works please")
    assert long.endswith("…") and len(long) <= 41
    assert hist.title_from("   ") == hist.DEFAULT_TITLE


def test_export_replaces_the_file_whole_and_readable(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create(title="Shared")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = db.export(conv, out_dir / "c.md")
    assert dest.stat().st_mode & 0o777 == 0o644  # not the temp file's private 0600
    dest.chmod(0o640)
    db.rename(conv, "Renamed")
    db.export(conv, dest)
    assert dest.read_text().startswith("# Renamed\n")
    assert dest.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode
    assert [p.name for p in out_dir.iterdir()] == ["c.md"]  # no temp file left behind
