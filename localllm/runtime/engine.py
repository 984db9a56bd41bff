"""The inference engine: the only module that imports ``llama_cpp``.

It talks to llama.cpp through llama-cpp-python's low-level bindings rather than the ``Llama``
class: sampling runs in C (a ``llama_sampler`` chain), so a generated token costs one
``llama_decode`` and a few ctypes calls, and nothing is printed to stdout. llama.cpp's log goes to a
callback of ours: kept in a ring buffer (used for error messages and memory figures), and shown on
stderr only when asked (``verbose``).

Everything else in localllm uses :class:`Model` through plain Python values; tests that do not need
a real model use a scripted fake with the same methods.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as L

from localllm.errors import (
    ContextOverflowError,
    GenerationError,
    GrammarError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from localllm.gguf import cache as headercache
from localllm.gguf import quants

# --------------------------------------------------------------------------------------------
# llama.cpp's log


class _LlamaLog:
    """Receives every line llama.cpp logs; keeps the recent ones; echoes them when verbose."""

    def __init__(self, keep: int = 400) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.verbose = False
        self._partial = ""
        self._total = 0
        # Buffer sizes are kept apart: a load logs thousands of lines and they come early.
        self.buffer_lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=200)
        self._lock = threading.Lock()
        # ctypes keeps no reference to the callback: llama.cpp would call freed memory.
        self._callback = L.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, _user: object) -> None:
        chunk = text.decode("utf-8", errors="replace")
        with self._lock:
            if self.verbose:
                sys.stderr.write(chunk)
                sys.stderr.flush()
            self._partial += chunk
            *complete, self._partial = self._partial.split("\n")
            for line in complete:
                if line.strip():
                    self.lines.append(line)
                    self._total += 1
                    if "buffer size" in line:
                        self.buffer_lines.append((self._total, line))

    def mark(self) -> int:
        """A position in the log; :meth:`since` returns the lines logged after it."""
        with self._lock:
            return self._total

    def since(self, marker: int) -> list[str]:
        with self._lock:
            n = min(self._total - marker, len(self.lines))
            return list(self.lines)[len(self.lines) - n :] if n > 0 else []

    def buffers_since(self, marker: int) -> list[str]:
        with self._lock:
            return [line for number, line in self.buffer_lines if number > marker]

    def install(self) -> None:
        L.llama_log_set(self._callback, ctypes.c_void_p(0))


LOG = _LlamaLog()
LOG.install()
_backend_ready = False
_backend_lock = threading.Lock()


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            L.llama_backend_init()
            _backend_ready = True


def set_verbose(verbose: bool) -> None:
    """Show llama.cpp's own log on stderr (``--verbose``)."""
    LOG.verbose = verbose


# --------------------------------------------------------------------------------------------
# Options and results


def default_threads() -> int:
    """Physical cores, as llama.cpp's own tools default to (hyper-threads slow generation down)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        physical = None
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        usable = os.cpu_count() or 1
    return max(1, min(physical or usable, usable))


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model. ``n_ctx=None`` means the smaller of 4096 and the model's own."""

    n_ctx: int | None = None
    n_gpu_layers: int = 0
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_batch: int = 512
    n_ubatch: int = 512
    flash_attn: bool | None = None  # None: llama.cpp decides
    type_k: str = "f16"
    type_v: str = "f16"
    use_mmap: bool = True
    # Weight repacking into extra buffer types (AMX, interleaved CPU layouts). None: on, except
    # where this build uses AMX, whose matmul segfaults on some CPUs (llama.cpp issue #20824).
    repack: bool | None = None


DEFAULT_CTX = 4096


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. ``temperature <= 0`` is greedy, which makes output deterministic."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None  # None: until the model stops or the context is full
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep generating past end-of-text (benchmarks)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the previous turn
    generated_tokens: int = 0
    ttft_s: float = 0.0  # from the call to the first token's text
    prompt_s: float = 0.0  # evaluating the prompt
    generation_s: float = 0.0  # from the first token to the last
    finish_reason: str = ""  # "stop", "length", "cancelled"

    @property
    def tokens_per_s(self) -> float:
        if self.generated_tokens <= 1 or self.generation_s <= 0:
            return 0.0
        # The first token comes out of prompt evaluation; rate the ones decoded after it.
        return (self.generated_tokens - 1) / self.generation_s

    @property
    def prompt_tokens_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prompt_s if self.prompt_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generated_tokens": self.generated_tokens,
            "ttft_s": round(self.ttft_s, 4),
            "prompt_s": round(self.prompt_s, 4),
            "generation_s": round(self.generation_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "prompt_tokens_per_s": round(self.prompt_tokens_per_s, 2),
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True)
class LoadReport:
    """What llama.cpp said it allocated while loading (MiB per buffer, as logged)."""

    load_s: float
    buffers_mib: dict[str, float] = field(default_factory=dict)


