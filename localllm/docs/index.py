"""Update a collection from its folders, and search it (vector + BM25, reciprocal-rank fusion).

An update walks the roots, re-reads only files whose size or mtime changed and re-embeds only
those whose sha256 changed; files gone from disk leave the index. Each file is one transaction:
killed at any point, the collection holds every file either as before or as now, and the next
update does the rest. Memory is bounded by one file (at most ``readers.MAX_BYTES``) and one batch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import chunker, readers, walk
from .store import CollectionDB, FileRecord, Hit

Embed = Callable[[list[str]], list[list[float]]]
RRF_K = 60  # the constant of reciprocal-rank fusion (Cormack et al.): 1 / (60 + rank)
BATCH = 16


@dataclass
class Progress:
    files_done: int
    files_total: int
    chunks: int
    elapsed_s: float
    current: str = ""

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.files_done or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.files_done * (self.files_total - self.files_done)


@dataclass
class Summary:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    elapsed_s: float = 0.0


def update(
    db: CollectionDB,
    roots: Sequence[Path],
    embed: Embed,
    progress: Callable[[Progress], None] | None = None,
) -> Summary:
    summary = Summary()
    started = time.monotonic()
    known = db.files()
    found = list(walk.files(list(roots)))
    seen: set[str] = set()
    total = len(found)
    for n, item in enumerate(found, 1):
        key = str(item.path)
        if item.problem:
            summary.skipped.append((key, item.problem))
            continue
        seen.add(key)
        _one(db, item.path, known.get(key), embed, summary)
        if progress:
            progress(Progress(n, total, summary.chunks, time.monotonic() - started, key))
    for path in sorted(set(known) - seen):
        db.remove_file(path)
        summary.removed += 1
    summary.elapsed_s = time.monotonic() - started
    return summary


def _one(db: CollectionDB, path: Path, old: FileRecord | None, embed: Embed, summary: Summary) -> None:
    key = str(path)
    try:
        st = path.stat()
        if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            summary.unchanged += 1
            return
        if st.st_size > readers.MAX_BYTES:
            raise readers.Unreadable(
                f"too large ({st.st_size // (1024 * 1024)} MiB > {readers.MAX_BYTES // (1024 * 1024)} MiB)"
            )
        data = path.read_bytes()
    except PermissionError:
        return _skip(db, key, old, "permission denied", summary)
    except readers.Unreadable as exc:
        return _skip(db, key, old, str(exc), summary)
    except OSError as exc:
        return _skip(db, key, old, f"cannot read ({exc.strerror})", summary)
    sha = hashlib.sha256(data).hexdigest()
    record = FileRecord(key, st.st_size, st.st_mtime_ns, sha, 0)
    if old and old.sha256 == sha:
        db.touch_file(record)
        summary.unchanged += 1
        return
    try:
        text = readers.read(path, data)
    except readers.Unreadable as exc:
        return _skip(db, key, old, str(exc), summary)
    del data
    chunks = chunker.chunk(text, markdown=readers.kind(path) in ("markdown", "html", "docx", "pdf"))
    vectors: list[list[float]] = []
    for i in range(0, len(chunks), BATCH):
        vectors += embed([c.embedding_text() for c in chunks[i : i + BATCH]])
    db.replace_file(FileRecord(key, st.st_size, st.st_mtime_ns, sha, len(chunks)), chunks, vectors)
    summary.chunks += len(chunks)
    if old:
        summary.changed += 1
    else:
        summary.added += 1


def _skip(db: CollectionDB, key: str, old: FileRecord | None, why: str, summary: Summary) -> None:
    summary.skipped.append((key, why))
    if old:  # it was indexed and cannot be read now: its old chunks would cite text no longer there
        db.remove_file(key)


def search(db: CollectionDB, query: str, query_vector: Sequence[float], k: int = 5) -> list[Hit]:
    """The ``k`` best chunks for ``query``: vector and BM25 rankings fused by reciprocal rank."""
    depth = max(k * 4, 20)
    fused: dict[int, float] = {}
    for ranking in (db.vector_search(query_vector, depth), db.text_search(query, depth)):
        for rank, (chunk_id, _) in enumerate(ranking, 1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    best = sorted(fused.items(), key=lambda kv: -kv[1])[:k]
    hits = []
    for chunk_id, score in best:
        path, start, end, heading, text = db.chunk(chunk_id)
        hits.append(Hit(chunk_id, path, start, end, heading, text, round(score, 6)))
    return hits
