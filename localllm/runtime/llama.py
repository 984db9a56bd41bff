"""llama.cpp itself: the only module in localllm that imports ``llama_cpp``.

It holds llama.cpp's log sink, backend initialisation, the ctypes binding of ggml's device
registry, and small owner classes in the style of llama-cpp-python's ``_internals.py``: each of
:class:`LlamaModel`, :class:`LlamaAdapter`, :class:`LlamaContext`, :class:`LlamaBatch` and
:class:`LlamaSampler` creates
exactly one llama.cpp object and frees it exactly once (``close()``, idempotent). The modules above
(model, batching, bench, devices, quantize) compose these and never touch a raw pointer.

Importing this module has no side effect on llama.cpp: the log callback is installed by the first
:func:`init_backend`, which every owner calls before creating its object.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import llama_cpp as L
import numpy as np

from localllm.errors import GrammarError, ModelLoadError, UnsupportedArchitectureError

# --------------------------------------------------------------------------------------------
# llama.cpp's log


class LlamaLog:
    """Receives every line llama.cpp logs; keeps the recent ones; echoes them when verbose.

    Creating one changes nothing in llama.cpp; :meth:`install` (called by :func:`init_backend`)
    makes it llama.cpp's log callback.
    """

    def __init__(self, keep: int = 400) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self.verbose = False
        self.installed = False
        self._partial = ""
        self._total = 0
        # Buffer sizes, and tensors overridden into another buffer type (experts kept on the CPU),
        # are kept apart: a load logs thousands of lines and they come early.
        self.buffer_lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=1000)
        self._lock = threading.Lock()
        self._callback: object = None  # the ctypes callback, kept alive while llama.cpp holds it

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
                    if "buffer size" in line or "buffer type overridden" in line:
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
        """Make this llama.cpp's log callback (once; later calls do nothing)."""
        if self.installed:
            return
        # ctypes keeps no reference to the callback: llama.cpp would call freed memory.
        callback = L.llama_log_callback(self._on_log)
        L.llama_log_set(callback, ctypes.c_void_p(0))
        self._callback = callback
        self.installed = True


LOG = LlamaLog()
_backend_ready = False
_backend_lock = threading.Lock()


def init_backend() -> None:
    """Install the log sink and initialise llama.cpp's backend, once per process."""
    global _backend_ready
    if _backend_ready:
        return
    with _backend_lock:
        if not _backend_ready:
            LOG.install()
            L.llama_backend_init()
            _backend_ready = True


def set_verbose(verbose: bool) -> None:
    """Show llama.cpp's own log on stderr (``--verbose``)."""
    LOG.verbose = verbose


# --------------------------------------------------------------------------------------------
# Errors read from the log

_UNKNOWN_ARCH_RE = re.compile(r"unknown model architecture: '([^']*)'")


def load_failure(path: Path, lines: Sequence[str], what: str) -> Exception:
    """The exception for llama.cpp refusing to ``what`` ``path``, from the lines it logged."""
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


class _Owner:
    """Frees its one llama.cpp object once: on ``close()``, leaving the block, or collection."""

    def close(self) -> None:  # pragma: no cover - every owner overrides it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net; close() is the API
        # At interpreter shutdown llama_cpp's globals may already be gone; nothing can be freed then.
        if L is not None and getattr(L, "llama_free", None) is not None:
            self.close()


# --------------------------------------------------------------------------------------------
# The model (weights and vocabulary)


