"""Evaluation: what a model (a quantization) costs in quality, measured on this machine.

- :mod:`.metrics`: the numpy math over a chunk's logits (log-probabilities, top-k of a
  reference, KL divergence, top-token agreement, Δp).
- :mod:`.perplexity`: llama-perplexity's method over a text (chunks of ``n_ctx`` tokens, BOS
  first, the second half of each scored), with or without a reference.
- :mod:`.tasks`: multiple-choice accuracy by log-likelihood, as lm-evaluation-harness scores it.
- :mod:`.store`: the reference's saved top logits and each model file's results, in the data dir.
"""
