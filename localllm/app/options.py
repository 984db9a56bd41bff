"""The limits of what a user may set, checked in one place for every command and screen.

Each check raises :class:`~localllm.errors.UsageError` naming the flag, before anything is loaded:
the smallest context is the same for ``run``, ``chat``, ``batch`` and the server, NaN and infinity
are refused, and nothing reaches llama.cpp that it would assert on.
"""

from __future__ import annotations

import math

from localllm.errors import UsageError

MIN_CTX = 32  # tokens: a chat template and a short reply need at least this
MAX_CTX = 1 << 24  # llama.cpp keeps n_ctx in 32 bits; nothing trains beyond this
MAX_THREADS = 512  # GGML_MAX_N_THREADS
MAX_PARALLEL = 256


def _integer(flag: str, value: int | None, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{flag} must be a whole number from {low} to {high:,}, not {value}")


def _number(flag: str, value: float | None, low: float, high: float, *, low_open: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{flag} must be a finite number, not {value}")
    if value < low or value > high or (low_open and value == low):
        bound = f"more than {low}" if low_open else f"at least {low}"
        raise UsageError(f"{flag} must be {bound} and at most {high}, not {value}")


def check(
    *,
    ctx: int | None = None,
    threads: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_tokens: int | None = None,
    gpu_layers: int | None = None,
    parallel: int | None = None,
) -> None:
    """Check the options given (None: not set). Raises UsageError for the first bad one."""
    _integer("--ctx", ctx, MIN_CTX, MAX_CTX)
    _integer("--threads", threads, 1, MAX_THREADS)
    _number("--temperature", temperature, 0.0, 1e6)
    _number("--top-p", top_p, 0.0, 1.0, low_open=True)
    _integer("--top-k", top_k, -1, 1 << 20)  # 0 or -1: off, as llama.cpp has it
    _integer("--max-tokens", max_tokens, 1, MAX_CTX)
    _integer("--gpu-layers", gpu_layers, -1, 1 << 16)
    _integer("--parallel", parallel, 1, MAX_PARALLEL)
