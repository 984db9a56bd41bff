"""What callers pass to the runtime and get back from it: plain values, no llama.cpp.

Importing this module does not import ``llama_cpp``, so the CLI, the planner and the TUI can build
options and read results without paying for the native library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from localllm.options import SAMPLING

DEFAULT_CTX = 4096  # tokens of context when nobody asked for a size and the model allows it


def default_ctx(asked: int | None, trained: int | None) -> int:
    """The context to load with: the size asked for, else the smaller of :data:`DEFAULT_CTX` and the
    model's trained context (``trained``; None or 0: unknown)."""
    return asked or min(DEFAULT_CTX, trained or DEFAULT_CTX)


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
class AdapterSpec:
    """A LoRA adapter to load with a model: its file, the scale applied by default (0: loaded but
    off until a request asks for it) and the name requests use (default: the file's stem)."""

    path: Path
    scale: float = 1.0
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


# A set of adapters applied together: (name, scale) pairs in the order the adapters were loaded,
# none with scale 0. The empty set is the base model alone.
AdapterSet = tuple[tuple[str, float], ...]


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
    # MoE: the routed experts of layers 0 .. N-1 stay in RAM while the rest of those layers goes to
    # the GPU (llama.cpp's --n-cpu-moe N, through tensor buffer-type overrides).
    cpu_moe_layers: int = 0
    # LoRA adapters loaded once with the weights; their scales are the default adapter set.
    adapters: tuple[AdapterSpec, ...] = ()
    # Speculative decoding: "ngram" (prompt lookup) or a draft model's GGUF path; None: off.
    draft: str | Path | None = None
    n_draft: int = 8  # the most tokens drafted per round


@dataclass(frozen=True)
class ThinkBudget:
    """A cap on a reply's reasoning, as llama-server's ``--reasoning-budget`` and Anthropic's
    ``budget_tokens``: once the reply has written ``tokens`` tokens inside a reasoning block (from
    ``open`` to ``close``; ``inside``: the prompt already opened it), the tokens of ``force`` (the
    family's closing marker) are fed instead of sampled ones, and the reply goes on after it."""

    tokens: int
    open: str
    close: str
    force: str = ""  # the text injected to close the block (empty: ``close``)
    inside: bool = False


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. ``temperature <= 0`` is greedy, which makes output deterministic."""

    temperature: float = SAMPLING["temperature"].default
    top_p: float = SAMPLING["top_p"].default
    top_k: int = SAMPLING["top_k"].default
    min_p: float = SAMPLING["min_p"].default
    repeat_penalty: float = SAMPLING["repeat_penalty"].default
    seed: int | None = SAMPLING["seed"].default
    max_tokens: int | None = SAMPLING["max_tokens"].default  # None: until the model stops or the context is full
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep generating past end-of-text (benchmarks)
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit), OpenAI's logit_bias
    think_budget: ThinkBudget | None = None  # a cap on the reply's reasoning tokens


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the previous turn
    generated_tokens: int = 0
    ttft_s: float = 0.0  # from the call to the first token's text
    prompt_s: float = 0.0  # evaluating the prompt
    generation_s: float = 0.0  # from the first token to the last
    finish_reason: str = ""  # "stop", "length", "cancelled"
    draft: str = ""  # the drafter ("ngram" or the draft model's file name); "": no speculative decoding
    drafted_tokens: int = 0  # tokens proposed by the drafter and verified
    accepted_tokens: int = 0  # of those, the ones the model agreed with (each one a decode saved)
    plain_step_s: float = 0.0  # a plain decoding step's time, measured in the same reply (0: unknown)
    threads: int = 0  # CPU threads generating at the end of the reply (0: unknown)
    threads_batch: int = 0  # CPU threads that evaluated the prompt

    @property
    def acceptance(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    @property
    def speedup(self) -> float:
        """Tokens per second against plain decoding's, estimated from this reply's plain steps (0: unknown)."""
        return self.tokens_per_s * self.plain_step_s if self.plain_step_s > 0 else 0.0

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
            "threads": self.threads,
            "threads_batch": self.threads_batch,
            **(
                {
                    "draft": self.draft,
                    "drafted_tokens": self.drafted_tokens,
                    "accepted_tokens": self.accepted_tokens,
                    "acceptance": round(self.acceptance, 4),
                    "speedup": round(self.speedup, 3),
                }
                if self.draft
                else {}
            ),
        }


@dataclass(frozen=True)
class LoadReport:
    """One load, as the application records it (``localllm.fit.loadlog.record``).

    ``buffers_mib`` is what llama.cpp said it allocated (MiB per buffer, as logged); ``settings``
    holds the options that decide those sizes. The runtime writes nothing itself: the caller
    records the report, typically after ``Model.close()``.
    """

    load_s: float
    buffers_mib: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    file_size: int = 0
    settings: dict[str, object] = field(default_factory=dict)
    # The thread counts chosen at load (n_threads, n_threads_batch, threads_forced): recorded with
    # the load, apart from ``settings``, which say what the memory and a saved KV cache depend on.
    threads: dict[str, object] = field(default_factory=dict)
