"""The ``--draft`` option of the commands that generate with one model's context (speculative
decoding, issue 28)."""

from __future__ import annotations

import argparse


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--draft",
        metavar="MODEL|ngram",
        help="speculative decoding: 'ngram' drafts from the prompt's own text (no second model), or a small "
        "model of the same vocabulary drafts; the reply is the same, faster when drafts are accepted",
    )


def ngram_only(value: str | None, command: str) -> str | None:
    """``--draft`` of a command whose sequences draft with n-gram lookup only (batch, serve)."""
    from localllm.errors import UsageError

    if value is None:
        return None
    if value.strip().lower() != "ngram":
        raise UsageError(
            f"{command} drafts with n-gram lookup only, not {value}", hint="use --draft ngram (run takes a draft model)"
        )
    return "ngram"
