"""Batch completion over JSONL: many prompts through one model, several decoded at once.

Input: one JSON object per line, ``{"id": ..., "prompt": "..."}`` (sent as one user message, in the
model's chat template, as ``localllm run`` does) or ``{"id": ..., "messages": [{"role", "content"}...]}``,
with optional sampling options (``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
``repeat_penalty``, ``seed``: :data:`localllm.options.SAMPLING`, the limits every surface has),
``stop`` (a string or a list), ``docs`` (a document collection the line's question is answered
from, citing ``[file:lines]``: its record then has ``sources``),
``json_schema`` (a JSON schema the reply must match) or ``response_format`` (OpenAI's
``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"schema": {...}}}``).
Other keys are ignored, so records can carry their own labels.

Output: one JSON object per finished line, in the order they finish:
``{"id", "text", "finish_reason", "prompt_tokens", "completion_tokens", "timing"}``, or
``{"id", "line", "error"}`` for a line that cannot be run (malformed JSON, no id, no prompt, a
duplicate id, a prompt longer than a sequence's context, a bad schema); the batch goes on.

Crash safety: each record is appended with a single ``write`` of one complete line and fsync'd
before the next, so a kill at any moment loses only the sequences in flight. A partial last line
(left by a crash of something else, or a full disk) is cut away on start. Running the same
command again skips the lines already answered (by id) or already rejected (by line number).

Same input, seeds and ``--parallel`` give the same output run after run: requests are admitted in
input order and batched without regard to timing. A resumed run batches the remaining lines
differently, so its replies can differ from an uninterrupted run's where llama.cpp's batched
kernels round differently (see docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from localllm.errors import LocalLLMError, OutputError, UsageError
from localllm.options import SAMPLING, OptionError

# --------------------------------------------------------------------------------------------
# Defaults and the memory budget

DEFAULT_MAX_TOKENS = 512
# Lines whose prompts share this many leading tokens evaluate them once (run_batch's share_prefix;
# `localllm batch` passes it). llama.cpp logs a line for every copy between KV streams, and ctypes
# swallows a KeyboardInterrupt raised while Python runs that log callback: the CLI's Ctrl-C
# therefore sets the batch's cancel event instead of raising (cli.batch.ctrl_c_sets).
SHARE_PREFIX = 32


# --------------------------------------------------------------------------------------------
# Reading input lines


@dataclass
class LineRequest:
    """One valid input line, before tokenization."""

    line: int  # 1-based line number in the input
    id: object
    messages: list[dict[str, str]]
    stop: tuple[str, ...]
    schema: object | None  # a JSON schema dict, or None
    ignore_eos: bool = False
    sampling: dict[str, object] = field(default_factory=dict)  # the SAMPLING options the line sets
    docs: str | None = None  # the document collection the question is answered from
    model: str | None = None  # the line's "model" (a string): used by a batch over endpoints only


class LineError(Exception):
    """An input line that cannot be run; becomes an error record."""

    def __init__(self, message: str, id: object = None) -> None:
        super().__init__(message)
        self.id = id


def _sampling_of(obj: dict) -> dict[str, object]:
    """The sampling options a line sets, each checked against the schema."""
    try:
        return {
            name: option.check(obj[name], f'"{name}"') for name, option in SAMPLING.items() if obj.get(name) is not None
        }
    except OptionError as exc:
        raise LineError(exc.message) from None


def _schema_of(obj: dict) -> object | None:
    if obj.get("json_schema") is not None:
        schema = obj["json_schema"]
        if not isinstance(schema, dict):
            raise LineError('"json_schema" must be a JSON object (a JSON schema)')
        return schema
    fmt = obj.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise LineError('"response_format" must be {"type": "text" | "json_object" | "json_schema", ...}')
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}
    inner = fmt.get("json_schema")
    schema = inner.get("schema") if isinstance(inner, dict) else None
    if not isinstance(schema, dict):
        raise LineError('"response_format" of type json_schema needs "json_schema": {"schema": {...}}')
    return schema


MAX_LINE_DEPTH = 64  # JSON nesting in one input line; a request needs 4 (schemas a few more)


def _no_constant(name: str) -> object:
    raise LineError(f"not valid JSON: {name} is not a JSON number")


def _nesting(text: str) -> int:
    """The deepest bracket nesting in ``text`` outside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def load_line(text: str) -> object:
    """One input line as JSON, by this module's one policy; :class:`LineError` for anything else.

    The line must be UTF-8 (bytes that were not are ``surrogateescape``d by :func:`read_lines`),
    valid JSON without NaN/Infinity, nested at most :data:`MAX_LINE_DEPTH` deep, with integers of
    at most 4300 digits and no lone surrogates (``"\\ud800"``), which could not be written back
    out as UTF-8.
    """
    bad = next((i for i, c in enumerate(text) if "\udc80" <= c <= "\udcff"), None)
    if bad is not None:
        raise LineError(f"not UTF-8 text (byte 0x{ord(text[bad]) - 0xDC00:02x} at column {bad + 1})")
    if text.count("[") + text.count("{") > MAX_LINE_DEPTH and _nesting(text) > MAX_LINE_DEPTH:
        raise LineError(f"nested more than {MAX_LINE_DEPTH} deep")
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise LineError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise LineError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise LineError(f"nested more than {MAX_LINE_DEPTH} deep") from None
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise LineError("contains a lone surrogate (\\ud800-\\udfff), which is not text") from None
    return obj


