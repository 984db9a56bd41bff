"""llama-perplexity's method over a tokenized text, with or without a reference to compare with.

The text is cut into chunks of ``n_ctx`` tokens; each chunk is decoded on its own from an empty
cache in one batch, its first token replaced by BOS (when the model adds one), and only the second
half is scored: position j (from ``n_ctx // 2`` to ``n_ctx - 2``) predicts token j + 1, so every
scored token has at least half a context before it. Perplexity is exp of the mean negative
log-likelihood of the scored tokens, as ``llama-perplexity -c N --chunks M`` prints it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from localllm.errors import UsageError

from . import metrics


@dataclass(frozen=True)
class Progress:
    label: str
    done: int  # chunks done
    total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if not self.done:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)


@dataclass
class Chunks:
    """The chunks of a text: ``tokens`` is (n_chunks, n_ctx), BOS already put first."""

    tokens: np.ndarray
    n_ctx: int
    available: int = 0  # chunks the whole text has

    @property
    def first(self) -> int:
        return self.n_ctx // 2

    @property
    def n_chunks(self) -> int:
        return len(self.tokens)

    def targets(self, i: int) -> np.ndarray:
        return self.tokens[i, self.first + 1 :]

    @property
    def rows_per_chunk(self) -> int:
        return self.n_ctx - self.first - 1


def make_chunks(tokens: Sequence[int], n_ctx: int, n_chunks: int | None, bos: int | None) -> Chunks:
    """The first ``n_chunks`` (default: all) chunks of ``n_ctx`` tokens of ``tokens``."""
    if n_ctx < 8:
        raise UsageError("--ctx must be at least 8 tokens")
    available = len(tokens) // n_ctx
    if len(tokens) < 2 * n_ctx:
        raise UsageError(
            f"the text has {len(tokens)} tokens: at least 2 x ctx ({2 * n_ctx}) are needed",
            hint="use a longer --text or a smaller --ctx",
        )
    n = available if n_chunks is None else min(n_chunks, available)
    if n < 1:
        raise UsageError("--chunks must be at least 1")
    array = np.asarray(tokens[: n * n_ctx], dtype=np.int32).reshape(n, n_ctx).copy()
    if bos is not None:
        array[:, 0] = bos
    return Chunks(array, n_ctx, available)


@dataclass
class Run:
    """What one pass over the chunks measured (possibly cut short)."""

    chunks: Chunks
    done: int = 0
    nll: list[np.ndarray] = field(default_factory=list)  # per chunk, of the scored tokens
    reference: list[metrics.Reference] = field(default_factory=list)  # per chunk, when collected
    comparison: list[metrics.Comparison] = field(default_factory=list)  # per chunk, with a reference
    interrupted: bool = False
    elapsed_s: float = 0.0

    def summary(self) -> dict:
        out: dict = {
            "n_ctx": self.chunks.n_ctx,
            "chunks": self.done,
            "chunks_total": self.chunks.n_chunks,
            "tokens_scored": self.done * self.chunks.rows_per_chunk,
            "interrupted": self.interrupted,
            "elapsed_s": round(self.elapsed_s, 3),
        }
        if not self.done:
            out["perplexity"] = None
            return out
        nll = np.concatenate(self.nll)
        mean = float(nll.mean())
        out["perplexity"] = math.exp(mean)
        # llama-perplexity's uncertainty: the standard error of the mean NLL, carried through exp.
        out["perplexity_error"] = math.exp(mean) * float(nll.std(ddof=1)) / math.sqrt(len(nll)) if len(nll) > 1 else 0
        out["tokens_per_s"] = round(self.done * self.chunks.n_ctx / self.elapsed_s, 1) if self.elapsed_s else None
        if self.comparison:
            kld = np.concatenate([c.kld for c in self.comparison])
            same = np.concatenate([c.same_top for c in self.comparison])
            dp = np.concatenate([c.delta_p for c in self.comparison])
            out["kl_divergence"] = {
                "mean": float(kld.mean()),
                "p99": float(np.percentile(kld, 99)),
                "median": float(np.median(kld)),
                "max": float(kld.max()),
            }
            out["same_top"] = float(same.mean())
            out["delta_p"] = float(dp.mean())
            out["delta_p_rms"] = float(np.sqrt((dp * dp).mean()))
        return out


def run(
    logits: Callable[[Sequence[int], int], np.ndarray],
    chunks: Chunks,
    *,
    label: str = "",
    reference: metrics.Reference | None = None,
    collect: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> Run:
    """Score every chunk; ``logits(tokens, first)`` decodes one (a :class:`~localllm.runtime.Scorer`).

    ``reference``: compare with it (its rows in chunk order); ``collect``: keep this model's own
    top logits, to be a reference later. Ctrl-C ends the pass after the chunks done so far.
    """
    result = Run(chunks)
    rows = chunks.rows_per_chunk
    started = time.perf_counter()
    try:
        if progress is not None:
            progress(Progress(label, 0, chunks.n_chunks, 0.0))
        for i in range(chunks.n_chunks):
            out = logits(chunks.tokens[i].tolist(), chunks.first)[:-1]  # the last position predicts nothing here
            targets = chunks.targets(i)
            nll = -metrics.target_logp(out, targets)
            ref = metrics.reference(out, targets) if collect else None
            cmp = metrics.compare(out, targets, reference.rows(i * rows, (i + 1) * rows)) if reference else None
            result.nll.append(nll)
            if ref is not None:
                result.reference.append(ref)
            if cmp is not None:
                result.comparison.append(cmp)
            result.done += 1
            result.elapsed_s = time.perf_counter() - started
            if progress is not None:
                progress(Progress(label, result.done, chunks.n_chunks, result.elapsed_s))
    except KeyboardInterrupt:
        result.interrupted = True
        n = result.done  # a chunk cut short mid-way is dropped whole
        del result.nll[n:], result.reference[n:], result.comparison[n:]
    result.elapsed_s = time.perf_counter() - started
    return result
