"""`localllm batch` over 1 and 2 `localllm serve` endpoints against a local `localllm batch`.

    .venv/bin/python benchmarks/bench_endpoints.py [--model FILE] [--lines 32] [--ntg 32]
                                                   [--parallel 4] [--threads 1] [--rounds 2]

The same lines (a short counting prompt each, --ntg tokens generated, ignore_eos, temperature 0.8
with the batch's seed) through:

1. `localllm batch -m FILE --parallel P --threads T`: one process, the model loaded here;
2. the same with 2T threads (what two servers of T threads use together);
3. `localllm batch --endpoint URL --parallel P`: one `localllm serve --parallel P --threads T`;
4. `localllm batch --endpoint URL1 --endpoint URL2 --parallel P`: two such servers.

Every server listens on 127.0.0.1 on a free port, has its model loaded by a warm-up request before
it is measured, and stays up across --rounds; the configurations alternate within each round, so a
burst of load elsewhere on a shared machine hits them alike. Figures come from the batch's own
summary line (lines done, generated tokens and the seconds of the job, without the model load of a
local batch): lines/s and generated tok/s, the mean over the rounds.

Two servers only scale when the machine has the cores (or the machines) for both: on a 2-core VM,
two processes of 1 thread use the same 2 cores one local batch of 2 threads has.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LOCALLLM = [sys.executable, "-m", "localllm"]
sys.path.insert(0, str(ROOT / "tests"))
MODEL = "smollm2-135m-instruct:Q4_1"  # the name the starter is installed under
SUMMARY = re.compile(r"batch finished: (\d+) done, (\d+) errors.*?(\d+) generated tokens in ([\d.]+) s")


def smollm2() -> Path:
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def start_server(env: dict[str, str], parallel: int, threads: int, ctx: int) -> tuple[subprocess.Popen, str]:
    command = [*LOCALLLM, "serve", "--port", "0", "-m", MODEL, "--parallel", str(parallel)]
    command += ["--threads", str(threads), "--ctx", str(ctx)]
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    banner = ""
    while "Ctrl-C" not in banner:
        line = process.stderr.readline()
        if not line:
            raise SystemExit(f"the server did not start: {banner}")
        banner += line
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep its log pipe drained
    url = re.search(r"listening on (http://[\d.:]+)", banner).group(1)
    warm = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    httpx.post(url + "/v1/chat/completions", json=warm, timeout=300).raise_for_status()
    return process, url


def run_batch(args: list[str], src: Path, env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        result = subprocess.run(
            [*LOCALLLM, "batch", str(src), "-o", str(out), *args], env=env, capture_output=True, text=True
        )
        found = SUMMARY.search(result.stderr)
        if result.returncode != 0 or found is None:
            raise SystemExit(f"batch failed ({result.returncode}): {result.stderr}")
        done, errors, tokens, seconds = int(found[1]), int(found[2]), int(found[3]), float(found[4])
        assert errors == 0 and len(out.read_text().splitlines()) == done
    return {"lines_per_s": done / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the suite's SmolLM2-135M Q4_1)")
    parser.add_argument("--lines", type=int, default=32)
    parser.add_argument("--ntg", type=int, default=32, help="tokens generated per line")
    parser.add_argument("--parallel", type=int, default=4, help="sequences at once per process")
    parser.add_argument("--threads", type=int, default=1, help="threads per server (and of the local batch)")
    parser.add_argument("--ctx", type=int, default=256, help="context per sequence")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = args.model or smollm2()
    p, t = args.parallel, args.threads

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        from support.models import install_starter

        if args.model is None:
            install_starter(home, model)
        else:
            raise SystemExit("--model: only the suite's SmolLM2 is installed for the servers for now")
        env = {**os.environ, "LOCALLLM_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        src = Path(tmp) / "in.jsonl"
        src.write_text(
            "".join(
                json.dumps(
                    {"id": i, "prompt": f"Count from 1 to {i % 20 + 5}.", "max_tokens": args.ntg, "ignore_eos": True}
                )
                + "\n"
                for i in range(args.lines)
            )
        )
        servers = [start_server(env, p, t, args.ctx) for _ in range(2)]
        urls = [url for _, url in servers]
        local = ["-m", str(model), "--parallel", str(p), "--ctx", str(args.ctx)]
        configs = {
            f"local batch, {t} thread{'s' * (t > 1)}": (local + ["--threads", str(t)], f"1 x {t}"),
            f"local batch, {2 * t} threads": (local + ["--threads", str(2 * t)], f"1 x {2 * t}"),
            "1 endpoint": (["-m", MODEL, "--parallel", str(p), "--endpoint", urls[0]], f"1 x {t}"),
            "2 endpoints": (
                ["-m", MODEL, "--parallel", str(p), "--endpoint", urls[0], "--endpoint", urls[1]],
                f"2 x {t}",
            ),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        try:
            for _ in range(args.rounds):
                for name, (batch_args, _) in configs.items():
                    results[name].append(run_batch(batch_args, src, env))
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=60)

    print(
        f"model: {model.name}, {args.lines} lines x {args.ntg} tokens (ignore_eos), --parallel {p} per process, "
        f"rounds: {args.rounds}, cpus: {os.cpu_count()}"
    )
    print(f"{'configuration':<24} {'processes x threads':>20} {'lines/s':>9} {'gen tok/s':>10} {'s':>7}")
    for name, (_, shape) in configs.items():
        rows = results[name]
        lines_s = statistics.mean(r["lines_per_s"] for r in rows)
        tok_s = statistics.mean(r["tokens_per_s"] for r in rows)
        secs = statistics.mean(r["seconds"] for r in rows)
        print(f"{name:<24} {shape:>20} {lines_s:>9.2f} {tok_s:>10.1f} {secs:>7.1f}")


if __name__ == "__main__":
    main()
