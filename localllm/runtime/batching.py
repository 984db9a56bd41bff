"""Batch decoding: several sequences in one context, admitted as others finish (issue 6).

Used by ``localllm batch`` and ``localllm bench``. A :class:`BatchSession` shares the loaded
weights of a :class:`~localllm.runtime.model.Model` but decodes in its own context, sized for N
sequences.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from localllm.errors import ContextOverflowError, GenerationError, GrammarError, UsageError

from .budget import BudgetTracker
from .llama import LlamaBatch, LlamaSampler, greedy_token, json_schema_to_gbnf, token_logprobs, token_piece
from .model import Model, budget_tracker, find_stop, stop_prefix_len
from .options import AdapterSet, SamplingOptions, default_ctx
from .promptcache import PromptStore, common_prefix
from .speculative import NGRAM, NgramDrafter, Speculation
from .threads import ThreadTuner

RAM_CACHE_MIN_TOKENS = 32  # cells of fewer tokens than this are not kept in RAM
RAM_CACHE_MIN_GAIN = 8  # nor put back to save fewer tokens than this
PREFIX_COPY_MIN_TOKENS = 16  # serve copies another sequence's cells for a prefix this long
PREFIX_COPY_RATIO = 256  # ... and at least 1/256 of a sequence's context (a whole stream is copied)
MAX_SCHEMA_CHARS = 64 << 10  # a JSON schema's text
MAX_SCHEMA_DEPTH = 32  # objects and arrays inside one another
MAX_SCHEMA_REPEAT = 1000  # minLength, maxItems...: llama.cpp's grammar spells repetitions out
_REPEAT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


def check_schema(schema: object) -> None:
    """GrammarError for a schema whose grammar would take llama.cpp unbounded time or memory to
    build: too long, nested too deep, or repeating something more than MAX_SCHEMA_REPEAT times."""
    stack = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"the JSON schema is nested more than {MAX_SCHEMA_DEPTH} deep")
        if isinstance(node, dict):
            for key in _REPEAT_KEYS:
                value = node.get(key)
                if isinstance(value, bool) or value is None:
                    continue
                if not isinstance(value, (int, float)) or not 0 <= value <= MAX_SCHEMA_REPEAT:
                    raise GrammarError(
                        f'the JSON schema\'s "{key}" is {value!r}: at most {MAX_SCHEMA_REPEAT} is supported'
                    )
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


# JSON strings hold no raw control character (RFC 8259): llama-cpp-python's converter lets its
# "char" rule and a pattern's "." take any of them (and "." a quote or a backslash), which gives
# text that json.loads and pydantic refuse.
_STRICT_RULES = {
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "dot": r'[^"\\\x7F\x00-\x1F]',
}
_RULE_LINE = re.compile(r"^(char|dot) ::= .*$", re.MULTILINE)


def strict_json_strings(gbnf: str) -> str:
    """``gbnf`` with its string-character rules kept to what JSON allows unescaped."""
    return _RULE_LINE.sub(lambda m: f"{m.group(1)} ::= {_STRICT_RULES[m.group(1)]}", gbnf)


def json_schema_grammar(schema: object) -> str:
    """The GBNF grammar of JSON text that matches ``schema`` (a dict or its JSON text), for
    schemas within :func:`check_schema`'s bounds."""
    if isinstance(schema, str):
        if len(schema) > MAX_SCHEMA_CHARS:
            raise GrammarError(f"the JSON schema is longer than {MAX_SCHEMA_CHARS} characters")
        try:
            schema = json.loads(schema)
        except (ValueError, RecursionError):
            raise GrammarError("the JSON schema is not valid JSON") from None
    check_schema(schema)
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise GrammarError(f"the JSON schema is longer than {MAX_SCHEMA_CHARS} characters")
    try:
        return strict_json_strings(json_schema_to_gbnf(text))
    except Exception as exc:  # the converter raises ValueError, KeyError, TypeError, ...
        raise GrammarError(
            f"the JSON schema cannot be turned into a grammar: {exc}",
            hint="use a plain JSON schema (type, properties, required, enum, items)",
        ) from exc


@dataclass(frozen=True)
class BatchRequest:
    """One prompt to complete. ``key`` is the caller's handle, given back in the result."""

    key: object
    tokens: Sequence[int]
    sampling: SamplingOptions = SamplingOptions()
    grammar: str | None = None  # GBNF (see json_schema_grammar)
    grammar_triggers: tuple[str, ...] = ()  # lazy grammar: applied from the first match of one
    special_tokens: bool = False  # control tokens show as text (a family's tool-call markers)
    logprobs: int | None = None  # log-probabilities of each generated token and of its N likeliest
    grammar_check_after: bool = False  # the grammar checks the sampled token (faster; tool calls)
    # LoRA adapters by name and scale (loaded with the model); None: the model's default set.
    adapters: Sequence[tuple[str, float]] | None = None

    @property
    def adapters_key(self) -> object:
        """What must match for two requests to share KV cells besides their tokens: the adapter
        set (a field ``adapters`` where the request has one). Sampling and grammars do not matter."""
        adapters = getattr(self, "adapters", None)
        return tuple(adapters) if isinstance(adapters, list) else adapters


