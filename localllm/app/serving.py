"""Serving models to many clients at once: the use case behind ``localllm serve``.

A :class:`ModelManager` resolves the model a request names (as ``run -m`` does), loads it on
demand through the one load path (:func:`~localllm.app.loading.open_for_batch`, sized by the
planner for N parallel sequences) behind a continuous-batching engine, keeps at most
``max_models`` loaded (the least recently used goes first) and unloads each after its
``keep_alive`` idle time, as Ollama does. :meth:`ModelManager.start` turns a request (chat
messages or a raw prompt, sampling, a JSON schema) into a :class:`Reply` that streams text.

Nothing here knows HTTP: the server (``localllm.server``) parses requests into
:class:`GenerateRequest` and maps the errors raised here to statuses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from localllm.chat.context import reply_reserve
from localllm.chat.reasoning import think_budget
from localllm.chat.toolcalls import (
    ContentDelta,
    Event,
    ParsedReply,
    StreamParser,
    Tool,
    ToolChoice,
    constraint,
    detect,
    prepare,
)
from localllm.errors import (
    ContextOverflowError,
    EngineClosedError,
    LocalLLMError,
    ModelNotFoundError,
    ServerBusyError,
    UsageError,
)
from localllm.fit.hardware import Hardware, parse_bytes
from localllm.models import catalog, store
from localllm.models.refs import parse_ref
from localllm.models.resolve import ResolvedModel, from_installed
from localllm.runtime.options import AdapterSpec, SamplingOptions

from . import documents, loading

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: five minutes
DEFAULT_QUEUE_SIZE = 64  # requests waiting for a sequence, per model
DEFAULT_CACHE_RAM = 1 << 30  # KV cells of evicted prompts kept in RAM, per model (--cache-ram)
DOCS_SUFFIX = "@docs:"  # ``model@docs:NAME``: the model, answering from the collection NAME

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_cache_ram(text: str) -> int:
    """Bytes from ``--cache-ram`` ("1G", "512M", "0"); UsageError for anything else."""
    try:
        return parse_bytes(text)
    except UsageError as exc:
        raise UsageError(f"--cache-ram: {exc}", hint=exc.hint) from None


def parse_keep_alive(value: object) -> float:
    """Seconds a model stays loaded after its last request, from Ollama's ``keep_alive``: a
    number of seconds or a duration ("5m", "30s", "1h30m"); 0 unloads when done; a negative value
    keeps it loaded (``math.inf``). ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError('keep_alive must be a duration such as "5m" or a number of seconds')
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = float(body)  # "300", "-1"
        except ValueError:
            parts = _DURATION_RE.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise ValueError(f'keep_alive must be a duration such as "5m", "30s" or "1h", not {value!r}') from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
        seconds *= sign
    else:
        raise ValueError('keep_alive must be a duration such as "5m" or a number of seconds')
    if math.isnan(seconds):
        raise ValueError("keep_alive must be a number of seconds, not NaN")
    return math.inf if seconds < 0 else seconds


DEFAULT_PARALLEL = 8  # sequences per model when --parallel is not given (fewer if memory holds fewer)


@dataclass(frozen=True)
class ServeOptions:
    """How ``serve`` loads models; None: the planner decides (as for ``batch``)."""

    model: str | None = None  # the default for requests that name none (else the last used model)
    n_parallel: int | None = None
    n_ctx_seq: int | None = None
    max_models: int = 1
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    switch_wait_s: float = 30.0  # how long a request for another model waits for a busy one to finish
    # LoRA adapters (--lora) loaded once with every model they fit; requests choose them (and scales).
    adapters: tuple[AdapterSpec, ...] = ()
    draft: str | None = None  # speculative decoding (--draft ngram) in every model's sequences
    # Bytes of KV cells kept in RAM per model for prompts no sequence holds any more (--cache-ram).
    cache_ram: int = DEFAULT_CACHE_RAM


