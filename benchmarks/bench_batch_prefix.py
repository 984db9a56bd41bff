"""`localllm batch` with lines sharing a long prefix: evaluated once and copied, or by every line (issue 28).

    .venv/bin/python benchmarks/bench_batch_prefix.py [--model FILE] [--threads 2] [--lines 16]
                                                      [--prefix-words 240] [--parallel 4] [--ntg 16]

Each line is a chat with the same system prompt (--prefix-words words, about 1.3 tokens each) and its
own short question, greedy, --ntg tokens. Runs jobs.run_batch twice on one loaded model: with
share_prefix=0 (every line evaluates its whole prompt, as before) and with the default; prints wall
time, the tokens saved, and whether the outputs are equal.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import smollm2

from localllm import runtime
from localllm.batch import jobs

WORDS = "the library keeps old maps letters and photographs of the harbour town and its families".split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lines", type=int, default=16)
    parser.add_argument("--prefix-words", type=int, default=240)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ntg", type=int, default=16)
    args = parser.parse_args()
    model_path = args.model or smollm2()
    system = " ".join(WORDS[i % len(WORDS)] for i in range(args.prefix_words)) + "."
    records = [
        {
            "id": i,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Question {i}: what is kept in drawer {i}?"},
            ],
            "temperature": 0,
            "max_tokens": args.ntg,
        }
        for i in range(args.lines)
    ]
    lines = jobs.read_lines("".join(json.dumps(r) + "\n" for r in records))
    options = runtime.LoadOptions(n_ctx=64, n_threads=args.threads)
    rows = {}
    with runtime.Model(model_path, options) as model:
        for share in (0, jobs.SHARE_PREFIX):
            out = io.StringIO()
            started = time.perf_counter()
            state = jobs.run_batch(
                model,
                lines,
                jobs.StreamWriter(out),
                n_parallel=args.parallel,
                n_ctx_seq=1024,
                n_threads=args.threads,
                share_prefix=share,
            )
            wall = time.perf_counter() - started
            texts = sorted((r["id"], r["text"]) for r in map(json.loads, out.getvalue().splitlines()))
            rows[share] = (wall, state, texts)
            print(
                f"share_prefix={share:<3} {state.done} lines, {state.prompt_tokens} prompt tokens, "
                f"{state.shared_tokens} saved, {wall:6.1f} s"
            )
    (before, _, a), (after, _, b) = rows[0], rows[jobs.SHARE_PREFIX]
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"speed-up {before / after:.2f}x; {same}/{len(a)} outputs identical")
    print(f"model {model_path.name}, threads {args.threads}, parallel {args.parallel}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
