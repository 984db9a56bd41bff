"""``localllm eval``: perplexity, KL divergence against a reference, multiple-choice accuracy."""

from __future__ import annotations

import argparse
import json
import sys
import time

from localllm.format import format_clock, terminal_safe

from . import EXIT_INTERRUPTED, say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="model reference or .gguf file (default: the last model used)")
    parser.add_argument(
        "--ref", help="reference model (e.g. the Q8_0 or F16 of the same model): report KL divergence from it"
    )
    parser.add_argument("--text", help="UTF-8 text (or .gz) to measure on (default: the public-domain text shipped)")
    parser.add_argument("-c", "--ctx", type=int, default=None, help="tokens per chunk (default 512; 2048 for --tasks)")
    parser.add_argument("--chunks", type=int, help="score only the first N chunks (default: all)")
    parser.add_argument(
        "--tasks", help='JSONL of {"id", "context", "choices": [...], "answer": i}: multiple-choice accuracy'
    )
    parser.add_argument(
        "-o",
        "--output",
        default="-",
        help="with --tasks: JSONL file of per-line results, resumed if it exists (default: -)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: the physical cores free at load)")
    parser.add_argument("--gpu-layers", type=int, help="layers to offload to the GPU (-1 = all; default: planned)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


class _Bar:
    """A redrawn bar with an ETA on a terminal; elsewhere (a log, a pipe) a line when a pass starts
    and every ``interval`` seconds."""

    def __init__(self, enabled: bool, interval: float = 10.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.drawn = False
        self.interval = interval
        self._last = (None, 0.0)

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        if not self.tty:
            now = time.monotonic()
            label, last = self._last
            if label != p.label or now - last >= self.interval:
                self._last = (p.label, now)
                say(f"{p.label}: {p.done}/{p.total} done, ETA {format_clock(p.eta_s)}")
            return
        fraction = p.done / p.total if p.total else 1.0
        width = 24
        bar = "█" * int(width * fraction) + "░" * (width - int(width * fraction))
        sys.stderr.write(
            f"\r\x1b[2K{terminal_safe(p.label)[:40]} {bar} {p.done}/{p.total} "
            f"{format_clock(p.elapsed_s)} ETA {format_clock(p.eta_s)}"
        )
        sys.stderr.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False


def run(args: argparse.Namespace) -> int:
    from localllm import app
    from localllm.errors import UsageError

    app.options.check(ctx=args.ctx, threads=args.threads, gpu_layers=args.gpu_layers)
    if args.chunks is not None and args.chunks < 1:
        raise UsageError("--chunks must be at least 1")
    if args.tasks and (args.ref or args.text or args.chunks):
        raise UsageError("--tasks measures accuracy: --ref, --text and --chunks are for perplexity")
    app.show_llama_log(args.verbose)
    bar = _Bar(not args.quiet)
    started = time.perf_counter()
    try:
        if args.tasks:
            result = _tasks(app, args, bar)
        else:
            result = app.evaluate(
                args.model, ref=args.ref, text_file=args.text, n_ctx=args.ctx or 512, n_chunks=args.chunks,
                n_threads=args.threads, n_gpu_layers=args.gpu_layers, notice=say, progress=bar,
            )  # fmt: skip
    finally:
        bar.end()
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    elif args.tasks:
        _print_tasks(result)
    else:
        _print_perplexity(result, time.perf_counter() - started)
    if result.get("interrupted"):
        say("interrupted: the results above cover the part done")
        return EXIT_INTERRUPTED
    return 0


def _tasks(app, args: argparse.Namespace, bar: _Bar) -> dict:
    from localllm.errors import UsageError

    try:
        data = sys.stdin.buffer.read() if args.tasks == "-" else open(args.tasks, "rb").read()
    except OSError as exc:
        raise UsageError(f"cannot read {args.tasks}: {exc.strerror or exc}") from None
    writer = app.writer_for(args.output, sys.stdout)
    try:
        return app.evaluate_tasks(
            args.model, data, writer, n_ctx=args.ctx or 2048, n_threads=args.threads,
            n_gpu_layers=args.gpu_layers, notice=say, progress=bar,
        )  # fmt: skip
    finally:
        writer.close()


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _print_tasks(r: dict) -> None:
    print(
        terminal_safe(
            f"{r['model']}: {r['tasks']} tasks, acc {_pct(r['acc'])}, acc_norm {_pct(r['acc_norm'])}"
            f", {r['errors']} malformed, {r['skipped']} skipped (already in the output)"
        ),
        file=sys.stderr,
    )


def _print_perplexity(r: dict, wall_s: float) -> None:
    if r.get("stage") == "reference":
        ref = r["reference"]
        print(
            terminal_safe(
                f"reference {ref['model']}: interrupted after {ref['chunks']} of {ref['chunks_total']} chunks"
            )
        )
        return
    print(terminal_safe(f"model      {r['model']} ({r['quant']})"))
    print(
        terminal_safe(
            f"text       {r['text']['name']}, {r['text']['tokens']} tokens in {r['chunks']} of {r['chunks_total']} chunks of {r['n_ctx']}"
        )
    )
    if r["perplexity"] is None:
        return
    print(f"perplexity {r['perplexity']:.4f} ± {r['perplexity_error']:.4f}")
    if "kl_divergence" in r:
        kld = r["kl_divergence"]
        ref = r["reference"]
        print(terminal_safe(f"reference  {ref['model']}"))
        print(f"KLD        mean {kld['mean']:.6f}, p99 {kld['p99']:.6f}, max {kld['max']:.6f}")
        print(f"same top   {r['same_top']:.2%}")
        print(f"Δp         mean {r['delta_p']:+.4%}, rms {r['delta_p_rms']:.4%}")
    print(f"time       {wall_s:.1f} s ({r['tokens_per_s']} tokens/s scoring)")