class LlamaModel(_Owner):
    """One ``llama_model`` loaded from a GGUF file, with its vocabulary."""

    def __init__(
        self,
        path: Path,
        *,
        n_gpu_layers: int = 0,
        use_extra_bufts: bool = True,
        use_mmap: bool = True,
        cpu_patterns: Sequence[str] = (),
    ) -> None:
        """``cpu_patterns``: regexes on tensor names whose tensors stay in a CPU buffer wherever
        their layer goes (llama.cpp's ``-ot PATTERN=CPU``)."""
        self.path = Path(path)
        self._ptr = None
        init_backend()
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = use_extra_bufts
        # llama.cpp keeps pointers to the patterns: they live as long as this object.
        self._overrides = _cpu_overrides(cpu_patterns) if cpu_patterns else None
        if self._overrides is not None:
            params.tensor_buft_overrides = ctypes.addressof(self._overrides)
        if not use_mmap:
            params.load_mode = L.LLAMA_LOAD_MODE_NONE
        marker = LOG.mark()
        ptr = L.llama_model_load_from_file(os.fsencode(self.path), params)
        if not ptr:
            raise load_failure(self.path, LOG.since(marker), "load")
        self._ptr = ptr
        self._vocab = L.llama_model_get_vocab(ptr)
        self._piece_buf = ctypes.create_string_buffer(256)
        self.log_marker = marker  # where this load's lines begin in LOG

    def close(self) -> None:
        if self._ptr:
            L.llama_model_free(self._ptr)
            self._ptr = None

    @property
    def closed(self) -> bool:
        return not self._ptr

    def n_ctx_train(self) -> int:
        return L.llama_model_n_ctx_train(self._ptr)

    def n_vocab(self) -> int:
        return L.llama_vocab_n_tokens(self._vocab)

    def bos(self) -> int:
        return L.llama_vocab_bos(self._vocab)

    def eos(self) -> int:
        return L.llama_vocab_eos(self._vocab)

    def sep(self) -> int:
        """The separator token (BERT's [SEP]); -1 if the vocabulary has none."""
        return L.llama_vocab_sep(self._vocab)

    def n_cls_out(self) -> int:
        """Outputs of a reranker's classification head (1 unless its labels say otherwise)."""
        return L.llama_model_n_cls_out(self._ptr)

    def add_bos(self) -> bool:
        return bool(L.llama_vocab_get_add_bos(self._vocab))

    def is_eog(self, token: int) -> bool:
        return L.llama_vocab_is_eog(self._vocab, token)

    def chat_template(self) -> str | None:
        raw = L.llama_model_chat_template(self._ptr, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int] | None:
        """The tokens of ``text``; None if llama.cpp cannot tokenize it."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (L.llama_token * capacity)()
        n = L.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            tokens = (L.llama_token * capacity)()
            n = L.llama_tokenize(self._vocab, data, len(data), tokens, capacity, add_special, parse_special)
        return list(tokens[:n]) if n >= 0 else None

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        """The bytes ``token`` stands for (part of a UTF-8 character, possibly)."""
        buf = self._piece_buf
        n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def token_text(self, token: int) -> str:
        """The vocabulary's text of ``token`` (special tokens spelled out, e.g. ``<|im_end|>``)."""
        raw = L.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""


class LlamaAdapter(_Owner):
    """One LoRA adapter (``llama_adapter_lora``) loaded onto a :class:`LlamaModel`'s weights.

    Freed before the model (``close()``); contexts apply it with :meth:`LlamaContext.set_adapters`.
    The file should be checked first (``localllm.gguf.adapter``): llama.cpp's own refusal is only a
    logged line.
    """

    def __init__(self, model: LlamaModel, path: Path) -> None:
        self.path = Path(path)
        self._ptr = None
        init_backend()
        marker = LOG.mark()
        ptr = L.llama_adapter_lora_init(model._ptr, os.fsencode(self.path))
        if not ptr:
            raise load_failure(self.path, LOG.since(marker), "load the LoRA adapter")
        self._ptr = ptr
        self.model = model  # the weights must outlive the adapter

    def close(self) -> None:
        if self._ptr:
            if not self.model.closed:  # llama.cpp frees an adapter with its model
                L.llama_adapter_lora_free(self._ptr)
            self._ptr = None

    @property
    def closed(self) -> bool:
        return not self._ptr


