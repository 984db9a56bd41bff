"""Scoring text: one full-batch decode of a token sequence, its logits read as a numpy array.

What ``localllm eval`` measures (perplexity, KL divergence against a reference, multiple-choice
log-likelihoods) needs the logits of many positions at once. A :class:`Scorer` holds one context
whose batch is the whole sequence (``n_batch = n_ctx``, as llama-perplexity decodes a chunk) and
hands back llama.cpp's logits as a ``(rows, n_vocab)`` float32 view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from localllm.errors import GenerationError

from .llama import LlamaBatch, fill_batch, output_logits
from .model import Model


class Scorer:
    """Decodes sequences of up to ``n_ctx`` tokens, each from an empty cache, in one batch."""

    def __init__(self, model: Model, n_ctx: int, *, n_threads: int | None = None, n_ubatch: int = 512) -> None:
        self.model = model
        self.n_vocab = model.llama.n_vocab()
        self.ctx = model.new_context(
            n_ctx=n_ctx,
            n_seq_max=1,
            n_batch=n_ctx,
            n_ubatch=min(n_ubatch, n_ctx),
            n_threads=n_threads,
            kv_unified=False,
            n_outputs_max=n_ctx,
            what="create a scoring context for",
        )
        self.n_ctx = self.ctx.n_ctx
        try:
            self.batch = LlamaBatch(self.n_ctx, 1)
        except BaseException:
            self.ctx.close()
            raise

    def logits(self, tokens: Sequence[int], first_output: int) -> np.ndarray:
        """The logits at positions ``first_output`` .. ``len(tokens) - 1`` of ``tokens`` decoded
        from position 0: a view valid until the next call."""
        if not 0 <= first_output < len(tokens) <= self.n_ctx:
            raise GenerationError(f"cannot score {len(tokens)} tokens from {first_output} in a context of {self.n_ctx}")
        self.ctx.memory_clear(True)
        fill_batch(self.batch, tokens, first_output)
        rc = self.ctx.decode(self.batch)
        if rc != 0:
            raise GenerationError(f"llama_decode failed (code {rc})")
        self.ctx.synchronize()
        return output_logits(self.ctx, len(tokens) - first_output, self.n_vocab)

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
