"""The math of one chunk's logits, in numpy (no Python loop over rows or the vocabulary).

A reference is kept as its top ``k`` log-probabilities per position plus the log of the mass of
all the other tokens, so KL divergence is computed over k + 1 outcomes (the rest lumped together):
by the log-sum inequality a lower bound of the full KLD, exact when the two models agree. Against
llama-perplexity's full-vocabulary KLD it read 6% lower on a lossy Q4_0 copy of SmolLM2 (KLD 0.68;
docs/benchmarks.md); perplexity, same top and Δp do not depend on k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_K = 64
_TINY = 1e-30


def log_normalizer(logits: np.ndarray) -> np.ndarray:
    """log Σ exp(logits) per row, computed stably (exponentials in float32, sums in float64)."""
    peak = logits.max(axis=1)
    return peak.astype(np.float64) + np.log(np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64))


def _rest(logp: np.ndarray) -> np.ndarray:
    """log(1 - Σ exp(logp)) per row: the log-mass of the tokens not in ``logp``."""
    return np.log(np.maximum(1.0 - np.exp(logp).sum(axis=1), _TINY))


@dataclass
class Reference:
    """A reference model's distributions at the scored positions (rows)."""

    ids: np.ndarray  # (rows, k) int32: its top-k tokens, most likely first
    logp: np.ndarray  # (rows, k) float32: their log-probabilities
    rest: np.ndarray  # (rows,) float32: log of the other tokens' mass
    top: np.ndarray  # (rows,) int32: its most likely token (argmax; first of ties)
    target_logp: np.ndarray  # (rows,) float32: log-probability of the text's next token

    @staticmethod
    def concat(parts: list[Reference]) -> Reference:
        return Reference(*(np.concatenate([getattr(p, f) for p in parts]) for f in Reference.__dataclass_fields__))

    def rows(self, start: int, stop: int) -> Reference:
        return Reference(*(getattr(self, f)[start:stop] for f in Reference.__dataclass_fields__))


def target_logp(logits: np.ndarray, targets: np.ndarray, norm: np.ndarray | None = None) -> np.ndarray:
    """log p(target) per row."""
    norm = log_normalizer(logits) if norm is None else norm
    return logits[np.arange(len(targets)), targets].astype(np.float64) - norm


def reference(logits: np.ndarray, targets: np.ndarray, k: int = TOP_K) -> Reference:
    """What is kept of a reference model's logits at each row."""
    norm = log_normalizer(logits)
    k = min(k, logits.shape[1])
    ids = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    rows = np.arange(len(logits))[:, None]
    logp = (logits[rows, ids].astype(np.float64) - norm[:, None]).astype(np.float32)
    order = np.argsort(-logp, axis=1, kind="stable")
    ids, logp = np.take_along_axis(ids, order, 1), np.take_along_axis(logp, order, 1)
    return Reference(
        ids=ids.astype(np.int32),
        logp=logp,
        rest=_rest(logp.astype(np.float64)).astype(np.float32),
        top=logits.argmax(axis=1).astype(np.int32),
        target_logp=target_logp(logits, targets, norm).astype(np.float32),
    )


@dataclass
class Comparison:
    kld: np.ndarray  # (rows,) KL(reference || model)
    same_top: np.ndarray  # (rows,) bool
    delta_p: np.ndarray  # (rows,) p_model(target) - p_reference(target)


def compare(logits: np.ndarray, targets: np.ndarray, ref: Reference) -> Comparison:
    """The model's distributions (``logits``) against the reference's at the same rows."""
    # The same arithmetic as reference(): a model compared with itself gives exactly 0.
    norm = log_normalizer(logits)
    mine_top = logits.argmax(axis=1).astype(np.int32)
    mine_target = target_logp(logits, targets, norm).astype(np.float32)
    rows = np.arange(len(logits))[:, None]
    q = (logits[rows, ref.ids].astype(np.float64) - norm[:, None]).astype(np.float32).astype(np.float64)
    q_rest = _rest(q).astype(np.float32).astype(np.float64)  # rounded as the reference's was
    p = ref.logp.astype(np.float64)
    p_rest = ref.rest.astype(np.float64)
    kld = (np.exp(p) * (p - q)).sum(axis=1) + np.exp(p_rest) * (p_rest - q_rest)
    return Comparison(
        kld=np.maximum(kld, 0.0),
        same_top=mine_top == ref.top,
        delta_p=np.exp(mine_target.astype(np.float64)) - np.exp(ref.target_logp.astype(np.float64)),
    )