class _BuftOverride(ctypes.Structure):
    """``struct llama_model_tensor_buft_override`` (llama-cpp-python declares the field as a bare
    pointer and does not bind the struct)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _cpu_overrides(patterns: Sequence[str]) -> ctypes.Array:
    """A NULL-terminated array putting the tensors ``patterns`` match into the CPU buffer type.
    ctypes keeps the pattern bytes alive with the array."""
    buft = _ggml_dev_lib().ggml_backend_cpu_buffer_type()
    if not buft:
        raise ModelLoadError("this llama.cpp build has no CPU buffer type to keep tensors on the CPU")
    array = (_BuftOverride * (len(patterns) + 1))()
    for i, pattern in enumerate(patterns):
        array[i].pattern = pattern.encode()
        array[i].buft = buft
    return array


# --------------------------------------------------------------------------------------------
# A context (KV cache, compute buffers) over a model's weights

KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
_BUFFER_RE = re.compile(r"(\S+)\s+(model|KV|compute|RS|output)\s+buffer size\s*=\s*([0-9.]+)\s*MiB")


def buffers_mib(lines: Sequence[str]) -> dict[str, float]:
    """Buffer sizes llama.cpp logged ("CPU KV" -> MiB), summed per buffer."""
    sizes: dict[str, float] = {}
    for line in lines:
        match = _BUFFER_RE.search(line)
        if match:
            key = f"{match.group(1)} {match.group(2)}"
            sizes[key] = sizes.get(key, 0.0) + float(match.group(3))
    return sizes


def _new_context(model: LlamaModel, params: Any, flash_attn: bool | None, type_k: str, type_v: str, what: str) -> Any:
    """``llama_init_from_model`` with the attention settings every context shares (flash attention:
    None lets llama.cpp decide; the K and V cache types); ModelLoadError with llama.cpp's own
    reason when it refuses."""
    if flash_attn is not None:
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.type_k = KV_TYPES[type_k]
    params.type_v = KV_TYPES[type_v]
    marker = LOG.mark()
    ptr = L.llama_init_from_model(model._ptr, params)
    if not ptr:
        raise load_failure(model.path, LOG.since(marker), what)
    return ptr


class LlamaContext(_Owner):
    """One ``llama_context`` over a :class:`LlamaModel`'s weights, and its memory (KV cache).

    ``kv_unified`` and ``n_outputs_max`` left None keep llama.cpp's defaults; so does
    ``flash_attn=None`` (llama.cpp decides).
    """

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_ctx: int,
        n_batch: int,
        n_ubatch: int,
        n_seq_max: int,
        n_threads: int,
        n_threads_batch: int,
        type_k: str = "f16",
        type_v: str = "f16",
        flash_attn: bool | None = None,
        kv_unified: bool | None = None,
        n_outputs_max: int | None = None,
        no_perf: bool = True,
        what: str = "create a context for",
    ) -> None:
        self._ptr = None
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = min(n_ubatch, n_batch)
        params.n_seq_max = n_seq_max
        if kv_unified is not None:
            params.kv_unified = kv_unified
        if n_outputs_max is not None:
            params.n_outputs_max = n_outputs_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.no_perf = no_perf
        ptr = _new_context(model, params, flash_attn, type_k, type_v, what)
        self._ptr = ptr
        self.model = model  # the weights must outlive the context, even when collected
        self._memory = L.llama_get_memory(ptr)
        self._one = (L.llama_token * 1)()  # the batch of one generated token
        self.n_ctx = L.llama_n_ctx(ptr)
        self.n_ctx_seq = L.llama_n_ctx_seq(ptr)
        self.n_batch = L.llama_n_batch(ptr)

    def close(self) -> None:
        if self._ptr:
            L.llama_free(self._ptr)
            self._ptr = None

    @property
    def closed(self) -> bool:
        return not self._ptr

    def decode_tokens(self, tokens: Sequence[int]) -> int:
        """Evaluate ``tokens`` (at most ``n_batch``) after sequence 0's; llama.cpp's return code."""
        array = (L.llama_token * len(tokens))(*tokens)  # kept alive: the batch only points at it
        return L.llama_decode(self._ptr, L.llama_batch_get_one(array, len(tokens)))

    def decode_token(self, token: int) -> int:
        """Evaluate one token after sequence 0's (the generation step); llama.cpp's return code."""
        one = self._one
        one[0] = token
        return L.llama_decode(self._ptr, L.llama_batch_get_one(one, 1))

    def decode(self, batch: LlamaBatch) -> int:
        """Evaluate the first ``batch.n_tokens`` entries of ``batch``; llama.cpp's return code."""
        return L.llama_decode(self._ptr, batch._batch)

    def set_adapters(self, adapters: Sequence[tuple[LlamaAdapter, float]]) -> None:
        """Apply exactly these LoRA adapters with their scales to the following decodes (none: the
        base weights alone). llama.cpp does nothing when the set is unchanged."""
        n = len(adapters)
        pointers: list[Any] = [a._ptr for a, _ in adapters]
        ptrs = (L.llama_adapter_lora_p_ctypes * max(n, 1))(*pointers)
        scales = (ctypes.c_float * max(n, 1))(*(float(s) for _, s in adapters))
        rc = L.llama_set_adapters_lora(self._ptr, ptrs if n else None, n, scales if n else None)
        if rc != 0:
            raise ModelLoadError(f"llama.cpp could not apply {n} LoRA adapter(s) (code {rc})")

    def synchronize(self) -> None:
        L.llama_synchronize(self._ptr)

    def set_n_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """Compute the following decodes with ``n_threads`` threads (one token) and
        ``n_threads_batch`` (several tokens): llama.cpp's ``llama_set_n_threads``."""
        L.llama_set_n_threads(self._ptr, n_threads, n_threads_batch)

    def n_threads(self) -> tuple[int, int]:
        """The thread counts the next decodes use: (one token, several tokens)."""
        return int(L.llama_n_threads(self._ptr)), int(L.llama_n_threads_batch(self._ptr))

    def memory_clear(self, data: bool = True) -> None:
        """Forget every sequence (``data``: also zero the cells)."""
        L.llama_memory_clear(self._memory, data)

    def memory_seq_rm(self, seq_id: int, p0: int, p1: int) -> bool:
        """Remove positions [p0, p1) of ``seq_id`` (-1: all sequences / open end). False if refused."""
        return bool(L.llama_memory_seq_rm(self._memory, seq_id, p0, p1))

    def memory_seq_pos_min(self, seq_id: int) -> int:
        """The smallest position ``seq_id`` holds in the cells (-1: none)."""
        return int(L.llama_memory_seq_pos_min(self._memory, seq_id))

    def memory_seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Copy positions [p0, p1) of sequence ``src`` to ``dst`` (-1: open ends)."""
        L.llama_memory_seq_cp(self._memory, src, dst, p0, p1)

    def state_seq_get(self, seq_id: int) -> ctypes.Array[ctypes.c_uint8] | None:
        """A copy of ``seq_id``'s KV cells in memory (for :meth:`state_seq_set`); None if it
        holds none or llama.cpp could not write them."""
        size = int(L.llama_state_seq_get_size(self._ptr, seq_id))
        if size <= 0:
            return None
        data = (ctypes.c_uint8 * size)()
        written = int(L.llama_state_seq_get_data(self._ptr, data, size, seq_id))
        return data if written == size else None

    def state_seq_set(self, data: ctypes.Array[ctypes.c_uint8], seq_id: int) -> bool:
        """Put cells copied by :meth:`state_seq_get` into ``seq_id`` (its cells are replaced).
        False if llama.cpp refused them (``seq_id`` then holds nothing)."""
        read = int(L.llama_state_seq_set_data(self._ptr, data, len(data), seq_id))
        if read != len(data):
            L.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            return False
        return True

    def state_seq_save_file(self, path: Path, seq_id: int, tokens: Sequence[int]) -> bool:
        """Write ``seq_id``'s KV cells and the ``tokens`` they hold to ``path``. False if it failed."""
        array = (L.llama_token * max(len(tokens), 1))(*tokens)
        return L.llama_state_seq_save_file(self._ptr, os.fsencode(path), seq_id, array, len(tokens)) > 0

    def state_seq_load_file(self, path: Path, seq_id: int, capacity: int) -> list[int] | None:
        """Read a file written by :meth:`state_seq_save_file` into ``seq_id``; the tokens it holds,
        or None if llama.cpp refused it (another model, a context too small, a damaged file)."""
        tokens = (L.llama_token * capacity)()
        count = ctypes.c_size_t(0)
        read = L.llama_state_seq_load_file(self._ptr, os.fsencode(path), seq_id, tokens, capacity, ctypes.byref(count))
        return list(tokens[: count.value]) if read else None


