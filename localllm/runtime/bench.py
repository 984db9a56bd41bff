"""Benchmarks: the timing loops of llama-bench and llama-batched-bench, over this runtime."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from localllm.errors import GenerationError

from .llama import LlamaBatch, LlamaContext
from .model import Model


def _random_tokens(n_vocab: int, n: int, rng: random.Random) -> list[int]:
    return [rng.randrange(n_vocab) for _ in range(n)]


def _decode_tokens(ctx: LlamaContext, tokens: list[int], n_batch: int) -> None:
    for start in range(0, len(tokens), n_batch):
        rc = ctx.decode_tokens(tokens[start : start + n_batch])
        if rc != 0:
            raise GenerationError(f"llama_decode failed (code {rc})")
    ctx.synchronize()


def bench_pp_tg(
    model: Model,
    *,
    n_prompt: int = 512,
    n_gen: int = 128,
    reps: int = 5,
    n_threads: int | None = None,
    seed: int = 1,
    n_batch: int = 2048,
    n_ubatch: int = 512,
) -> tuple[list[float], list[float]]:
    """Tokens/s of each repetition of llama-bench's ppN and tgN tests.

    As llama-bench does: one warm-up of each test, then per repetition the cache is cleared; pp is
    ``n_prompt`` random tokens decoded as one batch, tg is ``n_gen`` single-token decodes.
    """
    rng = random.Random(seed)
    # llama-bench's defaults: n_batch 2048, n_ubatch 512, n_ctx = n_prompt + n_gen.
    ctx = model.new_context(
        n_ctx=n_prompt + n_gen, n_seq_max=1, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=n_threads, kv_unified=False
    )
    n_batch = ctx.n_batch
    n_vocab, add_bos, bos = model.llama.n_vocab(), model.llama.add_bos(), model.llama.bos()

    def pp() -> float:
        tokens = _random_tokens(n_vocab, n_prompt, rng)
        if add_bos:
            tokens[0] = bos
        ctx.memory_clear(False)
        started = time.perf_counter()
        _decode_tokens(ctx, tokens, n_batch)
        return time.perf_counter() - started

    def tg(n: int) -> float:
        ctx.memory_clear(False)
        token = bos if add_bos else rng.randrange(n_vocab)
        decode_token, synchronize, randrange = ctx.decode_token, ctx.synchronize, rng.randrange
        started = time.perf_counter()
        for _ in range(n):
            rc = decode_token(token)
            if rc != 0:
                raise GenerationError(f"llama_decode failed (code {rc})")
            synchronize()
            token = randrange(n_vocab)
        return time.perf_counter() - started

    with ctx:
        pp_rates, tg_rates = [], []
        if n_prompt:
            pp()  # warm-up
            pp_rates = [n_prompt / pp() for _ in range(reps)]
        if n_gen:
            tg(1)  # warm-up
            tg_rates = [n_gen / tg(n_gen) for _ in range(reps)]
        return pp_rates, tg_rates


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


def _decode_entries(
    ctx: LlamaContext, batch: LlamaBatch, entries: list[tuple[int, int, int, bool]], n_batch: int
) -> None:
    """Decode (token, position, sequence, wants logits) entries, ``n_batch`` at a time."""
    tok, pos, nseq, seqs, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
    for start in range(0, len(entries), n_batch):
        chunk = entries[start : start + n_batch]
        for i, (token, position, seq, wants) in enumerate(chunk):
            tok[i], pos[i], nseq[i], logits[i] = token, position, 1, wants
            seqs[i][0] = seq
        batch.n_tokens = len(chunk)
        rc = ctx.decode(batch)
        if rc != 0:
            raise GenerationError(f"llama_decode failed (code {rc})")
    ctx.synchronize()


def bench_batched(
    model: Model, n_parallel: int, *, n_prompt: int = 128, n_gen: int = 128, n_threads: int | None = None, seed: int = 1
) -> BatchedBench:
    """llama-batched-bench's test: ``n_parallel`` prompts of ``n_prompt`` tokens decoded, then
    ``n_gen`` steps of one token per sequence (no sampling), after one warm-up decode."""
    rng = random.Random(seed)
    n_batch = 512
    n_vocab = model.llama.n_vocab()
    ctx = model.new_context(
        n_ctx=n_parallel * (n_prompt + n_gen),
        n_seq_max=n_parallel,
        n_batch=n_batch,
        n_ubatch=512,
        n_threads=n_threads,
        kv_unified=False,
    )
    # llama.cpp clamps the batch to the context: small tests (-p/-n of a few tokens) get a smaller one.
    n_batch = ctx.n_batch
    with ctx, LlamaBatch(max(n_batch, n_parallel), 1) as batch:
        n_warm = min(16, n_prompt + n_gen)  # one sequence's context holds n_prompt + n_gen tokens
        warm_up = [(t, i, 0, i == n_warm - 1) for i, t in enumerate(_random_tokens(n_vocab, n_warm, rng))]
        _decode_entries(ctx, batch, warm_up, n_batch)
        ctx.memory_clear(False)
        # As llama-batched-bench: logits for each sequence's last prompt token, then for every
        # generated token (a real batch samples every sequence at every step).
        prompt = [
            (t, i % n_prompt, i // n_prompt, i % n_prompt == n_prompt - 1)
            for i, t in enumerate(_random_tokens(n_vocab, n_parallel * n_prompt, rng))
        ]
        started = time.perf_counter()
        _decode_entries(ctx, batch, prompt, n_batch)
        prompt_s = time.perf_counter() - started
        started = time.perf_counter()
        for step in range(n_gen):
            tokens = _random_tokens(n_vocab, n_parallel, rng)
            _decode_entries(ctx, batch, [(t, n_prompt + step, s, True) for s, t in enumerate(tokens)], n_batch)
        generation_s = time.perf_counter() - started
        return BatchedBench(n_parallel, n_prompt, n_gen, prompt_s, generation_s)