def parse_line(text: str, line: int) -> LineRequest:
    """A valid request from one input line, or :class:`LineError` saying what is wrong with it."""
    obj = load_line(text)
    if not isinstance(obj, dict):
        raise LineError("not a JSON object")
    ident = obj.get("id")
    if ident is None or isinstance(ident, (bool, float, dict, list)) or ident == "":
        raise LineError('no "id" (a string or an integer)')
    try:
        if "messages" in obj:
            messages = obj["messages"]
            if (
                not isinstance(messages, list)
                or not messages
                or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages
                )
            ):
                raise LineError('"messages" must be a non-empty list of {"role": ..., "content": ...}')
            messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        elif isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
            messages = [{"role": "user", "content": obj["prompt"]}]
        else:
            raise LineError('no "prompt" (a non-empty string) or "messages"')
        stop = obj.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise LineError('"stop" must be a string or a list of non-empty strings')
        docs = obj.get("docs")
        if docs is not None and (not isinstance(docs, str) or not docs):
            raise LineError('"docs" must be the name of a document collection')
        return LineRequest(
            line=line,
            id=ident,
            docs=docs,
            messages=messages,
            sampling=_sampling_of(obj),
            stop=tuple(stop),
            schema=_schema_of(obj),
            ignore_eos=obj.get("ignore_eos") is True,
            model=obj["model"] if isinstance(obj.get("model"), str) and obj["model"].strip() else None,
        )
    except LineError as exc:
        raise LineError(str(exc), ident) from None


# --------------------------------------------------------------------------------------------
# Writing results