# --------------------------------------------------------------------------------------------
# Embeddings


class LlamaEmbedder(_Owner):
    """A ``llama_context`` of its own over a :class:`LlamaModel`'s weights that turns a token
    sequence into one vector: llama.cpp's mean pooling over the sequence (``embeddings`` on,
    ``LLAMA_POOLING_TYPE_MEAN``), as llama-server does with ``--pooling mean``; with
    ``rank=True``, a reranker's scores instead (``LLAMA_POOLING_TYPE_RANK``: the classification
    head over the query/document pair, ``n_cls_out`` values), as llama-server's ``--reranking``.

    A sequence is decoded in one micro-batch (pooling needs every token at once), so ``n_batch``
    and ``n_ubatch`` equal ``n_ctx``: the longest sequence it takes.
    """

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_ctx: int,
        n_threads: int,
        type_k: str = "f16",
        type_v: str = "f16",
        flash_attn: bool | None = None,
        rank: bool = False,
    ) -> None:
        self._ptr = None
        self._batch: LlamaBatch | None = None
        params = L.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        params.embeddings = True
        params.pooling_type = L.LLAMA_POOLING_TYPE_RANK if rank else L.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = True
        ptr = _new_context(model, params, flash_attn, type_k, type_v, "create an embedding context for")
        self._ptr = ptr
        self.model = model  # the weights must outlive the context
        self._memory = L.llama_get_memory(ptr)
        self.n_ctx = min(L.llama_n_ctx(ptr), L.llama_n_ubatch(ptr))
        self.rank = rank
        self.n_embd = model.n_cls_out() if rank else L.llama_model_n_embd(model._ptr)  # values per sequence
        self._batch = LlamaBatch(self.n_ctx, 1)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._ptr:
            L.llama_free(self._ptr)
            self._ptr = None

    @property
    def closed(self) -> bool:
        return not self._ptr

    def embed(self, tokens: Sequence[int]) -> list[float] | None:
        """The mean-pooled vector of ``tokens`` (1 to ``n_ctx`` of them), not normalised (a
        reranker's: its ``n_cls_out`` scores); None if llama.cpp failed to decode them."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("the embedding context is closed")
        tok, pos, nseq, seqs, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        for i, token in enumerate(tokens):
            tok[i], pos[i], nseq[i], logits[i] = token, i, 1, 1
            seqs[i][0] = 0
        batch.n_tokens = len(tokens)
        L.llama_memory_clear(self._memory, True)
        if L.llama_decode(self._ptr, batch._batch) != 0:
            return None
        pooled = L.llama_get_embeddings_seq(self._ptr, 0)
        return pooled[: self.n_embd] if pooled else None


# --------------------------------------------------------------------------------------------
# A batch of tokens for several sequences


class LlamaBatch(_Owner):
    """One ``llama_batch`` of up to ``n_tokens`` tokens, each in up to ``n_seq_max`` sequences.

    ``token``, ``pos``, ``n_seq_id``, ``seq_id`` and ``logits`` are the batch's own ctypes arrays:
    hot loops bind them to locals and fill them in place, then set :attr:`n_tokens`.
    """

    def __init__(self, n_tokens: int, n_seq_max: int = 1) -> None:
        self._live = False
        self._batch = L.llama_batch_init(n_tokens, 0, n_seq_max)
        self._live = True
        self.capacity = n_tokens
        batch = self._batch
        self.token, self.pos, self.n_seq_id = batch.token, batch.pos, batch.n_seq_id
        self.seq_id, self.logits = batch.seq_id, batch.logits

    @property
    def n_tokens(self) -> int:
        return self._batch.n_tokens

    @n_tokens.setter
    def n_tokens(self, n: int) -> None:
        self._batch.n_tokens = n

    def close(self) -> None:
        if self._live:
            self._live = False
            self.token = self.pos = self.n_seq_id = self.seq_id = self.logits = None
            L.llama_batch_free(self._batch)

    @property
    def closed(self) -> bool:
        return not self._live


# --------------------------------------------------------------------------------------------
# Samplers


class LlamaSampler(_Owner):
    """One ``llama_sampler`` chain; the ``add_*`` methods append a stage (applied in order).

    The chain owns its stages: freeing it frees them.
    """

    def __init__(self) -> None:
        self._ptr = None
        self._grammar = None  # a grammar stage of its own: checked after the chain picks (see sample)
        params = L.llama_sampler_chain_default_params()
        params.no_perf = True
        self._ptr = L.llama_sampler_chain_init(params)

    def close(self) -> None:
        if self._grammar:
            L.llama_sampler_free(self._grammar)
            self._grammar = None
        if self._ptr:
            L.llama_sampler_free(self._ptr)
            self._ptr = None

    @property
    def closed(self) -> bool:
        return not self._ptr

    def add_grammar(self, model: LlamaModel, grammar: str, *, check_after: bool = False) -> None:
        """Constrain tokens to ``grammar`` (GBNF, rule ``root``); :class:`GrammarError` if refused.
        ``check_after``: the grammar checks the chain's pick instead of filtering first (see
        :meth:`sample`)."""
        stage = L.llama_sampler_init_grammar(model._vocab, grammar.encode("utf-8"), b"root")
        if not stage:
            raise GrammarError("llama.cpp rejected the grammar", hint="run with --verbose to see why")
        if check_after:
            self._set_grammar(model, stage)
        else:
            L.llama_sampler_chain_add(self._ptr, stage)

    def _set_grammar(self, model: LlamaModel, stage: Any) -> None:
        if self._grammar:
            L.llama_sampler_free(self._grammar)
        self._grammar = stage
        self._n_vocab = L.llama_vocab_n_tokens(model._vocab)

    def add_grammar_lazy(self, model: LlamaModel, grammar: str, patterns: Sequence[str]) -> None:
        """Constrain tokens to ``grammar`` from the first match of one of ``patterns`` (regular
        expressions over the generated text; the grammar reads from their first group) on:
        llama.cpp's lazy grammar, for tool calls the model may or may not make. It checks the
        chain's pick (see :meth:`sample`)."""
        encoded = [p.encode("utf-8") for p in patterns]
        array = (ctypes.c_char_p * len(encoded))(*encoded)
        stage = L.llama_sampler_init_grammar_lazy_patterns(
            model._vocab, grammar.encode("utf-8"), b"root", array, len(encoded), None, 0
        )
        if not stage:
            raise GrammarError("llama.cpp rejected the grammar", hint="run with --verbose to see why")
        self._set_grammar(model, stage)

    def add_penalties(
        self, model: LlamaModel, last_n: int, repeat: float, frequency: float = 0.0, presence: float = 0.0
    ) -> None:
        """Penalise the last ``last_n`` tokens (``repeat`` > 0, 1 = off). This llama.cpp's
        ``llama_sampler_init_penalties`` still takes the vocabulary size first."""
        stage = L.llama_sampler_init_penalties(model.n_vocab(), last_n, repeat, frequency, presence)
        L.llama_sampler_chain_add(self._ptr, stage)

    def add_logit_bias(self, model: LlamaModel, biases: Sequence[tuple[int, float]]) -> None:
        """Add ``bias`` to the logit of each ``(token, bias)`` (OpenAI's ``logit_bias``)."""
        array = (L.llama_logit_bias * len(biases))(*(L.llama_logit_bias(t, b) for t, b in biases))
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_logit_bias(model.n_vocab(), len(biases), array))

    def add_greedy(self) -> None:
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_greedy())

    def add_top_k(self, k: int) -> None:
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_top_k(k))

    def add_top_p(self, p: float, min_keep: int = 1) -> None:
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_top_p(p, min_keep))

    def add_min_p(self, p: float, min_keep: int = 1) -> None:
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_min_p(p, min_keep))

    def add_temp(self, temperature: float) -> None:
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_temp(temperature))

    def add_dist(self, seed: int | None) -> None:
        """Draw from the distribution; ``seed`` None: llama.cpp picks one at random."""
        L.llama_sampler_chain_add(
            self._ptr, L.llama_sampler_init_dist(L.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF)
        )

    def accept(self, token: int) -> None:
        """Tell every stage that ``token`` comes next without sampling it (a token fed by the
        caller: penalties and grammars keep their history)."""
        L.llama_sampler_accept(self._ptr, token)
        if self._grammar:
            L.llama_sampler_accept(self._grammar, token)

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """The token picked from the logits of batch entry ``index`` (-1: the last) of ``ctx``.

        With a grammar, as llama.cpp's own common sampler does: the chain picks first and the
        grammar checks that one token; only when it refuses is the whole vocabulary filtered by
        the grammar and the chain run again (a grammar over every token each step costs more than
        the model's own decoding)."""
        token = L.llama_sampler_sample(self._ptr, ctx._ptr, index)
        grammar = self._grammar
        if grammar is None:
            return token
        one = L.llama_token_data(token, 1.0, 0.0)
        single = L.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
        L.llama_sampler_apply(grammar, ctypes.byref(single))
        if one.logit != float("-inf"):
            L.llama_sampler_accept(grammar, token)
            return token
        n = self._n_vocab
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx._ptr, index), shape=(n,))
        data = (L.llama_token_data * n)()
        view = np.frombuffer(data, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        view["id"] = np.arange(n, dtype=np.int32)
        view["logit"] = logits
        view["p"] = 0.0
        candidates = L.llama_token_data_array(data, n, -1, False)
        L.llama_sampler_apply(grammar, ctypes.byref(candidates))
        L.llama_sampler_apply(self._ptr, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)  # a stage may point data elsewhere
        L.llama_sampler_accept(grammar, token)
        return token


def token_piece(model: LlamaModel, token: int, special: bool = False) -> bytes:
    """The bytes ``token`` stands for, like :meth:`LlamaModel.token_to_piece` but through a buffer
    of its own, so a thread that decodes may call it while another uses the model. ``special``:
    control tokens show their text (a family's tool-call markers)."""
    buf = ctypes.create_string_buffer(64)
    n = L.llama_token_to_piece(model._vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = L.llama_token_to_piece(model._vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


def token_logprobs(
    ctx: LlamaContext, index: int, n_vocab: int, token: int, top: int
) -> tuple[float, list[tuple[int, float]]]:
    """The log-probability of ``token`` in the logits of batch entry ``index`` (the model's own
    distribution, before sampling's temperature), and the ``top`` most likely tokens with theirs."""
    row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx._ptr, index), shape=(n_vocab,)).astype(np.float64)
    peak = row.max()
    logz = peak + np.log(np.exp(row - peak).sum())
    best: list[tuple[int, float]] = []
    if top > 0:
        ids = np.argpartition(-row, min(top, n_vocab - 1))[:top]
        ids = ids[np.argsort(-row[ids])]
        best = [(int(i), float(row[i] - logz)) for i in ids]
    return float(row[token] - logz), best


def greedy_token(ctx: LlamaContext, index: int, n_vocab: int) -> int:
    """The most likely token in the logits of batch entry ``index`` of ``ctx``: what a sampler
    chain of llama.cpp's greedy stage alone picks (the first of equal logits), without building
    its vocabulary-wide candidate array."""
    row = L.llama_get_logits_ith(ctx._ptr, index)
    return int(np.ctypeslib.as_array(row, shape=(n_vocab,)).argmax())


def output_logits(ctx: LlamaContext, n_outputs: int, n_vocab: int) -> np.ndarray:
    """The logits of the last decode's ``n_outputs`` outputs, in batch order, as one
    ``(n_outputs, n_vocab)`` float32 numpy view over llama.cpp's own buffer (no copy, no Python
    loop over the vocabulary). Valid until the next decode on ``ctx``."""
    row = L.llama_get_logits(ctx._ptr)
    return np.ctypeslib.as_array(row, shape=(n_outputs, n_vocab))


def fill_batch(batch: LlamaBatch, tokens: Sequence[int], first_output: int) -> None:
    """Put ``tokens`` at positions 0.. of sequence 0 in ``batch``, with logits for the positions
    from ``first_output`` on."""
    n = len(tokens)
    np.ctypeslib.as_array(batch.token, shape=(batch.capacity,))[:n] = tokens
    np.ctypeslib.as_array(batch.pos, shape=(batch.capacity,))[:n] = np.arange(n, dtype=np.int32)
    np.ctypeslib.as_array(batch.n_seq_id, shape=(batch.capacity,))[:n] = 1
    wants = np.ctypeslib.as_array(batch.logits, shape=(batch.capacity,))
    wants[:n] = 0
    wants[first_output:n] = 1
    seqs = batch.seq_id
    for i in range(n):
        seqs[i][0] = 0
    batch.n_tokens = n


def fill_run(batch: LlamaBatch, tokens: Sequence[int], first_pos: int) -> None:
    """Put ``tokens`` at positions ``first_pos``.. of sequence 0 in ``batch``, with logits for
    every one (a speculative round verifies each draft)."""
    n = len(tokens)
    np.ctypeslib.as_array(batch.token, shape=(batch.capacity,))[:n] = tokens
    np.ctypeslib.as_array(batch.pos, shape=(batch.capacity,))[:n] = np.arange(first_pos, first_pos + n, dtype=np.int32)
    np.ctypeslib.as_array(batch.n_seq_id, shape=(batch.capacity,))[:n] = 1
    np.ctypeslib.as_array(batch.logits, shape=(batch.capacity,))[:n] = 1
    seqs = batch.seq_id
    for i in range(n):
        seqs[i][0] = 0
    batch.n_tokens = n


# --------------------------------------------------------------------------------------------
# Chat templates and JSON schemas (llama-cpp-python's Python helpers)


def json_schema_to_gbnf(schema_json: str) -> str:
    """llama-cpp-python's JSON schema to GBNF converter (raises whatever it raises)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf as convert

    return convert(schema_json)


# --------------------------------------------------------------------------------------------
# The build


def version() -> str:
    return L.__version__


def supports_gpu_offload() -> bool:
    """Whether this build can offload to a GPU of this machine. llama.cpp's own answer is also true
    for any build with the RPC backend, workers or not; those count apart (:func:`rpc_add_servers`)."""
    init_backend()
    if not L.llama_supports_gpu_offload():
        return False
    if not L.llama_supports_rpc():
        return True
    return any(kind in ("gpu", "igpu") and not name.startswith("RPC") for name, _d, kind, _f, _t in device_list())


def system_info() -> str:
    """llama.cpp's own summary of the CPU features this build uses ("AVX2 = 1 | ...")."""
    init_backend()
    return L.llama_print_system_info().decode("utf-8", errors="replace")


def quantize(src: Path, dest: Path, ftype: int, threads: int, label: str, allow_requantize: bool = False) -> None:
    """Write ``dest``: ``src`` quantized to llama.cpp file type ``ftype`` (named ``label``);
    ``allow_requantize``: ``src`` may itself be quantized (llama-quantize's --allow-requantize)."""
    init_backend()
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.allow_requantize = allow_requantize
    marker = LOG.mark()
    rc = L.llama_model_quantize(os.fsencode(src), os.fsencode(dest), ctypes.byref(params))
    if rc != 0:
        raise load_failure(Path(src), LOG.since(marker), f"quantize to {label}")


# --------------------------------------------------------------------------------------------
# Devices (ggml's backend registry), bound with ctypes: llama-cpp-python 0.3.36 does not wrap
# ggml_backend_dev_*.

DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
_dev_lib = None


def _ggml_dev_lib():
    """The ggml that libllama itself calls, for binding ggml_backend_* functions.

    Not ``llama_cpp._ggml.libggml``: the wheel ships ``libggml.so`` and ``libggml.so.0`` as two
    copies of one file (not symlinks); libllama links ``libggml.so.0`` while ``_ggml`` dlopens
    ``libggml.so``, so the dynamic loader maps ggml twice, each copy with its own backend
    registry. A device registered through ``_ggml`` (an RPC worker) is then in a registry that
    ``llama_model_load`` never reads: it offloads "31/31 layers" to no device and keeps every
    weight in a CPU buffer. Symbols looked up through libllama's own handle resolve in libllama's
    dependencies, i.e. in the very libggml it uses."""
    global _dev_lib
    if _dev_lib is None:
        from llama_cpp import llama_cpp as bindings

        lib = bindings._lib
        # ctypes raises AttributeError for a symbol the handle does not reach: a loader whose
        # lookup by handle skips dependencies (Windows, where the names are not duplicated).
        if getattr(lib, "ggml_backend_dev_count", None) is None:
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
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        # The CPU buffer type llama.cpp compares tensor overrides against (so they may repack).
        lib.ggml_backend_cpu_buffer_type.restype = ctypes.c_void_p
        lib.ggml_backend_cpu_buffer_type.argtypes = []
        _dev_lib = lib
    return _dev_lib


def device_list() -> list[tuple[str, str, str, int, int]]:
    """(name, description, kind, free bytes, total bytes) of every device ggml registered."""
    init_backend()
    lib = _ggml_dev_lib()
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if not dev:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            (
                (lib.ggml_backend_dev_name(dev) or b"").decode("utf-8", errors="replace"),
                (lib.ggml_backend_dev_description(dev) or b"").decode("utf-8", errors="replace"),
                DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown"),
                int(free.value),
                int(total.value),
            )
        )
    return out


