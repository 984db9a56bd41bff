"""LoRA adapters: load time and generation speed with and without an adapter (issue 23).

    .venv/bin/python benchmarks/bench_lora.py [--model FILE] [--threads N] [--reps N] [--rank 8]
                                              [--targets attn_q,attn_v,ffn_down] [--n-gen 128] [--batch 4 (0: none)]

For the base alone and for the base with a LoRA adapter written here with gguf's writer (random A and
B of --rank for --targets of every layer, tests/support/lora.py), each --reps times, alternating:

- load: wall time of runtime.Model(...) (weights mapped, adapter read, context made);
- tg: generated tokens per second of one greedy reply of --n-gen tokens (ignore_eos), as `run` does,
  and the process's CPU time per generated token, the short prompt included (steadier than wall
  time on a busy machine);
- batch: aggregate generated tokens per second of --batch greedy sequences in one BatchSession, all
  with the adapter, and half with it and half without (two llama_decode calls per step).

Default model: the SmolLM2-135M Q4_1 test model ($LOCALLLM_TEST_CACHE or .cache/test-models).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localllm import runtime  # noqa: E402
from tests.support.lora import write_lora  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def default_model() -> Path:
    cache = Path(os.environ.get("LOCALLLM_TEST_CACHE", ROOT / ".cache" / "test-models"))
    return cache / "SmolLM2-135M-Instruct.Q4_1.gguf"


def one_run(base: Path, specs: tuple, args) -> dict[str, float]:
    started = time.perf_counter()
    model = runtime.Model(base, runtime.LoadOptions(n_ctx=1024, n_threads=args.threads, adapters=specs))
    load_s = time.perf_counter() - started
    try:
        sampling = runtime.SamplingOptions(temperature=0, max_tokens=args.n_gen, ignore_eos=True)
        cpu = time.process_time()
        gen = model.chat(PROMPT, sampling)
        gen.read()
        tg = gen.stats.tokens_per_s
        # CPU time per generated token: less at the mercy of other processes than wall time
        # (with --threads 1; several threads spin while they wait for each other)
        tg_cpu_ms = (time.process_time() - cpu) * 1000 / max(gen.stats.generated_tokens, 1)
        tokens = model.chat_tokens(PROMPT)
        rates = {}
        names = [s.label for s in specs]
        mixes = {"batch": [None] * args.batch} if args.batch else {}  # --batch 0: load and tg only
        if names and args.batch:
            mixes["batch mixed"] = [None if i % 2 else [] for i in range(args.batch)]
        for label, sets in mixes.items():
            requests = [
                runtime.BatchRequest(key=i, tokens=tokens, sampling=sampling, adapters=a) for i, a in enumerate(sets)
            ]
            with runtime.BatchSession(model, args.batch, 1024, n_threads=args.threads) as session:
                t = time.perf_counter()
                done = list(session.run(requests))
                wall = time.perf_counter() - t
            rates[label] = sum(r.completion_tokens for r in done) / wall
            print(f"  {label}: {wall:.2f} s", file=sys.stderr, flush=True)
    finally:
        model.close()
    row = {"load_s": load_s, "tg": tg, "tg_cpu_ms": tg_cpu_ms, **rates}
    print(
        f"  {len(specs)} adapter(s): " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), file=sys.stderr, flush=True
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--threads", type=int, default=runtime.default_threads())
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="attn_q,attn_v,ffn_down")
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache" if (ROOT / ".cache").is_dir() else None) as tmp:
        adapter = write_lora(Path(tmp) / "bench-lora.gguf", args.model, rank=args.rank, targets=args.targets.split(","))
        cases = {
            "base": (),
            f"base + LoRA r{args.rank} ({adapter.stat().st_size / 2**20:.1f} MiB)": (runtime.AdapterSpec(adapter),),
        }
        results: dict[str, list[dict[str, float]]] = {k: [] for k in cases}
        one_run(args.model, (), args)  # warm the page cache
        for _ in range(args.reps):
            for label, specs in cases.items():
                results[label].append(one_run(args.model, specs, args))
    print(f"model {args.model.name}, threads {args.threads}, {args.reps} reps, tg{args.n_gen}, batch of {args.batch}")
    print(
        f"| case | load (ms) | tg{args.n_gen} tok/s | tg CPU ms/token | batch N={args.batch} tok/s "
        "| half with, half without |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> str:
            values = [r[key] for r in runs if key in r]
            return f"{statistics.median(values):.1f}" if values else "-"

        load = statistics.median(r["load_s"] for r in runs) * 1000
        print(f"| {label} | {load:.0f} | {med('tg')} | {med('tg_cpu_ms')} | {med('batch')} | {med('batch mixed')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
