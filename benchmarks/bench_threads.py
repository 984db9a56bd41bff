"""Threads that fit the machine: the default thread policy against fixed counts on a busy machine (issue 28).

    .venv/bin/python benchmarks/bench_threads.py [--model FILE] [--n-gen N] [--reps N] [--max-s S]

For 0, 1 and 2 busy-loop processes beside it (``while True: pass``, started with multiprocessing),
a greedy generation of ``--n-gen`` tokens (end of text ignored) after a short prompt, with
``--threads 1``, ``--threads 2`` and the default policy (free cores at load, the tuner while it
decodes); the model is loaded afresh for each run, so the policy probes the machine as ``run``
does. The modes run interleaved ``--reps`` times; a run stops ``--max-s`` seconds after its first
token (a count that collapses would otherwise take minutes). Prints the median generation tokens/s of each, the
policy's share of the best fixed count, the counts the policy chose (at the reply's start -> at its
end), and the machine's load before the busy loops started (other programs: this benchmark cannot
stop them). A last column is a model loaded before the loops started, its replies interleaved with
the others: the probe at load saw a free machine, so only the tuner can fit it to the loops.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def spin() -> None:
    while True:
        pass


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def load(model_path: Path, threads: int | None):
    from localllm import runtime

    return runtime.Model(model_path, runtime.LoadOptions(n_ctx=1024, n_threads=threads))


def reply(model, n_gen: int, max_s: float) -> tuple[float, str]:
    """Generation tokens/s of one greedy reply, and the thread counts it used (at its start -> end)."""
    from localllm import runtime

    sampling = runtime.SamplingOptions(temperature=0, max_tokens=n_gen, ignore_eos=True)
    chosen = model.n_threads
    generation = model.chat(PROMPT, sampling)
    started = None
    for _ in generation:  # (the clock starts at the first token: a slow prompt is not cut short)
        started = started or time.perf_counter()
        if time.perf_counter() - started > max_s:
            break
    generation.close()
    stats = generation.stats
    return stats.tokens_per_s, f"{chosen}->{stats.threads}"


def one_run(model_path: Path, threads: int | None, n_gen: int, max_s: float) -> tuple[float, str]:
    """:func:`reply` of a model loaded for it (the policy probes the machine as it is)."""
    with load(model_path, threads) as model:
        return reply(model, n_gen, max_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n-gen", type=int, default=96)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-s", type=float, default=4.0, help="stop a run this many seconds after its first token")
    args = parser.parse_args()

    from localllm.runtime import llama
    from localllm.runtime.threads import ThreadPolicy, busy_cores, probe

    llama.set_verbose(False)
    model_path = args.model or default_model()
    cores = ThreadPolicy().cores
    modes: dict[str, int | None] = {"threads 1": 1, "threads 2": 2, "policy": None}
    spawn = multiprocessing.get_context("spawn")
    rows = []
    began = time.perf_counter()
    for busy in (0, 1, 2):
        others = probe(busy_cores, samples=20, interval_s=0.01)
        with open("/proc/loadavg", encoding="ascii") as f:
            loadavg = f.read().split()[0]
        early = load(model_path, None)  # loaded before the loops start: only its tuner sees them
        loops = [spawn.Process(target=spin, daemon=True) for _ in range(busy)]
        for p in loops:
            p.start()
        time.sleep(1.0)  # the loops are spinning
        rates: dict[str, list[float]] = {mode: [] for mode in (*modes, "early")}
        counts: list[str] = []
        early_counts: list[str] = []
        try:
            for _ in range(args.reps):
                for mode, threads in modes.items():
                    rate, used = one_run(model_path, threads, args.n_gen, args.max_s)
                    rates[mode].append(rate)
                    if threads is None:
                        counts.append(used)
                rate, used = reply(early, args.n_gen, args.max_s)
                rates["early"].append(rate)
                early_counts.append(used)
        finally:
            early.close()
            for p in loops:
                p.terminate()
                p.join()
        median = {mode: statistics.median(r) for mode, r in rates.items()}
        best = max(median["threads 1"], median["threads 2"])
        rows.append((busy, others, loadavg, median, best, counts, early_counts))
        time.sleep(0.5)

    print(f"model: {model_path.name}, {cores} physical cores, n_gen {args.n_gen}, reps {args.reps}")
    print("| busy loops | other load before (runnable, 1-min avg) | threads 1 tok/s | threads 2 tok/s "
          "| policy tok/s (share of best) | counts | policy loaded before the loops (share) | counts |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for busy, others, loadavg, median, best, counts, early_counts in rows:
        share = {mode: median[mode] / best if best else 0.0 for mode in ("policy", "early")}
        print(
            f"| {busy} | {others:.1f}, {loadavg} | {median['threads 1']:.1f} | {median['threads 2']:.1f} "
            f"| {median['policy']:.1f} ({share['policy']:.0%}) | {', '.join(counts)} "
            f"| {median['early']:.1f} ({share['early']:.0%}) | {', '.join(early_counts)} |"
        )
    print(f"total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
