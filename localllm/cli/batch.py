"""``localllm batch``: complete every line of a JSONL file, several at once, resumably."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from localllm.app.options import SAMPLING
from localllm.format import format_clock

from . import EXIT_INTERRUPTED, add_option, add_rpc_option, draft, lora, print_error, say, use_rpc_workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help='JSONL file of {"id", "prompt" | "messages", ...} lines; - = stdin')
    parser.add_argument(
        "-o",
        "--output",
        default="-",
        help="JSONL file the results are appended to; running again skips what it holds (default: - = stdout)",
    )
    parser.add_argument("-m", "--model", help="model reference or .gguf file (default: the last model used)")
    add_option(parser, "parallel", shown="as many as the memory planner fits, at most one per line")
    add_option(parser, "ctx", help="context of each sequence in tokens (default: 4096 or the model's)")
    # Defaults for the lines that give none (a line may set any sampling option: localllm.batch).
    temperature = SAMPLING["temperature"].default
    for name, default, shown in (("temperature", temperature, temperature), ("max_tokens", None, 512), ("seed", 0, 0)):
        help = f"{SAMPLING[name].help}, for lines without {name} (default {shown})"
        add_option(parser, name, default=default, help=help)
    add_option(parser, "threads", shown="the free physical cores, followed while generating")
    add_option(parser, "gpu_layers", shown="planned")
    lora.add_argument(parser)
    draft.add_argument(parser)
    add_rpc_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="send the lines to this OpenAI-compatible server instead of loading a model here "
        "(repeat for several; -m names the model to ask for, --parallel the requests in flight on each)",
    )
    parser.add_argument(
        "--endpoints",
        metavar="FILE",
        help="endpoints one a line: URL [model=NAME] [parallel=N] [key_env=NAME]; # starts a comment",
    )


def _validate(args: argparse.Namespace) -> None:
    from localllm import app
    from localllm.errors import UsageError

    app.options.check(
        ctx=args.ctx,
        parallel=args.parallel,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        threads=args.threads,
        gpu_layers=args.gpu_layers,
    )
    if args.endpoint or args.endpoints:
        local_only = [
            flag
            for flag, value in (("--ctx", args.ctx), ("--threads", args.threads), ("--gpu-layers", args.gpu_layers))
            if value is not None
        ] + (["--lora"] if args.lora else [])
        if local_only:
            raise UsageError(
                f"{', '.join(local_only)} apply to a model loaded here, not to a batch over endpoints",
                hint="set them on the servers",
            )
    if args.input == "-" and args.output != "-" and sys.stdin.isatty():
        raise UsageError("reading the input from a terminal", hint="pass a JSONL file or pipe one in")


def _read_input(name: str) -> bytes:
    """The input as bytes: each line is decoded on its own (a line that is not UTF-8 gets an error
    record; the others run)."""
    from localllm.errors import UsageError
    from localllm.format import terminal_safe

    try:
        if name == "-":
            return sys.stdin.buffer.read()
        with open(name, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UsageError(f"no such input file: {terminal_safe(name)}") from None
    except IsADirectoryError:
        raise UsageError(f"{terminal_safe(name)} is a directory, not a JSONL file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {terminal_safe(name)}: {exc.strerror}") from None


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
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {p.finished}/{p.total}"
            f"  {p.tokens_per_s:.1f} tok/s  ETA {format_clock(p.eta_s)}" + (f"  {p.errors} errors" if p.errors else "")
        )
        if p.endpoints:
            line += "  |" + "".join(f"  {endpoint_figures(e)}" for e in p.endpoints)
        sys.stderr.write(line + "\x1b[K")
        sys.stderr.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False


EXIT_LINES_FAILED = 3  # the batch ran, but some lines have error records (README: batch)


def endpoint_figures(e) -> str:
    """One endpoint in the progress line: label, lines/s, tok/s, and its state when not up."""
    state = "" if e.state == "up" else f" {e.state}"
    return f"{e.label} {e.lines_per_s:.2f} lines/s {e.tokens_per_s:.0f} tok/s{state}"


def endpoint_summary(e) -> str:
    return (
        f"  {e.label}: {e.done} lines, {e.completion_tokens} tokens generated, "
        f"{e.lines_per_s:.2f} lines/s, {e.tokens_per_s:.1f} tok/s, {e.limit} at a time at the end"
        + (f" ({e.state})" if e.state != "up" else "")
    )


def summary_line(p, interrupted: bool = False) -> str:
    state = "interrupted" if interrupted else "finished"
    return (
        f"batch {state}: {p.done} done, {p.errors} errors, {p.skipped} skipped (already in the output), "
        f"{p.prompt_tokens} prompt + {p.completion_tokens} generated tokens in {p.wall_s:.1f} s, "
        f"{p.tokens_per_s:.1f} tok/s generated"
        + (f", {p.shared_tokens} prompt tokens saved by shared prefixes" if p.shared_tokens else "")
        + (
            f", drafts: {p.accepted_tokens} of {p.drafted_tokens} accepted ({p.accepted_tokens / p.drafted_tokens:.0%})"
            if getattr(p, "drafted_tokens", 0)
            else ""
        )
    )


@contextlib.contextmanager
def ctrl_c_sets(cancel: threading.Event) -> Iterator[None]:
    """While the block runs, a first Ctrl-C sets ``cancel`` (the batch ends after the step in
    progress, everything written kept) and a second one interrupts at once. A flag rather than
    KeyboardInterrupt: llama.cpp logs through a Python callback (a line per prompt copied between
    sequences, for one), and ctypes swallows an exception raised while that callback runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace) -> int:
    _validate(args)
    use_rpc_workers(args.rpc)
    from localllm import app

    app.show_llama_log(args.verbose)
    text = _read_input(args.input)
    writer = app.writer_for(args.output, sys.stdout)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    progress = None

    def track(p) -> None:
        nonlocal progress
        progress = p
        bar(p)

    def started(label: str, lines: int, parallel: int, n_ctx_seq: int, why: str) -> None:
        if not args.quiet:
            at_once = f"{parallel} at a time" + (f" ({why})" if why else "")
            say(f"{label}: {lines} lines, {at_once}, {n_ctx_seq} tokens of context each")

    if args.endpoint or args.endpoints:
        return _run_on_endpoints(args, text, writer, bar, track, lambda: progress)

    interrupted = False
    cancel = threading.Event()
    try:
        with ctrl_c_sets(cancel):
            app.complete_jsonl(
                args.model,
                text,
                writer,
                n_ctx_seq=args.ctx,
                n_parallel=args.parallel,
                n_gpu_layers=args.gpu_layers,
                n_threads=args.threads,
                adapters=app.lora_specs(args.lora),
                draft=draft.ngram_only(args.draft, "batch"),
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed,
                notice=say,
                started=started,
                progress=track,
                cancel=cancel,
            )
        interrupted = cancel.is_set()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.end()
        writer.close()
    return _finish(args, progress, interrupted)