@dataclass
class BatchResult:
    key: object
    text: str
    finish_reason: str  # "stop" (end of text or a stop string), "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    wait_s: float  # from the start of the run (or the request's submission) to its admission
    prompt_s: float  # from admission to its first token
    generation_s: float  # from its first token to its last
    # (token bytes, log-probability, ((bytes, log-probability) of the likeliest, ...)) per token
    logprobs: tuple[tuple[bytes, float, tuple[tuple[bytes, float], ...]], ...] | None = None
    stop_sequence: str | None = None  # the stop string that ended it (Anthropic's stop_sequence), if one did
    cached_tokens: int = 0  # prompt tokens whose KV a finished sequence left in the slot (prompt cache)
    drafted_tokens: int = 0  # speculative decoding (draft "ngram"): tokens drafted and verified
    accepted_tokens: int = 0  # of those, the ones the model agreed with


# What one decode step reports: (slot, a piece of new text) or (slot, the sequence's result, last).
StepEvent = tuple[int, "str | BatchResult"]


class _Sequence:
    __slots__ = (
        "request",
        "seq_id",
        "sampler",
        "fed",
        "pos",
        "next_token",
        "index",
        "decoder",
        "text",
        "generated",
        "limit",
        "admitted",
        "first_at",
        "queued_at",
        "stream",
        "shown",
        "stops",
        "stop_len",
        "stopped_by",
        "greedy",
        "ignore_eos",
        "logprobs",
        "adapters",
        "history",
        "cached",
        "budget",
        "drafter",
        "drafts",
        "drafted",
        "accepted",
    )

    request: BatchRequest
    sampler: LlamaSampler
    seq_id: int
    fed: int
    pos: int
    next_token: int | None
    index: int
    decoder: codecs.IncrementalDecoder
    text: str
    generated: int
    limit: int
    admitted: float
    first_at: float
    queued_at: float
    stream: bool
    shown: int
    stops: tuple[str, ...]
    stop_len: int
    greedy: bool
    ignore_eos: bool
    logprobs: list[tuple[bytes, float, tuple[tuple[bytes, float], ...]]] | None
    stopped_by: str | None
    adapters: AdapterSet
    history: list[int]  # generated tokens fed (or to feed next step), for the prompt cache
    cached: int  # prompt tokens already in the slot's cells at admission
    budget: BudgetTracker | None  # the reasoning budget, if the request has one
    drafter: NgramDrafter | None  # speculative decoding: this sequence's n-gram index
    drafts: list[int]  # tokens drafted after next_token in this step's batch
    drafted: int
    accepted: int


