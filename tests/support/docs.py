"""A handmade corpus for the documents tests: four files on four topics, in four formats, and the
terminal chat's arguments for tests that drive it with scripted lines."""

from __future__ import annotations

import argparse
from pathlib import Path

CORPUS = {
    "kitchen/sourdough.md": "# Sourdough\n\n## Starter\n\nFeed the starter with equal weights of rye flour and "
    "water every morning.\n\n## Baking\n\nBake the loaf in a preheated Dutch oven at 250 degrees for forty "
    "minutes, lid on for the first twenty.\n",
    "money/taxes.txt": "The 2019 income tax return was filed in April. The home office deduction covered "
    "a share of rent and electricity.\n",
    "code/fib.py": 'def fibonacci(n):\n    """Return the nth Fibonacci number."""\n    a, b = 0, 1\n'
    "    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "garden/roses.html": "<html><head><title>x</title><style>p{}</style></head><body><h1>Roses</h1>"
    "<p>Prune the roses in late winter, just above an outward-facing bud.</p></body></html>",
}


def make_corpus(root: Path, files: dict[str, str] = CORPUS) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def chat_args(*argv: str) -> argparse.Namespace:
    """``localllm run ARGV`` parsed, for :func:`localllm.cli.run.interactive`."""
    from localllm.cli import run as run_cli

    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.verbose = False
    return args
