"""Batch completion and benchmarks: a model opened for many sequences, driven to the end."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from localllm.batch import jobs, remote
from localllm.batch.remote import EndpointSpec
from localllm.runtime.options import AdapterSpec

from . import documents
from .loading import Notice, open_for_batch, open_for_bench

# label, lines, sequences at once, context of each, why that many at once ("" when the user said)
Started = Callable[[str, int, int, int, str], None]


def writer_for(output: str, stdout: TextIO) -> jobs.ResultWriter | jobs.StreamWriter:
    """Where results go: ``-`` is the given stream; a file is appended to and resumed from."""
    return jobs.StreamWriter(stdout) if output == "-" else jobs.ResultWriter(Path(output))


def complete_jsonl(
    reference: str | None,
    text: str | bytes,
    writer: jobs.ResultWriter | jobs.StreamWriter,
    *,
    n_ctx_seq: int | None = None,
    n_parallel: int | None = None,
    n_gpu_layers: int | None = None,
    n_threads: int | None = None,
    adapters: Sequence[AdapterSpec] = (),
    max_tokens: int | None = None,
    temperature: float = 0.8,
    seed: int = 0,
    notice: Notice | None = None,
    started: Started | None = None,
    progress: Callable[[jobs.BatchProgress], None] | None = None,
    cancel: threading.Event | None = None,
    draft: str | None = None,
) -> jobs.BatchProgress:
    """Complete every line of JSONL ``text`` not already in ``writer``'s output (see localllm.batch).
    ``draft``: "ngram" for speculative decoding with n-gram lookup."""
    lines = jobs.read_lines(text)
    defaults = jobs.BatchDefaults(max_tokens=max_tokens or jobs.DEFAULT_MAX_TOKENS, temperature=temperature, seed=seed)
    with (
        open_for_batch(
            reference,
            n_ctx_seq=n_ctx_seq,
            n_parallel=n_parallel,
            n_gpu_layers=n_gpu_layers,
            n_threads=n_threads,
            lines=len(lines),
            notice=notice,
            adapters=adapters,
            beside=_embedders_bytes(lines),  # the lines' collections load their embedding models beside it
        ) as job,
        documents.Retrievers() as retrievers,
    ):
        if started is not None:
            started(job.opened.label, len(lines), job.n_parallel, job.n_ctx_seq, job.parallel_reason)
        model = job.opened.model

        def ground(name: str, messages: list[dict[str, str]], reserve: int, n_ctx: int):
            grounded, kept = retrievers.get(name).ground(model, messages, reserve, n_ctx)
            return grounded, [source.record() for source in kept]

        return jobs.run_batch(
            job.opened.model,
            lines,
            writer,
            n_parallel=job.n_parallel,
            n_ctx_seq=job.n_ctx_seq,
            defaults=defaults,
            n_threads=n_threads,
            progress=progress,
            cancel=cancel,
            ground=ground,
            draft=draft,
            share_prefix=jobs.SHARE_PREFIX,
        )


def _embedders_bytes(lines: list[tuple[int, str]]) -> int:
    """The memory the embedding models of the collections the lines name take (loaded beside the
    batch's model); a collection that does not exist counts nothing (its lines fail on their own)."""
    from localllm.errors import LocalLLMError

    names: set[str] = set()
    for _, text in lines:
        if '"docs"' not in text:  # most batches name none: no line is parsed twice for them
            continue
        try:
            obj = jobs.load_line(text)
        except (jobs.LineError, ValueError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("docs"), str):
            names.add(obj["docs"])
    total = 0
    for name in names:
        try:
            total += documents.embedder_bytes(name)
        except LocalLLMError:
            continue
    return total


def endpoint_specs(urls: Sequence[str], file: str | None = None) -> list[EndpointSpec]:
    """The endpoints of ``--endpoint URL`` (each) and ``--endpoints FILE``, with their keys read:
    ``key_env=NAME``'s variable, else ``LOCALLLM_ENDPOINT_API_KEY`` (see localllm.config)."""
    from localllm import config
    from localllm.errors import UsageError
    from localllm.format import terminal_safe

    specs = [EndpointSpec(remote.check_url(url)) for url in urls]
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"no such endpoints file: {terminal_safe(file)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the endpoints file {terminal_safe(file)}: {exc}") from None
        specs += remote.parse_endpoints(text, terminal_safe(file))
    remote.check_distinct(specs)
    return [replace(spec, api_key=config.endpoint_api_key(spec.key_env)) for spec in specs]


