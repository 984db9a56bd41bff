"""What `localllm batch` does before its first result on a small input, quiet and beside two busy
loops, against llama.cpp's own start-up (issue 29).

    .venv/bin/python benchmarks/bench_batch_startup.py [--model FILE] [--threads 2] [--reps 5]

A one-line batch (a short chat, greedy, 8 tokens) runs as users run it, `python -m localllm batch
in.jsonl -o out.jsonl`, in a child that times each step of the path to the first result: Python
and the imports, resolving the model, reading its header, detecting the hardware, the planner,
llama.cpp's model load, the batch context, the first result, and writing it (the output is flushed
and fsynced per line). llama.cpp's side is `llama-batched-bench` doing the same work (one sequence,
the same prompt length, 8 tokens) from process start to exit, built from the vendored sources by
benchmarks/build_llama_bench.sh.

Then the same with two busy-loop processes on the machine's cores (load about 4 on 2 cores, as in
CI beside another job). Prints the median of --reps per step and in all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("LLAMA_BENCH_BIN", ROOT / ".bench" / "bin"))
NTG = 8
QUESTION = "Name three rivers in Europe."

# the steps timed in the child: (label, module, attribute); each one's calls are summed
STEPS = [
    ("resolve the model", "localllm.app.loading", "find"),
    ("read its header", "localllm.app.loading", "_planned_header"),
    ("detect the hardware", "localllm.app.machine", "detect"),
    ("plan (placement, sequences)", "localllm.app.loading", "load_settings"),
    ("plan (placement, sequences)", "localllm.app.loading", "plan_parallel"),
    ("llama.cpp model load", "localllm.app.loading", "_load"),
    ("batch context", "localllm.runtime.batching", "BatchSession.__init__"),
    ("write the result (fsync)", "localllm.batch.jobs", "Job.answer"),
]

CHILD = r"""
import importlib, json, os, sys, time
started = float(sys.argv[1])
steps = json.loads(sys.argv[2])
out = sys.argv[3]
times = {"python + imports": 0.0}
t0 = time.time()
from localllm import cli  # noqa: E402  (the import is a step of its own)
import localllm.app.loading, localllm.app.machine, localllm.runtime.batching, localllm.batch.jobs  # noqa: E401,E402
times["python + imports"] = time.time() - started
marks = {}

def timed(label, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[label] = times.get(label, 0.0) + time.perf_counter() - t
            if label.startswith("write") and "first result" not in marks:
                marks["first result"] = time.time() - started
    return wrapper

for label, module, attr in steps:
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, timed(label, getattr(owner, name)))
try:
    code = cli.main(sys.argv[4:])
except SystemExit as stop:
    code = stop.code
times["first result on disk, from process start"] = marks.get("first result", float("nan"))
times["exit, from process start"] = time.time() - started
with open(out, "w") as f:
    json.dump({"times": times, "code": code}, f)
"""


def localllm_once(model: Path, threads: int, home: str, tmp: Path) -> tuple[dict[str, float], int]:
    """The child's times per step, and the line's prompt tokens (from its result)."""
    src, out, report = tmp / "in.jsonl", tmp / "out.jsonl", tmp / "report.json"
    out.unlink(missing_ok=True)
    line = {"id": 1, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": NTG, "temperature": 0}
    src.write_text(json.dumps(line) + "\n")
    argv = ["batch", str(src), "-o", str(out), "-m", str(model), "--threads", str(threads), "-q"]
    started = time.time()
    subprocess.run(
        [sys.executable, "-c", CHILD, repr(started), json.dumps(STEPS), str(report), *argv],
        check=True,
        env={**os.environ, "LOCALLLM_HOME": home},
        cwd=ROOT,
    )
    got = json.loads(report.read_text())
    assert got["code"] == 0 and out.read_text().count("\n") == 1, got
    return got["times"], json.loads(out.read_text())["prompt_tokens"]


def llama_once(model: Path, threads: int, npp: int) -> float:
    command = [str(BIN / "llama-batched-bench"), "-m", str(model), "-c", "512", "-b", "512", "-ub", "512"]
    command += ["-npp", str(npp), "-ntg", str(NTG), "-npl", "1", "-t", str(threads), "-tb", str(threads)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


class BusyLoops:
    """``n`` processes spinning on the CPU for as long as the block lasts."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BusyLoops:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(1)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def measure(model: Path, threads: int, reps: int, busy: int) -> tuple[dict[str, float], float, int]:
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as tmp, BusyLoops(busy):
        _, npp = localllm_once(model, threads, home, Path(tmp))  # warm-up: the page cache, the header cache
        runs = [localllm_once(model, threads, home, Path(tmp))[0] for _ in range(reps)]
        llama_once(model, threads, npp)
        native = statistics.median(llama_once(model, threads, npp) for _ in range(reps))
    keys = list(dict.fromkeys(k for r in runs for k in r))
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}, native, npp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the test suite's SmolLM2-135M Q4_1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if not (BIN / "llama-batched-bench").exists():
        subprocess.run(["bash", str(ROOT / "benchmarks" / "build_llama_bench.sh")], check=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_serve import smollm2

    model = args.model or smollm2()
    quiet, native_quiet, npp = measure(model, args.threads, args.reps, 0)
    loaded, native_loaded, _ = measure(model, args.threads, args.reps, 2)
    print(f"model {model.name}, threads {args.threads}, prompt {npp} tokens, {NTG} generated, {os.cpu_count()} CPUs")
    print(f"median of {args.reps}, in ms        quiet   two busy loops")
    for key in quiet:
        print(f"{key:<42} {quiet[key] * 1000:>7.0f} {loaded.get(key, 0.0) * 1000:>10.0f}")
    print(f"{'llama-batched-bench, start to exit':<42} {native_quiet * 1000:>7.0f} {native_loaded * 1000:>10.0f}")


if __name__ == "__main__":
    main()
