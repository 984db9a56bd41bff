"""Saved conversations: one SQLite database under the data directory.

Every message is committed as soon as it is complete, and a reply being generated is saved
periodically with status ``partial``, so a crash (or a killed terminal) keeps everything before it.
The database runs in WAL mode: a write never blocks the reader that lists conversations.

One :class:`History` is shared by the UI thread and the worker that streams a reply; its methods
serialize on a lock, so the connection is used by one thread at a time.

The schema carries its version, so a database written by an older release opens in a newer one.
Changes are ordered :func:`migration` functions (in the manner of simonw/llm's ``migrations.py``);
migration *n* takes the database from version *n - 1* to *n*, and each one runs in its own
``BEGIN IMMEDIATE`` transaction together with the record that it ran, so a crash or a second
process opening the file at the same moment never leaves a half-migrated database.

The record is SQLite's ``PRAGMA user_version`` (an integer in the file's header), not a
``_migrations`` table of names as llm keeps. localllm's migrations are one linear sequence with no
plugins adding their own, so "how many have run" says everything a table of names would; the number
is written in the same transaction as the migration it counts, needs no table that could itself
need migrating, and answers at once whether the file comes from a *newer* localllm (a version
higher than :data:`SCHEMA_VERSION`): such a database is refused with :class:`HistoryError` before
anything in it is changed, never downgraded.

Releases before versioning created migration 1's tables with no version (``user_version`` 0); such
a database is recognised by its ``conversations`` table and recorded as version 1 as it is.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localllm import fs, paths
from localllm.errors import LocalLLMError

DEFAULT_TITLE = "New chat"
FILE_NAME = "history.sqlite3"

# Status of a message: "complete"; "partial" while streaming (or after a crash mid-reply);
# "stopped" when the user stopped the reply.
COMPLETE, PARTIAL, STOPPED = "complete", "partial", "stopped"


class HistoryError(LocalLLMError):
    """The conversation database could not be read or written."""


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration. Never reorder, edit or remove one that has shipped:
    users' databases record how many have run."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_conversations_and_messages(db: sqlite3.Connection) -> None:
    """The schema of every release before versioning (they created it with no version recorded)."""
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            model_path TEXT NOT NULL DEFAULT '',
            system_prompt TEXT NOT NULL DEFAULT '',
            settings TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'complete',
            stats TEXT,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX messages_by_conversation ON messages(conversation_id, id)")


@migration
def m002_message_reasoning(db: sqlite3.Connection) -> None:
    """A reply's reasoning (a reasoning model's thinking), kept apart from its answer: shown folded,
    never given back to the model as the answer."""
    db.execute("ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT ''")


SCHEMA_VERSION = len(MIGRATIONS)  # the newest version this code knows


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _is_unversioned_v1(db: sqlite3.Connection) -> bool:
    """A database from before versioning: migration 1's tables, version 0."""
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='conversations'").fetchone()
    return row is not None