def _c_text(lib, name: str, *args) -> str:
    """The string a C function of ``lib`` returns; "" when this build does not have the function."""
    fn = getattr(lib, name, None)  # ctypes raises AttributeError for a symbol the library lacks
    if fn is None:
        return ""
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_void_p] * len(args)
    return (fn(*args) or b"").decode("utf-8", errors="replace")


class BuildInfo(TypedDict):
    llama: str
    ggml: str
    commit: str
    backends: list[str]


def build_info() -> BuildInfo:
    """The llama.cpp under the bindings: libllama's and ggml's versions, ggml's git commit, and the
    backends compiled in ("CPU", "CUDA", "Metal", ...)."""
    init_backend()
    lib = _ggml_dev_lib()
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_count.argtypes = []
    lib.ggml_backend_reg_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    backends = [
        _c_text(lib, "ggml_backend_reg_name", lib.ggml_backend_reg_get(i)) for i in range(lib.ggml_backend_reg_count())
    ]
    return {
        "llama": L.llama_version().decode("utf-8", errors="replace") if hasattr(L, "llama_version") else "",
        "ggml": _c_text(lib, "ggml_version"),
        "commit": _c_text(lib, "ggml_commit"),
        "backends": [b for b in backends if b],
    }


# --------------------------------------------------------------------------------------------
# llama.cpp's RPC backend (ggml-rpc): remote workers as devices, and a worker of our own.
#
# ggml-rpc aborts the whole process (GGML_ABORT) when it cannot connect to a worker or the
# handshake fails, so every endpoint is first greeted here in Python (the same HELLO message the
# C client sends) and only handed to ggml-rpc when it answered as a worker of our protocol.

