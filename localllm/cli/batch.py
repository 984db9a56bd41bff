"""``localllm batch``: complete every line of a JSONL file, several at once, resumably."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_INTERRUPTED, print_error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help='JSONL file of {"id", "prompt" | "messages", ...} lines; - = stdin')
    parser.add_argument("-o", "--output", default="-",
                        help="JSONL file the results are appended to; running again skips what it holds "
                        "(default: - = stdout)")
    parser.add_argument("-m", "--model", help="model reference or .gguf file (default: the last model used)")
    parser.add_argument("-p", "--parallel", type=int,
                        help="sequences decoded at once (default: what fits half the free memory, at most 8)")
    parser.add_argument("-c", "--ctx", type=int,
                        help="context of each sequence in tokens (default: 4096 or the model's)")
    parser.add_argument("-n", "--max-tokens", type=int, help="default for lines without max_tokens (512)")
    parser.add_argument("-t", "--temperature", type=float, default=0.8,
                        help="default for lines without temperature (0.8; 0 = greedy)")
    parser.add_argument("--seed", type=int, default=0, help="default for lines without seed (0)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--gpu-layers", type=int, help="layers to offload to the GPU (-1 = all; default: planned)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def _validate(args: argparse.Namespace) -> None:
    from localllm.errors import UsageError

    if args.parallel is not None and args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    if args.ctx is not None and args.ctx < 32:
        raise UsageError("--ctx must be at least 32 tokens")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UsageError("--max-tokens must be at least 1")
    if args.temperature < 0:
        raise UsageError("--temperature must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.input == "-" and args.output != "-" and sys.stdin.isatty():
        raise UsageError("reading the input from a terminal", hint="pass a JSONL file or pipe one in")


def _read_input(name: str) -> str:
    from localllm.errors import UsageError

    try:
        if name == "-":
            return sys.stdin.read()
        with open(name, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"no such input file: {name}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{'stdin' if name == '-' else name} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """One redrawn line on stderr: done/total, tokens/s, ETA. Drawn only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.drawn = False

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        width = 24
        filled = width * p.finished // p.total if p.total else width
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {p.finished}/{p.total}"
                f"  {p.tokens_per_s:.1f} tok/s  ETA {_clock(p.eta_s)}"
                + (f"  {p.errors} errors" if p.errors else ""))
        sys.stderr.write(line + "\x1b[K")
        sys.stderr.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def summary_line(p, interrupted: bool = False) -> str:
    state = "interrupted" if interrupted else "finished"
    return (f"batch {state}: {p.done} done, {p.errors} errors, {p.skipped} skipped (already in the output), "
            f"{p.prompt_tokens} prompt + {p.completion_tokens} generated tokens in {p.wall_s:.1f} s, "
            f"{p.tokens_per_s:.1f} tok/s generated")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    from pathlib import Path

    from localllm.batch import jobs as batch
    from localllm.models import store
    from localllm.models.resolve import resolve

    lines = batch.read_lines(_read_input(args.input))
    writer = batch.StreamWriter(sys.stdout) if args.output == "-" else batch.ResultWriter(Path(args.output))
    try:
        resolved = resolve(args.model, notice=lambda text: print(text, file=sys.stderr, flush=True))
        from localllm import runtime as engine
        from localllm.gguf import header as ggufmeta

        engine.set_verbose(args.verbose)
        header = ggufmeta.read_header(resolved.path)
        n_ctx_seq = args.ctx or min(engine.DEFAULT_CTX, header.context_length or engine.DEFAULT_CTX)
        from localllm.fit import hardware
        from localllm.fit.plan import load_settings

        hw = hardware.detect()
        _, gpu_layers = load_settings(header, hw, n_ctx_seq, args.gpu_layers, label=resolved.label)
        n_parallel = args.parallel or batch.default_parallel(header, n_ctx_seq, hw.ram_budget)
        defaults = batch.BatchDefaults(
            max_tokens=args.max_tokens or batch.DEFAULT_MAX_TOKENS, temperature=args.temperature, seed=args.seed
        )
        # The model's own single-sequence context is only used for tokenizing: keep it small.
        options = engine.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_gpu_layers=gpu_layers,
                                     n_threads=args.threads)
        bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
        interrupted = False
        progress = None
        with engine.Model(resolved.path, options) as model:
            if resolved.installed is not None:
                store.touch(resolved.installed)
            if not args.quiet:
                print(f"{resolved.label}: {len(lines)} lines, {n_parallel} at a time, "
                      f"{n_ctx_seq} tokens of context each", file=sys.stderr, flush=True)

            def track(p) -> None:
                nonlocal progress
                progress = p
                bar(p)

            try:
                progress = batch.run_batch(
                    model, lines, writer, n_parallel=n_parallel, n_ctx_seq=n_ctx_seq, defaults=defaults,
                    n_threads=args.threads, progress=track,
                )
            except KeyboardInterrupt:
                interrupted = True
        bar.end()
    finally:
        writer.close()
    if not args.quiet and progress is not None:
        print(summary_line(progress, interrupted), file=sys.stderr, flush=True)
    if interrupted:
        print_error("interrupted; the results written so far are kept, run the same command to go on")
        return EXIT_INTERRUPTED
    return 0
