"""`localllm serve` against llama.cpp's own llama-server, and against `localllm batch`.

    .venv/bin/python benchmarks/bench_serve.py [--model FILE] [--threads N] [--slots 8] [--rounds 2]
                                               [--clients 1,8,32] [--ntg 32] [--overhead-reps 20]

Both servers run the same model file with the same threads and the same number of slots (llama-server
`-np SLOTS -c SLOTS*CTX --no-kv-unified`, localllm `serve --parallel SLOTS --ctx CTX`) on 127.0.0.1;
both stay up and the measurements alternate between them over --rounds (figures are the mean).

1. Aggregate generation tok/s with 1, 8 and 32 concurrent streaming clients: each client sends one
   chat completion (its own prompt, greedy, `ignore_eos`, --ntg tokens) through /v1/chat/completions
   with "stream": true; tok/s = all generated tokens / wall time from the first request to the last
   byte. Time to first token: mean over the clients of the time from sending to the first content
   chunk (reported for every row; the issue's target is at 8 clients).
2. The same prompts through `localllm batch --parallel SLOTS` (its summary's generated tok/s).
3. Overhead of a request: the median wall time of a 1-token completion (a short prompt, sequential
   requests, after a warm-up), localllm minus llama-server.

The llama-server binary is the one benchmarks/build_llama_bench.sh builds from llama-cpp-python's
vendored llama.cpp (.bench/bin/llama-server, or $LLAMA_BENCH_BIN).
"""

from __future__ import annotations

import argparse
import asyncio
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("LLAMA_BENCH_BIN", ROOT / ".bench" / "bin"))
if not (BIN / "llama-server").exists() and Path("/work/main/.bench/bin/llama-server").exists():
    BIN = Path("/work/main/.bench/bin")
CTX = 512  # tokens per slot


def smollm2() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompts(n: int, tag: int = 0) -> list[str]:
    """``n`` prompts that no earlier run sent (``tag`` differs per run, at the start of each): both
    servers keep a prompt cache, so a prompt sent twice would be mostly read from it."""
    return [f"Story {tag}.{i}: write a short story about a robot named Unit {i} who learns to paint." for i in range(n)]


# -- the two servers -------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, command: list[str], port: int, env: dict | None = None) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        # Logs go to a file: a pipe nobody reads would block the server once full.
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self.log, text=True, env={**os.environ, **(env or {})}
        )
        deadline = time.monotonic() + 300
        while True:
            assert self.process.poll() is None, f"{name} exited (see its log)"
            try:
                # /health: llama-server answers /v1/models while its model still loads
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{name} did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.send_signal(2)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def repack_flags() -> list[str]:
    """llama-server's weight repacking as localllm sets it: off where the build uses AMX (whose
    matmul segfaults on some CPUs, llama.cpp #20824; llama-server itself crashes there without it)."""
    from localllm import runtime

    return ["--no-repack"] if runtime.build_has_amx() else []


def llama_server(model: Path, threads: int, slots: int) -> Server:
    port = free_port()
    return Server(
        "llama-server",
        [
            str(BIN / "llama-server"),
            "-m",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-np",
            str(slots),
            "-c",
            str(slots * CTX),
            "-b",
            "512",
            "-ub",
            "512",
            "--no-webui",
            "--no-kv-unified",
            "-fa",
            "auto",
            *repack_flags(),
        ],
        port,
    )


def localllm_server(model: Path, threads: int, slots: int, home: str) -> Server:
    port = free_port()
    return Server(
        "localllm serve",
        [
            sys.executable,
            "-m",
            "localllm",
            "serve",
            "-m",
            str(model),
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--parallel",
            str(slots),
            "--ctx",
            str(CTX),
            "--keep-alive",
            "-1",
        ],
        port,
        env={"LOCALLLM_HOME": home},
    )


# -- clients ---------------------------------------------------------------------------------------


async def stream_one(client: httpx.AsyncClient, url: str, prompt: str, ntg: int) -> tuple[float, int]:
    """(seconds to the first content chunk, tokens generated) for one streamed chat completion."""
    body = {
        "model": "",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": ntg,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as answer:
        answer.raise_for_status()
        async for line in answer.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - sent
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first or 0.0, tokens


async def concurrent(url: str, n: int, ntg: int, tag: int = 0) -> dict:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n + 4)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, url, p, ntg) for p in prompts(n, tag)))
        wall = time.perf_counter() - started
    tokens = sum(t for _, t in results)
    return {
        "clients": n,
        "tokens": tokens,
        "wall_s": wall,
        "tok_s": tokens / wall,
        "ttft_s": statistics.mean(f for f, _ in results),
    }


