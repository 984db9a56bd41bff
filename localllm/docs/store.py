"""One collection's SQLite database: files, chunks, FTS5 (BM25) over the chunks and a sqlite-vec
``vec0`` table of their vectors. Versioned like the chat history (``meta.schema_version``); each
file is replaced in one transaction, so a kill leaves every file either fully indexed or not at all.

The standard library's ``sqlite3`` is often built without extension loading (Debian's and
python.org's macOS Python are): ``sqlean.py`` ships SQLite with it, and is used when present.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import DocumentsError

SCHEMA_VERSION = 1


def _module():
    try:
        import sqlean

        return sqlean
    except ImportError:
        return sqlite3


def connect(path: Path):
    import sqlite_vec

    db = _module().connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    try:
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.enable_load_extension(False)
    except AttributeError:
        raise DocumentsError(
            "this Python's sqlite3 cannot load extensions (sqlite-vec)", hint="pip install sqlean.py"
        ) from None
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@dataclass(frozen=True)
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    sha256: str
    n_chunks: int


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    path: str
    start_line: int
    end_line: int
    heading: str
    text: str
    score: float


def vector_blob(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


class CollectionDB:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)

    def close(self) -> None:
        self.db.close()

    # -- schema -----------------------------------------------------------------------------

    def create(self, *, name: str, roots: list[str], embed_model: str, embed_key: str, dim: int) -> None:
        self.db.executescript(
            f"""
                BEGIN;
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT,
                                    n_chunks INTEGER);
                CREATE TABLE chunks (id INTEGER PRIMARY KEY, path TEXT NOT NULL, start_line INTEGER,
                                     end_line INTEGER, heading TEXT, text TEXT NOT NULL);
                CREATE INDEX chunks_path ON chunks(path);
                CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, text, content='chunks', content_rowid='id');
                CREATE VIRTUAL TABLE chunks_vec USING vec0(embedding float[{int(dim)}] distance_metric=cosine);
                """
        )
        meta = {"schema_version": SCHEMA_VERSION, "name": name, "roots": json.dumps(roots),
                "embed_model": embed_model, "embed_key": embed_key, "dim": dim}  # fmt: skip
        self.db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
        self.db.execute("COMMIT")

    def meta(self) -> dict[str, str]:
        try:
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
        except _module().DatabaseError as exc:
            raise DocumentsError(f"{self.path} is not a collection database ({exc})") from None
        version = int(meta.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise DocumentsError(
                f"the collection {meta.get('name')} was made by a newer localllm (schema {version})",
                hint="upgrade localllm",
            )
        return meta

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def transaction(self):
        db = self.db

        class _Tx:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # -- files ------------------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        rows = self.db.execute("SELECT path, size, mtime_ns, sha256, n_chunks FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def _delete_chunks(self, path: str) -> None:
        ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
        for chunk_id in ids:
            row = self.db.execute("SELECT heading, text FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
            self.db.execute(
                "INSERT INTO chunks_fts(chunks_fts, rowid, heading, text) VALUES ('delete', ?, ?, ?)", (chunk_id, *row)
            )
            self.db.execute("DELETE FROM chunks_vec WHERE rowid = ?", (chunk_id,))
        self.db.execute("DELETE FROM chunks WHERE path = ?", (path,))

    def replace_file(self, record: FileRecord, chunks, vectors) -> None:
        """``record``'s chunks and vectors in place of what the file had, in one transaction."""
        with self.transaction():
            self._delete_chunks(record.path)
            for c, v in zip(chunks, vectors):
                cur = self.db.execute(
                    "INSERT INTO chunks(path, start_line, end_line, heading, text) VALUES (?, ?, ?, ?, ?)",
                    (record.path, c.start_line, c.end_line, c.heading, c.text),
                )
                rowid = cur.lastrowid
                self.db.execute(
                    "INSERT INTO chunks_fts(rowid, heading, text) VALUES (?, ?, ?)", (rowid, c.heading, c.text)
                )
                self.db.execute("INSERT INTO chunks_vec(rowid, embedding) VALUES (?, ?)", (rowid, vector_blob(v)))
            self.db.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                (record.path, record.size, record.mtime_ns, record.sha256, record.n_chunks),
            )

    def touch_file(self, record: FileRecord) -> None:
        self.db.execute(
            "UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (record.size, record.mtime_ns, record.path)
        )

    def remove_file(self, path: str) -> None:
        with self.transaction():
            self._delete_chunks(path)
            self.db.execute("DELETE FROM files WHERE path = ?", (path,))

    def counts(self) -> tuple[int, int]:
        files = self.db.execute("SELECT count(*) FROM files").fetchone()[0]
        chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return files, chunks

    # -- search -----------------------------------------------------------------------------

    def vector_search(self, vector: Sequence[float], k: int) -> list[tuple[int, float]]:
        rows = self.db.execute(
            "SELECT rowid, distance FROM chunks_vec WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (vector_blob(vector), k),
        )
        return [(r[0], 1.0 - r[1]) for r in rows]

    def text_search(self, query: str, k: int) -> list[tuple[int, float]]:
        words = [w for w in "".join(ch if ch.isalnum() else " " for ch in query).split() if w]
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        rows = self.db.execute(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
            (match, k),
        )
        return [(r[0], -r[1]) for r in rows]

    def chunk(self, chunk_id: int) -> tuple[str, int, int, str, str]:
        return self.db.execute(
            "SELECT path, start_line, end_line, heading, text FROM chunks WHERE id = ?", (chunk_id,)
        ).fetchone()
