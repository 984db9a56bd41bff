"""``localllm bench``: prompt and generation speed as llama-bench measures it, and batched throughput."""

from __future__ import annotations

import argparse
import json
import sys

from localllm.format import format_bytes, terminal_safe

from . import add_rpc_option, lora, say, use_rpc_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="model reference or .gguf file (default: the last model used)")
    parser.add_argument("-r", "--reps", type=int, default=5, help="repetitions of pp512 and tg128 (default 5)")
    parser.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens of the pp test (default 512)")
    parser.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens of the tg test (default 128)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the physical cores free at load)")
    parser.add_argument(
        "--parallel", default="1,2,4,8", help="sequence counts for the batched test, comma-separated (default 1,2,4,8)"
    )
    parser.add_argument(
        "--gpu-layers",
        type=int,
        help="layers to offload to the GPU (-1 = all, 0 = CPU only; default: planned, as for run)",
    )
    parser.add_argument(
        "--draft",
        metavar="MODEL|ngram",
        help="instead of the speed tests: greedy replies with and without this draft (speculative decoding), "
        "one repeating its prompt and one not; the speed-up is kept for `localllm fit` to propose the draft",
    )
    lora.add_argument(parser)
    add_rpc_option(parser)
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
    from localllm import app
    from localllm.errors import UsageError

    if args.n_prompt < 1 or args.n_gen < 1:
        raise UsageError("--n-prompt and --n-gen must be at least 1")
    if args.reps < 1:
        raise UsageError("--reps must be at least 1")
    app.options.check(threads=args.threads, gpu_layers=args.gpu_layers)
    parallel = _parallel_list(args.parallel)
    use_rpc_workers(args.rpc)
    app.show_llama_log(args.verbose)
    if args.draft is not None:
        return _bench_draft(args)

    def started(info: dict) -> None:
        if not args.json:
            print(
                f"model: {terminal_safe(info['model'])}, {info['params'] / 1e6:.0f}M params, {format_bytes(info['file_size'])}, "
                f"threads: {info['threads']}, gpu layers: {info['gpu_layers']}"
                + "".join(f", lora {terminal_safe(a['name'])}:{a['scale']:g}" for a in info["adapters"]),
                flush=True,
            )
            print(f"{'test':<22} {'tokens/s':>18}", flush=True)

    def emit(row: dict) -> None:
        if not args.json:
            sd = f" ± {row['sd']:.2f}" if "sd" in row else ""
            print(f"{row['test']:<22} {row['tokens_per_s']:>10.2f}{sd}", flush=True)

    result = app.bench(
        args.model,
        reps=args.reps,
        n_prompt=args.n_prompt,
        n_gen=args.n_gen,
        parallel=parallel,
        n_threads=args.threads,
        n_gpu_layers=args.gpu_layers,
        adapters=app.lora_specs(args.lora),
        notice=say,
        started=started,
        emit=emit,
    )
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _bench_draft(args: argparse.Namespace) -> int:
    """``bench --draft``: tokens/s plain and drafted per task, the speed-up and the acceptance."""
    from localllm import app
    from localllm.errors import UsageError

    if args.lora:
        raise UsageError("bench --draft measures the model alone: leave out --lora")
    if not args.json:
        print(f"{'test':<40} {'tokens/s':>10} {'speed-up':>9} {'accepted':>9}  same reply", flush=True)

    def emit(row: dict) -> None:
        if args.json:
            return
        extra = ""
        if row["mode"] == "draft":
            same = "yes" if row["same_reply"] else f"first {row['agreement']:.0%} (batch numerics)"
            extra = f" {row['speedup']:>8.2f}x {row['acceptance']:>9.0%}  {same}"
        print(terminal_safe(f"{row['test']:<40} {row['tokens_per_s']:>10.2f}{extra}"), flush=True)

    result = app.drafting.bench_draft(
        args.model, args.draft, reps=args.reps, n_gen=args.n_gen, n_threads=args.threads,
        n_gpu_layers=args.gpu_layers, notice=say, emit=emit,
    )  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        verdict = "helps" if app.drafting.helps(result["speedup"]) else "does not help"
        print(terminal_safe(f"the draft {verdict} here ({result['threads']} threads); `localllm fit` shows it"))
    return 0