RPC_PROTO = (7, 0)  # ggml-rpc.h of this llama.cpp: RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION
_RPC_CMD_HELLO = 14
_RPC_CONN_CAPS = 24  # transport.h: RPC_CONN_CAPS_SIZE
_rpc_regs: dict[str, int] = {}  # endpoint -> its registered ggml_backend_reg_t
_rpc_lock = threading.Lock()


def supports_rpc() -> bool:
    """Whether this llama.cpp build has the RPC backend (built with GGML_RPC)."""
    init_backend()
    return bool(L.llama_supports_rpc())


def _rpc_reg() -> int:
    lib = _ggml_dev_lib()
    lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_register.restype = None
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_dev_count.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    return lib.ggml_backend_reg_by_name(b"RPC") or 0


def _rpc_proc(name: str, restype: Any, *argtypes: Any) -> Any:
    """A function of ggml-rpc, reached through its backend registry (no library path needed)."""
    reg = _rpc_reg()
    address = _ggml_dev_lib().ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not address:
        raise OSError(f"this llama.cpp build has no {name}")
    return ctypes.CFUNCTYPE(restype, *argtypes)(address)


def rpc_hello(host: str, port: int, timeout: float) -> tuple[int, int, int]:
    """Greet the ggml-rpc worker at ``host:port`` as ggml-rpc's client does; its protocol version.
    OSError (connection refused, timed out: a worker serves one client at a time) or ValueError
    (something else answered)."""
    import socket
    import struct

    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(bytes([_RPC_CMD_HELLO]) + struct.pack("<Q", _RPC_CONN_CAPS) + bytes(_RPC_CONN_CAPS))
        want = 8 + 4 + _RPC_CONN_CAPS
        data = b""
        while len(data) < want:
            chunk = sock.recv(want - len(data))
            if not chunk:
                break
            data += chunk
    if len(data) < 8 or struct.unpack("<Q", data[:8])[0] != 4 + _RPC_CONN_CAPS or len(data) < want:
        raise ValueError("its answer to ggml-rpc's HELLO has the wrong size")
    return data[8], data[9], data[10]