def _newer_error(where: object, version: int, known: int) -> HistoryError:
    return HistoryError(
        f"the conversation history {where} was written by a newer localllm (schema version {version};"
        f" this one knows up to {known}); it was left untouched",
        hint="upgrade localllm, or set LOCALLLM_HOME to use another data directory",
    )


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS, *, where: object = "") -> int:
    """Run the migrations ``db`` has not had, each in its own transaction; returns its version.

    ``db`` must be in autocommit mode (``isolation_level=None``). Raises :class:`HistoryError`, and
    changes nothing, when ``db`` is newer than ``migrations``.
    """
    known = len(migrations)
    while True:
        db.execute("BEGIN IMMEDIATE")  # the write lock first: a second process waits, then sees our work
        try:
            version = schema_version(db)
            if version > known:
                raise _newer_error(where, version, known)
            if version == known:
                db.execute("ROLLBACK")  # nothing to do; nothing was written
                return version
            if not (version == 0 and _is_unversioned_v1(db)):
                migrations[version](db)
            db.execute(f"PRAGMA user_version = {version + 1:d}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


@dataclass(frozen=True)
class ConversationInfo:
    id: int
    title: str
    model: str
    model_path: str
    system_prompt: str
    settings: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str  # "user", "assistant", "system"
    content: str
    status: str = COMPLETE
    stats: dict[str, Any] | None = None
    created_at: float = 0.0
    reasoning: str = ""  # a reply's thinking, apart from its answer (``content``)

    def as_chat(self) -> dict[str, str]:
        """The message as the model is given it: the answer alone (templates leave past reasoning out)."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    info: ConversationInfo
    messages: list[StoredMessage] = field(default_factory=list)

    def chat_messages(self) -> list[dict[str, str]]:
        """What the model is given: the system prompt, then every non-empty message."""
        out = []
        if self.info.system_prompt.strip():
            out.append({"role": "system", "content": self.info.system_prompt})
        out.extend(m.as_chat() for m in self.messages if m.content or m.role == "user")
        return out


def default_path() -> Path:
    return paths.data_dir() / FILE_NAME


def input_history_path() -> Path:
    """The lines typed in the terminal chat (its Up arrow, across sessions): prompt_toolkit's file."""
    return paths.data_dir() / "chat_input_history"


class History:
    """The conversation store. ``clock`` is injectable so tests get fixed timestamps."""

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._clock = clock
        self._lock = threading.Lock()
        try:
            paths.ensure_dir(self.path.parent)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(
                f"cannot open the conversation history {self.path}: {exc}",
                hint="check the data directory's permissions, or set LOCALLLM_HOME",
            ) from exc
        try:
            # A newer localllm's database is refused before anything (even its journal mode) changes.
            version = schema_version(self._db)
            if version > SCHEMA_VERSION:
                raise _newer_error(self.path, version, SCHEMA_VERSION)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.execute("PRAGMA foreign_keys=ON")
            migrate(self._db, where=self.path)
        except HistoryError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise HistoryError(
                f"cannot open the conversation history {self.path}: {exc}",
                hint="check the data directory's permissions, or set LOCALLLM_HOME",
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- low level ------------------------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise HistoryError(f"conversation history {self.path}: {exc}") from exc

    def _inserted(self, cursor: sqlite3.Cursor) -> int:
        """The id of the row an INSERT through ``cursor`` added."""
        if cursor.lastrowid is None:  # sqlite3 sets it after every INSERT
            raise HistoryError(f"conversation history {self.path}: the new row has no id")
        return cursor.lastrowid

    def _touch(self, conversation_id: int) -> None:
        self._run("UPDATE conversations SET updated_at=? WHERE id=?", (self._clock(), conversation_id))

    # -- conversations --------------------------------------------------------------------------

    def create(
        self,
        *,
        title: str = DEFAULT_TITLE,
        model: str = "",
        model_path: str = "",
        system_prompt: str = "",
        settings: dict[str, Any] | None = None,
    ) -> int:
        now = self._clock()
        cursor = self._run(
            "INSERT INTO conversations (title, model, model_path, system_prompt, settings, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (title, model, model_path, system_prompt, json.dumps(settings or {}), now, now),
        )
        return self._inserted(cursor)

    def conversations(self) -> list[ConversationInfo]:
        """Every conversation, most recently active first."""
        rows = self._run(
            "SELECT id, title, model, model_path, system_prompt, settings, created_at, updated_at"
            " FROM conversations ORDER BY updated_at DESC, id DESC"
        ).fetchall()
        return [_info(row) for row in rows]

    def info(self, conversation_id: int) -> ConversationInfo:
        row = self._run(
            "SELECT id, title, model, model_path, system_prompt, settings, created_at, updated_at"
            " FROM conversations WHERE id=?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            raise HistoryError(f"no conversation with id {conversation_id}")
        return _info(row)

    def get(self, conversation_id: int) -> Conversation:
        info = self.info(conversation_id)
        rows = self._run(
            "SELECT id, role, content, status, stats, created_at, reasoning FROM messages"
            " WHERE conversation_id=? ORDER BY id",
            (conversation_id,),
        ).fetchall()
        messages = [
            StoredMessage(
                id=r[0],
                role=_text(r[1]),
                content=_text(r[2]),
                status=_text(r[3]) or COMPLETE,
                stats=_json_object(r[4]),
                created_at=_time(r[5]),
                reasoning=_text(r[6]),
            )
            for r in rows
        ]
        return Conversation(info, messages)

    def rename(self, conversation_id: int, title: str) -> None:
        title = " ".join(title.split()) or DEFAULT_TITLE
        self._run("UPDATE conversations SET title=? WHERE id=?", (title, conversation_id))

    def configure(
        self,
        conversation_id: int,
        *,
        model: str | None = None,
        model_path: str | None = None,
        system_prompt: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Change the model, system prompt or generation settings of a conversation."""
        for column, value in (
            ("model", model),
            ("model_path", model_path),
            ("system_prompt", system_prompt),
            ("settings", json.dumps(settings) if settings is not None else None),
        ):
            if value is not None:
                self._run(f"UPDATE conversations SET {column}=? WHERE id=?", (value, conversation_id))

    def delete(self, conversation_id: int) -> None:
        self._run("DELETE FROM conversations WHERE id=?", (conversation_id,))

    # -- messages -------------------------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        *,
        status: str = COMPLETE,
        stats: dict[str, Any] | None = None,
    ) -> int:
        cursor = self._run(
            "INSERT INTO messages (conversation_id, role, content, status, stats, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (conversation_id, role, content, status, json.dumps(stats) if stats else None, self._clock()),
        )
        self._touch(conversation_id)
        return self._inserted(cursor)

    def update_message(
        self,
        message_id: int,
        content: str,
        *,
        status: str | None = None,
        stats: dict[str, Any] | None = None,
        reasoning: str | None = None,
    ) -> None:
        """Save a reply's text so far (``partial``) or its final text and status; ``reasoning``: its
        thinking, kept apart from the answer."""
        self._run("UPDATE messages SET content=? WHERE id=?", (content, message_id))
        if reasoning is not None:
            self._run("UPDATE messages SET reasoning=? WHERE id=?", (reasoning, message_id))
        if status is not None:
            self._run("UPDATE messages SET status=? WHERE id=?", (status, message_id))
        if stats is not None:
            self._run("UPDATE messages SET stats=? WHERE id=?", (json.dumps(stats), message_id))

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Forget ``message_id`` and every later message (regenerate, edit and resend)."""
        self._run("DELETE FROM messages WHERE conversation_id=? AND id>=?", (conversation_id, message_id))

    # -- export ---------------------------------------------------------------------------------

    def to_json(self, conversation_id: int) -> dict[str, Any]:
        conv = self.get(conversation_id)
        info = conv.info
        return {
            "id": info.id,
            "title": info.title,
            "model": info.model,
            "system_prompt": info.system_prompt,
            "settings": info.settings,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "status": m.status,
                    "created_at": m.created_at,
                    **({"reasoning": m.reasoning} if m.reasoning else {}),
                    **({"stats": m.stats} if m.stats else {}),
                }
                for m in conv.messages
            ],
        }

    def to_markdown(self, conversation_id: int) -> str:
        conv = self.get(conversation_id)
        lines = [f"# {conv.info.title}", ""]
        if conv.info.model:
            lines += [f"Model: `{conv.info.model}`", ""]
        if conv.info.system_prompt.strip():
            lines += ["## System", "", conv.info.system_prompt.strip(), ""]
        for message in conv.messages:
            heading = {"user": "You", "assistant": "Assistant"}.get(message.role, message.role.title())
            note = {PARTIAL: " (interrupted)", STOPPED: " (stopped)"}.get(message.status, "")
            lines += [f"## {heading}{note}", ""]
            if message.reasoning.strip():  # folded, as the TUI shows it
                lines += ["<details><summary>Thinking</summary>", "", message.reasoning.strip(), "", "</details>", ""]
            lines += [message.content.strip(), ""]
        return "\n".join(lines).rstrip() + "\n"

    def export(self, conversation_id: int, dest: str | Path) -> Path:
        """Write the conversation to ``dest``: JSON if it ends in ``.json``, else Markdown."""
        dest = Path(dest).expanduser()
        if dest.suffix.lower() == ".json":
            text = json.dumps(self.to_json(conversation_id), indent=2, ensure_ascii=False) + "\n"
        else:
            text = self.to_markdown(conversation_id)
        try:
            if not dest.parent.is_dir():  # the user's path: never create folders for it
                raise FileNotFoundError(2, "no such directory", str(dest.parent))
            mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o644
            with fs.replacing(dest) as out:
                out.write(text.encode("utf-8"))
                os.chmod(out.name, mode)  # the temp file is private (0600); an export is for sharing
        except OSError as exc:
            raise HistoryError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        return dest


def _info(row: Sequence[Any]) -> ConversationInfo:
    return ConversationInfo(
        id=row[0],
        title=_text(row[1]) or DEFAULT_TITLE,
        model=_text(row[2]),
        model_path=_text(row[3]),
        system_prompt=_text(row[4]),
        settings=_json_object(row[5]) or {},
        created_at=_time(row[6]),
        updated_at=_time(row[7]),
    )


# A row another program (or a damaged disk) wrote may hold any type in any column: SQLite does not
# enforce declared types. A conversation opens with defaults for what cannot be read; nothing else
# in it is lost.


def _json_object(value: object) -> dict[str, Any] | None:
    """A JSON object column (settings, stats); None when empty, not JSON or not an object."""
    if not isinstance(value, (str, bytes)) or not value:
        return None
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _time(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and value == value else 0.0


def title_from(text: str, limit: int = 40) -> str:
    """A conversation title from its first message: the first line, shortened at a word."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    if len(line) <= limit:
        return line or DEFAULT_TITLE
    cut = line[:limit].rsplit(" ", 1)[0] or line[:limit]
    return cut.rstrip(" ,.;:") + "…"
