"""A loaded model and the replies it streams: :class:`Model` and :class:`Generation`.

Sampling runs in C (a llama.cpp sampler chain), so a generated token costs one decode and a few
ctypes calls, and nothing is printed to stdout. llama.cpp itself is reached only through the owner
classes of :mod:`localllm.runtime.llama`.

Everything else in localllm uses :class:`Model` through plain Python values; tests that do not need
a real model use a scripted fake with the same methods.
"""

from __future__ import annotations

import codecs
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from localllm.errors import ContextOverflowError, GenerationError, ModelFileError, UsageError
from localllm.fit.estimate import cpu_expert_patterns
from localllm.fs import temp_beside
from localllm.gguf import adapter as ggufadapter
from localllm.gguf import cache as headercache

from .budget import BudgetTracker
from .devices import build_has_amx
from .llama import (
    LOG,
    LlamaAdapter,
    LlamaBatch,
    LlamaContext,
    LlamaEmbedder,
    LlamaModel,
    LlamaSampler,
    buffers_mib,
    fill_run,
)
from .options import (
    AdapterSet,
    GenerationStats,
    LoadOptions,
    LoadReport,
    SamplingOptions,
    ThinkBudget,
    default_ctx,
)
from .speculative import Drafter, Speculation, open_drafter
from .template import ChatTemplate
from .threads import ThreadPolicy, ThreadTuner

EMBED_CTX = 512  # tokens of the embedding context: a text longer than this cannot be embedded
RANK_POOLING = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK, as a reranker's GGUF names it in ARCH.pooling_type