class BatchSession:
    """Decodes up to ``n_parallel`` sequences together in one llama.cpp context.

    Continuous batching: each :meth:`step` packs one generated token of every running sequence
    and then prompt chunks of newly admitted ones into a batch of at most ``n_batch`` tokens, and
    calls ``llama_decode`` once. A finished (or cancelled) sequence's KV cells are freed at once
    and its slot (its sequence id) can take the next request (:meth:`admit`). Each sequence has its
    own KV stream of ``n_ctx_seq`` cells (``kv_unified`` off), so one sequence never waits for
    another's room.

    LoRA adapters are chosen per request (:attr:`BatchRequest.adapters`). Sequences never share
    KV cells, so no two requests share a prefix computed with other weights; a step whose
    sequences use different adapter sets decodes each set's sequences in a ``llama_decode`` of
    their own, with that set applied.

    :meth:`run` drives the steps for ``localllm batch`` and ``bench``: the order in which requests
    are admitted and batched depends only on the requests and ``n_parallel``, never on timing, so
    a run repeats exactly. The server drives them itself (:class:`~localllm.runtime.serving.BatchEngine`).
    Not thread-safe: one thread calls every method.
    """

    def __init__(
        self,
        model: Model,
        n_parallel: int,
        n_ctx_seq: int | None = None,
        *,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        prompt_cache: bool = False,
        cache_ram: int = 0,
        draft: str | None = None,
        n_draft: int = 8,
    ) -> None:
        if n_parallel < 1:
            raise ValueError("n_parallel must be at least 1")
        if draft is not None and str(draft) != NGRAM:
            raise UsageError(
                "batch and serve draft with n-gram lookup only", hint="use --draft ngram (a draft model works in run)"
            )
        self.model = model
        self.n_parallel = n_parallel
        wanted = default_ctx(n_ctx_seq, model.n_ctx_train)
        self._ctx = model.new_context(
            n_ctx=wanted * n_parallel,
            n_seq_max=n_parallel,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_threads=n_threads,
            kv_unified=False,
            # A step needs logits for at most one token per sequence: a vocabulary-wide row each,
            # not one per batch slot (512 x 128k-vocabulary floats would be 256 MiB).
            # Speculative decoding verifies each sequence's drafts: logits for each of them too.
            n_outputs_max=n_parallel * (n_draft + 1 if draft else 1),
        )
        self.n_ctx_seq = self._ctx.n_ctx_seq
        self.n_batch = self._ctx.n_batch
        self._batch = LlamaBatch(self.n_batch, 1)
        self._slots: list[_Sequence | None] = [None] * n_parallel
        self._started = time.perf_counter()
        self._n_vocab = model.llama.n_vocab()
        self._tokens: dict[int, tuple[bool, bytes]] = {}  # token -> (end of generation?, its bytes)
        self._special: dict[int, tuple[bool, bytes]] = {}  # the same, control tokens shown as text
        self._adapters: AdapterSet = model.default_adapters  # the LoRA adapters this context applies now
        # Prompt cache (serve): each free slot keeps the tokens its last sequence left in its cells,
        # and under which adapter set; a request takes the free slot sharing the longest prefix.
        self.prompt_cache = prompt_cache
        self._kept: list[list[int]] = [[] for _ in range(n_parallel)]
        self._kept_key: list[object] = [None] * n_parallel
        self._kept_used: list[int] = [0] * n_parallel  # admission counter when last used (LRU)
        # ... and cells a request is about to overwrite are copied to RAM first (up to cache_ram
        # bytes), to be put back into whichever slot a later prompt they begin is given.
        self.ram_cache = PromptStore(cache_ram) if prompt_cache and cache_ram > 0 else None
        self._admissions = 0
        # Prompt tokens copied from another sequence's cells: in the last run() (batch), or since
        # the session began (serve, a request admitted beside one with the same prefix).
        self.saved_tokens = 0
        self._copied: set[int] = set()  # slots given a copy of cells since the last decode
        self._copy_sources: set[int] = set()  # ... and the slots copied from (their cells must stay)
        # Speculative decoding: n-gram drafts for every sequence, one draft length for the session,
        # timed on the steps that only generate (see runtime.speculative.Speculation).
        self.draft = NGRAM if draft is not None else None
        self._spec = Speculation(k_max=n_draft) if draft is not None else None
        self.drafted_tokens = self.accepted_tokens = 0  # over the session's life
        # Threads: ``n_threads`` (or the model's --threads) is kept; else the free cores now, and a
        # tuner of the session's own follows the load. With several sequences every step decodes
        # several tokens, so one count serves both kinds of decode.
        self._tuner: ThreadTuner | None = None
        policy = model.thread_policy
        if n_threads is None and policy is not None:
            n = policy.generation_threads()
            self._ctx.set_n_threads(n, n)
            self._tuner = policy.tuner(lambda k: self._ctx.set_n_threads(k, k), n)

    @property
    def thread_tuner(self) -> ThreadTuner | None:
        """What follows the load while this session decodes (None: a count was given)."""
        return self._tuner

    @property
    def threads(self) -> int:
        """The CPU threads the next step decodes with."""
        if self._tuner is not None:
            return self._tuner.threads
        return self._ctx.n_threads()[1]

    def close(self) -> None:
        self.drop_all()
        if self.ram_cache is not None:
            self.ram_cache.clear()
        self._batch.close()
        self._ctx.close()

    def __enter__(self) -> BatchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ---------------------------------------------------------------------------------

    def check_grammar(self, grammar: str) -> None:
        """Raise :class:`GrammarError` if llama.cpp cannot use ``grammar``."""
        self.model.make_sampler(SamplingOptions(temperature=0), grammar).close()

    def check(self, tokens: Sequence[int]) -> None:
        """Raise :class:`ContextOverflowError` if a prompt cannot fit one sequence's context."""
        if not tokens:
            raise GenerationError("the prompt is empty")
        if len(tokens) >= self.n_ctx_seq:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but each sequence's context holds {self.n_ctx_seq}",
                hint="shorten the prompt or raise --ctx",
            )

    # -- the step API ---------------------------------------------------------------------------

    def free_slot(self) -> int | None:
        """The lowest free slot, or None when ``n_parallel`` sequences run."""
        for i, s in enumerate(self._slots):
            if s is None:
                return i
        return None

    def active(self) -> int:
        """How many sequences run (admitted and not finished)."""
        return sum(s is not None for s in self._slots)

    def admit(
        self,
        request: BatchRequest,
        *,
        stream: bool = False,
        sampler: LlamaSampler | None = None,
        queued_at: float | None = None,
    ) -> int:
        """Put ``request`` in the lowest free slot and return it; its prompt is fed from the next
        :meth:`step`. ``stream``: steps report its new text as it comes (held back while it may
        begin a stop string), else only its result. ``sampler`` (made by ``model.make_sampler``
        for the request) is taken over; ``queued_at`` (``time.perf_counter()``) starts its wait_s.
        Raises ContextOverflowError or GrammarError (the slot stays free), RuntimeError if none is free."""
        slot = self._cache_slot(request) if self.prompt_cache else self.free_slot()
        if slot is None:
            raise RuntimeError("no free slot: n_parallel sequences are running")
        try:
            self.check(request.tokens)
            adapters = self.model.adapter_set(request.adapters)  # UsageError for an adapter not loaded
            if sampler is None:
                sampler = self.model.make_sampler(
                    request.sampling, request.grammar, request.grammar_triggers, check_after=request.grammar_check_after
                )
        except BaseException:
            if sampler is not None:
                sampler.close()
            raise
        seq = self._new_sequence(slot, request, sampler, stream, queued_at)
        seq.adapters = adapters
        if self.prompt_cache:
            self._reuse_prefix(seq)
        self._slots[slot] = seq
        return slot

    def _new_sequence(
        self, slot: int, request: BatchRequest, sampler: LlamaSampler, stream: bool, queued_at: float | None
    ) -> _Sequence:
        s = _Sequence()
        s.request, s.seq_id, s.sampler, s.stream = request, slot, sampler, stream
        s.fed = 0  # prompt tokens already in the batch
        s.pos = 0  # position of the next token fed
        s.next_token = None  # the sampled token to feed next step (None while in the prompt)
        s.index = -1  # batch index whose logits this sequence samples from, -1: none this step
        s.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        s.text = ""
        s.shown = 0  # characters of text already reported (stream)
        s.stops = tuple(x for x in request.sampling.stop if x)
        s.stop_len = max(map(len, s.stops), default=0)
        s.stopped_by = None
        s.generated = 0
        sampling = request.sampling
        # Greedy without a grammar or penalties: the argmax of the logits, no sampler chain.
        s.greedy = (
            sampling.temperature <= 0
            and request.grammar is None
            and sampling.repeat_penalty in (0, 1)
            and not sampling.logit_bias
        )
        s.ignore_eos = sampling.ignore_eos
        s.logprobs = [] if request.logprobs is not None else None
        s.history = []
        s.cached = 0
        s.budget = budget_tracker(self.model, sampling.think_budget)
        s.drafter = NgramDrafter() if self._spec is not None else None
        s.drafts = []
        s.drafted = s.accepted = 0
        room = self.n_ctx_seq - len(request.tokens)
        max_tokens = request.sampling.max_tokens
        s.limit = min(max_tokens, room) if max_tokens is not None else room
        now = time.perf_counter()
        s.queued_at = queued_at if queued_at is not None else self._started
        s.admitted = now
        s.first_at = 0.0
        return s

    def step(self) -> list[StepEvent]:
        """Decode one batch: a token of every running sequence and prompt chunks of new ones.

        Returns what it produced, in slot order: ``(slot, text)`` pieces of streamed sequences
        and ``(slot, BatchResult)`` for each that finished (its last event; its cells are freed
        and the slot is free). Nothing when no sequence runs. GenerationError if llama.cpp fails:
        the running sequences are then dropped (see :meth:`drop_all`).
        """
        active = [s for s in self._slots if s is not None]
        if not active:
            return []
        tuner = self._tuner
        if tuner is not None and all(s.next_token is not None for s in active):
            # A step that only generates is rated (a prompt chunk's step is not: another rate).
            before, began = sum(s.generated for s in active), time.perf_counter()
            events = self._drafted_step(active)
            tuner.tick(sum(s.generated for s in active) - before, time.perf_counter() - began, len(active))
            return events
        return self._drafted_step(active)

    def _drafted_step(self, active: list[_Sequence]) -> list[StepEvent]:
        if self._spec is None:
            return self._step(active)
        spec = self._spec
        generating = all(s.next_token is not None for s in active)
        began = time.perf_counter()
        drafted = self._propose(active, spec.want()) if generating else 0
        accepted_before = sum(s.accepted for s in active)
        events = self._step(active)
        seconds = time.perf_counter() - began
        if generating:
            if drafted:
                accepted = sum(s.accepted for s in active) - accepted_before
                spec.round(drafted, accepted, seconds, len(active))
            else:
                spec.plain(seconds, len(active))
        return events

    def _propose(self, active: list[_Sequence], k: int) -> int:
        """Each generating sequence's n-gram drafts for this step (at most ``k``, within its limits
        and the batch); how many in all."""
        if k <= 0:
            return 0
        room = self.n_batch - len(active)
        total = 0
        for s in active:
            want = min(k, room - total, s.limit - s.generated - 1, self.n_ctx_seq - s.pos - 2)
            if s.drafter is None or want <= 0:
                continue
            s.drafts = s.drafter.propose([*s.request.tokens, *s.history], want)
            total += len(s.drafts)
        return total

    def _step(self, active: list[_Sequence]) -> list[StepEvent]:
        groups: dict[AdapterSet, list[_Sequence]] = {}
        for s in active:
            groups.setdefault(s.adapters, []).append(s)
        if len(groups) == 1:
            return self._decode_group(s.adapters, active)
        # Sequences with other adapters are other weights: one llama_decode per adapter set, the
        # one applied now first (llama.cpp re-plans its graph when the set changes).
        events: list[StepEvent] = []
        for adapters in sorted(groups, key=lambda a: a != self._adapters):
            events += self._decode_group(adapters, groups[adapters])
        events.sort(key=lambda e: e[0])  # stable: a sequence's text stays before its result
        return events

    def _decode_group(self, adapters: AdapterSet, active: list[_Sequence]) -> list[StepEvent]:
        if adapters != self._adapters:
            self.model.apply_adapters(self._ctx, adapters)
            self._adapters = adapters
        n = self._fill_batch(active)
        rc = self._ctx.decode(self._batch)
        self._copied.clear()
        self._copy_sources.clear()
        if rc != 0:
            self.drop_all()
            raise GenerationError(f"llama_decode failed in a batch of {n} tokens (code {rc})")
        return self._sample(active)

    def cancel(self, slot: int) -> BatchResult | None:
        """Stop the sequence in ``slot`` now and free its cells; its result (finish_reason
        "cancelled", the text reported so far), or None if the slot is free."""
        s = self._slots[slot]
        if s is None:
            return None
        self._slots[slot] = None
        self._release(s)
        return self._result(s, "cancelled", s.text[: s.shown] if s.stream else s.text)

    def drop_all(self) -> list[int]:
        """Stop every running sequence and free its cells; the slots they held."""
        dropped = []
        for i, s in enumerate(self._slots):
            if s is not None:
                self._slots[i] = None
                self._release(s, keep=False)
                dropped.append(i)
        return dropped

    # -- localllm batch -------------------------------------------------------------------------

    def run(
        self, requests: Iterable[BatchRequest], cancel: threading.Event | None = None, *, share_prefix: int = 0
    ) -> Iterator[BatchResult]:
        """Complete ``requests`` (read lazily, in order), yielding each result as it finishes.

        ``share_prefix`` (N > 0): a request whose prompt shares at least N leading tokens with a
        running sequence's copies that sequence's cells for them (``llama_memory_seq_cp``) instead
        of evaluating them; one waits for the step that evaluates such a prefix. The tokens saved
        are counted in :attr:`saved_tokens` (and each result's ``cached_tokens``).
        Stops between two decode steps when ``cancel`` is set (or the consumer closes the
        iterator); the sequences in flight are then dropped and their cells freed.
        """
        source = iter(requests)
        exhausted = False
        pending: BatchRequest | None = None  # the next request, waiting for a prefix to be evaluated
        self.saved_tokens = 0
        self.drop_all()
        self._started = time.perf_counter()
        self._ctx.memory_clear(True)
        self._kept = [[] for _ in range(self.n_parallel)]
        self._kept_key = [None] * self.n_parallel
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return
                while not exhausted and self.free_slot() is not None:
                    request, pending = (pending, None) if pending is not None else (next(source, None), None)
                    if request is None:
                        exhausted = True
                    elif share_prefix > 0 and self._prefix_coming(request, share_prefix):
                        pending = request
                        break
                    else:
                        slot = self.admit(request)
                        if share_prefix > 0:
                            self._copy_prefix(slot, share_prefix)
                events = self.step()
                if not events and not self.active():
                    return
                for _, result in events:
                    if isinstance(result, BatchResult):  # always: admitted without stream, no text pieces
                        yield result
        finally:
            self.drop_all()

    # -- inside a step --------------------------------------------------------------------------

    def _fill_batch(self, active: list[_Sequence]) -> int:
        """One generated token per running sequence, then prompt chunks; returns the batch size."""
        batch, n_batch = self._batch, self.n_batch
        tok, pos, nseq, seqs, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        n = 0
        for s in active:
            s.index = -1
            if s.next_token is not None:
                tok[n], pos[n], nseq[n], logits[n] = s.next_token, s.pos, 1, 1
                seqs[n][0] = s.seq_id
                s.index = n
                s.pos += 1
                n += 1
                for token in s.drafts:  # speculative: verified by the logits at each position
                    tok[n], pos[n], nseq[n], logits[n] = token, s.pos, 1, 1
                    seqs[n][0] = s.seq_id
                    s.pos += 1
                    n += 1
        for s in active:
            if s.next_token is None and n < n_batch:
                prompt = s.request.tokens
                take = min(len(prompt) - s.fed, n_batch - n)
                for j in range(s.fed, s.fed + take):
                    tok[n], pos[n], nseq[n], logits[n] = prompt[j], j, 1, 0
                    seqs[n][0] = s.seq_id
                    n += 1
                s.fed += take
                s.pos = s.fed
                if s.fed == len(prompt):
                    logits[n - 1] = 1
                    s.index = n - 1
        batch.n_tokens = n
        return n

    def _sample(self, active: list[_Sequence]) -> list[StepEvent]:
        """Sample every sequence that has logits this step; report new text and finished ones.

        The per-sequence work of a step: kept to the sampling call, two dict lookups and the
        string work of the new piece (token bytes and end-of-generation flags are cached).
        """
        ctx, n_ctx_seq, n_vocab = self._ctx, self.n_ctx_seq, self._n_vocab
        known, describe = self._tokens, self._describe
        now = time.perf_counter()
        events: list[StepEvent] = []
        for s in active:
            if s.index < 0:
                continue
            drafts = s.drafts
            first = s.pos - len(drafts)  # the position after the token fed (plain decoding's s.pos)
            i = 0
            while True:
                forced = s.budget.forced() if s.budget is not None else None
                if forced is not None:  # the reasoning budget is spent: its closing marker is fed
                    token = forced
                    if not s.greedy:
                        s.sampler.accept(token)
                else:
                    token = greedy_token(ctx, s.index, n_vocab) if s.greedy else s.sampler.sample(ctx, s.index)
                if s.generated == 0:
                    s.first_at = now
                if s.request.special_tokens:
                    eog, raw = self._special.get(token) or self._describe(token, special=True)
                else:
                    eog, raw = known.get(token) or describe(token)
                finish = None
                if eog and not s.ignore_eos:
                    finish = "stop"
                else:
                    if s.logprobs is not None:
                        self._note_logprobs(s, token, raw)
                    s.generated += 1
                    piece = s.decoder.decode(raw) if raw else ""
                    if s.budget is not None:
                        s.budget.after(piece)
                    if piece:
                        s.text += piece
                        if s.stops:
                            # Only the new piece and the stop-length text before it can hold a stop.
                            base = max(0, len(s.text) - len(piece) - s.stop_len)
                            cut = find_stop(s.text[base:], s.stops)
                            if cut is not None:
                                rest = s.text[base + cut :]
                                s.stopped_by = next(x for x in s.stops if rest.startswith(x))
                                s.text = s.text[: base + cut]
                                finish = "stop"
                    if finish is None and (s.generated >= s.limit or first + i >= n_ctx_seq):
                        finish = "length"
                if finish is None and i < len(drafts) and token == drafts[i]:
                    s.history.append(token)  # a draft accepted: already in the cells, its logits next
                    s.index += 1
                    i += 1
                    continue
                break
            if drafts:
                s.drafted += len(drafts)
                s.accepted += i
                s.drafts = []
                s.pos = first + i
                if i < len(drafts):
                    ctx.memory_seq_rm(s.seq_id, s.pos, -1)  # the refused drafts
            if finish is None:
                s.next_token = token
                s.history.append(token)
                if s.stream:
                    self._report(s, events)
                continue
            if finish == "length":
                s.text += s.decoder.decode(b"", final=True)
            self._slots[s.seq_id] = None
            self._release(s)
            if s.stream and len(s.text) > s.shown:
                events.append((s.seq_id, s.text[s.shown :]))
                s.shown = len(s.text)
            events.append((s.seq_id, self._result(s, finish, s.text)))
        return events

    def _note_logprobs(self, s: _Sequence, token: int, raw: bytes) -> None:
        if s.logprobs is None:  # not asked for
            return
        top = max(0, min(20, s.request.logprobs or 0))
        logprob, best = token_logprobs(self._ctx, s.index, self._n_vocab, token, top)
        known = self._tokens
        alternatives = tuple(((known.get(t) or self._describe(t))[1], lp) for t, lp in best)
        s.logprobs.append((raw, logprob, alternatives))

    def _describe(self, token: int, *, special: bool = False) -> tuple[bool, bytes]:
        """(whether ``token`` ends generation, its bytes), remembered for the next time."""
        llama = self.model.llama
        info = (llama.is_eog(token), token_piece(llama, token, special))
        (self._special if special else self._tokens)[token] = info
        return info

    @staticmethod
    def _report(s: _Sequence, events: list[StepEvent]) -> None:
        """Report the new text of a streamed sequence, less an end that may begin a stop string."""
        end = len(s.text)
        if s.stops:
            end -= stop_prefix_len(s.text[-s.stop_len :], s.stops)
        if end > s.shown:
            events.append((s.seq_id, s.text[s.shown : end]))
            s.shown = end

    def _result(self, s: _Sequence, finish: str, text: str) -> BatchResult:
        started = s.first_at or s.admitted
        return BatchResult(
            key=s.request.key,
            text=text,
            finish_reason=finish,
            prompt_tokens=len(s.request.tokens),
            completion_tokens=s.generated,
            wait_s=s.admitted - s.queued_at,
            prompt_s=started - s.admitted,
            generation_s=time.perf_counter() - s.first_at if s.generated else 0.0,
            logprobs=tuple(s.logprobs) if s.logprobs is not None else None,
            stop_sequence=s.stopped_by,
            cached_tokens=s.cached,
            drafted_tokens=s.drafted,
            accepted_tokens=s.accepted,
        )

    def _release(self, s: _Sequence, keep: bool = True) -> None:
        s.sampler.close()
        self.drafted_tokens += s.drafted
        self.accepted_tokens += s.accepted
        if self.prompt_cache and keep:
            self._keep_cells(s)
        else:
            self._forget(s.seq_id)

    # -- shared prefixes (localllm batch) -------------------------------------------------------

    def _donors(self, request: BatchRequest, exclude: int = -1) -> Iterator[tuple[_Sequence, int, int]]:
        """(running sequence, prefix it shares with ``request``'s prompt, of which evaluated) for
        each running sequence whose cells start at position 0; the prefix leaves one token out."""
        prompt = request.tokens
        cap = len(prompt) - 1
        for d in self._slots:
            if d is None or d.seq_id == exclude or d.seq_id in self._copied:
                continue  # (a copy is made at the next decode: its source is the one to copy)
            if d.request.adapters_key != request.adapters_key:
                continue
            shared = min(common_prefix(d.request.tokens, prompt), cap)
            if shared > 0 and self._ctx.memory_seq_pos_min(d.seq_id) in (0, -1):
                yield d, shared, min(shared, d.fed)

    def _prefix_coming(self, request: BatchRequest, at_least: int) -> bool:
        """Whether a running sequence shares at least ``at_least`` tokens with ``request`` that no
        running sequence has evaluated yet: the request then waits a step to copy them."""
        best_shared = best_ready = 0
        for _, shared, ready in self._donors(request):
            best_shared, best_ready = max(best_shared, shared), max(best_ready, ready)
        return best_shared >= at_least and best_ready < best_shared

    def _copy_prefix(self, slot: int, at_least: int) -> None:
        """Give the sequence just admitted to ``slot`` the cells of the longest evaluated prefix it
        shares with a running sequence, if at least ``at_least`` tokens long."""
        s = self._slots[slot]
        assert s is not None
        best, n = None, 0
        for d, _, ready in self._donors(s.request, exclude=slot):
            if ready > n:
                best, n = d, ready
        if best is None or n < at_least:
            return
        if self._copy_cells(best.seq_id, slot, n):
            s.fed = s.pos = s.cached = n

    # -- the prompt cache -----------------------------------------------------------------------

    def _forget(self, slot: int) -> None:
        self._ctx.memory_seq_rm(slot, -1, -1)
        self._kept[slot] = []
        self._kept_key[slot] = None

    def _keep_cells(self, s: _Sequence) -> None:
        """Leave a finished sequence's cells in its slot and remember which tokens they hold."""
        slot = s.seq_id
        tokens = list(s.request.tokens) + s.history
        self._kept[slot] = tokens[: s.pos]
        self._kept_key[slot] = s.request.adapters_key

    def _cache_slot(self, request: BatchRequest) -> int | None:
        """The free slot whose kept tokens share the longest prefix with ``request``'s prompt (and
        its adapter set); with none sharing any, the least recently used free slot."""
        key = request.adapters_key
        prompt = request.tokens
        best, best_len, best_used = None, -1, 0
        for slot, s in enumerate(self._slots):
            if s is not None:
                continue
            kept = self._kept[slot]
            common = common_prefix(kept, prompt) if kept and self._kept_key[slot] == key else 0
            used = self._kept_used[slot]
            if common > best_len or (common == best_len and used < best_used):
                best, best_len, best_used = slot, common, used
        return best

    def _reuse_prefix(self, s: _Sequence) -> None:
        """Start ``s`` after the longest prefix of its prompt whose cells it can have: those its
        slot holds, a copy of a running sequence's (``llama_memory_seq_cp``), or the RAM cache's;
        drop the slot's cells after it. At least one prompt token is left to evaluate, so the
        sequence has logits to sample."""
        slot, prompt = s.seq_id, s.request.tokens
        self._admissions += 1
        self._kept_used[slot] = self._admissions
        kept, key = self._kept[slot], s.request.adapters_key
        cap = len(prompt) - 1
        n = 0
        if kept and self._kept_key[slot] == key:
            n = min(common_prefix(kept, prompt), cap)
        # A sliding-window cache may have pruned early positions: reuse only a sequence whose
        # cells start at position 0, and only if llama.cpp accepts cutting it at n.
        whole = bool(kept) and self._ctx.memory_seq_pos_min(slot) == 0
        donor, shared = self._prefix_donor(slot, s.request)
        store = self.ram_cache
        handle, in_ram = store.best(key, prompt) if store is not None else (None, 0)
        in_ram = min(in_ram, cap)
        if store is not None and whole and len(kept) - n >= RAM_CACHE_MIN_TOKENS and slot not in self._copied:
            self._save_cells(slot, kept)  # cells about to be lost
        if donor is not None and shared >= n + PREFIX_COPY_MIN_TOKENS and shared >= in_ram:
            s.fed = s.pos = s.cached = shared if self._copy_cells(donor, slot, shared) else 0
            return
        # Cells put back are written at once, a copy at the next decode: never both in one slot.
        pending = slot in self._copy_sources or slot in self._copied
        if handle is not None and in_ram >= n + RAM_CACHE_MIN_GAIN and not pending:
            s.fed = s.pos = s.cached = self._restore_cells(slot, handle, in_ram)
            return
        if n > 0 and (not whole or not self._ctx.memory_seq_rm(slot, n, -1)):
            n = 0
        if n == 0:
            self._forget(slot)
        else:
            self._kept[slot] = []
        s.fed = s.pos = s.cached = n

    def _copy_cells(self, src: int, dst: int, n: int) -> bool:
        """Give ``dst`` the cells of ``src``'s first ``n`` positions (counted in :attr:`saved_tokens`);
        False if llama.cpp cannot cut the copy at ``n`` (``dst`` then holds nothing)."""
        # Across KV streams llama.cpp copies a whole stream (at the next decode): copy, then cut.
        self._ctx.memory_seq_rm(dst, -1, -1)
        self._ctx.memory_seq_cp(src, dst, -1, -1)
        self._copied.add(dst)
        self._copy_sources.add(src)
        self._kept[dst], self._kept_key[dst] = [], None
        if not self._ctx.memory_seq_rm(dst, n, -1):
            self._forget(dst)
            return False
        self.saved_tokens += n
        return True

    def _prefix_donor(self, slot: int, request: BatchRequest) -> tuple[int | None, int]:
        """(slot, tokens) of the running sequence whose evaluated cells hold the longest prefix of
        ``request``'s prompt under its adapter set (a free slot holding more would have been given
        the request); (None, 0) when copying would not pay: a copy moves the whole stream of
        ``n_ctx_seq`` cells, so the prefix must be at least 1/PREFIX_COPY_RATIO of that (moving a
        cell costs far less than computing one)."""
        best, best_n = None, 0
        for d, _, ready in self._donors(request, exclude=slot):
            if ready > best_n:
                best, best_n = d.seq_id, ready
        if best_n * PREFIX_COPY_RATIO < self.n_ctx_seq:
            return None, 0
        return best, best_n

    def _save_cells(self, slot: int, tokens: list[int]) -> None:
        """Copy ``slot``'s cells (holding ``tokens``) to the RAM cache, unless it has them."""
        store, key = self.ram_cache, self._kept_key[slot]
        assert store is not None
        if store.covers(key, tokens):
            return
        data = self._ctx.state_seq_get(slot)
        if data is not None:
            store.put(key, tokens, data)

    def _restore_cells(self, slot: int, handle: int, n: int) -> int:
        """Put the RAM cache's entry ``handle`` into ``slot``, cut after ``n`` tokens; how many
        tokens the slot now holds (0 if llama.cpp refused the cells: the entry is dropped)."""
        store = self.ram_cache
        assert store is not None
        entry = store.take(handle)
        self._kept[slot] = []
        self._kept_key[slot] = None
        if (
            not self._ctx.state_seq_set(cast("ctypes.Array[ctypes.c_uint8]", entry.data), slot)
            or self._ctx.memory_seq_pos_min(slot) != 0
            or not self._ctx.memory_seq_rm(slot, n, -1)
        ):
            store.discard(handle)
            self._forget(slot)
            return 0
        store.hits += 1
        store.tokens_restored += n
        return n
