"""Speculative decoding against plain decoding (issue 28).

    .venv/bin/python benchmarks/bench_speculative.py [--model FILE] [--draft FILE] [--threads N] [--reps N]

Greedy replies to two chat tasks, each decoded plain, with ``--draft ngram`` and with a draft model
(default: the model itself, a same-vocabulary draft whose drafts are nearly always accepted -- the
ceiling of what a same-family draft gives); one process, each model loaded once, the task runs
interleaved so that a neighbour's load hits every mode alike. Prints one table: median generation
tokens/s over ``--reps`` runs, the speed-up against plain decoding, the acceptance rate, and whether
the reply was plain decoding's, token for token.

- repeat: "Repeat the following text exactly" with a 200-word passage (drafts are mostly right);
- story: a short story (nothing to look up: n-gram drafts are mostly refused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSAGE = (
    "The river town woke slowly on market days. Before the sun cleared the hills, the bakers had "
    "already lit their ovens, and the smell of bread drifted down the narrow lanes toward the water. "
    "Fishermen pulled their boats onto the gravel and laid out the night's catch on wet boards, "
    "calling prices to anyone who passed. Farmers arrived with carts of apples, cabbages and "
    "potatoes, and the cheese maker set up her table under the old chestnut tree, as her mother had "
    "done for forty years. Children ran between the stalls with coins in their fists, looking for "
    "honey cakes. By noon the square was full of voices, dogs and music from a fiddler who played "
    "the same three songs every week. In the afternoon the crowd thinned, the traders counted their "
    "money, and the carts went back up the hill road, lighter than they came. When evening fell, "
    "the lamps were lit along the quay, and the town was quiet again until the next market day."
)
TASKS = {
    "repeat": f"Repeat the following text exactly, word for word:\n\n{PASSAGE}",
    "story": "Write a short story about a dragon who learns to cook.",
}


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--draft", type=Path, default=None, help="the draft model (default: the model itself)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--n-draft", type=int, default=8)
    args = parser.parse_args()

    from localllm import runtime

    model_path = args.model or default_model()
    draft_path = args.draft or model_path
    modes = {"plain": None, "ngram": "ngram", f"draft {draft_path.name}": str(draft_path)}
    sampling = runtime.SamplingOptions(temperature=0, max_tokens=args.max_tokens)
    models = {
        mode: runtime.Model(
            model_path, runtime.LoadOptions(n_ctx=2048, n_threads=args.threads, draft=draft, n_draft=args.n_draft)
        )
        for mode, draft in modes.items()
    }
    rates: dict[tuple[str, str], list[float]] = {}
    accept: dict[tuple[str, str], list[float]] = {}
    same: dict[tuple[str, str], bool] = {}
    tokens: dict[str, int] = {}
    try:
        for rep in range(args.reps):
            for task, prompt in TASKS.items():
                texts = {}
                for mode, model in models.items():
                    generation = model.chat([{"role": "user", "content": prompt}], sampling)
                    texts[mode] = generation.read()
                    stats = generation.stats
                    rates.setdefault((task, mode), []).append(stats.tokens_per_s)
                    accept.setdefault((task, mode), []).append(stats.acceptance)
                    tokens[task] = stats.generated_tokens
                    print(
                        f"rep {rep + 1} {task:6} {mode:30} {stats.generated_tokens:4} tokens "
                        f"{stats.tokens_per_s:7.1f} tok/s  accepted {stats.accepted_tokens}/{stats.drafted_tokens}",
                        file=sys.stderr,
                        flush=True,
                    )
                for mode, text in texts.items():
                    same[(task, mode)] = same.get((task, mode), True) and text == texts["plain"]
    finally:
        for model in models.values():
            model.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nmodel {model_path.name}, {args.threads} thread(s), greedy, {args.reps} reps (median), load {load:.1f}")
    print("| task | tokens | mode | tok/s | vs plain | acceptance | same reply |")
    print("|---|---|---|---|---|---|---|")
    for task in TASKS:
        base = statistics.median(rates[(task, "plain")])
        for mode in modes:
            rate = statistics.median(rates[(task, mode)])
            acc = statistics.median(accept[(task, mode)])
            print(
                f"| {task} | {tokens[task]} | {mode} | {rate:.1f} | {rate / base:.2f}x | "
                f"{'-' if mode == 'plain' else f'{acc:.0%}'} | {'yes' if same[(task, mode)] else 'NO'} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