def _finish(args: argparse.Namespace, progress, interrupted: bool) -> int:
    if not args.quiet and progress is not None:
        say(summary_line(progress, interrupted))
        for e in progress.endpoints:
            say(endpoint_summary(e))
    if interrupted:
        print_error("interrupted; the results written so far are kept, run the same command to go on")
        return EXIT_INTERRUPTED
    if progress is not None and progress.failed:
        print_error(
            f"{progress.failed} of {progress.total + progress.skipped} lines failed; "
            "their error records are in the output"
        )
        return EXIT_LINES_FAILED
    return 0


def _run_on_endpoints(args: argparse.Namespace, text: bytes, writer, bar: ProgressBar, track, progress) -> int:
    """The same job, answered by servers (localllm.batch.remote); the same summary and exit codes,
    and 4 when every endpoint went down (what was answered is kept)."""
    from localllm import app
    from localllm.errors import EndpointsDownError

    interrupted = False
    try:
        endpoints = app.endpoint_specs(args.endpoint, args.endpoints)
        if not args.quiet:
            model = f"model {args.model}" if args.model else "each server's first model"
            say(f"batch over {len(endpoints)} endpoints ({model} unless a line or the endpoints file names one)")

        def notice(line: str) -> None:
            bar.end()  # the bar is redrawn below the notice
            say(f"localllm batch: {line}")

        app.complete_on_endpoints(
            text,
            writer,
            endpoints,
            model=args.model,
            n_parallel=args.parallel,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            seed=args.seed,
            notice=notice,
            progress=track,
        )
    except KeyboardInterrupt:
        interrupted = True
    except EndpointsDownError:
        bar.end()
        if not args.quiet and progress() is not None:
            say(summary_line(progress(), interrupted=True))
        raise
    finally:
        bar.end()
        writer.close()
    return _finish(args, progress(), interrupted)