@dataclass(frozen=True)
class GenerateRequest:
    """One completion: chat ``messages`` (rendered with the model's template) or a raw ``prompt``
    (given to the model as it is). Sampling fields left None take localllm's defaults."""

    model: str | None = None
    messages: Sequence[Mapping[str, Any]] | None = None  # OpenAI's chat shape (tool_calls, tool role)
    prompt: str | None = None
    prompt_ids: tuple[int, ...] | None = None  # a raw prompt given as token ids (OpenAI's token-id prompts)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    schema: object | None = None  # a JSON schema the reply must match ({"type": "object"}: any object)
    ignore_eos: bool = False  # generate max_tokens whatever the model says (benchmarks; llama-server has it too)
    keep_alive_s: float | None = None  # None: the server's default
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    reasoning: bool | None = None  # None: the template's default; False: think off
    reasoning_budget: int | None = None  # tokens (Anthropic's budget_tokens)
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)  # chat_template_kwargs
    logprobs: int | None = None  # None: none; N: each token's log-probability and its N likeliest
    # llama-server's ``lora``: (adapter id in load order, or name; scale); adapters left out are off.
    # None: the adapter a ``base+adapter`` model name gives, else the --lora scales.
    adapters: Sequence[tuple[int | str, float]] | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias), checked against the vocabulary
    # A document collection the last question is answered from (also ``model@docs:NAME``): the
    # chunks found go in the prompt, the reply's ``sources`` lists them.
    docs: str | None = None

    def sampling(self, max_tokens: int | None) -> SamplingOptions:
        given = {k: getattr(self, k) for k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")}
        return SamplingOptions(
            **{k: v for k, v in given.items() if v is not None},
            max_tokens=max_tokens,
            stop=self.stop,
            ignore_eos=self.ignore_eos,
            logit_bias=self.logit_bias,
        )


@dataclass(frozen=True)
class Wanted:
    """The model a request names, resolved once per request."""

    key: str  # the installed model's name:QUANT (or the default's label): what is loaded under
    name: str  # what the request said (after defaults)
    resolved: ResolvedModel | None = None  # None: named by the key of a loaded model


@dataclass
class _Resident:
    """A loaded model with its engine, and who is using it."""

    key: str  # the installed model's name:QUANT (or the default's label)
    batch: Any  # loading.BatchModel
    engine: Any  # runtime.BatchEngine
    keep_alive_s: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0  # replies not yet finished

    @property
    def expires_at(self) -> float | None:
        """Monotonic time at which it unloads; None while busy or kept forever."""
        if self.busy or math.isinf(self.keep_alive_s):
            return None
        return self.last_used + self.keep_alive_s


@dataclass(frozen=True)
class ModelFacts:
    """What a client is told about a model file (Ollama's ``details``)."""

    architecture: str
    parameters: int
    file_type: str | None  # "Q4_K_M"; None when the file says nothing

    @classmethod
    def of(cls, header: Any) -> ModelFacts:
        return cls(header.architecture or "", header.n_params or 0, header.file_type_name)


def facts(path: Any) -> ModelFacts:
    """The facts of a model file, from its (cached) GGUF header; LocalLLMError or OSError when it
    cannot be read."""
    from localllm.gguf import cache as headercache

    return ModelFacts.of(headercache.read_header(path))


@dataclass(frozen=True)
class Ranking:
    """Relevance scores of documents for a query, in the documents' order (``/v1/rerank``)."""

    model: str
    method: str  # "rank": a reranker GGUF's classification head; "cosine": embedding similarity
    scores: list[float]
    n_tokens: int  # tokens read


@dataclass(frozen=True)
class Health:
    """Whether the server can take requests, for ``/health``: "ok", "loading" (a model is loading
    and none is loaded yet) or "error" (stopping, or the last load failed and none is loaded)."""

    status: str
    detail: str = ""


@dataclass(frozen=True)
class Counters:
    """Models loaded, unloaded and failed to load since the server started (for ``/metrics``)."""

    loads: int
    unloads: int
    load_failures: int


@dataclass(frozen=True)
class RunningModel:
    """A loaded model, for ``/api/ps``."""

    name: str
    size: int  # bytes of the model file
    n_parallel: int
    n_ctx_seq: int
    expires_in_s: float | None  # None: busy or kept loaded
    path: str
    active: int  # sequences decoding now
    queued: int  # requests waiting for a sequence
    facts: ModelFacts | None = None


class Reply:
    """A started completion: iterate (or ``async for``) for text pieces; :attr:`result` holds the
    runtime's BatchResult (finish reason, token counts) once the text has ended. Ending the
    iteration early, or :meth:`cancel`, stops the sequence at once and frees its slot."""

    def __init__(
        self, model: str, stream: Any, release: Any, n_ctx_seq: int, parser: StreamParser | None = None
    ) -> None:
        self.model = model
        self._parser = parser
        self._parsed: ParsedReply | None = None
        self._text: list[str] = []
        self.prompt_tokens: int = stream.prompt_tokens
        self.n_ctx_seq = n_ctx_seq
        self.result: Any = None
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.pieces = 0  # text pieces received (a piece is a token, or a few for multi-byte text)
        self._stream = stream
        self._release = release
        self.sources: list[dict[str, Any]] | None = None  # a request with docs: what it was asked over

    def _take(self, item: Any) -> str | None:
        if isinstance(item, str):
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.pieces += 1
            return item
        self.result = item
        return None

    def __iter__(self) -> Iterator[str]:
        try:
            for item in self._stream:
                text = self._take(item)
                if text is not None:
                    yield text
        finally:
            self.close()

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for item in self._stream:
                text = self._take(item)
                if text is not None:
                    yield text
        finally:
            self.close()

    def read(self) -> str:
        return "".join(self)

    def _events_of(self, piece: str | None) -> list[Event]:
        """The parser's events for a piece (None: the end of the text)."""
        if self._parser is None:
            if piece is None:
                self._parsed = ParsedReply("".join(self._text))
                return []
            self._text.append(piece)
            return [ContentDelta(piece)]
        if piece is None:
            events = self._parser.finish()
            self._parsed = self._parser.reply()
            return events
        return self._parser.feed(piece)

    def events(self) -> Iterator[Event]:
        """The reply as content, reasoning and tool-call events (through the model's format)."""
        for piece in self:
            yield from self._events_of(piece)
        yield from self._events_of(None)

    async def aevents(self) -> AsyncIterator[Event]:
        async for piece in self:
            for event in self._events_of(piece):
                yield event
        for event in self._events_of(None):
            yield event

    def parsed(self) -> ParsedReply:
        """The whole reply split into its parts (after :meth:`events` has ended)."""
        if self._parsed is None:
            raise RuntimeError("the reply has not ended")
        return self._parsed

    @property
    def completion_tokens(self) -> int:
        """Tokens generated (for a reply cancelled early: the pieces it had sent)."""
        return self.result.completion_tokens if self.result is not None else self.pieces

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens the server found already evaluated (its prompt cache)."""
        return getattr(self.result, "cached_tokens", 0) if self.result is not None else 0

    @property
    def finish_reason(self) -> str:
        if self._parsed is not None and self._parsed.tool_calls:
            return "tool_calls"
        return self.result.finish_reason if self.result is not None else "cancelled"

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the reply, if one did."""
        return self.result.stop_sequence if self.result is not None else None

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop the sequence if it is still running, and give the model back (idempotent)."""
        if self.result is None:
            self._stream.cancel()
        release, self._release = self._release, None
        if release is not None:
            release()


def _render(model: Any, request: GenerateRequest) -> tuple[Any, str, list[int]]:
    """(the chat template's tool-call format or None, the prompt text, its tokens) for ``request``:
    its messages rendered with the model's chat template (with its tools, as the format offers them),
    or its raw prompt. What ``_submit`` evaluates and ``count_tokens`` counts."""
    n_vocab = model.llama.n_vocab()
    outside = [t for t in (*(request.prompt_ids or ()), *(t for t, _ in request.logit_bias)) if not 0 <= t < n_vocab]
    if outside:
        field = "logit_bias" if outside[0] not in (request.prompt_ids or ()) else "prompt"
        raise UsageError(
            f"'{field}' holds token id {outside[0]}, outside the model's vocabulary (0 to {n_vocab - 1})",
            hint="token ids come from this model's tokenizer",
            field=field,
        )
    if request.prompt_ids is not None:
        return None, "", list(request.prompt_ids)
    if request.messages is None:
        text = request.prompt or ""
        return None, text, model.tokenize(text, add_special=True, parse_special=True)
    fmt = detect(model.chat_template_source)
    prepared = prepare(
        fmt,
        request.messages,
        request.tools,
        request.tool_choice,
        reasoning=request.reasoning,
        template_kwargs=request.template_kwargs,
    )
    text = model.render_chat(prepared.messages, **prepared.template_vars)
    return fmt, text, model.prompt_tokens(text)


@functools.lru_cache(maxsize=64)
def _grammar(schema: str) -> str:
    """The grammar of a JSON schema's text; clients tend to send the same few schemas again."""
    from localllm import runtime

    return runtime.json_schema_grammar(schema)


class ModelManager:
    """The models a server holds loaded, and the one way a request reaches one.

    Thread-safe. Loading, rendering and tokenizing block: the server calls :meth:`start` from a
    worker thread, then streams the reply on its event loop."""

    def __init__(
        self,
        options: ServeOptions | None = None,
        *,
        hardware: Hardware | None = None,
        loader: Callable[[str, ResolvedModel], tuple[Any, Any]] | None = None,
    ) -> None:
        self.options = options or ServeOptions()
        self._hardware = hardware
        # (key, resolved) -> (the loaded model, its engine), each with close(): the seam that tests
        # the manager without llama.cpp (Ollama's scheduler has the same); None: load for real.
        self._loader = loader
        self._lock = threading.Condition()
        self._resident: dict[str, _Resident] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._pending = 0  # models being loaded now: they count against max_models
        self._closed = False
        self._loads = self._unloads = self._load_failures = 0
        self._last_load_error: str | None = None  # cleared by the next load that succeeds
        self._reaper = threading.Thread(target=self._reap, name="localllm-unload", daemon=True)
        self._reaper.start()
        self.retrievers = documents.Retrievers()  # the collections requests named (``docs``), kept open

    # -- which model -------------------------------------------------------------------------

    def resolve(self, name: str | None) -> Wanted:
        """The model a request names, resolved once: empty means the server's default, else the
        last used model; a loaded model's key needs no look-up. Only installed models (and the
        default) are served: ModelNotFoundError says how to pull one that is not."""
        name = (name or "").strip() or self.options.model or ""
        with self._lock:
            if name and name in self._resident:
                return Wanted(name, name=name)
        return self._look_up(name)

    def _look_up(self, name: str) -> Wanted:
        if not name:
            recent = store.most_recent()
            if recent is None:
                starter = catalog.load_catalog().starter().name
                raise ModelNotFoundError("no model is installed", hint=f"download one with: localllm pull {starter}")
            return Wanted(recent.key, name=recent.key, resolved=from_installed(recent))
        if name == self.options.model:
            resolved = loading.find(name)
            return Wanted(resolved.label, name=name, resolved=resolved)
        return self._installed(name)

    def _installed(self, name: str) -> Wanted:
        if name.lower().endswith(":latest"):  # Ollama clients add it to names without a tag
            name = name[: -len(":latest")]
        ref = parse_ref(name)
        not_installed = ModelNotFoundError(
            f"model {name!r} is not installed", hint=f"download it with: localllm pull {name}"
        )
        if ref.kind == "file":
            raise not_installed  # a client names models, never files on the server's disk
        if ref.kind == "catalog" and store.find_installed(ref.name, ref.quant) is None:
            entry = catalog.load_catalog().find(ref.name)
            if entry is not None and entry.pypi is not None:
                raise not_installed  # resolving would fetch the starter model: a server only serves
        resolved = loading.find(name)
        if resolved.installed is None:
            raise not_installed
        return Wanted(resolved.installed.key, name=name, resolved=resolved)

    def _resolved(self, wanted: Wanted) -> ResolvedModel:
        """The file to load for ``wanted``. Named by the key of a loaded model that has unloaded
        since, it is looked up now: the only second look-up, in that race."""
        if wanted.resolved is not None:
            return wanted.resolved
        resolved = self._look_up(wanted.name).resolved
        assert resolved is not None  # a look-up always resolves
        return resolved

    # -- loading and unloading ---------------------------------------------------------------

    def _acquire(self, name: str | None, keep_alive_s: float | None) -> _Resident:
        """The loaded model for ``name``, marked busy (loading it, and unloading others, first)."""
        wanted = self.resolve(name)
        key = wanted.key
        keep = self.options.keep_alive_s if keep_alive_s is None else keep_alive_s
        with self._lock:
            loader = self._loading.setdefault(key, threading.Lock())
        with loader:  # one load per model; others asking for it wait for that load
            with self._lock:
                resident = self._resident.get(key)
                if resident is not None:
                    resident.busy += 1
                    resident.keep_alive_s = keep
                    return resident
                unloaded = self._make_room()
                self._pending += 1
            self._free(unloaded)  # before the load: the memory they held is what it needs
            try:
                resident = self._load(key, self._resolved(wanted), keep)
            except BaseException as exc:
                with self._lock:
                    self._load_failures += 1
                    self._last_load_error = f"{key} failed to load: {exc}"
                raise
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()
            with self._lock:
                closed = self._closed  # the server stopped while this model loaded
                if not closed:
                    self._resident[key] = resident
                    self._loads += 1
                    self._last_load_error = None
                    resident.busy += 1
            if closed:
                self._free([resident])
                raise EngineClosedError("the server is stopping")
            return resident

    def _make_room(self) -> list[_Resident]:
        """Take idle models off the resident list until one more fits under max_models (the lock
        is held); the models taken off, for the caller to :meth:`_free` once it has let go of the lock."""
        deadline = time.monotonic() + self.options.switch_wait_s
        unloaded: list[_Resident] = []
        while len(self._resident) + self._pending >= self.options.max_models:
            idle = [r for r in self._resident.values() if not r.busy]
            if idle:
                unloaded.append(self._unload(min(idle, key=lambda r: r.last_used)))
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                # Models already taken off stay off: freed on a thread of their own, lock released.
                threading.Thread(target=self._free, args=(unloaded,), name="localllm-free", daemon=True).start()
                raise ServerBusyError(
                    f"{len(self._resident)} model(s) are loaded and busy; another cannot load now",
                    hint="try again shortly, or start the server with a higher --max-models",
                    retry_after_s=5.0,
                )
            self._lock.wait(left)
        return unloaded

    def _load(self, key: str, resolved: ResolvedModel, keep_alive_s: float) -> _Resident:
        if self._loader is not None:
            batch, engine = self._loader(key, resolved)
            return _Resident(key, batch, engine, keep_alive_s)
        from localllm import runtime

        o = self.options
        # Unasked, as many sequences as the planner fits but at most DEFAULT_PARALLEL: unlike a batch
        # file, a server does not know how many requests will come, and a context sized for what
        # the whole memory holds would take it all (and tens of seconds to clear) for one client.
        batch = loading.open_for_batch(
            resolved=resolved,
            adapters=self._fitting_adapters(resolved.path),
            n_ctx_seq=o.n_ctx_seq,
            n_parallel=o.n_parallel,
            n_gpu_layers=o.n_gpu_layers,
            n_threads=o.n_threads,
            hardware=self._hardware,
            lines=None if o.n_parallel else DEFAULT_PARALLEL,
            beside=self.retrievers.memory_bytes(),  # the collections' embedding models requests use
        )
        try:
            engine = runtime.BatchEngine(
                batch.opened.model,
                batch.n_parallel,
                batch.n_ctx_seq,
                queue_size=o.queue_size,
                n_threads=o.n_threads,
                cache_ram=o.cache_ram,
                draft=o.draft,
            )
        except BaseException:
            batch.close()
            raise
        return _Resident(key, batch, engine, keep_alive_s)

    def _fitting_adapters(self, path: Any) -> tuple[AdapterSpec, ...]:
        """The --lora adapters made for the model file at ``path`` (the others are not loaded with it)."""
        if not self.options.adapters:
            return ()
        from localllm.gguf import adapter as ggufadapter
        from localllm.gguf import cache as headercache

        header = headercache.read_header(path)
        fitting = []
        for spec in self.options.adapters:
            try:
                ggufadapter.check_fits(ggufadapter.read_adapter(spec.path), header, str(path))
            except LocalLLMError:
                continue
            fitting.append(spec)
        return tuple(fitting)

    def adapters_of(self, key: str) -> list[dict[str, Any]]:
        """llama-server's ``/lora-adapters`` for a loaded model: id, path and default scale of each."""
        with self._lock:
            resident = self._resident.get(key)
        if resident is None:
            return []
        model = resident.batch.opened.model
        defaults = dict(model.default_adapters)
        return [
            {"id": i, "name": name, "path": str(a.path), "scale": defaults.get(name, 0.0)}
            for i, (name, a) in enumerate(model.adapters.items())
        ]

    def combinations(self) -> list[tuple[str, store.InstalledModel]]:
        """``base+adapter`` names a client can ask for: each installed model with each --lora adapter
        made for it."""
        pairs = []
        for model in self.installed():
            try:
                fitting = self._fitting_adapters(model.path())
            except (LocalLLMError, OSError):  # a file that cannot be read offers no pairs
                continue
            pairs += [(f"{model.key}+{spec.label}", model) for spec in fitting]
        return pairs

    def _unload(self, resident: _Resident) -> _Resident:
        """Take a model no reply is using off the resident list (the lock is held); it is closed
        by :meth:`_free`, after the lock is released: closing joins the engine's thread and frees
        llama.cpp's memory, which takes long enough to stall every request waiting for the lock."""
        self._resident.pop(resident.key, None)
        self._unloads += 1
        self._lock.notify_all()
        return resident

    @staticmethod
    def _free(residents: Sequence[_Resident]) -> None:
        """Close models taken off the resident list (called without the lock)."""
        for resident in residents:
            resident.engine.close()
            resident.batch.close()

    def _release(self, resident: _Resident) -> None:
        with self._lock:
            resident.busy -= 1
            resident.last_used = time.monotonic()
            self._lock.notify_all()  # the reaper, and requests waiting for room

    def _reap(self) -> None:
        """Unload each model once its keep_alive has passed since its last reply."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                due = [r for r in self._resident.values() if r.expires_at is not None and r.expires_at <= now]
                unloaded = [self._unload(r) for r in due]
                if not unloaded:
                    later = [r.expires_at for r in self._resident.values() if r.expires_at is not None]
                    self._lock.wait(min(later) - now if later else None)
            self._free(unloaded)

    # -- requests ----------------------------------------------------------------------------

    def split_adapter(self, name: str | None) -> tuple[str | None, str | None]:
        """``base+adapter`` -> (base, adapter) for an adapter loaded with ``--lora``; else (name, None)."""
        if name and "+" in name:
            base, _, adapter = name.rpartition("+")
            if base and any(spec.label == adapter for spec in self.options.adapters):
                return base, adapter
        return name, None

    @staticmethod
    def split_docs(request: GenerateRequest) -> GenerateRequest:
        """``model@docs:NAME`` -> the model, with ``docs`` NAME (a request's own ``docs`` wins)."""
        if request.model and DOCS_SUFFIX in request.model:
            model, _, name = request.model.partition(DOCS_SUFFIX)
            return dataclasses.replace(request, model=model or None, docs=request.docs or name)
        return request

    def start(self, request: GenerateRequest) -> Reply:
        """Start a completion (blocking while its model loads). Raises ModelNotFoundError,
        DoesNotFitError, ContextOverflowError (a prompt longer than the context: both numbers),
        GrammarError, UsageError (an adapter not loaded), CollectionNotFoundError and
        DocumentsError (``docs``), and the engine's QueueFullError."""
        request = self.split_docs(request)
        if request.docs is not None:
            if request.messages is None:
                raise UsageError("'docs' answers chat messages, not a raw prompt", field="docs")
            self.retrievers.get(request.docs)  # an unknown collection fails before a model loads
        base, adapter = self.split_adapter(request.model)
        resident = self._acquire(base, request.keep_alive_s)
        try:
            return self._submit(resident, request, adapter)
        except BaseException:
            self._release(resident)
            raise

    @staticmethod
    def _adapters(model: Any, request: GenerateRequest, adapter: str | None) -> list[tuple[str, float]] | None:
        """The adapter set a request asks for, by name (None: the model's default set)."""
        if request.adapters is not None:
            names = list(model.adapters)
            chosen = []
            for ident, scale in request.adapters:
                if isinstance(ident, int):
                    if not 0 <= ident < len(names):
                        raise UsageError(
                            f"lora id {ident} is not an adapter of this model ({len(names)} loaded)",
                            hint="ids count the --lora adapters from 0"
                            if names
                            else "start the server with --lora FILE",
                        )
                    ident = names[ident]
                chosen.append((ident, scale))
            return chosen
        if adapter is not None:
            return [(adapter, 1.0)]
        return None

    def _submit(self, resident: _Resident, request: GenerateRequest, adapter: str | None = None) -> Reply:
        from localllm import runtime

        model = resident.batch.opened.model
        n_ctx = resident.engine.n_ctx_seq
        found: list[Any] | None = None
        if request.docs is not None and request.messages is not None:
            reserve = reply_reserve(n_ctx, request.max_tokens)
            grounded, found = self.retrievers.get(request.docs).ground(
                model, [dict(m) for m in request.messages], reserve, n_ctx
            )
            request = dataclasses.replace(request, messages=grounded)
        parser: StreamParser | None = None
        grammar: str | None = None
        triggers: tuple[str, ...] = ()
        check_after = False  # a tool-call grammar checks the sampled token (llama.cpp's way, faster)
        special = False
        fmt, text, tokens = _render(model, request)
        if fmt is not None:
            choice = request.tool_choice
            in_reasoning = fmt.think is not None and text.rstrip().endswith(fmt.think[0])
            parser = fmt.parser(request.tools, choice, in_reasoning=in_reasoning)
            wanted = constraint(fmt, request.tools, choice, parallel=request.parallel_tool_calls)
            if wanted is not None:
                grammar, triggers, check_after = wanted.grammar, wanted.lazy_triggers, True
            special = fmt.special_tokens and (bool(request.tools) or fmt.think is not None)
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {n_ctx}",
                hint="shorten the prompt, or start the server with a larger --ctx",
            )
        if request.schema is not None and (grammar is None or triggers):
            # a response format: for the whole reply (a lazy tool grammar gives way to it)
            grammar, triggers, check_after = _grammar(json.dumps(request.schema, sort_keys=True)), (), False
        sampling = request.sampling(request.max_tokens)  # the engine clamps max_tokens to the context
        budget = request.reasoning_budget
        if fmt is not None and budget is not None and request.reasoning is not False and (grammar is None or triggers):
            # Anthropic's budget_tokens: the runtime closes the reasoning block once it is spent
            # (not under a whole-reply grammar, which the injected marker could break)
            sampling = replace(sampling, think_budget=think_budget(fmt, budget, text))
        adapters = self._adapters(model, request, adapter)
        if adapter is not None and adapter not in model.adapters:
            raise UsageError(
                f"the adapter {adapter} does not fit {resident.key}", hint="GET /v1/models lists the pairs"
            )
        stream = resident.engine.submit(
            runtime.BatchRequest(
                key=None,
                tokens=tokens,
                sampling=sampling,
                grammar=grammar,
                grammar_triggers=triggers,
                special_tokens=special,
                logprobs=request.logprobs,
                grammar_check_after=check_after,
                adapters=adapters,
            )
        )
        name = f"{resident.key}+{adapter}" if adapter else resident.key
        reply = Reply(name, stream, lambda: self._release(resident), n_ctx, parser)
        if found is not None:
            reply.sources = [source.record(text=True) for source in found]
        return reply

    def count_tokens(self, request: GenerateRequest) -> tuple[str, int]:
        """(model key, tokens of the prompt ``request`` would give its model), loading it if need be
        but generating nothing (Anthropic's ``count_tokens``)."""
        base, _ = self.split_adapter(request.model)  # an adapter changes no token of the prompt
        resident = self._acquire(base, request.keep_alive_s)
        try:
            return resident.key, len(_render(resident.batch.opened.model, request)[2])
        finally:
            self._release(resident)

    def load(self, name: str | None, keep_alive_s: float | None = None) -> str:
        """Load the model ``name`` resolves to without a request (0: unload it now); its key."""
        resident = self._acquire(name, keep_alive_s)
        self._release(resident)
        return resident.key

    def embed(self, name: str | None, texts: Sequence[str | Sequence[int]]) -> tuple[str, list[list[float]], int]:
        """(model key, one vector per text (or list of token ids), tokens read) with the model
        ``name`` resolves to. UsageError for a token id outside the model's vocabulary."""
        resident = self._acquire(name, None)
        try:
            n_vocab = resident.batch.opened.model.llama.n_vocab()
            for ids in texts:
                bad = [] if isinstance(ids, str) else [t for t in ids if not 0 <= t < n_vocab]
                if bad:
                    raise UsageError(
                        f"'input' holds token id {bad[0]}, outside the model's vocabulary (0 to {n_vocab - 1})",
                        field="input",
                    )
            vectors, n_tokens = resident.batch.opened.model.embed(list(texts))
        finally:
            self._release(resident)
        return resident.key, vectors, n_tokens

    def rerank(self, name: str | None, query: str, documents: Sequence[str]) -> Ranking:
        """Each document's relevance to ``query`` with the model ``name`` resolves to: a reranker
        GGUF's own scores (llama.cpp's RANK pooling), else the cosine similarity of the query's
        and the document's embeddings (mean pooling)."""
        resident = self._acquire(name, None)
        try:
            model = resident.batch.opened.model
            if model.is_reranker:
                scores, n_tokens = model.rank(query, documents)
                method = "rank"
            else:
                vectors, n_tokens = model.embed([query, *documents])
                first = vectors[0]  # unit vectors: the dot product is the cosine
                scores = [sum(a * b for a, b in zip(first, v)) for v in vectors[1:]]
                method = "cosine"
        finally:
            self._release(resident)
        return Ranking(resident.key, method, scores, n_tokens)

    # -- what is there -----------------------------------------------------------------------

    def installed(self) -> list[store.InstalledModel]:
        """The models a client can name (adapters are not models: see :meth:`combinations`)."""
        return sorted((m for m in store.installed() if not m.is_adapter), key=lambda m: m.key)

    def running(self) -> list[RunningModel]:
        now = time.monotonic()
        with self._lock:
            residents = list(self._resident.values())
        return [
            RunningModel(
                name=r.key,
                size=r.batch.opened.model.header.file_size or 0,
                n_parallel=r.engine.n_parallel,
                n_ctx_seq=r.engine.n_ctx_seq,
                path=str(r.batch.opened.resolved.path),
                active=r.engine.active(),
                queued=r.engine.queued(),
                expires_in_s=None if r.expires_at is None else max(0.0, r.expires_at - now),
                facts=ModelFacts.of(r.batch.opened.model.header),
            )
            for r in residents
        ]

    def health(self) -> Health:
        with self._lock:
            if self._closed:
                return Health("error", "the server is stopping")
            if self._resident:
                return Health("ok")
            if self._pending:
                return Health("loading", "a model is loading")
            if self._last_load_error:
                return Health("error", self._last_load_error)
            return Health("ok")

    def counters(self) -> Counters:
        with self._lock:
            return Counters(self._loads, self._unloads, self._load_failures)

    def describe(self, name: str) -> dict[str, Any]:
        """What the model ``name`` resolves to holds (its GGUF header, as ``inspect`` shows it)."""
        from localllm.models.inspect import describe

        wanted = self.resolve(name)
        resolved = self._resident_resolved(wanted.key) or self._resolved(wanted)
        return {"name": wanted.key, **describe(resolved.path, resolved.entry)}

    def capabilities(self, name: str) -> frozenset[str]:
        """What the model ``name`` resolves to can do, for ``/api/show`` and ``/v1/models``:
        "completion", "tools" (every chat template: one that does not render tools gets the
        generic JSON format), "thinking" (a template that reasons in tags)."""
        template = self.describe(name).get("chat_template")
        found = {"completion"}
        if template:
            found.add("tools")
            if detect(template).think is not None:
                found.add("thinking")
        return frozenset(found)

    def _resident_resolved(self, key: str) -> ResolvedModel | None:
        with self._lock:
            resident = self._resident.get(key)
        return resident.batch.opened.resolved if resident is not None else None

    def close(self) -> None:
        """Unload every model (replies still streaming are cancelled)."""
        with self._lock:
            self._closed = True
            unloaded = [self._unload(r) for r in list(self._resident.values())]
            self._lock.notify_all()
        self._free(unloaded)
        self.retrievers.close()
        self._reaper.join(timeout=5)