def complete_on_endpoints(
    text: str | bytes,
    writer: jobs.ResultWriter | jobs.StreamWriter,
    endpoints: Sequence[EndpointSpec],
    *,
    model: str | None = None,
    n_parallel: int | None = None,
    max_tokens: int | None = None,
    temperature: float = 0.8,
    seed: int = 0,
    notice: Notice | None = None,
    progress: Callable[[jobs.BatchProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> jobs.BatchProgress:
    """Complete every line of JSONL ``text`` not already in ``writer``'s output on OpenAI-compatible
    servers (see localllm.batch.remote): the same job as :func:`complete_jsonl`, another executor."""
    defaults = jobs.BatchDefaults(max_tokens=max_tokens or jobs.DEFAULT_MAX_TOKENS, temperature=temperature, seed=seed)
    return remote.run_on_endpoints(
        jobs.read_lines(text),
        writer,
        endpoints,
        n_parallel=n_parallel,
        model=model,
        defaults=defaults,
        progress=progress,
        notice=notice,
        cancel=cancel,
    )


def _stat(test: str, rates: list[float]) -> dict[str, Any]:
    return {
        "test": test,
        "tokens_per_s": round(statistics.mean(rates), 2),
        "sd": round(statistics.stdev(rates), 2) if len(rates) > 1 else 0.0,
        "samples": [round(r, 2) for r in rates],
    }


def bench(
    reference: str | None,
    *,
    reps: int = 5,
    n_prompt: int = 512,
    n_gen: int = 128,
    parallel: list[int] | tuple[int, ...] = (1, 2, 4, 8),
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    adapters: Sequence[AdapterSpec] = (),
    notice: Notice | None = None,
    started: Callable[[dict[str, Any]], None] | None = None,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """llama-bench's ppN and tgN, then llama-batched-bench's test at each N; rows are passed to
    ``emit`` as they are measured and returned together."""
    from localllm import runtime

    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if emit is not None:
            emit(row)

    # The biggest context a test makes: pp+tg in one sequence, or N sequences of 2 x n_gen tokens.
    n_ctx = max(n_prompt + n_gen, max(parallel, default=1) * 2 * n_gen)
    with open_for_bench(
        reference, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads, notice=notice, adapters=adapters
    ) as opened:
        model = opened.model
        threads = model.n_threads
        info = {
            "model": opened.label,
            "path": str(opened.resolved.path),
            "threads": threads,
            "gpu_layers": opened.load_report.settings["n_gpu_layers"],
            "llama_cpp": runtime.llama_cpp_version(),
            "params": model.header.n_params,
            "file_size": model.header.file_size,
            "adapters": [{"name": name, "scale": scale} for name, scale in model.default_adapters],
        }
        if started is not None:
            started(info)
        pp, _ = runtime.bench_pp_tg(model, n_prompt=n_prompt, n_gen=0, reps=reps, n_threads=threads)
        add(_stat(f"pp{n_prompt}", pp))
        _, tg = runtime.bench_pp_tg(model, n_prompt=0, n_gen=n_gen, reps=reps, n_threads=threads)
        add(_stat(f"tg{n_gen}", tg))
        # llama-batched-bench's shape: N prompts of n_gen tokens, then n_gen tokens for each.
        for n in parallel:
            result = runtime.bench_batched(model, n, n_prompt=n_gen, n_gen=n_gen, n_threads=threads)
            add(
                {
                    "test": f"batched pp{n_gen}+tg{n_gen} N={n}",
                    "n_parallel": n,
                    "tokens_per_s": round(result.generation_tokens_per_s, 2),
                    "prompt_tokens_per_s": round(result.n_parallel * result.n_prompt / result.prompt_s, 2),
                    "total_tokens_per_s": round(result.tokens_per_s, 2),
                }
            )
    keys = ("model", "path", "threads", "gpu_layers", "llama_cpp", "adapters")
    return {**{k: info[k] for k in keys}, "results": rows}
