"""Document collections (``localllm docs``, ``run --docs``): add, update, list, remove, search,
and the prompt an answer is asked with. Each collection is one SQLite file under the data
directory's ``docs/``; its embedding model is chosen when it is made and recorded in it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm import paths
from localllm.docs import index
from localllm.docs.index import Progress, Summary
from localllm.docs.store import CollectionDB, Hit
from localllm.errors import CollectionNotFoundError, DocumentsError, ModelNotFoundError

from . import loading

DEFAULT_EMBED = "all-minilm-l6-v2"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

__all__ = [
    "Collection", "Progress", "Summary", "Hit", "Source", "Retriever", "add", "update", "collections", "remove",
    "search", "ground", "sources_text", "embedder_bytes",
]  # fmt: skip
TOP_K = 8  # chunks retrieved per question (as many of them as fit the context go in the prompt)


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
        raise CollectionNotFoundError(
            f"no collection named {name}", hint="see `localllm docs list`, or make one with `localllm docs add`"
        )
    return CollectionDB(path)


EMBED_CTX = 512  # what the embedding model is loaded with (a chunk longer than it reads is cut)


def require(name: str) -> None:
    """Raise :class:`CollectionNotFoundError` unless the collection ``name`` exists."""
    _open(name).close()


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
    with loading.open_model(resolved=resolved, n_ctx=EMBED_CTX, n_gpu_layers=0) as model:
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

    @property
    def title(self) -> str:
        """The chunk's own heading, else the last heading above it (what a sources list shows)."""
        first = self.text.lstrip().split("\n", 1)[0]
        return first.lstrip("#").strip() if first.startswith("#") else self.heading.split(" > ")[-1].lstrip("#").strip()

    def record(self, *, text: bool = False) -> dict[str, Any]:
        """The source as JSON output gives it (``run --json``, batch records, serve's ``sources``)."""
        file, _, lines = self.cite.rpartition(":")
        out: dict[str, Any] = {"cite": f"[{self.cite}]", "file": file, "lines": lines, "heading": self.heading}
        return {**out, "text": self.text} if text else out

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Source:
        """A source saved with a chat's reply (:meth:`record` with its text)."""
        cite = str(record.get("cite", "")).strip("[]")
        return cls(cite, str(record.get("heading", "")), str(record.get("text", "")))


def _source(hit: Hit, roots: list[str]) -> Source:
    return Source(f"{_relative(hit.path, roots)}:{hit.start_line}-{hit.end_line}", hit.heading, hit.text)


def sources(name: str, hits: Sequence[Hit]) -> list[Source]:
    db = _open(name)
    try:
        roots = json.loads(db.meta()["roots"])
    finally:
        db.close()
    return [_source(h, roots) for h in hits]


def sources_text(kept: Sequence[Source]) -> str:
    """The sources list printed under an answer (``run --docs``, the terminal chat)."""
    if not kept:
        return "Sources: none of the collection's chunks matched\n"
    lines = [f"  [{s.cite}]  {s.title}".rstrip() for s in kept]
    return "Sources:\n" + "\n".join(lines) + "\n"