class Model:
    """A loaded GGUF model with one context (one conversation at a time).

    Not thread-safe: one generation at a time. ``close()`` frees llama.cpp's memory at once.
    :attr:`load_report` says what the load cost; the runtime records nothing on disk itself.
    """

    def __init__(
        self, path: str | Path, options: LoadOptions | None = None, *, thread_policy: ThreadPolicy | None = None
    ) -> None:
        """``thread_policy``: how the default thread counts follow the machine's load (see
        :mod:`localllm.runtime.threads`); unused when ``options.n_threads`` forces a count."""
        self.path = Path(path)
        self.options = o = options or LoadOptions()
        # Clear errors before llama.cpp sees it; cached, since the planner has usually just read it.
        self.header = headercache.read_header(self.path)
        if ggufadapter.is_adapter(self.header):
            raise ModelFileError(
                f"{self.path.name} is a LoRA adapter, not a model",
                hint="load its base model with -m and the adapter with --lora",
            )
        self._lock = threading.Lock()
        self._evaluated: list[int] = []  # tokens whose KV is in the cache, in order (rebound only by load_state)
        # Adapters are checked against the base before llama.cpp sees either (AdapterMismatchError).
        self.adapter_infos = self._check_adapters()

        started = time.perf_counter()
        repack = o.repack if o.repack is not None else not build_has_amx()
        self.llama = LlamaModel(
            self.path,
            n_gpu_layers=o.n_gpu_layers,
            use_extra_bufts=repack,
            use_mmap=o.use_mmap,
            cpu_patterns=cpu_expert_patterns(o.cpu_moe_layers),
        )
        self.adapters: dict[str, LlamaAdapter] = {}  # name -> adapter, in load order
        try:
            for spec in o.adapters:
                self.adapters[spec.label] = LlamaAdapter(self.llama, Path(spec.path))
        except BaseException:
            self._free_adapters()
            self.llama.close()
            raise
        self.default_adapters: AdapterSet = self.adapter_set([(spec.label, spec.scale) for spec in o.adapters])
        self.active_adapters: AdapterSet = self.default_adapters  # what the main context applies now
        self.n_ctx_train = self.llama.n_ctx_train()
        n_ctx = default_ctx(o.n_ctx, self.n_ctx_train)
        # Threads: --threads forces both counts; else the free cores, for generation and prompt
        # evaluation, and the tuner follows the load while replies decode.
        self.thread_policy: ThreadPolicy | None = None
        self._tuner: ThreadTuner | None = None
        if o.n_threads:
            self.n_threads = o.n_threads
            self.n_threads_batch = o.n_threads_batch or o.n_threads
        else:
            self.thread_policy = policy = thread_policy or ThreadPolicy()
            busy = policy.busy()
            self.n_threads = policy.generation_threads(busy)
            self.n_threads_batch = o.n_threads_batch or policy.prompt_threads(busy)
            self._tuner = policy.tuner(self._set_generation_threads, self.n_threads)
        chosen = {"n_threads": self.n_threads, "n_threads_batch": self.n_threads_batch}
        try:
            self._ctx: LlamaContext = self.new_context(
                n_ctx=n_ctx,
                n_seq_max=1,
                n_batch=min(o.n_batch, n_ctx),
                n_ubatch=min(o.n_ubatch, o.n_batch, n_ctx),
                n_threads_batch=self.n_threads_batch,
                no_perf=False,
                what="create a context for",
            )
        except BaseException:
            self._free_adapters()
            self.llama.close()
            raise
        self.n_ctx = self._ctx.n_ctx
        # Speculative decoding (issue 28): a drafter and the batch its drafts are verified in.
        self.drafter: Drafter | None = None
        self._draft_batch: LlamaBatch | None = None
        if o.draft is not None:
            try:
                self.drafter = open_drafter(
                    o.draft, self.llama, n_ctx=self.n_ctx, n_threads=self.n_threads, n_gpu_layers=o.n_gpu_layers,
                    repack=repack,
                )  # fmt: skip
                self._draft_batch = LlamaBatch(o.n_draft + 1, 1)
            except BaseException:
                if self.drafter is not None:
                    self.drafter.close()
                self._ctx.close()
                self._free_adapters()
                self.llama.close()
                raise
        settings = {"n_ctx": self.n_ctx, "n_gpu_layers": o.n_gpu_layers, "type_k": o.type_k, "type_v": o.type_v,
                    "flash_attn": o.flash_attn, "n_batch": o.n_batch, "n_ubatch": o.n_ubatch,
                    "cpu_moe_layers": o.cpu_moe_layers, "repack": repack}  # fmt: skip
        if o.draft is not None:
            settings["draft"] = str(o.draft)
        if o.adapters:
            settings["adapters"] = [
                {"name": spec.label, "path": str(spec.path), "scale": spec.scale, "file_size": info.file_size}
                for spec, info in zip(o.adapters, self.adapter_infos)
            ]
        self.load_report = LoadReport(
            load_s=time.perf_counter() - started,
            buffers_mib=buffers_mib(LOG.buffers_since(self.llama.log_marker)),
            path=self.path,
            file_size=self.header.file_size or 0,
            settings=settings,
            threads={**chosen, "threads_forced": bool(o.n_threads)},
        )
        self._template = self.llama.chat_template()
        self._formatter: ChatTemplate | None = None
        self._embedder: LlamaEmbedder | None = None  # made by the first embed()
        self._ranker: LlamaEmbedder | None = None  # made by the first rank()
        self._embed_lock = threading.Lock()

    def new_context(
        self,
        *,
        n_ctx: int,
        n_seq_max: int,
        n_batch: int,
        n_ubatch: int,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        kv_unified: bool | None = None,
        n_outputs_max: int | None = None,
        no_perf: bool = True,
        what: str = "create a batch context for",
    ) -> LlamaContext:
        """Another llama.cpp context over these weights, with this model's KV and attention options
        and its default LoRA adapters applied; ``n_threads`` given: that many threads for both
        kinds of decode, else this model's current counts."""
        threads = n_threads or self.n_threads
        batch_threads = n_threads_batch or (n_threads if n_threads else self.n_threads_batch)
        o = self.options
        ctx = LlamaContext(
            self.llama,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_ubatch,
            n_seq_max=n_seq_max,
            n_threads=threads,
            n_threads_batch=batch_threads,
            type_k=o.type_k,
            type_v=o.type_v,
            flash_attn=o.flash_attn,
            kv_unified=kv_unified,
            n_outputs_max=n_outputs_max,
            no_perf=no_perf,
            what=what,
        )
        if self.default_adapters:
            try:
                self.apply_adapters(ctx, self.default_adapters)
            except BaseException:
                ctx.close()
                raise
        return ctx

    # -- LoRA adapters --------------------------------------------------------------------------

    def _check_adapters(self) -> list[ggufadapter.AdapterInfo]:
        infos, names = [], set()
        for spec in self.options.adapters:
            if spec.label in names:
                raise UsageError(f"two adapters are named {spec.label}", hint="give each --lora a different file")
            names.add(spec.label)
            info = ggufadapter.read_adapter(spec.path)
            ggufadapter.check_fits(info, self.header, self.path.name)
            infos.append(info)
        return infos

    def adapter_set(self, wanted: Sequence[tuple[str, float]] | None) -> AdapterSet:
        """The normal form of a set of adapters by name and scale (None: the default set): in load
        order, scale-0 adapters left out, a name given twice taking its last scale. UsageError for
        a name not loaded with the model."""
        if wanted is None:
            return self.default_adapters
        scales: dict[str, float] = {}
        for name, scale in wanted:
            if name not in self.adapters:
                loaded = ", ".join(self.adapters) or "none"
                raise UsageError(
                    f"no LoRA adapter named {name!r} is loaded with {self.path.name} (loaded: {loaded})",
                    hint="load it with --lora FILE",
                )
            scales[name] = float(scale)
        return tuple((name, scales[name]) for name in self.adapters if scales.get(name, 0.0) != 0.0)

    def apply_adapters(self, ctx: LlamaContext, adapters: AdapterSet) -> None:
        """Make ``ctx`` decode with exactly ``adapters`` (a normal form from :meth:`adapter_set`)."""
        ctx.set_adapters([(self.adapters[name], scale) for name, scale in adapters])

    def set_adapters(self, adapters: AdapterSet) -> None:
        """Use ``adapters`` for the following replies of this model's own context. The KV cache
        was computed with other weights when the set changes: it is then emptied."""
        with self._lock:
            if adapters != self.active_adapters:
                self._ctx.memory_clear(True)
                self._evaluated.clear()
            self.apply_adapters(self._ctx, adapters)
            self.active_adapters = adapters

    def _free_adapters(self) -> None:
        for adapter in getattr(self, "adapters", {}).values():
            adapter.close()

    # -- threads ------------------------------------------------------------------------------

    @property
    def threads_forced(self) -> bool:
        """Whether the thread counts were given (``--threads``): then nothing changes them."""
        return self._tuner is None

    @property
    def thread_tuner(self) -> ThreadTuner | None:
        """What follows the load while this model's replies decode (None: ``--threads`` given)."""
        return self._tuner

    def _set_generation_threads(self, n: int) -> None:
        self.n_threads = n
        self._ctx.set_n_threads(n, self.n_threads_batch)

    def _fit_threads(self) -> None:
        """Before a reply: a short probe of the machine (unless the counts were given). The prompt
        is evaluated with the free cores; generation starts with fewer threads if fewer are free
        (more only when the tuner finds them faster)."""
        policy, tuner = self.thread_policy, self._tuner
        if policy is None or tuner is None:
            return
        busy = policy.busy()
        if not self.options.n_threads_batch:
            n = policy.prompt_threads(busy)
            if n != self.n_threads_batch:
                self.n_threads_batch = n
                self._ctx.set_n_threads(self.n_threads, n)
        tuner.at_most(policy.generation_threads(busy))

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Free the contexts, then the adapters and the weights (safe to call again)."""
        for embedder in (self._embedder, self._ranker):
            if embedder is not None:
                embedder.close()
        if self.drafter is not None:
            self.drafter.close()
            self.drafter = None
        if self._draft_batch is not None:
            self._draft_batch.close()
            self._draft_batch = None
        self._ctx.close()
        self._free_adapters()
        self.llama.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens and text ----------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        tokens = self.llama.tokenize(text, add_special=add_special, parse_special=parse_special)
        if tokens is None:
            raise GenerationError("could not tokenize the prompt")
        return tokens

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    @property
    def chat_template_source(self) -> str | None:
        """The GGUF's chat template (None when it has none)."""
        return self._template

    def render_chat(self, messages: Sequence[Mapping[str, Any]], **template_vars: Any) -> str:
        """The prompt text for ``messages`` in the model's own chat template (from the GGUF);
        ``template_vars`` are further names the template sees (``tools``, ``enable_thinking``)."""
        if self._template is None:
            # No template in the file: a plain transcript is more honest than llama-2's format.
            lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        if self._formatter is None:
            bos, eos = self.llama.bos(), self.llama.eos()
            self._formatter = ChatTemplate(  # sandboxed, bounded in time and size (runtime.template)
                self._template,
                bos_token=self.llama.token_text(bos) if bos >= 0 else "",
                eos_token=self.llama.token_text(eos) if eos >= 0 else "",
            )
        return self._formatter.render(messages, **template_vars)

    def chat_tokens(self, messages: Sequence[Mapping[str, Any]], **template_vars: Any) -> list[int]:
        """The tokens ``chat`` evaluates for ``messages``: the chat template's text, its special tokens
        parsed (see :meth:`prompt_tokens`). The one rule for a chat prompt's tokens (the server, batch
        and the context fitting count with it)."""
        return self.prompt_tokens(self.render_chat(messages, **template_vars))

    def prompt_tokens(self, text: str) -> list[int]:
        """The tokens of a chat prompt already rendered by :meth:`render_chat`. The template writes BOS
        itself where the model wants one; without a template, the tokenizer adds it."""
        return self.tokenize(text, add_special=self._template is None, parse_special=True)

    # -- generation ---------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        sampling: SamplingOptions | None = None,
        cancel: threading.Event | None = None,
        *,
        template_vars: Mapping[str, Any] | None = None,
        special_tokens: bool = False,
    ) -> Generation:
        """Stream the assistant's reply to ``messages`` (dicts with role and content).
        ``template_vars``: further names the chat template sees (``enable_thinking``);
        ``special_tokens``: control tokens show as text (a family's reasoning markers)."""
        text = self.render_chat(messages, **(template_vars or {}))
        generation = Generation(
            self, self.prompt_tokens(text), sampling or SamplingOptions(), cancel, special_tokens=special_tokens
        )
        generation.prompt_text = text
        return generation

    def complete(
        self,
        prompt: str,
        sampling: SamplingOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Stream a raw continuation of ``prompt`` (no chat template)."""
        tokens = self.tokenize(prompt, add_special=True, parse_special=False)
        return Generation(self, tokens, sampling or SamplingOptions(), cancel)

    def make_sampler(
        self,
        sampling: SamplingOptions,
        grammar: str | None = None,
        triggers: Sequence[str] = (),
        *,
        check_after: bool = False,
    ) -> LlamaSampler:
        """A sampler chain for ``sampling`` (and a grammar, if any: lazy, from the first match of
        one of ``triggers``, when they are given); the caller closes it."""
        sampler = LlamaSampler()
        if grammar is not None:
            try:
                if triggers:
                    sampler.add_grammar_lazy(self.llama, grammar, triggers)
                else:
                    sampler.add_grammar(self.llama, grammar, check_after=check_after)
            except BaseException:
                sampler.close()
                raise
        if sampling.repeat_penalty and sampling.repeat_penalty != 1.0:
            sampler.add_penalties(self.llama, 64, sampling.repeat_penalty)
        if sampling.logit_bias:
            sampler.add_logit_bias(self.llama, sampling.logit_bias)
        if sampling.temperature <= 0:
            sampler.add_greedy()
            return sampler
        if sampling.top_k > 0:
            sampler.add_top_k(sampling.top_k)
        if 0 < sampling.top_p < 1:
            sampler.add_top_p(sampling.top_p)
        if sampling.min_p > 0:
            sampler.add_min_p(sampling.min_p)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(sampling.seed)
        return sampler

    # -- embeddings -----------------------------------------------------------------------------

    def embed(self, texts: Sequence[str | Sequence[int]], *, n_ctx: int | None = None) -> tuple[list[list[float]], int]:
        """One vector per text and the number of tokens read, for ``/v1/embeddings``.

        llama.cpp's mean pooling over each text's tokens, scaled to unit length (L2) as
        llama-server does. Runs in a small context of its own (``n_ctx`` tokens, default
        EMBED_CTX), made on first use; safe to call while a batch context decodes in another
        thread. ContextOverflowError for a text longer than that context, before any is read.
        """
        token_lists = [  # a text, or its token ids
            self.tokenize(t, add_special=True, parse_special=False) if isinstance(t, str) else list(t) for t in texts
        ]
        with self._embed_lock:
            embedder = self._embedding_context(n_ctx or min(EMBED_CTX, self.n_ctx_train or EMBED_CTX))
            for tokens in token_lists:
                if not tokens:  # "" or only characters the tokenizer drops (control characters)
                    raise UsageError("cannot embed a text with no tokens", hint="send a text with some words in it")
                if len(tokens) > embedder.n_ctx:
                    raise ContextOverflowError(
                        f"the text to embed is {len(tokens)} tokens but the embedding context holds {embedder.n_ctx}",
                        hint="split the text into shorter pieces",
                    )
            vectors = []
            for tokens in token_lists:
                vector = embedder.embed(tokens)
                if vector is None:
                    raise GenerationError(f"llama_decode failed while embedding {len(tokens)} tokens")
                vectors.append(_unit_length(vector))
        return vectors, sum(map(len, token_lists))

    @property
    def is_reranker(self) -> bool:
        """Whether the GGUF is a reranker: its ``ARCH.pooling_type`` is llama.cpp's RANK (4)."""
        return self.header.arch_key("pooling_type") == RANK_POOLING

    def rank(self, query: str, documents: Sequence[str], *, n_ctx: int | None = None) -> tuple[list[float], int]:
        """A reranker's relevance score of each document for ``query`` and the tokens read.

        Each pair is one sequence as llama-server builds it without a rerank template:
        ``query</s><sep>document</s>`` (BOS first where the vocabulary adds one), scored by the
        model's classification head (the first of its ``n_cls_out`` outputs, as llama-server
        reports). ContextOverflowError for a pair longer than the context, before any is read.
        """
        query_tokens = self.tokenize(query, add_special=True, parse_special=False)
        eos, sep = self.llama.eos(), self.llama.sep()
        middle = [t for t in (eos, sep) if t >= 0]
        pairs = [
            [*query_tokens, *middle, *self.tokenize(d, add_special=False, parse_special=False), *middle[:1]]
            for d in documents
        ]
        with self._embed_lock:
            ranker = self._embedding_context(n_ctx or min(EMBED_CTX, self.n_ctx_train or EMBED_CTX), rank=True)
            for tokens in pairs:
                if len(tokens) > ranker.n_ctx:
                    raise ContextOverflowError(
                        f"the query and a document are {len(tokens)} tokens but the reranking context holds "
                        f"{ranker.n_ctx}",
                        hint="shorten the documents",
                    )
            scores = []
            for tokens in pairs:
                values = ranker.embed(tokens)
                if not values:
                    raise GenerationError(f"llama_decode failed while ranking {len(tokens)} tokens")
                scores.append(float(values[0]))
        return scores, sum(map(len, pairs))

    def _embedding_context(self, n_ctx: int, rank: bool = False) -> LlamaEmbedder:
        attr = "_ranker" if rank else "_embedder"
        current: LlamaEmbedder | None = getattr(self, attr)
        if current is not None and current.n_ctx < n_ctx:
            current.close()
            current = None
        if current is None:
            o = self.options
            current = LlamaEmbedder(
                self.llama,
                n_ctx=n_ctx,
                n_threads=self.n_threads_batch,  # an embedding is a batch of the whole text
                type_k=o.type_k,
                type_v=o.type_v,
                flash_attn=o.flash_attn,
                rank=rank,
            )
            setattr(self, attr, current)
        return current

    # -- the KV cache -------------------------------------------------------------------------

    @property
    def cached_tokens(self) -> int:
        """How many tokens' KV the context holds (the prefix the next prompt can reuse)."""
        return len(self._evaluated)

    def save_state(self, path: Path) -> bool:
        """Write the KV cache and its tokens to ``path`` atomically (a temporary file beside it is
        renamed over it). False if there is nothing cached or llama.cpp could not write it."""
        if not self._evaluated:
            return False
        with self._lock:
            tmp = temp_beside(path)
            try:
                if not self._ctx.state_seq_save_file(tmp, 0, self._evaluated):
                    tmp.unlink(missing_ok=True)
                    return False
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return True

    def load_state(self, path: Path) -> int:
        """Replace the KV cache with one saved by :meth:`save_state`; how many tokens it holds
        (0 if the file was refused: the cache is then empty, and the next prompt is evaluated)."""
        with self._lock:
            self._ctx.memory_clear(True)
            self._evaluated = []
            tokens = self._ctx.state_seq_load_file(path, 0, self.n_ctx)
            if tokens is None:
                self._ctx.memory_clear(True)
                return 0
            self._evaluated = tokens
            return len(tokens)

    def _decode(
        self, tokens: list[int], cancel: threading.Event | None, done: Callable[[int], None] | None = None
    ) -> bool:
        """Evaluate ``tokens`` after the cached ones, in batches; ``done`` is told how many are
        evaluated after each batch. False if cancelled."""
        ctx = self._ctx
        step = ctx.n_batch
        for start in range(0, len(tokens), step):
            if done is not None:
                done(start)
            if cancel is not None and cancel.is_set():
                return False
            chunk = tokens[start : start + step]
            rc = ctx.decode_tokens(chunk)
            if rc != 0:
                # Keep the cache consistent with what we believe is in it.
                self._forget_from(len(self._evaluated))
                raise GenerationError(f"llama_decode failed (code {rc})")
            self._evaluated.extend(chunk)
        return True

    def _forget_from(self, position: int) -> None:
        self._ctx.memory_seq_rm(-1, position, -1)
        del self._evaluated[position:]

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the cached tokens that start ``tokens``; returns how many."""
        common = 0
        for a, b in zip(self._evaluated, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # at least one token must be evaluated for logits
        if common < len(self._evaluated):
            if not self._ctx.memory_seq_rm(-1, common, -1):
                self._ctx.memory_clear(True)
                self._evaluated.clear()
                return 0
            del self._evaluated[common:]
        return common


class Generation:
    """An iterator over the pieces of text of one reply; ``stats`` is complete once it ends.

    Stopping early (``cancel`` set, ``close()``, or the consumer breaking out) keeps the model
    usable: the cache holds exactly the tokens evaluated so far.
    """

    def __init__(
        self,
        model: Model,
        tokens: list[int],
        sampling: SamplingOptions,
        cancel: threading.Event | None,
        *,
        special_tokens: bool = False,
    ) -> None:
        if len(tokens) >= model.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {model.n_ctx}",
                hint=f"shorten the prompt or raise --ctx (this model was trained on {model.n_ctx_train})",
            )
        self.model = model
        self.tokens = tokens
        self.sampling = sampling
        self.cancel = cancel
        self.stats = GenerationStats(prompt_tokens=len(tokens))
        self.text = ""
        self.prompt_text = ""  # the chat prompt as rendered (``Model.chat``)
        self.special_tokens = special_tokens
        # Prompt evaluation, for a progress display (read from another thread: plain ints).
        self.prompt_to_evaluate = 0  # tokens not in the cache, known once evaluation starts
        self.prompt_evaluated = 0
        self._first_at: float | None = None
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def _evaluated(self, n: int) -> None:
        self.prompt_evaluated = n

    @property
    def prompt_fraction(self) -> float | None:
        """How much of the prompt is evaluated (0..1); None before evaluation starts."""
        if not self.prompt_to_evaluate:
            return None
        return self.prompt_evaluated / self.prompt_to_evaluate

    def read(self) -> str:
        """Consume the whole reply and return it."""
        for _ in self._iter:
            pass
        return self.text

    def _run(self) -> Generator[str, None, None]:
        model, stats = self.model, self.stats
        if not model._lock.acquire(blocking=False):
            raise GenerationError("this model is already generating a reply")
        try:
            sampler = model.make_sampler(self.sampling)
        except BaseException:
            model._lock.release()
            raise
        stats.finish_reason = "cancelled"
        try:
            started = time.perf_counter()
            cached = model._reuse_prefix(self.tokens)
            stats.cached_tokens = cached
            self.prompt_to_evaluate = len(self.tokens) - cached
            model._fit_threads()
            if not model._decode(self.tokens[cached:], self.cancel, done=self._evaluated):
                return
            self.prompt_evaluated = self.prompt_to_evaluate
            stats.prompt_s = time.perf_counter() - started
            if model.drafter is not None and self.sampling.think_budget is None:
                # (a reasoning budget feeds its closing marker token by token: plain decoding then)
                yield from self._speculative_tokens(sampler, started)
            else:
                yield from self._tokens(sampler, started)
        finally:
            if self._first_at is not None:
                stats.generation_s = time.perf_counter() - self._first_at
            stats.threads, stats.threads_batch = model.n_threads, model.n_threads_batch
            sampler.close()
            model._lock.release()

    def _tokens(self, sampler: LlamaSampler, started: float) -> Iterator[str]:
        """Sample, yield and decode one token at a time, after the prompt was evaluated."""
        model, stats, sampling = self.model, self.stats, self.sampling
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = tuple(s for s in sampling.stop if s)
        held = ""  # text that might be the start of a stop string
        limit = sampling.max_tokens if sampling.max_tokens is not None else model.n_ctx
        ctx, evaluated, n_ctx = model._ctx, model._evaluated, model.n_ctx
        sample, decode_token = sampler.sample, ctx.decode_token
        is_eog, piece_of = model.llama.is_eog, model.llama.token_to_piece
        cancel, ignore_eos, special = self.cancel, sampling.ignore_eos, self.special_tokens
        budget = budget_tracker(model, sampling.think_budget)
        tuner, clock = model._tuner, time.perf_counter
        if tuner is not None:
            tuner.restart()
        while True:
            if stats.generated_tokens >= limit or len(evaluated) >= n_ctx:
                stats.finish_reason = "length"
                break
            forced = budget.forced() if budget is not None else None
            if forced is None:
                token = sample(ctx, -1)
            else:  # the reasoning budget is spent: its closing marker is fed
                token = forced
                sampler.accept(token)
            if not ignore_eos and is_eog(token):
                stats.finish_reason = "stop"
                break
            stats.generated_tokens += 1
            piece = decoder.decode(piece_of(token, special))
            if budget is not None:
                budget.after(piece)
            if self._first_at is None:
                self._first_at = time.perf_counter()
                stats.ttft_s = self._first_at - started
            if stops:
                piece, held, stopped = _hold_back(held + piece, stops)
                if stopped:
                    if piece:
                        self.text += piece
                        yield piece
                    stats.finish_reason = "stop"
                    break
            if piece:
                self.text += piece
                yield piece
            if cancel is not None and cancel.is_set():
                break
            if stats.generated_tokens >= limit:
                stats.finish_reason = "length"
                break
            if tuner is None:
                rc = decode_token(token)
            else:  # the tuner rates the decodes alone: a slow consumer is no collapse
                began = clock()
                rc = decode_token(token)
                tuner.tick(1, clock() - began)
            if rc != 0:
                raise GenerationError(f"llama_decode failed while generating (code {rc})")
            evaluated.append(token)
        tail = held + decoder.decode(b"", final=True)
        if tail and stats.finish_reason != "stop":
            self.text += tail
            yield tail

    def _speculative_tokens(self, sampler: LlamaSampler, started: float) -> Iterator[str]:
        """:meth:`_tokens` with drafts: each round feeds the pending token and up to ``n_draft``
        drafted ones in one decode, and keeps the drafts the model's own picks agree with (see
        :mod:`localllm.runtime.speculative`). The same tokens as :meth:`_tokens`, fewer decodes."""
        model, stats, sampling = self.model, self.stats, self.sampling
        drafter, batch = model.drafter, model._draft_batch
        assert drafter is not None and batch is not None
        drafter.reset()
        spec = Speculation(k_max=model.options.n_draft)
        stats.draft = drafter.name
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = tuple(s for s in sampling.stop if s)
        held = ""
        limit = sampling.max_tokens if sampling.max_tokens is not None else model.n_ctx
        ctx, evaluated, n_ctx = model._ctx, model._evaluated, model.n_ctx
        sample, decode_token, clock = sampler.sample, ctx.decode_token, time.perf_counter
        is_eog, piece_of = model.llama.is_eog, model.llama.token_to_piece
        cancel, ignore_eos = self.cancel, sampling.ignore_eos
        ready = [sample(ctx, -1)]  # picked tokens to show; all but the last are already in the cache
        try:
            while ready:
                base = len(evaluated) - len(ready) + 1  # cache tokens before ready[0]
                for j, token in enumerate(ready):
                    if stats.generated_tokens >= limit or base + j >= n_ctx:
                        stats.finish_reason = "length"
                    elif not ignore_eos and is_eog(token):
                        stats.finish_reason = "stop"
                    else:
                        stats.generated_tokens += 1
                        piece = decoder.decode(piece_of(token))
                        if self._first_at is None:
                            self._first_at = clock()
                            stats.ttft_s = self._first_at - started
                        stopped = False
                        if stops:
                            piece, held, stopped = _hold_back(held + piece, stops)
                            if stopped:
                                stats.finish_reason = "stop"
                        if piece:
                            self.text += piece
                            yield piece
                        if not stopped and not (cancel is not None and cancel.is_set()):
                            if stats.generated_tokens < limit:
                                continue
                            stats.finish_reason = "length"
                    # The reply ends at ``token``: the cache keeps what came before it.
                    model._forget_from(base + j)
                    ready = []
                    break
                if not ready:
                    break
                pending = ready[-1]
                began = clock()
                want = min(spec.want(), limit - stats.generated_tokens - 1, n_ctx - len(evaluated) - 2)
                drafts = drafter.propose([*evaluated, pending], want) if want > 0 else []
                if not drafts:
                    rc = decode_token(pending)
                    if rc != 0:
                        raise GenerationError(f"llama_decode failed while generating (code {rc})")
                    evaluated.append(pending)
                    ready = [sample(ctx, -1)]
                    spec.plain(clock() - began)
                    continue
                fill_run(batch, [pending, *drafts], len(evaluated))
                rc = ctx.decode(batch)
                if rc != 0:
                    model._forget_from(len(evaluated))
                    raise GenerationError(f"llama_decode failed while generating (code {rc})")
                evaluated.append(pending)
                ready = []
                for i, draft in enumerate(drafts):
                    token = sample(ctx, i)
                    ready.append(token)
                    if token != draft:
                        break
                else:
                    ready.append(sample(ctx, len(drafts)))
                accepted = len(ready) - 1
                evaluated.extend(drafts[:accepted])
                if accepted < len(drafts) and not ctx.memory_seq_rm(0, len(evaluated), -1):
                    raise GenerationError("llama.cpp could not drop refused drafts from the cache")
                spec.round(len(drafts), accepted, clock() - began)
        finally:
            stats.drafted_tokens, stats.accepted_tokens = spec.drafted, spec.accepted
            stats.plain_step_s = spec.plain_s or 0.0
        tail = held + decoder.decode(b"", final=True)
        if tail and stats.finish_reason != "stop":
            self.text += tail
            yield tail


def budget_tracker(model: Model, budget: ThinkBudget | None) -> BudgetTracker | None:
    """The tracker of a reply's reasoning budget (None: no budget)."""
    if budget is None:
        return None
    force = budget.force or budget.close
    return BudgetTracker(budget, model.tokenize(force, add_special=False, parse_special=True) if force else [])


def _unit_length(vector: list[float]) -> list[float]:
    """``vector`` scaled to Euclidean length 1 (llama.cpp's common_embd_normalize with 2)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def _hold_back(text: str, stops: tuple[str, ...]) -> tuple[str, str, bool]:
    """Split ``text`` into what can be shown, what must wait (it may begin a stop string), and
    whether a stop string was found (then what can be shown ends before it, and nothing waits)."""
    cut = find_stop(text, stops)
    if cut is not None:
        return text[:cut], "", True
    keep = stop_prefix_len(text, stops)
    return text[: len(text) - keep], text[len(text) - keep :], False


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the first of ``stops`` begins in ``text``, or None."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else None


def stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                best = max(best, n)
                break
    return best