class ResultWriter:
    """Appends records to a JSONL file, each as one write of one complete line, fsync'd.

    The file is locked (``flock``) for as long as the writer is open, so a second ``batch`` onto the
    same output refuses instead of answering every line twice. Before anything is changed, every
    complete line must be a batch record; only then is a torn last line (a crash mid-write) cut
    away, and only when it starts the way a record does. A write that fails (a full disk) is rolled
    back to the last complete line, so the file stays valid JSONL.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done_ids: set[str] = set()  # json.dumps(id) of lines answered
        self.failed_lines: set[int] = set()  # line numbers of lines rejected
        self._fd = -1
        self._open()
        try:
            self._resume()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise UsageError(f"cannot write {self.path}: it is a directory") from None
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(self._fd).st_mode):
            self.close()
            raise UsageError(f"cannot write {self.path}: not a regular file", hint="use -o - for a pipe")
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise UsageError(
                f"{self.path} is being written by another localllm batch",
                hint="wait for it to finish, or write to another file",
            ) from None

    def _read_all(self) -> bytes:
        os.lseek(self._fd, 0, os.SEEK_SET)
        parts = []
        while chunk := os.read(self._fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)

    def _resume(self) -> None:
        try:
            data = self._read_all()
        except OSError as exc:
            raise UsageError(f"cannot read {self.path}: {exc.strerror}") from exc
        end = data.rfind(b"\n") + 1
        for number, raw in enumerate(data[:end].split(b"\n")[:-1], 1):
            if raw.strip():
                self._take(number, raw)
        tail = data[end:]
        if tail:
            if not tail.startswith(_RECORD_START):
                raise UsageError(
                    f"{self.path} does not end with a complete line: it is not the output of localllm batch",
                    hint="write the output to a new file",
                )
            # A line cut short by a crash: its record was never complete; run it again.
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)

    def _take(self, number: int, raw: bytes) -> None:
        """Note a complete line of the existing output; UsageError if it is not a batch record."""
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            record = None
        if not (
            isinstance(record, dict)
            and "id" in record
            and ("text" in record or ("error" in record and isinstance(record.get("line"), int)))
        ):
            raise UsageError(
                f"{self.path} line {number} is not a batch record: it is not the output of localllm batch",
                hint="write the output to a new file",
            )
        if "error" in record:
            self.failed_lines.add(record["line"])
        else:
            self.done_ids.add(json.dumps(record["id"]))

    def write(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, size)  # no torn line left behind
            except OSError:
                pass
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}",
                hint="the results written so far are kept; free space and run the same command",
            ) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1


_RECORD_START = b'{"id": '  # how every record this module writes begins (json.dumps, "id" first)


class StreamWriter:
    """Writes records to a text stream (stdout), flushing each line."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.done_ids: set[str] = set()
        self.failed_lines: set[int] = set()

    def write(self, record: dict) -> None:
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Running a batch


