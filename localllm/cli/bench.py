"""``localllm bench``: prompt and generation speed as llama-bench measures it, and batched throughput."""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="model reference or .gguf file (default: the last model used)")
    parser.add_argument("-r", "--reps", type=int, default=5, help="repetitions of pp512 and tg128 (default 5)")
    parser.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens of the pp test (default 512)")
    parser.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens of the tg test (default 128)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--parallel", default="1,2,4,8",
                        help="sequence counts for the batched test, comma-separated (default 1,2,4,8)")
    parser.add_argument("--gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1 = all)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")


def _parallel_list(text: str) -> list[int]:
    from localllm.errors import UsageError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--parallel takes comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError("--parallel values must be at least 1")
    return values


def run(args: argparse.Namespace) -> int:
    from localllm.errors import UsageError

    if args.n_prompt < 1 or args.n_gen < 1:
        raise UsageError("--n-prompt and --n-gen must be at least 1")
    if args.reps < 1:
        raise UsageError("--reps must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    parallel = _parallel_list(args.parallel)

    from localllm.models.resolve import resolve

    resolved = resolve(args.model, notice=lambda text: print(text, file=sys.stderr, flush=True))
    from localllm import runtime as engine

    engine.set_verbose(args.verbose)
    options = engine.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_gpu_layers=args.gpu_layers,
                                 n_threads=args.threads)
    rows = []
    with engine.Model(resolved.path, options) as model:
        threads = model.n_threads
        if not args.json:
            print(f"model: {resolved.label}, {model.header.n_params / 1e6:.0f}M params, "
                  f"{model.header.file_size / 2**20:.0f} MiB, threads: {threads}", flush=True)
            print(f"{'test':<22} {'tokens/s':>18}", flush=True)

        def emit(row: dict) -> None:
            rows.append(row)
            if not args.json:
                sd = f" ± {row['sd']:.2f}" if "sd" in row else ""
                print(f"{row['test']:<22} {row['tokens_per_s']:>10.2f}{sd}", flush=True)

        pp, _ = engine.bench_pp_tg(model, n_prompt=args.n_prompt, n_gen=0, reps=args.reps, n_threads=threads)
        emit(_stat(f"pp{args.n_prompt}", pp))
        _, tg = engine.bench_pp_tg(model, n_prompt=0, n_gen=args.n_gen, reps=args.reps, n_threads=threads)
        emit(_stat(f"tg{args.n_gen}", tg))
        # llama-batched-bench's shape: N prompts of n_gen tokens, then n_gen tokens for each.
        for n in parallel:
            result = engine.bench_batched(model, n, n_prompt=args.n_gen, n_gen=args.n_gen, n_threads=threads)
            emit({"test": f"batched pp{args.n_gen}+tg{args.n_gen} N={n}", "n_parallel": n,
                  "tokens_per_s": round(result.generation_tokens_per_s, 2),
                  "prompt_tokens_per_s": round(result.n_parallel * result.n_prompt / result.prompt_s, 2),
                  "total_tokens_per_s": round(result.tokens_per_s, 2)})
    if args.json:
        out = {"model": resolved.label, "path": str(resolved.path), "threads": threads,
               "llama_cpp": engine.llama_cpp_version(), "results": rows}
        sys.stdout.write(json.dumps(out) + "\n")
    return 0


def _stat(test: str, rates: list[float]) -> dict:
    return {"test": test, "tokens_per_s": round(statistics.mean(rates), 2),
            "sd": round(statistics.stdev(rates), 2) if len(rates) > 1 else 0.0,
            "samples": [round(r, 2) for r in rates]}