_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
_BUFFER_RE = re.compile(r"(\S+)\s+(model|KV|compute|RS|output)\s+buffer size\s*=\s*([0-9.]+)\s*MiB")
_UNKNOWN_ARCH_RE = re.compile(r"unknown model architecture: '([^']*)'")


def _parse_buffers(lines: Sequence[str]) -> dict[str, float]:
    sizes: dict[str, float] = {}
    for line in lines:
        match = _BUFFER_RE.search(line)
        if match:
            key = f"{match.group(1)} {match.group(2)}"
            sizes[key] = sizes.get(key, 0.0) + float(match.group(3))
    return sizes


def _load_failure(path: Path, lines: Sequence[str], what: str) -> Exception:
    for line in lines:
        match = _UNKNOWN_ARCH_RE.search(line)
        if match:
            return UnsupportedArchitectureError(
                f"{path.name}: architecture '{match.group(1)}' is not supported by this llama.cpp "
                f"build (llama-cpp-python {L.__version__})",
                hint="upgrade llama-cpp-python, or pick a model of a supported architecture",
            )
    reason = next(
        (ln.strip() for ln in reversed(lines) if "error" in ln.lower() or "failed" in ln.lower()),
        "",
    )
    reason = re.sub(r"^\w+:\s*", "", reason)
    return ModelLoadError(
        f"llama.cpp could not {what} {path.name}" + (f": {reason}" if reason else ""),
        hint="run with --verbose to see llama.cpp's log",
    )


# --------------------------------------------------------------------------------------------
# The model