class Retriever:
    """A collection attached to a chat, a batch or a server: its embedding model held open beside
    the chat model (:func:`embedder_bytes` is what the planner counts for it), each question's best
    chunks found with it, and the prompt built from them (:func:`ground`). One question at a time:
    threads share it. Raises :class:`DocumentsError` for a collection that does not exist, or whose
    embedding model is gone."""

    def __init__(self, name: str, k: int = TOP_K) -> None:
        db = _open(name)
        try:
            meta = db.meta()
        finally:
            db.close()
        self.name, self.k, self._path = name, k, _db_path(name)
        self.roots: list[str] = json.loads(meta["roots"])
        self._lock = threading.Lock()
        self.memory_bytes = embedder_bytes(name)  # what the planner leaves for it beside a chat model
        self._stack = ExitStack()
        self._embed, self.embed_model, _ = self._stack.enter_context(_embedder(meta["embed_model"], meta["embed_key"]))

    def retrieve(self, question: str) -> list[Source]:
        """The collection's best chunks for ``question``, best first."""
        with self._lock:
            if not self._path.is_file():
                raise DocumentsError(f"the collection {self.name} was removed", hint="attach another one")
            vector = self._embed([question])[0]
            db = CollectionDB(self._path)
            try:
                hits = index.search(db, question, vector, self.k)
            finally:
                db.close()
        return [_source(h, self.roots) for h in hits]

    def ground(
        self, model: Any, messages: Sequence[dict[str, Any]], reserve: int, n_ctx: int | None = None
    ) -> tuple[list[dict[str, Any]], list[Source]]:
        """``messages`` with their last question asked over this collection (see :func:`ground`)."""
        return ground(model, messages, self.retrieve(_question(messages)[1]), reserve, n_ctx)

    def close(self) -> None:
        with self._lock:  # not while a question is being embedded
            self._stack.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def embedder_bytes(name: str) -> int:
    """The memory the embedding model of the collection ``name`` takes, loaded (on the CPU, with
    its small context) beside a chat model: what the planner leaves for it."""
    from localllm.errors import EstimateError
    from localllm.fit import estimate
    from localllm.gguf import cache as headercache

    db = _open(name)
    try:
        reference = db.meta()["embed_model"]
    finally:
        db.close()
    try:
        path = loading.find(reference).path
    except ModelNotFoundError as exc:
        raise DocumentsError(f"the embedding model {reference} of {name} is not installed") from exc
    try:
        header = headercache.read_header(path)
        settings = estimate.Settings(n_ctx=EMBED_CTX, n_gpu_layers=0, n_batch=EMBED_CTX, n_ubatch=EMBED_CTX)
        est = estimate.estimate(header, settings)
    except EstimateError:
        return path.stat().st_size  # an architecture the estimate does not know: its weights at least
    return est.cpu.total + est.gpu.total


MARGIN = 64  # tokens for the chat template's wrapping of the messages


def _question(messages: Sequence[dict[str, Any]]) -> tuple[int, str]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            content = messages[i].get("content")
            if isinstance(content, str) and content.strip():
                return i, content
            break
    raise DocumentsError(
        "there is no question to answer from the documents", hint="the last message must be the user's, as text"
    )


def ground(
    model: Any, messages: Sequence[dict[str, Any]], found: Sequence[Source], reserve: int, n_ctx: int | None = None
) -> tuple[list[dict[str, Any]], list[Source]]:
    """``messages`` with the last user message replaced by the question asked over ``found`` (best
    first), and the sources that went in. The one place a grounded prompt is built (``run --docs``,
    the chats, batch, serve): the chunks take what the context has left after the conversation and
    ``reserve`` tokens for the reply, and at least half of what the system prompt and the question
    leave (older turns then make way: the chat's context fitting drops them). ``n_ctx``: the
    context of the sequence the prompt goes in (default: the model's)."""
    last, question = _question(messages)

    def count(text: str) -> int:
        return len(model.tokenize(text, add_special=False, parse_special=False))

    def size(ms: Sequence[dict[str, Any]]) -> int:
        return sum(count(m["content"]) + 8 for m in ms if isinstance(m.get("content"), str))

    system = [m for m in messages[:1] if m.get("role") == "system"]
    room = (n_ctx or model.n_ctx) - reserve - MARGIN
    budget = max(room - size(messages), (room - size([*system, messages[last]])) // 2) + count(question)
    prompt, kept = docs_prompt(question, found, budget, count)
    grounded = [dict(m) for m in messages]
    grounded[last] = {**grounded[last], "content": prompt}
    return grounded, kept


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


class Retrievers:
    """Retrievers by collection name, opened when first asked for and closed together (a batch's
    lines, a server's requests name their collections one by one). Thread-safe."""

    def __init__(self) -> None:
        self._open: dict[str, Retriever] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Retriever:
        with self._lock:
            if name not in self._open:
                self._open[name] = Retriever(name)
            return self._open[name]

    def memory_bytes(self) -> int:
        """What the open retrievers' embedding models take (the planner leaves it for them)."""
        with self._lock:
            return sum(r.memory_bytes for r in self._open.values())

    def close(self) -> None:
        with self._lock:
            for retriever in self._open.values():
                retriever.close()
            self._open.clear()

    def __enter__(self) -> Retrievers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
