"""``localllm rm``: delete an installed model's files, its manifest entry and its partial downloads."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="name[:QUANT] or owner/repo[:QUANT] as `localllm list` shows it")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask (never asked when not on a terminal)")


def run(args: argparse.Namespace) -> int:
    from localllm.errors import ModelNotFoundError, UsageError
    from localllm.hub.pull import remove_partials
    from localllm.models import store

    from .progress import human_bytes

    name, _, quant = args.model.strip().partition(":")
    quant = quant.upper() or None
    models = store.find_all(name, quant)
    freed = 0
    if len(models) > 1 and quant is None:
        keys = ", ".join(m.key for m in models)
        raise UsageError(f"{name} is installed in several quantizations: {keys}", hint="say which one, e.g. "
                         f"localllm rm {models[0].key}")
    if not models:
        freed = remove_partials(name, quant)
        if freed:
            print(f"removed partial downloads of {args.model} ({human_bytes(freed)})")
            return 0
        raise ModelNotFoundError(f"{args.model} is not installed", hint="`localllm list` shows what is")
    model = models[0]
    if not args.yes and sys.stdin.isatty() and sys.stdout.isatty():
        answer = input(f"remove {model.key} ({human_bytes(model.size)})? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing removed")
            return 1
    store.remove(model)
    freed = remove_partials(model.name, model.quant)
    linked = f" (only the link; the {model.link}ed file stays where it was)" if model.link == "symlink" else ""
    print(f"removed {model.key} ({human_bytes(model.size)}){linked}")
    return 0
