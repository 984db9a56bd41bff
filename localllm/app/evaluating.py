"""``localllm eval``: what a model file costs in quality, measured on this machine.

Perplexity on a text by llama-perplexity's method; with a reference, the KL divergence of the
model's next-token distributions from the reference's, how often their top token agrees, and Δp.
The reference's top logits are saved once per reference file, text and context, so comparing
several quantizations with one reference costs one reference pass. Every complete result is kept
per model file (by sha256) for ``fit`` and ``pull`` to show.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from localllm.batch import jobs
from localllm.errors import UsageError
from localllm.eval import perplexity, store, tasks
from localllm.eval.text import read_text
from localllm.gguf import cache as headercache
from localllm.models.resolve import ResolvedModel

from .loading import Notice, OpenedModel, find, open_for_bench

Progress = perplexity.Progress


def _sha(resolved: ResolvedModel) -> str:
    installed = resolved.installed
    if installed is not None and installed.sha256 and len(installed.sha256) == 64 and len(installed.files) <= 1:
        return installed.sha256.lower()
    return store.file_sha256(resolved.path)


def _describe(resolved: ResolvedModel, sha: str) -> dict[str, Any]:
    header = headercache.read_header(resolved.path)
    return {"model": resolved.label, "path": str(resolved.path.resolve()), "size": resolved.path.stat().st_size,
            "sha256": sha, "quant": header.file_type_name}  # fmt: skip


def _chunks(opened: OpenedModel, text: str, n_ctx: int, n_chunks: int | None) -> perplexity.Chunks:
    llama = opened.model.llama
    tokens = opened.model.tokenize(text, add_special=True, parse_special=False)
    return perplexity.make_chunks(tokens, n_ctx, n_chunks, llama.bos() if llama.add_bos() else None)


def _pass(
    opened: OpenedModel,
    chunks: perplexity.Chunks,
    label: str,
    n_threads: int | None,
    progress: Callable[[Progress], None] | None,
    **kwargs: Any,
) -> perplexity.Run:
    from localllm.runtime import Scorer

    with Scorer(opened.model, chunks.n_ctx, n_threads=n_threads) as scorer:
        return perplexity.run(scorer.logits, chunks, label=label, progress=progress, **kwargs)


def evaluate(
    reference: str | None,
    *,
    ref: str | None = None,
    text_file: str | Path | None = None,
    n_ctx: int = 512,
    n_chunks: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    notice: Notice | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Perplexity of the model ``reference`` names on ``text_file`` (default: the shipped text),
    and with ``ref`` its KL divergence from that model. A pass cut short by Ctrl-C returns what it
    measured with ``"interrupted": True`` (and nothing is stored)."""
    text = read_text(text_file)
    text_info = {"name": text.name, "sha256": text.sha256}
    base = None
    ref_info = None
    if ref is not None:
        ref_resolved = find(ref, notice)
        ref_sha = _sha(ref_resolved)
        ref_info = {"model": ref_resolved.label, "sha256": ref_sha}
        cache_path = store.reference_path(ref_sha, text.sha256, n_ctx)
        base = store.load_reference(cache_path)
        if base is not None and not base[2] and (n_chunks is None or len(base[1]) < n_chunks):
            base = None  # saved for fewer chunks than asked: measure again
        if base is None:
            with open_for_bench(
                ref, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, notice=notice
            ) as opened:
                chunks = _chunks(opened, text.text, n_ctx, n_chunks)
                done = _pass(opened, chunks, f"reference {ref_resolved.label}", n_threads, progress, collect=True)
            if done.interrupted:
                return {"reference": {**ref_info, **done.summary()}, "interrupted": True, "stage": "reference"}
            from localllm.eval.metrics import Reference

            complete = chunks.n_chunks == chunks.available
            base = (Reference.concat(done.reference), chunks.tokens, complete)
            store.save_reference(cache_path, base[0], chunks.tokens, complete)
            ref_info["perplexity"] = done.summary()["perplexity"]
        else:
            ref_info["saved"] = str(cache_path)

    with open_for_bench(
        reference, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, notice=notice
    ) as opened:
        sha = _sha(opened.resolved)
        info = _describe(opened.resolved, sha)
        chunks = _chunks(opened, text.text, n_ctx, n_chunks)
        kwargs: dict[str, Any] = {}
        if base is not None:
            ref_rows, ref_tokens, _ = base
            n = min(len(ref_tokens), chunks.n_chunks)
            if not np.array_equal(ref_tokens[:n], chunks.tokens[:n]):
                raise UsageError(
                    f"{opened.label} and {ref} tokenize the text differently",
                    hint="KL divergence compares models of the same vocabulary (quantizations of one model)",
                )
            chunks = perplexity.Chunks(chunks.tokens[:n], n_ctx)
            kwargs["reference"] = ref_rows
        done = _pass(opened, chunks, opened.label, n_threads, progress, **kwargs)
    result = {**info, "text": {**text_info, "tokens": int(chunks.tokens.size)}, **done.summary()}
    if ref_info is not None:
        result["reference"] = ref_info
    if not done.interrupted and done.done:
        store.record(sha, {k: info[k] for k in ("path", "size", "quant", "model")}, result)
    return result


def evaluate_tasks(
    reference: str | None,
    data: bytes | str,
    writer: jobs.ResultWriter | jobs.StreamWriter,
    *,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    notice: Notice | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Score every line of task JSONL ``data`` not already in ``writer``'s output (resumable as
    ``batch`` is: lines whose id is there are skipped; a malformed line is an error record). The
    summary covers this run's records; ``interrupted`` when Ctrl-C cut it short."""
    import time

    from localllm.runtime import Scorer

    lines = jobs.read_lines(data)
    records: list[dict[str, Any]] = []
    skipped = 0
    interrupted = False
    with open_for_bench(
        reference, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, notice=notice
    ) as opened:
        model = opened.model

        def tokenize(s: str) -> list[int]:
            return model.tokenize(s, add_special=True, parse_special=False)

        started = time.perf_counter()
        with Scorer(model, n_ctx, n_threads=n_threads) as scorer:
            try:
                for done, (number, line) in enumerate(lines):
                    if progress is not None:
                        progress(Progress(opened.label, done, len(lines), time.perf_counter() - started))
                    try:
                        task = tasks.parse_task(line)
                        if _key(task.id) in writer.done_ids:
                            skipped += 1
                            continue
                        record = {**tasks.score(task, scorer.logits, tokenize, scorer.n_ctx), "line": number}
                    except tasks.TaskLineError as exc:
                        if number in writer.failed_lines:
                            skipped += 1
                            continue
                        record = {"id": exc.ident, "line": number, "error": str(exc)}
                    writer.write(record)
                    records.append(record)
                if progress is not None:
                    progress(Progress(opened.label, len(lines), len(lines), time.perf_counter() - started))
            except KeyboardInterrupt:
                interrupted = True
    return {"model": opened.label, **tasks.summarize(records), "skipped": skipped, "interrupted": interrupted}


def _key(ident: object) -> str:
    import json

    return json.dumps(ident)
