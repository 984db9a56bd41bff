"""The ``--lora`` option every command that loads a model takes."""

from __future__ import annotations

import argparse


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lora",
        action="append",
        metavar="FILE_OR_NAME[:SCALE]",
        help="a LoRA adapter to apply (a .gguf file or an installed adapter; scale default 1, "
        "0 = loaded but off); repeat for several",
    )
