"""`localllm run` against llama.cpp's own llama-bench, side by side, plus start-up costs.

    .venv/bin/python benchmarks/bench_run.py [--model FILE] [--threads N] [--reps N]

Builds llama-bench from the vendored llama.cpp of the installed llama-cpp-python when missing
(benchmarks/build_llama_bench.sh), then prints one table:

- pp512 / tg128: llama-bench's mean (one repetition per round, rounds alternating with localllm), and `localllm run --json` doing the same work (a 512-token
  prompt; 128 generated tokens with --ignore-eos), same model, same threads, repack settings matched.
- `localllm --help` wall time.
- time `localllm run` adds before the first token on top of llama.cpp's own model load and prompt
  evaluation: (process start -> first byte on stdout) - load_s - prompt_s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench" / "bin" / "llama-bench"
LOCALLLM = [sys.executable, "-m", "localllm"]


def ensure_llama_bench() -> None:
    if not BENCH.exists():
        print("building llama-bench (once, ~5 minutes)...", file=sys.stderr)
        subprocess.run(["bash", str(ROOT / "benchmarks" / "build_llama_bench.sh")], check=True)


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def llama_bench(model: Path, threads: int, reps: int, repack: bool) -> dict[str, tuple[float, float]]:
    out = subprocess.run(
        [
            str(BENCH),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-p",
            "512",
            "-n",
            "128",
            "-r",
            str(reps),
            "--repack",
            "1" if repack else "0",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    results = {}
    for row in json.loads(out):
        name = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        results[name] = (row["avg_ts"], row["stddev_ts"])
    return results


def prompt_of(n_tokens: int) -> str:
    # SmolLM2's tokenizer makes one token of each " wordN"-ish chunk; calibrated below.
    return " ".join(f"item{i % 97}" for i in range(n_tokens))


def localllm_json(model: Path, threads: int, *args: str) -> dict:
    out = subprocess.run(
        [*LOCALLLM, "run", "-m", str(model), "--threads", str(threads), "--json", "--seed", "1", *args],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    return json.loads(out)


def calibrated_prompt(model: Path, threads: int, target: int) -> str:
    """A user prompt whose chat-templated form is ``target`` tokens long (pp512 = 512 tokens)."""
    words = target
    for _ in range(6):
        text = prompt_of(words)
        n = localllm_json(model, threads, "-n", "1", "--ctx", "2048", text)["stats"]["prompt_tokens"]
        if n == target:
            return text
        words = max(1, words + (target - n) // 2 if abs(target - n) > 1 else words + (target - n))
    return prompt_of(words)


def side_by_side(model: Path, threads: int, reps: int, repack: bool) -> tuple[dict, dict]:
    """Alternate llama-bench and localllm round by round, so load from elsewhere hits both alike."""
    prompt = calibrated_prompt(model, threads, 512)
    ref: dict[str, list[float]] = {"pp512": [], "tg128": []}
    ours: dict[str, list[float]] = {"pp512": [], "tg128": []}
    for _ in range(reps):
        for test, (rate, _sd) in llama_bench(model, threads, 1, repack).items():
            ref[test].append(rate)
        ours["pp512"].append(
            localllm_json(model, threads, "-n", "1", "--ctx", "2048", prompt)["stats"]["prompt_tokens_per_s"]
        )
        ours["tg128"].append(
            localllm_json(model, threads, "-n", "129", "--ignore-eos", "-t", "0.8", "Hi")["stats"]["tokens_per_s"]
        )

    def summary(runs: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
        return {k: (statistics.mean(v), statistics.pstdev(v)) for k, v in runs.items()}

    return summary(ref), summary(ours)


def help_time(reps: int = 10) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run([*LOCALLLM, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_token_overhead(model: Path, threads: int, reps: int = 5) -> tuple[float, float, float]:
    """Median (process start -> first stdout byte), llama.cpp load + prompt, and their difference."""
    walls, native = [], []
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [
                *LOCALLLM,
                "run",
                "-m",
                str(model),
                "--threads",
                str(threads),
                "--stats",
                "-n",
                "8",
                "-t",
                "0",
                "What is the capital city of France?",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.read(proc.stdout.fileno(), 1)
        walls.append(time.perf_counter() - start)
        _, err = proc.communicate()
        # "...: loaded in 0.12 s, prompt 37 tokens at 300.0 tok/s, ..."
        line = err.decode()
        load_s = float(line.split("loaded in ")[1].split(" s")[0])
        prompt_tokens = int(line.split("prompt ")[1].split(" tokens")[0])
        prompt_rate = float(line.split("tokens at ")[1].split(" tok/s")[0])
        native.append(load_s + prompt_tokens / prompt_rate)
    wall, base = statistics.median(walls), statistics.median(native)
    return wall, base, wall - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the suite's SmolLM2-135M Q4_1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    ensure_llama_bench()
    model = args.model or default_model()
    sys.path.insert(0, str(ROOT))
    from localllm import runtime

    repack = not runtime.build_has_amx()  # what localllm does by default on this build
    ref, ours = side_by_side(model, args.threads, args.reps, repack)
    print(f"model: {model.name}, threads: {args.threads}, repack: {int(repack)}, reps: {args.reps}")
    print(f"{'test':<8} {'llama-bench t/s':>18} {'localllm run t/s':>18} {'ratio':>7}")
    for test in ("pp512", "tg128"):
        (r, rsd), (o, osd) = ref[test], ours[test]
        print(f"{test:<8} {r:>10.1f} ± {rsd:<5.1f} {o:>10.1f} ± {osd:<5.1f} {o / r:>6.1%}")
    print(f"localllm --help: {help_time() * 1000:.0f} ms (median of 10)")
    wall, base, extra = first_token_overhead(model, args.threads)
    print(
        f"first token: {wall * 1000:.0f} ms from process start; llama.cpp load + prompt eval "
        f"{base * 1000:.0f} ms; localllm adds {extra * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