@dataclass(frozen=True)
class BatchDefaults:
    """Settings for lines that do not give their own (the rest: :data:`localllm.options.SAMPLING`'s)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = SAMPLING["temperature"].default
    top_p: float = SAMPLING["top_p"].default
    seed: int = 0  # the same input gives the same output


@dataclass
class EndpointProgress:
    """What one server of a batch over endpoints (:mod:`localllm.batch.remote`) has done so far."""

    label: str  # host:port, or the URL where that is ambiguous
    limit: int  # requests it is sent at once now (lowered after its 429s and 503s)
    in_flight: int = 0
    done: int = 0
    completion_tokens: int = 0
    state: str = "up"  # "up", "waiting" (backing off after an error or a 429/503), "down"
    wall_s: float = 0.0

    @property
    def lines_per_s(self) -> float:
        return self.done / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class BatchProgress:
    total: int  # lines to run in this invocation (after skipping)
    done: int = 0
    errors: int = 0
    skipped: int = 0
    failed_before: int = 0  # among the skipped: lines an earlier run answered with an error record
    prompt_tokens: int = 0
    completion_tokens: int = 0
    shared_tokens: int = 0  # prompt tokens not evaluated: copied from another line's shared prefix
    drafted_tokens: int = 0  # speculative decoding (--draft ngram): tokens drafted, and of those accepted
    accepted_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    wall_s: float = 0.0
    endpoints: list[EndpointProgress] = field(default_factory=list)  # a batch over servers: one each

    @property
    def finished(self) -> int:
        return self.done + self.errors

    @property
    def failed(self) -> int:
        """Input lines whose record in the output is an error (this run's and earlier runs')."""
        return self.errors + self.failed_before

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.finished == 0 or self.wall_s <= 0:
            return None
        return self.wall_s / self.finished * (self.total - self.finished)


def read_lines(data: bytes | str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of JSONL input.

    Split on ``\\n`` only (a raw U+2028 inside a JSON string is part of its line), a ``\\r``
    before it dropped, a byte-order mark before the first line ignored. Each line is decoded
    from UTF-8 on its own: bytes that are not UTF-8 are kept as ``surrogateescape`` characters, so
    that line (and only that line) gets an error record from :func:`load_line`.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        if raw.strip():
            lines.append((n, raw.decode("utf-8", "surrogateescape")))
    return lines


def _todo(
    lines: list[tuple[int, str]], writer: ResultWriter | StreamWriter
) -> tuple[list[tuple[int, str]], int, int, set[str]]:
    """The lines not already answered (by id) or rejected (by line number) in the output; how many
    were skipped, and how many of those had failed before; the ids seen so far (a later line with
    one of them is a duplicate)."""
    seen: set[str] = set()
    todo: list[tuple[int, str]] = []
    skipped = failed_before = 0
    for number, text in lines:
        if number in writer.failed_lines:
            skipped += 1
            failed_before += 1
            continue
        try:
            obj = load_line(text)
            ident = json.dumps(obj.get("id")) if isinstance(obj, dict) else None
        except (LineError, ValueError):
            ident = None
        if ident is not None and ident != "null" and ident in writer.done_ids and ident not in seen:
            seen.add(ident)
            skipped += 1
            continue
        todo.append((number, text))
    return todo, skipped, failed_before, seen


def _result_record(result) -> dict:
    """The output line of one finished sequence (a runtime.BatchResult)."""
    _, ident = result.key
    gen_rate = (result.completion_tokens - 1) / result.generation_s if result.generation_s > 0 else 0.0
    return {
        "id": ident,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "timing": {
            "wait_s": round(result.wait_s, 4),
            "prompt_s": round(result.prompt_s, 4),
            "generation_s": round(result.generation_s, 4),
            "tokens_per_s": round(gen_rate, 2),
        },
    }


class Job:
    """One run of a batch, whoever answers its lines (a local model: :func:`run_batch`; servers:
    :func:`localllm.batch.remote.run_on_endpoints`): the lines still to do, the counts, and the one
    way records reach the output. Each id is written once: a second answer for an id already
    written (a retry whose first attempt was answered after all) is dropped."""

    def __init__(
        self,
        lines: list[tuple[int, str]],
        writer: ResultWriter | StreamWriter,
        progress: Callable[[BatchProgress], None] | None = None,
    ) -> None:
        self.todo, skipped, failed_before, self.seen = _todo(lines, writer)
        self.writer = writer
        self.state = BatchProgress(total=len(self.todo), skipped=skipped, failed_before=failed_before)
        self._progress = progress
        self._written: set[str] = set()

    def report(self) -> None:
        self.state.wall_s = time.perf_counter() - self.state.started
        if self._progress is not None:
            self._progress(self.state)

    def reject(self, number: int, ident: object, message: str) -> None:
        """An error record for input line ``number``; the batch goes on."""
        self.writer.write({"id": ident, "line": number, "error": message})
        self.state.errors += 1
        self.report()

    def answer(self, record: dict, *, cached_tokens: int = 0) -> bool:
        """Write one answered line's record (``id`` first); False (nothing written) for an id
        already answered in this run."""
        key = json.dumps(record["id"])
        if key in self._written:
            return False
        self.writer.write(record)
        self._written.add(key)
        self.state.done += 1
        self.state.prompt_tokens += record["prompt_tokens"]
        self.state.shared_tokens += cached_tokens
        self.state.completion_tokens += record["completion_tokens"]
        self.report()
        return True

    def requests(self) -> Iterator[LineRequest]:
        """The valid lines still to do, lazily and in input order; a line that cannot be parsed
        or repeats an earlier id gets its error record instead."""
        for number, text in self.todo:
            try:
                req = parse_line(text, number)
                key = json.dumps(req.id)
                if key in self.seen:
                    raise LineError(f"duplicate id {key} (first used on an earlier line)", req.id)
                self.seen.add(key)
            except LineError as exc:
                self.reject(number, exc.id, str(exc))
                continue
            yield req


# A line's ``docs``: (collection, messages, tokens kept for the reply, context) -> (the messages
# asked over what was found, the sources as output records).
Ground = Callable[[str, list[dict[str, str]], int, int], tuple[list[dict[str, str]], list[dict]]]


class _Requests:
    """Turns a job's lines into batch requests, lazily and in order; a line that cannot run here
    (a bad schema, too long a prompt, an unknown collection) becomes an error record and the batch
    goes on."""

    def __init__(self, model, defaults: BatchDefaults, job: Job, ground: Ground | None = None):
        self.model, self.defaults, self.job = model, defaults, job
        self.ground = ground
        self.sources: dict[tuple[int, object], list[dict]] = {}  # each grounded line's, by key
        self.grammars: dict[str, str] = {}

    def _grammar(self, session, schema: object) -> str:
        from localllm import runtime

        key = json.dumps(schema, sort_keys=True)
        if key not in self.grammars:
            grammar = runtime.json_schema_grammar(schema)
            session.check_grammar(grammar)
            self.grammars[key] = grammar
        return self.grammars[key]

    def _sampling(self, req: LineRequest):
        from localllm import runtime

        d = self.defaults
        given = {"temperature": d.temperature, "top_p": d.top_p, "seed": d.seed, "max_tokens": d.max_tokens}
        return runtime.SamplingOptions(**{**given, **req.sampling}, stop=req.stop, ignore_eos=req.ignore_eos)

    def __call__(self, session) -> Iterator:
        from localllm import runtime

        model = self.model
        for req in self.job.requests():
            try:
                grammar = self._grammar(session, req.schema) if req.schema is not None else None
                messages = req.messages
                if req.docs is not None:
                    if self.ground is None:
                        raise LineError('"docs" is not available in this batch', req.id)
                    reserve = int(req.sampling.get("max_tokens") or self.defaults.max_tokens)  # type: ignore[call-overload]
                    messages, found = self.ground(req.docs, messages, reserve, session.n_ctx_seq)
                    self.sources[(req.line, req.id)] = found
                tokens = model.chat_tokens(messages)
                session.check(tokens)
            except (LineError, LocalLLMError) as exc:
                self.job.reject(req.line, req.id, str(exc))
                continue
            yield runtime.BatchRequest(
                key=(req.line, req.id), tokens=tokens, sampling=self._sampling(req), grammar=grammar
            )


def run_batch(
    model,
    lines: list[tuple[int, str]],
    writer: ResultWriter | StreamWriter,
    *,
    n_parallel: int,
    n_ctx_seq: int | None = None,
    defaults: BatchDefaults = BatchDefaults(),
    n_threads: int | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    share_prefix: int = 0,
    ground: Ground | None = None,
    draft: str | None = None,
) -> BatchProgress:
    """Run every line not already in the output; returns the counts. ``model`` is a runtime.Model.
    Lines sharing at least ``share_prefix`` leading prompt tokens with a running one copy its cells
    for them (0: every line evaluates its whole prompt). ``ground`` answers lines with ``docs``."""
    from localllm import runtime

    job = Job(lines, writer, progress)
    requests = _Requests(model, defaults, job, ground)
    job.report()
    with runtime.BatchSession(model, n_parallel, n_ctx_seq, n_threads=n_threads, draft=draft) as session:
        for result in session.run(requests(session), cancel=cancel, share_prefix=share_prefix):
            record = _result_record(result)
            if result.key in requests.sources:
                record["sources"] = requests.sources.pop(result.key)
            job.state.drafted_tokens += result.drafted_tokens
            job.state.accepted_tokens += result.accepted_tokens
            job.answer(record, cached_tokens=result.cached_tokens)
    job.report()
    return job.state
