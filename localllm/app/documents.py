"""Document collections (``localllm docs``, ``run --docs``): add, update, list, remove, search,
and the prompt an answer is asked with. Each collection is one SQLite file under the data
directory's ``docs/``; its embedding model is chosen when it is made and recorded in it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localllm import paths
from localllm.docs import index
from localllm.docs.index import Progress, Summary
from localllm.docs.store import CollectionDB, Hit
from localllm.errors import DocumentsError, ModelNotFoundError

from . import loading

DEFAULT_EMBED = "all-minilm-l6-v2"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

__all__ = ["Collection", "Progress", "Summary", "Hit", "add", "update", "collections", "remove", "search"]


@dataclass(frozen=True)
class Collection:
    name: str
    roots: list[str]
    embed_model: str
    files: int
    chunks: int


def docs_dir() -> Path:
    return paths.data_dir() / "docs"


def _db_path(name: str) -> Path:
    if not _NAME.match(name):
        raise DocumentsError(f"{name!r} is not a collection name", hint="use letters, digits, '-', '_' and '.'")
    return docs_dir() / f"{name}.sqlite"


def _open(name: str) -> CollectionDB:
    path = _db_path(name)
    if not path.is_file():
        raise DocumentsError(
            f"no collection named {name}", hint="see `localllm docs list`, or make one with `localllm docs add`"
        )
    return CollectionDB(path)


def _model_key(path: Path) -> str:
    return f"{path.name}:{path.stat().st_size}"


@contextmanager
def _embedder(reference: str, expected_key: str | None = None):
    """An embedding function over the model ``reference`` names, opened for the block."""
    try:
        resolved = loading.find(reference)
    except ModelNotFoundError as exc:
        raise DocumentsError(
            f"the embedding model {reference} is not installed",
            hint=f"localllm pull {reference}, or pass --embed FILE.gguf",
        ) from exc
    key = _model_key(resolved.path)
    if expected_key is not None and key != expected_key:
        raise DocumentsError(
            f"the collection was indexed with {expected_key.split(':')[0]}, not {resolved.path.name}",
            hint="vectors of two models cannot be compared: search with the collection's model, or make a new collection",
        )
    with loading.open_model(resolved=resolved, n_ctx=512, n_gpu_layers=0) as model:
        limit = min(512, model.n_ctx_train or 512)

        def embed(texts: list[str]) -> list[list[float]]:
            fitted = []
            for text in texts:
                n = len(model.tokenize(text, add_special=True, parse_special=False))
                while n > limit:  # a dense chunk (code, a table) longer than the model reads: its start
                    text = text[: max(1, int(len(text) * limit / n * 0.9))]
                    n = len(model.tokenize(text, add_special=True, parse_special=False))
                fitted.append(text or " ")
            return model.embed(fitted, n_ctx=limit)[0]

        yield embed, resolved, key


def add(
    name: str, roots: Sequence[str | Path], embed_model: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Summary:  # fmt: skip
    """Make the collection ``name`` over ``roots`` and index it."""
    path = _db_path(name)
    if path.exists():
        raise DocumentsError(
            f"a collection named {name} exists", hint=f"localllm docs update {name}, or docs rm {name}"
        )
    absolute = [str(Path(r).expanduser().absolute()) for r in roots]
    for root in absolute:
        if not Path(root).exists():
            raise DocumentsError(f"{root} does not exist")
    reference = embed_model or DEFAULT_EMBED
    if reference.endswith(".gguf") and Path(reference).expanduser().is_file():
        reference = str(Path(reference).expanduser().absolute())  # found again from any folder
    with _embedder(reference) as (embed, resolved, key):
        dim = len(embed(["dimension probe"])[0])
        paths.ensure_dir(docs_dir())
        tmp = path.with_suffix(".creating")
        tmp.unlink(missing_ok=True)
        db = CollectionDB(tmp)
        try:
            db.create(name=name, roots=absolute, embed_model=reference, embed_key=key, dim=dim)
        finally:
            db.close()
        tmp.replace(path)  # a collection exists once its schema does; its files come in one by one
        db = CollectionDB(path)
        try:
            return index.update(db, [Path(r) for r in absolute], embed, progress)
        finally:
            db.close()


def update(name: str, progress: Callable[[Progress], None] | None = None) -> Summary:
    db = _open(name)
    try:
        meta = db.meta()
        with _embedder(meta["embed_model"], meta["embed_key"]) as (embed, _, _):
            return index.update(db, [Path(r) for r in json.loads(meta["roots"])], embed, progress)
    finally:
        db.close()


def collections() -> list[Collection]:
    out = []
    for path in sorted(docs_dir().glob("*.sqlite")) if docs_dir().is_dir() else []:
        db = CollectionDB(path)
        try:
            meta = db.meta()
            files, chunks = db.counts()
            out.append(Collection(meta["name"], json.loads(meta["roots"]), meta["embed_model"], files, chunks))
        finally:
            db.close()
    return out


def remove(name: str) -> None:
    path = _db_path(name)
    if not path.exists():
        raise DocumentsError(f"no collection named {name}", hint="see `localllm docs list`")
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)


def search(name: str, query: str, k: int = 5, embed_model: str | None = None) -> list[Hit]:
    """The ``k`` best chunks of ``name`` for ``query``; a model other than the collection's is refused."""
    db = _open(name)
    try:
        meta = db.meta()
        if embed_model is not None and embed_model not in (meta["embed_model"], Path(meta["embed_model"]).name):
            with _embedder(embed_model, meta["embed_key"]):
                pass  # raises unless it is the same file under another name
        with _embedder(meta["embed_model"], meta["embed_key"]) as (embed, _, _):
            vector = embed([query])[0]
        return index.search(db, query, vector, k)
    finally:
        db.close()


def display_path(name: str, path: str) -> str:
    """``path`` relative to the collection root that holds it (what citations show)."""
    db = _open(name)
    try:
        roots = json.loads(db.meta()["roots"])
    finally:
        db.close()
    return _relative(path, roots)


def _relative(path: str, roots: list[str]) -> str:
    for root in roots:
        r = Path(root)
        base = r.parent if r.is_file() else r
        try:
            return Path(path).relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return path


@dataclass(frozen=True)
class Source:
    cite: str  # "notes/a.md:3-10"
    heading: str
    text: str


def sources(name: str, hits: Sequence[Hit]) -> list[Source]:
    db = _open(name)
    try:
        roots = json.loads(db.meta()["roots"])
    finally:
        db.close()
    return [Source(f"{_relative(h.path, roots)}:{h.start_line}-{h.end_line}", h.heading, h.text) for h in hits]


INSTRUCTION = (
    "Answer the question using the sources below. After each fact, cite its source in square brackets "
    "exactly as given, e.g. [{example}]. If the sources do not contain the answer, say so."
)


def docs_prompt(
    question: str, found: Sequence[Source], budget_tokens: int, count_tokens: Callable[[str], int]
) -> tuple[str, list[Source]]:
    """The user message asking ``question`` over as many of ``found`` (best first) as fit in
    ``budget_tokens``; and the sources it holds."""
    head = INSTRUCTION.format(example=found[0].cite if found else "file:1-5")
    tail = f"\n\nQuestion: {question}"
    used = count_tokens(head + tail)
    parts, kept = [], []
    for source in found:
        block = f"\n\n[{source.cite}]\n{source.text}"
        cost = count_tokens(block)
        if used + cost > budget_tokens:
            continue
        parts.append(block)
        kept.append(source)
        used += cost
    return head + "\n\nSources:" + "".join(parts) + tail, kept
