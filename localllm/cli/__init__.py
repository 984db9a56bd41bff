"""The command-line shell: parses arguments, calls the core, maps core errors to one line.

Only ``argparse`` and the command table are imported here, so ``localllm --help`` stays instant;
each command's module (and through it llama.cpp, gguf, textual) is imported when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from localllm import __version__

# name -> (module under localllm.cli, one-line help). Each module has add_arguments(parser) and
# run(args) -> int; add_arguments must only touch argparse and the option schema (it runs for --help).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "answer one prompt and stream the reply to stdout"),
    "inspect": ("inspect", "show what is inside a GGUF model file"),
    "pull": ("pull", "download a model (resumable, verified) or reuse a copy already on disk"),
    "list": ("list_models", "list installed models"),
    "rm": ("remove", "delete an installed model"),
    "import": ("import_model", "adopt a local GGUF file into the store"),
    "batch": ("batch", "complete every line of a JSONL file, several at once, resumably"),
    "bench": ("bench", "measure prompt, generation and batched tokens/s like llama-bench"),
    "hw": ("hw", "show the hardware detected and the memory budget for models"),
    "eval": ("eval", "measure perplexity, KL divergence against a reference, or multiple-choice accuracy"),
    "fit": ("fit", "estimate the memory a model needs here, per quantization, and plan its load"),
    "serve": ("serve", "serve models over HTTP to OpenAI and Ollama clients (127.0.0.1:8080)"),
    "rpc-server": ("rpc_server", "lend this machine's memory to another's --rpc as a llama.cpp RPC worker"),
    "chat": ("chat", "chat with a model in the terminal UI (localllm alone opens the UI)"),
    "docs": ("docs", "index folders of documents and search them (run --docs NAME answers from them)"),
    "completion": ("completion", "print a bash, zsh or fish completion script"),
}

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localllm",
        description="Run open-weight language models privately on this machine.",
        epilog="Run 'localllm COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=VersionAction, help="show localllm's version and its llama.cpp build")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(command, suppress=True)
        importlib.import_module(f"{__name__}.{module}").add_arguments(command)
    return parser


class VersionAction(argparse.Action):
    """``--version``: localllm's version and the llama.cpp build. llama.cpp is loaded only when this
    is asked for, so ``--help`` stays instant."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(), flush=True)
        parser.exit()


def version_text() -> str:
    lines = [f"localllm {__version__}"]
    try:
        from localllm.app.machine import llama_cpp_build

        build, devices, info = llama_cpp_build()
        names = ", ".join(f"{d.name} ({d.description})" if d.description else d.name for d in devices)
        features = info.strip().rstrip("|").strip()
    except (ImportError, OSError, RuntimeError) as exc:  # no bindings, or a library that does not load
        return "\n".join(lines + [f"llama-cpp-python: cannot be loaded ({exc})"])
    llama_cpp = ", ".join(
        f"{k} {v}" for k, v in (("libllama", build.llama), ("ggml", build.ggml), ("commit", build.commit)) if v
    )
    lines += [
        f"llama-cpp-python {build.bindings}",
        f"llama.cpp: {llama_cpp or 'version unknown'}",
        f"backends: {', '.join(build.backends) or 'none'}",
        f"devices: {names or 'none'}",
        f"features: {features}",
    ]
    return "\n".join(lines)


def add_option(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    default: object = None,
    shown: object = None,
    help: str | None = None,
) -> None:
    """The flag of a schema option (``localllm.options``): its names, type and help text.
    ``default`` is this command's value when the flag is not given; ``shown`` is what the help says
    the default is (``default`` unless told); ``help`` replaces the schema's own words."""
    from localllm.app.options import OPTIONS

    option = OPTIONS[name]
    flags = [option.short, option.flag] if option.short else [option.flag]
    text = option.help_text(default if shown is None else shown) if help is None else help
    parser.add_argument(*flags, type=option.kind, default=default, help=text)


def add_rpc_option(parser: argparse.ArgumentParser) -> None:
    """``--rpc HOST:PORT[,HOST:PORT]``: llama.cpp RPC workers whose memory the planner counts and
    the model's layers go to."""
    parser.add_argument(
        "--rpc",
        metavar="HOST:PORT[,HOST:PORT]",
        help="also put layers on these llama.cpp RPC workers (localllm rpc-server); ggml-rpc has no "
        "authentication, so use workers only on a trusted network",
    )


def use_rpc_workers(rpc: str | None) -> None:
    """Connect the RPC workers ``--rpc`` names (before any model loads) and say what each offers."""
    if not rpc:
        return
    from localllm import app
    from localllm.format import format_bytes

    for w in app.machine.connect_rpc(rpc):
        say(f"RPC worker {w.endpoint} ({w.name}): {format_bytes(w.free_bytes)} free of {format_bytes(w.total_bytes)}")


def _add_common(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else False
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", default=default, help="show llama.cpp's log on stderr")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from localllm.errors import LocalLLMError

    if args.command is None and not (sys.stdin.isatty() and sys.stdout.isatty()):
        parser.print_help()  # not a terminal (a pipe, a script): the UI cannot run there
        return 0
    try:
        if args.command is None:
            from .chat import launch

            return launch()
        module = importlib.import_module(f"{__name__}.{COMMANDS[args.command][0]}")
        return module.run(args)
    except LocalLLMError as exc:
        if args.debug:
            raise
        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print_error("interrupted")
        return EXIT_INTERRUPTED


def say(text: str) -> None:
    """A notice for the person at the terminal (stderr, so stdout stays the command's output)."""
    from localllm.format import terminal_safe

    print(terminal_safe(text), file=sys.stderr, flush=True)


def print_error(error: BaseException | str) -> None:
    """``localllm: error: message (hint)`` on one line: names from files and arguments in it cannot
    drive the terminal or fail to encode."""
    from localllm.errors import one_line
    from localllm.format import terminal_safe

    text = error if isinstance(error, str) else one_line(error)
    print(terminal_safe(f"localllm: error: {text}".replace("\n", " ")), file=sys.stderr, flush=True)


def entry_point() -> None:
    """The ``localllm`` console script."""
    try:
        code = main()
    except BrokenPipeError:
        # The reader went away (``| head``): say nothing, like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    sys.exit(code)
