"""``localllm run``: answer one prompt, streaming the reply to stdout."""

from __future__ import annotations

import argparse
import json
import sys

from . import EXIT_INTERRUPTED, print_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prompt", nargs="*", help="the prompt; text piped on stdin is added after it"
    )
    parser.add_argument(
        "-m", "--model",
        help="catalog name[:QUANT], owner/repo[:QUANT], owner/repo/file.gguf or a local .gguf "
        "(default: the last model used, or the starter model)",
    )
    parser.add_argument("-s", "--system", help="system prompt")
    parser.add_argument("-t", "--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    parser.add_argument("--top-k", type=int, default=40, help="top-k sampling, 0 = off (default 40)")
    parser.add_argument("-n", "--max-tokens", type=int, help="stop after this many tokens")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable output")
    parser.add_argument("-c", "--ctx", type=int, help="context size in tokens (default: planned for this machine)")
    parser.add_argument("--gpu-layers", type=int, help="layers to offload to the GPU, -1 = all (default: planned)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--ignore-eos", action="store_true", help="generate past the end of the reply (benchmarking)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the reply and its stats as one JSON object")
    out.add_argument("--stats", action="store_true", help="print token counts and speed to stderr")


def _read_prompt(args: argparse.Namespace) -> str:
    from localllm.errors import UsageError

    parts = [" ".join(args.prompt).strip()]
    if not sys.stdin.isatty():
        try:
            parts.append(sys.stdin.read().strip())
        except UnicodeDecodeError as exc:
            raise UsageError(f"stdin is not UTF-8 text: {exc.reason}") from exc
    prompt = "\n\n".join(p for p in parts if p)
    if not prompt:
        raise UsageError(
            "no prompt given", hint='pass it as an argument or on stdin: localllm run "Why is the sky blue?"'
        )
    return prompt


def _validate(args: argparse.Namespace) -> None:
    from localllm.errors import UsageError

    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    if args.ctx is not None and args.ctx < 16:
        raise UsageError("--ctx must be at least 16 tokens")
    if not 0 < args.top_p <= 1:
        raise UsageError("--top-p must be in (0, 1]")
    if args.temperature < 0:
        raise UsageError("--temperature must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    prompt = _read_prompt(args)

    from localllm.models import store
    from localllm.models.resolve import resolve

    resolved = resolve(args.model, notice=lambda text: print(text, file=sys.stderr, flush=True))

    from localllm import runtime as engine

    engine.set_verbose(args.verbose)
    n_ctx, n_gpu_layers = args.ctx, args.gpu_layers
    if n_ctx is None or n_gpu_layers is None:
        n_ctx, n_gpu_layers = _planned(resolved.path, n_ctx, n_gpu_layers)
    options = engine.LoadOptions(n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=args.threads)
    sampling = engine.SamplingOptions(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        max_tokens=args.max_tokens,
        ignore_eos=args.ignore_eos,
    )
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})

    with engine.Model(resolved.path, options) as model:
        if resolved.installed is not None:
            store.touch(resolved.installed)
        generation = model.chat(messages, sampling)
        interrupted = False
        try:
            for piece in generation:
                if not args.json:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        except KeyboardInterrupt:
            interrupted = True
            generation.close()
        stats = generation.stats
        if args.json:
            result = {
                "model": resolved.label,
                "path": str(resolved.path),
                "reply": generation.text,
                "finish_reason": stats.finish_reason,
                "stats": {"load_s": round(model.load_report.load_s, 4), **stats.as_dict()},
            }
            sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        elif generation.text and not generation.text.endswith("\n"):
            sys.stdout.write("\n")
        sys.stdout.flush()
        if args.stats:
            print(_stats_line(resolved.label, model.load_report.load_s, stats), file=sys.stderr)
    if interrupted:
        print_error("interrupted; the reply above is partial")
        return EXIT_INTERRUPTED
    return 0


def _planned(path, n_ctx: int | None, n_gpu_layers: int | None) -> tuple[int | None, int]:
    """Context and GPU layers from the planner for what the user did not set."""
    from localllm.fit import hardware
    from localllm.fit.plan import load_settings
    from localllm.gguf import cache as headercache

    return load_settings(headercache.read_header(path), hardware.detect(), n_ctx, n_gpu_layers, label=path.name)


def _stats_line(label: str, load_s: float, stats) -> str:
    return (
        f"{label}: loaded in {load_s:.2f} s, prompt {stats.prompt_tokens} tokens at {stats.prompt_tokens_per_s:.1f} tok/s, "
        f"{stats.generated_tokens} generated at {stats.tokens_per_s:.1f} tok/s, "
        f"first token {stats.ttft_s * 1000:.0f} ms, finish: {stats.finish_reason}"
    )