def rpc_add_servers(endpoints: Sequence[str]) -> list[tuple[str, str, str, int, int]]:
    """Make each ``host:port`` worker (already greeted with :func:`rpc_hello`) a device of this
    process, once: every later model load may put layers on it. (endpoint, device name, kind, free
    bytes, total bytes) per worker device, its memory as the worker reports it
    (``ggml_backend_rpc_get_device_memory``)."""
    init_backend()
    add = _rpc_proc("ggml_backend_rpc_add_server", ctypes.c_void_p, ctypes.c_char_p)
    lib = _ggml_dev_lib()
    out = []
    with _rpc_lock:
        for endpoint in endpoints:
            reg = _rpc_regs.get(endpoint)
            if reg is None:
                reg = add(endpoint.encode())
                if not reg:
                    raise OSError(f"the RPC worker at {endpoint} reports no device")
                lib.ggml_backend_register(reg)
                _rpc_regs[endpoint] = reg
            for i in range(lib.ggml_backend_reg_dev_count(reg)):
                dev = lib.ggml_backend_reg_dev_get(reg, i)
                free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
                lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
                name = (lib.ggml_backend_dev_name(dev) or b"").decode("utf-8", errors="replace")
                out.append((endpoint, name, "gpu", int(free.value), int(total.value)))
    return out


def rpc_serve(endpoint: str, threads: int) -> None:
    """Serve this machine's first GPU (else its CPU) to ggml-rpc clients at ``endpoint``: blocks
    while it serves (one client at a time); returns only when it cannot listen."""
    init_backend()
    start = _rpc_proc(
        "ggml_backend_rpc_start_server",
        None,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
    )
    lib = _ggml_dev_lib()
    dev = lib.ggml_backend_dev_by_type(1) or lib.ggml_backend_dev_by_type(2) or lib.ggml_backend_dev_by_type(0)
    if not dev:
        raise OSError("this llama.cpp build has no device to serve")
    devices = (ctypes.c_void_p * 1)(dev)
    start(endpoint.encode(), None, threads, 1, devices)
