"""A model split over two llama.cpp RPC workers on 127.0.0.1, against the same model run locally.

    benchmarks/bench_rpc.sh [--model FILE] [--tokens N] [--reps N] [--threads 1,2] [--worker-threads N]

(bench_rpc.sh builds llama-cpp-python with GGML_RPC into .bench/rpc/venv and runs this file with
it.) Starts two ``localllm rpc-server`` workers on free ports of 127.0.0.1, shows what
``localllm hw --rpc`` sees, then runs the same greedy prompt with ``localllm run --json`` locally
(at each of ``--threads``) and with ``--rpc`` over both workers (the planner puts every layer on
them), and prints one table: load time, prompt and generation tokens/s, medians of ``--reps`` runs,
with llama.cpp's buffers on each worker. Then one greedy chat completion from ``localllm serve
--rpc``. It fails (exit 1) unless every reply over RPC is the local reply, token for token.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALLLM = [sys.executable, "-m", "localllm"]
PROMPT = "List the planets of the solar system in order from the sun, one per line."


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(port: int, threads: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*LOCALLLM, "rpc-server", "--port", str(port), "--threads", str(threads)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "serving at" in log.read_text():
            time.sleep(0.5)  # the C loop listens right after the message
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"rpc-server on port {port} exited: {log.read_text()}")
        time.sleep(0.2)
    raise SystemExit(f"rpc-server on port {port} did not start: {log.read_text()}")


def run(model: Path, tokens: int, threads: int, rpc: str | None, env: dict) -> dict:
    cmd = [*LOCALLLM, "run", "-m", str(model), "--temperature", "0", "--max-tokens", str(tokens)]
    cmd += ["--ignore-eos", "--threads", str(threads), "--ctx", "2048", "--json"]
    if rpc:
        cmd += ["--rpc", rpc, "--verbose"]  # llama.cpp's log says which buffers went to which worker
    done = subprocess.run([*cmd, PROMPT], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return {"result": json.loads(done.stdout), "stderr": done.stderr}


def serve_reply(model: Path, threads: int, rpc: str, env: dict, tokens: int) -> str:
    """One greedy chat completion from ``localllm serve --rpc`` (the reply's text)."""
    import urllib.request

    port = free_port()
    cmd = [*LOCALLLM, "serve", "--port", str(port), "-m", str(model), "--threads", str(threads), "--rpc", rpc]
    proc = subprocess.Popen([*cmd, "--parallel", "1", "--ctx", "2048"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                break
        else:
            raise SystemExit(f"localllm serve --rpc did not start ({proc.wait()})")
        body = {
            "model": str(model),
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0,
            "max_tokens": tokens,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="GGUF file (default: the suite's SmolLM2-135M Q4_1)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per run (default 64)")
    ap.add_argument("--reps", type=int, default=3, help="runs per setting (default 3)")
    ap.add_argument(
        "--threads",
        default="1,2",
        help="threads of the local runs, comma-separated (default 1,2; the RPC run's own threads: the last)",
    )
    ap.add_argument("--worker-threads", type=int, default=1, help="threads of each worker (default 1)")
    args = ap.parse_args()
    model = args.model or default_model()
    threads = [int(t) for t in args.threads.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
        env = {**os.environ, "LOCALLLM_HOME": tmp}  # loads.jsonl and the rest stay out of the user's store
        ports = [free_port(), free_port()]
        workers = [start_worker(p, args.worker_threads, Path(tmp) / f"worker{p}.log") for p in ports]
        rpc = ",".join(f"127.0.0.1:{p}" for p in ports)
        try:
            hw = subprocess.run([*LOCALLLM, "hw", "--rpc", rpc], capture_output=True, text=True, env=env, timeout=120)
            if hw.returncode != 0:
                raise SystemExit(f"localllm hw --rpc {rpc} failed: {hw.stderr.strip()}")
            print(f"$ localllm hw --rpc {rpc}")
            print("\n".join(line for line in hw.stdout.splitlines() if "RPC" in line or "budget" in line))
            rows = {}
            settings = [(f"local, {t} thread{'s' if t > 1 else ''}", None, t) for t in threads]
            for label, via, n in [*settings, ("2 RPC workers", rpc, threads[-1])]:
                rows[label] = [run(model, args.tokens, n, via, env) for _ in range(args.reps)]
            served_reply = serve_reply(model, threads[-1], rpc, env, args.tokens)
            for p in workers:
                p.terminate()
            for p in workers:
                p.wait(timeout=30)
            logs = {p: (Path(tmp) / f"worker{p}.log").read_text() for p in ports}
        finally:
            for p in workers:
                if p.poll() is None:
                    p.kill()

    local = [r for label, runs in rows.items() if label.startswith("local") for r in runs]
    remote = rows["2 RPC workers"]
    print(f"\nmodel: {model.name}, {args.tokens} tokens generated greedily (--ignore-eos), "
          f"local threads {args.threads}, worker threads {args.worker_threads}, medians of {args.reps} runs")  # fmt: skip
    print(f"{'':<18} {'load s':>8} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for label, runs in rows.items():
        stats = [r["result"]["stats"] for r in runs]
        load = statistics.median(s["load_s"] for s in stats)
        pp = statistics.median(s["prompt_tokens_per_s"] for s in stats)
        tg = statistics.median(s["tokens_per_s"] for s in stats)
        print(f"{label:<18} {load:>8.2f} {pp:>13.1f} {tg:>10.1f}")
    lines = remote[0]["stderr"].splitlines()
    notices = [line for line in lines if line.startswith("RPC worker")]
    buffers = [line.split(":", 1)[-1].strip() for line in lines if re.search(r"RPC\d+.*buffer size =", line)]
    print("\n" + "\n".join(notices))
    print("llama.cpp's buffers on the workers (first RPC run):\n  " + "\n  ".join(buffers or ["none"]))
    served = [p for p, text in logs.items() if text.count("Accepted client connection") > args.reps]
    print(f"workers that served every run: {len(served)} of 2")
    same = all(r["result"]["reply"] == local[0]["result"]["reply"] for r in local + remote)
    print(f"replies identical to the local greedy run: {'yes' if same else 'NO'}")
    if not same:
        print("local:", json.dumps(local[0]["result"]["reply"]))
        print("rpc:  ", json.dumps(remote[0]["result"]["reply"]))
    # serve stops at the end of the reply where run --ignore-eos goes on: the same text up to there.
    serve_ok = bool(served_reply) and local[0]["result"]["reply"].startswith(served_reply)
    print(f"localllm serve --rpc, greedy chat completion: {'the same reply' if serve_ok else 'DIFFERENT'}")
    if not serve_ok:
        print("serve:", json.dumps(served_reply))
    return 0 if same and serve_ok and len(served) == 2 and buffers else 1


if __name__ == "__main__":
    sys.exit(main())
