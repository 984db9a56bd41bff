"""``localllm docs``: document collections for retrieval (add, list, update, rm, search)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from localllm.format import format_clock, json_terminal_safe, terminal_safe

from . import say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="make a collection of files and folders and index it")
    add.add_argument("name")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument(
        "--embed", metavar="MODEL", help="embedding model: installed name or local .gguf (default: all-minilm-l6-v2)"
    )
    sub.add_parser("list", help="list collections")
    update = sub.add_parser("update", help="re-index what changed (and finish an interrupted index)")
    update.add_argument("name")
    rm = sub.add_parser("rm", help="delete a collection (the files themselves are kept)")
    rm.add_argument("name")
    search = sub.add_parser("search", help="the chunks that best match a query")
    search.add_argument("name")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="how many chunks (default 5)")
    search.add_argument("--embed", metavar="MODEL", help="refused unless it is the collection's model")
    search.add_argument("--json", action="store_true", help="one JSON object per line")


class _Bar:
    """files, chunks, chunks/s and ETA, redrawn on a terminal; nothing otherwise (the summary says it)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.1 and p.files_done < p.files_total):
            return
        self.last = now
        width = 20
        filled = int(width * p.files_done / max(p.files_total, 1))
        bar = "█" * filled + "░" * (width - filled)
        sys.stderr.write(
            f"\r\x1b[2K{bar} {p.files_done}/{p.files_total} files  {p.chunks} chunks  "
            f"{p.chunks_per_s:.1f} chunks/s  ETA {format_clock(p.eta_s)}"
        )
        sys.stderr.flush()

    def end(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[2K")


def _summary(name: str, s) -> None:
    print(
        f"{name}: {s.added} added, {s.changed} changed, {s.unchanged} unchanged, {s.removed} removed, "
        f"{s.chunks} chunks embedded in {s.elapsed_s:.1f}s; {len(s.skipped)} skipped"
    )
    for path, why in s.skipped:
        print(terminal_safe(f"  skipped {path}: {why}"))


def run(args: argparse.Namespace) -> int:
    from localllm import app

    documents = app.documents
    action = args.docs_command
    if action in ("add", "update"):
        app.show_llama_log(args.verbose)
        bar = _Bar()
        try:
            if action == "add":
                summary = documents.add(args.name, args.paths, args.embed, progress=bar)
            else:
                summary = documents.update(args.name, progress=bar)
        finally:
            bar.end()
        _summary(args.name, summary)
    elif action == "list":
        found = documents.collections()
        if not found:
            say("no collections (make one with `localllm docs add NAME PATH...`)")
        for c in found:
            print(terminal_safe(f"{c.name}\t{c.files} files\t{c.chunks} chunks\t{c.embed_model}\t{' '.join(c.roots)}"))
    elif action == "rm":
        documents.remove(args.name)
        say(f"removed the collection {args.name}")
    elif action == "search":
        app.show_llama_log(args.verbose)
        hits = documents.search(args.name, args.query, args.k, args.embed)
        for source, hit in zip(documents.sources(args.name, hits), hits):
            file, lines = source.cite.rsplit(":", 1)
            if args.json:
                row = {"file": file, "lines": lines, "score": hit.score, "heading": hit.heading, "text": hit.text}
                sys.stdout.write(json_terminal_safe(json.dumps(row, ensure_ascii=False)) + "\n")
            else:
                first = hit.text.strip().splitlines()[0][:100] if hit.text.strip() else ""
                print(terminal_safe(f"{hit.score:.4f}  {source.cite}  {first}"))
    return 0