class Model:
    """A loaded GGUF model with one context (one conversation at a time).

    Not thread-safe: one generation at a time. ``close()`` frees llama.cpp's memory at once.
    """

    def __init__(self, path: str | Path, options: LoadOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or LoadOptions()
        # Clear errors before llama.cpp sees it; cached, since the planner has usually just read it.
        self.header = headercache.read_header(self.path)
        _init_backend()
        self._model = None
        self._ctx = None
        self._lock = threading.Lock()

        marker = LOG.mark()
        started = time.perf_counter()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = self.options.n_gpu_layers
        mparams.use_extra_bufts = self.options.repack if self.options.repack is not None else not build_has_amx()
        if not self.options.use_mmap:
            mparams.load_mode = L.LLAMA_LOAD_MODE_NONE
        model = L.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise _load_failure(self.path, LOG.since(marker), "load")
        self._model = model
        self._vocab = L.llama_model_get_vocab(model)
        self.n_ctx_train = L.llama_model_n_ctx_train(model)

        n_ctx = self.options.n_ctx or min(DEFAULT_CTX, self.n_ctx_train or DEFAULT_CTX)
        threads = self.options.n_threads or default_threads()
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(self.options.n_batch, n_ctx)
        cparams.n_ubatch = min(self.options.n_ubatch, cparams.n_batch)
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = self.options.n_threads_batch or threads
        cparams.no_perf = False
        if self.options.flash_attn is not None:
            cparams.flash_attn_type = (
                L.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if self.options.flash_attn
                else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        cparams.type_k = _KV_TYPES[self.options.type_k]
        cparams.type_v = _KV_TYPES[self.options.type_v]
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            error = _load_failure(self.path, LOG.since(marker), "create a context for")
            self.close()
            raise error
        self._ctx = ctx
        self._memory = L.llama_get_memory(ctx)
        self.n_ctx = L.llama_n_ctx(ctx)
        self.n_threads = threads
        self.load_report = LoadReport(
            load_s=time.perf_counter() - started, buffers_mib=_parse_buffers(LOG.buffers_since(marker))
        )
        self._evaluated: list[int] = []  # tokens whose KV is in the cache, in order
        self._piece_buf = ctypes.create_string_buffer(256)
        self._template = self._read_chat_template()
        self._formatter = None

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._ctx:
            self._record_load()
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    def _record_load(self) -> None:
        """What llama.cpp allocated and the peak memory, for ``localllm fit`` (see loadlog)."""
        from localllm.fit import loadlog

        o = self.options
        settings = {"n_ctx": self.n_ctx, "n_gpu_layers": o.n_gpu_layers, "type_k": o.type_k, "type_v": o.type_v,
                    "flash_attn": o.flash_attn, "n_batch": o.n_batch, "n_ubatch": o.n_ubatch}  # fmt: skip
        loadlog.record(self.path, self.header.file_size or 0, settings, self.load_report.buffers_mib)

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net; close() is the API
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: llama_cpp may be gone
            pass

    # -- tokens and text ----------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (L.llama_token * capacity)()
        n = L.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            tokens = (L.llama_token * capacity)()
            n = L.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:
            raise GenerationError("could not tokenize the prompt")
        return list(tokens[:n])

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buf = self._piece_buf
        n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _token_text(self, token: int) -> str:
        n = L.llama_vocab_get_text(self._vocab, token)
        return n.decode("utf-8", errors="replace") if n else ""

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def _read_chat_template(self) -> str | None:
        raw = L.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text for ``messages`` in the model's own chat template (from the GGUF)."""
        if self._template is None:
            # No template in the file: a plain transcript is more honest than llama-2's format.
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            bos = L.llama_vocab_bos(self._vocab)
            eos = L.llama_vocab_eos(self._vocab)
            self._formatter = Jinja2ChatFormatter(
                template=self._template,
                bos_token=self._token_text(bos) if bos >= 0 else "",
                eos_token=self._token_text(eos) if eos >= 0 else "",
            )
        try:
            return self._formatter(messages=list(messages)).prompt
        except Exception as exc:  # jinja2 raises many kinds; the template is the model's
            raise GenerationError(f"the model's chat template failed: {exc}") from exc

    # -- generation ---------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        sampling: SamplingOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Stream the assistant's reply to ``messages`` (dicts with role and content)."""
        prompt = self.render_chat(messages)
        # The template writes BOS itself where the model wants one.
        tokens = self.tokenize(prompt, add_special=self._template is None, parse_special=True)
        return Generation(self, tokens, sampling or SamplingOptions(), cancel)

    def complete(
        self,
        prompt: str,
        sampling: SamplingOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> Generation:
        """Stream a raw continuation of ``prompt`` (no chat template)."""
        tokens = self.tokenize(prompt, add_special=True, parse_special=False)
        return Generation(self, tokens, sampling or SamplingOptions(), cancel)

    def _make_sampler(self, sampling: SamplingOptions, grammar: str | None = None):
        params = L.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = L.llama_sampler_chain_init(params)
        if grammar is not None:
            _add_grammar(chain, self._vocab, grammar)
        if sampling.repeat_penalty and sampling.repeat_penalty != 1.0:
            L.llama_sampler_chain_add(
                chain, L.llama_sampler_init_penalties(64, sampling.repeat_penalty, 0.0, 0.0)
            )
        if sampling.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if sampling.top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(sampling.top_k))
        if 0 < sampling.top_p < 1:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
        if sampling.min_p > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(sampling.min_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(sampling.temperature))
        seed = L.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain

    def _decode(self, tokens: list[int], cancel: threading.Event | None) -> bool:
        """Evaluate ``tokens`` after the cached ones, in batches. False if cancelled."""
        step = L.llama_n_batch(self._ctx)
        for start in range(0, len(tokens), step):
            if cancel is not None and cancel.is_set():
                return False
            chunk = tokens[start : start + step]
            array = (L.llama_token * len(chunk))(*chunk)
            rc = L.llama_decode(self._ctx, L.llama_batch_get_one(array, len(chunk)))
            if rc != 0:
                # Keep the cache consistent with what we believe is in it.
                self._forget_from(len(self._evaluated))
                raise GenerationError(f"llama_decode failed (code {rc})")
            self._evaluated.extend(chunk)
        return True

    def _forget_from(self, position: int) -> None:
        L.llama_memory_seq_rm(self._memory, -1, position, -1)
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
            if not L.llama_memory_seq_rm(self._memory, -1, common, -1):
                L.llama_memory_clear(self._memory, True)
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
        self, model: Model, tokens: list[int], sampling: SamplingOptions, cancel: threading.Event | None
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
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def read(self) -> str:
        """Consume the whole reply and return it."""
        for _ in self._iter:
            pass
        return self.text

    def _run(self) -> Iterator[str]:
        model, stats, sampling = self.model, self.stats, self.sampling
        if not model._lock.acquire(blocking=False):
            raise GenerationError("this model is already generating a reply")
        sampler = model._make_sampler(sampling)
        started = time.perf_counter()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = tuple(s for s in sampling.stop if s)
        held = ""  # text that might be the start of a stop string
        limit = sampling.max_tokens if sampling.max_tokens is not None else model.n_ctx
        first_at = None
        stats.finish_reason = "cancelled"
        try:
            cached = model._reuse_prefix(self.tokens)
            stats.cached_tokens = cached
            if not model._decode(self.tokens[cached:], self.cancel):
                return
            stats.prompt_s = time.perf_counter() - started
            vocab, ctx = model._vocab, model._ctx
            sample, is_eog, decode = L.llama_sampler_sample, L.llama_vocab_is_eog, L.llama_decode
            get_one, token_type = L.llama_batch_get_one, L.llama_token * 1
            cancel, ignore_eos = self.cancel, sampling.ignore_eos
            while True:
                if stats.generated_tokens >= limit:
                    stats.finish_reason = "length"
                    break
                if len(model._evaluated) >= model.n_ctx:
                    stats.finish_reason = "length"
                    break
                token = sample(sampler, ctx, -1)
                if not ignore_eos and is_eog(vocab, token):
                    stats.finish_reason = "stop"
                    break
                stats.generated_tokens += 1
                piece = decoder.decode(model.token_bytes(token))
                if first_at is None:
                    first_at = time.perf_counter()
                    stats.ttft_s = first_at - started
                if stops:
                    held += piece
                    cut = _find_stop(held, stops)
                    if cut is not None:
                        held = held[:cut]
                        if held:
                            self.text += held
                            yield held
                        stats.finish_reason = "stop"
                        break
                    keep = _stop_prefix_len(held, stops)
                    piece, held = held[: len(held) - keep], held[len(held) - keep :]
                if piece:
                    self.text += piece
                    yield piece
                if cancel is not None and cancel.is_set():
                    break
                if stats.generated_tokens >= limit:
                    stats.finish_reason = "length"
                    break
                rc = decode(ctx, get_one(token_type(token), 1))
                if rc != 0:
                    raise GenerationError(f"llama_decode failed while generating (code {rc})")
                model._evaluated.append(token)
            tail = held + decoder.decode(b"", final=True)
            if tail and stats.finish_reason != "stop":
                self.text += tail
                yield tail
        finally:
            if first_at is not None:
                stats.generation_s = time.perf_counter() - first_at
            L.llama_sampler_free(sampler)
            model._lock.release()


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else None


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                best = max(best, n)
                break
    return best


# --------------------------------------------------------------------------------------------
# What this llama.cpp build can do


def llama_cpp_version() -> str:
    return L.__version__


def supports_gpu_offload() -> bool:
    return bool(L.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's own summary of the CPU features this build uses ("AVX2 = 1 | ...")."""
    return L.llama_print_system_info().decode("utf-8", errors="replace")


def build_has_amx() -> bool:
    return "AMX_INT8 = 1" in system_info()


# --------------------------------------------------------------------------------------------
# Batch decoding: several sequences in one context, admitted as others finish (issue 6)
#
# Everything below is used by ``localllm batch`` and ``localllm bench``. It shares the loaded
# weights of a :class:`Model` but decodes in its own context, sized for N sequences.


def json_schema_grammar(schema: object) -> str:
    """The GBNF grammar of JSON text that matches ``schema`` (a dict or its JSON text)."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return json_schema_to_gbnf(text)
    except Exception as exc:  # the converter raises ValueError, KeyError, TypeError, ...
        raise GrammarError(
            f"the JSON schema cannot be turned into a grammar: {exc}",
            hint="use a plain JSON schema (type, properties, required, enum, items)",
        ) from exc


def _add_grammar(chain, vocab, grammar: str) -> None:
    """Put a grammar constraint first in a sampler chain; frees the chain if llama.cpp refuses it."""
    constraint = L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not constraint:
        L.llama_sampler_free(chain)
        raise GrammarError("llama.cpp rejected the grammar", hint="run with --verbose to see why")
    L.llama_sampler_chain_add(chain, constraint)


def _context(model: Model, *, n_ctx: int, n_seq_max: int, n_batch: int, n_ubatch: int,
             n_threads: int | None, kv_unified: bool = False, n_outputs_max: int = 0):
    """A new llama.cpp context over ``model``'s weights, with the model's KV and attention options."""
    threads = n_threads or model.n_threads
    cparams = L.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = min(n_ubatch, n_batch)
    cparams.n_seq_max = n_seq_max
    cparams.kv_unified = kv_unified
    cparams.n_outputs_max = n_outputs_max
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    cparams.no_perf = True
    if model.options.flash_attn is not None:
        cparams.flash_attn_type = (
            L.LLAMA_FLASH_ATTN_TYPE_ENABLED if model.options.flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
    cparams.type_k = _KV_TYPES[model.options.type_k]
    cparams.type_v = _KV_TYPES[model.options.type_v]
    marker = LOG.mark()
    ctx = L.llama_init_from_model(model._model, cparams)
    if not ctx:
        raise _load_failure(model.path, LOG.since(marker), "create a batch context for")
    return ctx


@dataclass(frozen=True)
class BatchRequest:
    """One prompt to complete. ``key`` is the caller's handle, given back in the result."""

    key: object
    tokens: Sequence[int]
    sampling: SamplingOptions = SamplingOptions()
    grammar: str | None = None  # GBNF (see json_schema_grammar)


@dataclass
class BatchResult:
    key: object
    text: str
    finish_reason: str  # "stop" (end of text or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    wait_s: float  # from the start of the run to the sequence's admission
    prompt_s: float  # from admission to its first token
    generation_s: float  # from its first token to its last


class _Sequence:
    __slots__ = (
        "request", "seq_id", "sampler", "fed", "pos", "next_token", "index", "decoder", "text",
        "generated", "limit", "admitted", "first_at",
    )


class BatchSession:
    """Decodes up to ``n_parallel`` sequences together in one llama.cpp context.

    Continuous batching: each :meth:`run` step packs one generated token of every running sequence
    and then prompt chunks of newly admitted ones into a batch of at most ``n_batch`` tokens, and
    calls ``llama_decode`` once. A finished sequence's KV cells are freed at once and the next
    request takes its sequence id. Each sequence has its own KV stream of ``n_ctx_seq`` cells
    (``kv_unified`` off), so one sequence never waits for another's room.

    The order in which requests are admitted and batched depends only on the requests and
    ``n_parallel``, never on timing, so a run repeats exactly. Not thread-safe.
    """

    def __init__(self, model: Model, n_parallel: int, n_ctx_seq: int | None = None, *,
                 n_batch: int = 512, n_ubatch: int = 512, n_threads: int | None = None) -> None:
        if n_parallel < 1:
            raise ValueError("n_parallel must be at least 1")
        self.model = model
        self.n_parallel = n_parallel
        wanted = n_ctx_seq or min(DEFAULT_CTX, model.n_ctx_train or DEFAULT_CTX)
        self._ctx = _context(
            model, n_ctx=wanted * n_parallel, n_seq_max=n_parallel, n_batch=n_batch,
            n_ubatch=n_ubatch, n_threads=n_threads, kv_unified=False,
            # A step needs logits for at most one token per sequence: a vocabulary-wide row each,
            # not one per batch slot (512 x 128k-vocabulary floats would be 256 MiB).
            n_outputs_max=n_parallel,
        )
        self._memory = L.llama_get_memory(self._ctx)
        self.n_ctx_seq = L.llama_n_ctx_seq(self._ctx)
        self.n_batch = L.llama_n_batch(self._ctx)
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)

    def close(self) -> None:
        if self._ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> BatchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_grammar(self, grammar: str) -> None:
        """Raise :class:`GrammarError` if llama.cpp cannot use ``grammar``."""
        L.llama_sampler_free(self.model._make_sampler(SamplingOptions(temperature=0), grammar))

    def check(self, tokens: Sequence[int]) -> None:
        """Raise :class:`ContextOverflowError` if a prompt cannot fit one sequence's context."""
        if not tokens:
            raise GenerationError("the prompt is empty")
        if len(tokens) >= self.n_ctx_seq:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but each sequence's context holds {self.n_ctx_seq}",
                hint="shorten the prompt or raise --ctx",
            )

    def _admit(self, seq_id: int, request: BatchRequest, now: float, started: float) -> _Sequence:
        self.check(request.tokens)
        s = _Sequence()
        s.request, s.seq_id = request, seq_id
        s.sampler = self.model._make_sampler(request.sampling, request.grammar)
        s.fed = 0  # prompt tokens already in the batch
        s.pos = 0  # position of the next token fed
        s.next_token = None  # the sampled token to feed next step (None while in the prompt)
        s.index = -1  # batch index whose logits this sequence samples from, -1: none this step
        s.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        s.text = ""
        s.generated = 0
        room = self.n_ctx_seq - len(request.tokens)
        max_tokens = request.sampling.max_tokens
        s.limit = min(max_tokens, room) if max_tokens is not None else room
        s.admitted = now - started
        s.first_at = 0.0
        return s

    def run(self, requests: Iterable[BatchRequest], cancel: threading.Event | None = None) -> Iterator[BatchResult]:
        """Complete ``requests`` (read lazily, in order), yielding each result as it finishes.

        Stops between two decode steps when ``cancel`` is set (or the consumer closes the
        iterator); the sequences in flight are then dropped and their cells freed.
        """
        ctx, batch, vocab = self._ctx, self._batch, self.model._vocab
        n_batch, n_parallel = self.n_batch, self.n_parallel
        sample, is_eog, decode = L.llama_sampler_sample, L.llama_vocab_is_eog, L.llama_decode
        token_bytes = self.model.token_bytes
        slots: list[_Sequence | None] = [None] * n_parallel
        source = iter(requests)
        exhausted = False
        started = time.perf_counter()
        L.llama_memory_clear(self._memory, True)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return
                for i in range(n_parallel):
                    if slots[i] is None and not exhausted:
                        request = next(source, None)
                        if request is None:
                            exhausted = True
                        else:
                            slots[i] = self._admit(i, request, time.perf_counter(), started)
                active = [s for s in slots if s is not None]
                if not active:
                    return
                # Fill the batch: one generated token per running sequence, then prompt chunks.
                n = 0
                tok, pos, nseq, seqs, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
                for s in active:
                    s.index = -1
                    if s.next_token is not None:
                        tok[n], pos[n], nseq[n], logits[n] = s.next_token, s.pos, 1, 1
                        seqs[n][0] = s.seq_id
                        s.index = n
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
                rc = decode(ctx, batch)
                if rc != 0:
                    raise GenerationError(f"llama_decode failed in a batch of {n} tokens (code {rc})")
                now = time.perf_counter()
                for s in active:
                    if s.index < 0:
                        continue
                    token = sample(s.sampler, ctx, s.index)
                    if s.generated == 0:
                        s.first_at = now
                    finish = None
                    if not s.request.sampling.ignore_eos and is_eog(vocab, token):
                        finish = "stop"
                    else:
                        s.generated += 1
                        piece = s.decoder.decode(token_bytes(token))
                        s.text += piece
                        stops = s.request.sampling.stop
                        if stops and piece:
                            # Only the new piece and the stop-length text before it can hold a stop.
                            base = max(0, len(s.text) - len(piece) - max(map(len, stops)))
                            cut = _find_stop(s.text[base:], stops)
                            if cut is not None:
                                s.text = s.text[: base + cut]
                                finish = "stop"
                        if finish is None and (s.generated >= s.limit or s.pos >= self.n_ctx_seq):
                            finish = "length"
                    if finish is None:
                        s.next_token = token
                        continue
                    if finish == "length":
                        s.text += s.decoder.decode(b"", final=True)
                    slots[s.seq_id] = None
                    self._release(s)
                    yield BatchResult(
                        key=s.request.key, text=s.text, finish_reason=finish,
                        prompt_tokens=len(s.request.tokens), completion_tokens=s.generated,
                        wait_s=s.admitted, prompt_s=s.first_at - started - s.admitted,
                        generation_s=time.perf_counter() - s.first_at if s.generated else 0.0,
                    )
        finally:
            for s in slots:
                if s is not None:
                    self._release(s)

    def _release(self, s: _Sequence) -> None:
        L.llama_sampler_free(s.sampler)
        L.llama_memory_seq_rm(self._memory, s.seq_id, -1, -1)


# --------------------------------------------------------------------------------------------
# Benchmarks: the timing loops of llama-bench and llama-batched-bench, over this engine


def _random_tokens(model: Model, n: int, rng) -> list[int]:
    n_vocab = L.llama_vocab_n_tokens(model._vocab)
    return [rng.randrange(n_vocab) for _ in range(n)]


def _decode_tokens(ctx, tokens: list[int], n_batch: int) -> None:
    for start in range(0, len(tokens), n_batch):
        chunk = tokens[start : start + n_batch]
        array = (L.llama_token * len(chunk))(*chunk)  # kept alive: the batch only points at it
        rc = L.llama_decode(ctx, L.llama_batch_get_one(array, len(chunk)))
        if rc != 0:
            raise GenerationError(f"llama_decode failed (code {rc})")
    L.llama_synchronize(ctx)


def bench_pp_tg(model: Model, *, n_prompt: int = 512, n_gen: int = 128, reps: int = 5,
                n_threads: int | None = None, seed: int = 1, n_batch: int = 2048,
                n_ubatch: int = 512) -> tuple[list[float], list[float]]:
    """Tokens/s of each repetition of llama-bench's ppN and tgN tests.

    As llama-bench does: one warm-up of each test, then per repetition the cache is cleared; pp is
    ``n_prompt`` random tokens decoded as one batch, tg is ``n_gen`` single-token decodes.
    """
    import random

    rng = random.Random(seed)
    # llama-bench's defaults: n_batch 2048, n_ubatch 512, n_ctx = n_prompt + n_gen.
    ctx = _context(model, n_ctx=n_prompt + n_gen, n_seq_max=1, n_batch=n_batch, n_ubatch=n_ubatch,
                   n_threads=n_threads, kv_unified=False)
    n_batch = L.llama_n_batch(ctx)
    memory = L.llama_get_memory(ctx)
    add_bos = L.llama_vocab_get_add_bos(model._vocab)
    bos = L.llama_vocab_bos(model._vocab)

    def pp() -> float:
        tokens = _random_tokens(model, n_prompt, rng)
        if add_bos:
            tokens[0] = bos
        L.llama_memory_clear(memory, False)
        started = time.perf_counter()
        _decode_tokens(ctx, tokens, n_batch)
        return time.perf_counter() - started

    def tg(n: int) -> float:
        L.llama_memory_clear(memory, False)
        token = bos if add_bos else _random_tokens(model, 1, rng)[0]
        started = time.perf_counter()
        for _ in range(n):
            _decode_tokens(ctx, [token], 1)
            token = rng.randrange(L.llama_vocab_n_tokens(model._vocab))
        return time.perf_counter() - started

    try:
        pp_rates, tg_rates = [], []
        if n_prompt:
            pp()  # warm-up
            pp_rates = [n_prompt / pp() for _ in range(reps)]
        if n_gen:
            tg(1)  # warm-up
            tg_rates = [n_gen / tg(n_gen) for _ in range(reps)]
        return pp_rates, tg_rates
    finally:
        L.llama_free(ctx)


@dataclass(frozen=True)
class BatchedBench:
    n_parallel: int
    n_prompt: int
    n_gen: int
    prompt_s: float
    generation_s: float

    @property
    def generation_tokens_per_s(self) -> float:  # llama-batched-bench's S_TG
        return self.n_parallel * self.n_gen / self.generation_s

    @property
    def tokens_per_s(self) -> float:  # llama-batched-bench's S (prompt and generated tokens)
        return self.n_parallel * (self.n_prompt + self.n_gen) / (self.prompt_s + self.generation_s)


def bench_batched(model: Model, n_parallel: int, *, n_prompt: int = 128, n_gen: int = 128,
                  n_threads: int | None = None, seed: int = 1) -> BatchedBench:
    """llama-batched-bench's test: ``n_parallel`` prompts of ``n_prompt`` tokens decoded, then
    ``n_gen`` steps of one token per sequence (no sampling), after one warm-up decode."""
    import random

    rng = random.Random(seed)
    n_batch = 512
    ctx = _context(model, n_ctx=n_parallel * (n_prompt + n_gen), n_seq_max=n_parallel, n_batch=n_batch,
                   n_ubatch=512, n_threads=n_threads, kv_unified=False)
    memory = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(max(n_batch, n_parallel), 0, 1)

    def run(entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) entries, n_batch at a time."""
        for start in range(0, len(entries), n_batch):
            chunk = entries[start : start + n_batch]
            for i, (token, position, seq, wants) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, wants
                batch.seq_id[i][0] = seq
            batch.n_tokens = len(chunk)
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                raise GenerationError(f"llama_decode failed (code {rc})")
        L.llama_synchronize(ctx)

    try:
        run([(t, i, 0, i == 15) for i, t in enumerate(_random_tokens(model, 16, rng))])  # warm-up
        L.llama_memory_clear(memory, False)
        # As llama-batched-bench: logits for each sequence's last prompt token, then for every
        # generated token (a real batch samples every sequence at every step).
        prompt = [(t, i % n_prompt, i // n_prompt, i % n_prompt == n_prompt - 1)
                  for i, t in enumerate(_random_tokens(model, n_parallel * n_prompt, rng))]
        started = time.perf_counter()
        run(prompt)
        prompt_s = time.perf_counter() - started
        started = time.perf_counter()
        for step in range(n_gen):
            run([(t, n_prompt + step, s, True) for s, t in enumerate(_random_tokens(model, n_parallel, rng))])
        generation_s = time.perf_counter() - started
        return BatchedBench(n_parallel, n_prompt, n_gen, prompt_s, generation_s)
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


# --------------------------------------------------------------------------------------------
# Devices the build sees (ggml's backend registry), bound with ctypes: llama-cpp-python 0.3.36
# does not wrap ggml_backend_dev_*. Used by localllm.hardware.

_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class BackendDevice:
    name: str  # "CPU", "CUDA0", "Metal", "Vulkan0"
    description: str
    kind: str  # cpu, gpu, igpu, accel, meta
    free_bytes: int
    total_bytes: int


_dev_lib = None


def _ggml_dev_lib():
    global _dev_lib
    if _dev_lib is None:
        from llama_cpp import _ggml

        lib = _ggml.libggml
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_count.argtypes = []
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_memory.restype = None
        lib.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)
        ]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        _dev_lib = lib
    return _dev_lib


def backend_devices() -> list[BackendDevice]:
    """Every device this llama.cpp build can use, with its free and total memory in bytes."""
    _init_backend()
    lib = _ggml_dev_lib()
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if not dev:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            BackendDevice(
                name=(lib.ggml_backend_dev_name(dev) or b"").decode("utf-8", errors="replace"),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode("utf-8", errors="replace"),
                kind=_DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown"),
                free_bytes=int(free.value),
                total_bytes=int(total.value),
            )
        )
    return devices


# --------------------------------------------------------------------------------------------
# Quantizing a GGUF (synthetic models for tests and benchmarks; users' own conversions)

def quantize_model(src: str | Path, dest: str | Path, quant: str, *, threads: int | None = None) -> None:
    """Write ``dest``: ``src`` quantized to ``quant`` (a llama.cpp file type name, e.g. Q4_K_M)."""
    ftype = quants.WRITABLE_FTYPES.get(quant.upper())
    if ftype is None:
        raise ModelLoadError(
            f"cannot quantize to {quant}", hint=f"pick one of {', '.join(sorted(quants.WRITABLE_FTYPES))}"
        )
    _init_backend()
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or default_threads()
    marker = LOG.mark()
    rc = L.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    if rc != 0:
        raise _load_failure(Path(src), LOG.since(marker), f"quantize to {quant}")