def one_token_ms(url: str, reps: int) -> float:
    body = {"model": "", "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    times = []
    with httpx.Client(timeout=120) as client:
        for i in range(reps + 2):
            started = time.perf_counter()
            client.post(url + "/v1/completions", json=body).raise_for_status()
            if i >= 2:  # two warm-ups
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def batch_rate(model: Path, threads: int, slots: int, n: int, ntg: int, home: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text(
            "".join(
                json.dumps({"id": i, "prompt": p, "max_tokens": ntg, "temperature": 0, "ignore_eos": True}) + "\n"
                for i, p in enumerate(prompts(n))
            )
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "localllm",
                "batch",
                "-m",
                str(model),
                str(src),
                "-o",
                str(Path(tmp) / "out.jsonl"),
                "--parallel",
                str(slots),
                "--ctx",
                str(CTX),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "LOCALLLM_HOME": home},
            check=True,
        )
    return float(re.search(r"([\d.]+) tok/s generated", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the test suite's SmolLM2-135M Q4_1)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--ntg", type=int, default=32, help="tokens each client generates")
    parser.add_argument("--overhead-reps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (figures are their mean)")
    args = parser.parse_args()
    model = args.model or smollm2()
    counts = [int(c) for c in args.clients.split(",")]
    print(
        f"model: {model.name}, threads: {args.threads}, slots: {args.slots}, ctx per slot: {CTX}, "
        f"{args.ntg} tokens per client (greedy, ignore_eos)",
        flush=True,
    )

    # Both servers stay up (an idle one uses no CPU) and the measurements alternate between them,
    # round after round, so that load from elsewhere on a shared machine hits both alike.
    runs: dict[str, dict[int, list[dict]]] = {
        "llama-server": {n: [] for n in counts},
        "localllm serve": {n: [] for n in counts},
    }
    latency: dict[str, list[float]] = {"llama-server": [], "localllm serve": []}
    with tempfile.TemporaryDirectory() as home:
        servers = [
            llama_server(model, args.threads, args.slots),
            localllm_server(model, args.threads, args.slots, home),
        ]
        try:
            for server in servers:
                asyncio.run(concurrent(server.url, 2, 4))  # warm-up
            for round_ in range(args.rounds):
                for n in counts:
                    # Each round the other server goes first, so that neither always follows the other.
                    for server in servers if round_ % 2 == 0 else servers[::-1]:
                        tag = round_ * 1000 + n  # the same new prompts for both servers
                        run = asyncio.run(concurrent(server.url, n, args.ntg, tag))
                        runs[server.name][n].append(run)
                        print(
                            f"  round {round_ + 1}, {n} clients, {server.name}: {run['tok_s']:.1f} tok/s,"
                            f" TTFT {run['ttft_s'] * 1000:.0f} ms",
                            flush=True,
                        )
                for server in servers:
                    latency[server.name].append(one_token_ms(server.url, args.overhead_reps))
        finally:
            for server in servers:
                server.stop()
        batch = {n: batch_rate(model, args.threads, args.slots, n, args.ntg, home) for n in counts}

    rows = {
        name: {n: {k: statistics.mean(r[k] for r in results[n]) for k in ("tok_s", "ttft_s")} for n in counts}
        for name, results in runs.items()
    }
    overhead = {name: statistics.median(values) for name, values in latency.items()}
    ref, ours = rows["llama-server"], rows["localllm serve"]
    print(
        f"\n{'clients':>7} {'llama-server tok/s':>19} {'serve tok/s':>12} {'ratio':>7} {'batch tok/s':>12}"
        f" {'llama-server TTFT':>18} {'serve TTFT':>11} {'ratio':>6}"
    )
    for n in counts:
        a, b = ref[n], ours[n]
        print(
            f"{n:>7} {a['tok_s']:>19.2f} {b['tok_s']:>12.2f} {b['tok_s'] / a['tok_s']:>6.1%} {batch[n]:>12.2f}"
            f" {a['ttft_s'] * 1000:>15.0f} ms {b['ttft_s'] * 1000:>8.0f} ms {b['ttft_s'] / a['ttft_s']:>5.2f}x"
        )
    extra = overhead["localllm serve"] - overhead["llama-server"]
    print(
        f"\n1-token completion, median over {args.rounds} rounds of medians of {args.overhead_reps}: llama-server {overhead['llama-server']:.1f} ms, "
        f"localllm serve {overhead['localllm serve']:.1f} ms, overhead {extra:+.1f} ms"
    )


if __name__ == "__main__":
    main()
