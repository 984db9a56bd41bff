"""``localllm rm``: delete an installed model's files, its manifest entry and its partial downloads."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="name[:QUANT] or owner/repo[:QUANT] as `localllm list` shows it")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask (never asked when not on a terminal)")


def run(args: argparse.Namespace) -> int:
    from localllm import app
    from localllm.format import format_bytes, terminal_safe

    def ask(model) -> bool:
        answer = input(f"remove {model.key} ({format_bytes(model.size)})? [y/N] ").strip().lower()
        return answer in ("y", "yes")

    on_terminal = sys.stdin.isatty() and sys.stdout.isatty()
    removed = app.remove_model(args.model, confirm=ask if on_terminal and not args.yes else None)
    if removed is None:
        print("nothing removed")
        return 1
    if removed.model is None and removed.damaged_entries:
        print(
            f"removed the damaged manifest entry for {terminal_safe(args.model)}; any files it named were left on disk"
        )
        return 0
    if removed.model is None:
        print(f"removed partial downloads of {args.model} ({format_bytes(removed.partial_bytes)})")
        return 0
    model = removed.model
    linked = f" (only the link; the {model.link}ed file stays where it was)" if model.link == "symlink" else ""
    print(f"removed {model.key} ({format_bytes(model.size)}){linked}")
    return 0
