"""More conversations than sequences: `localllm serve --parallel 1` with and without its RAM prompt
cache (--cache-ram), and llama-server -np 1 (whose --cache-ram is on by default) (issue 28).

    .venv/bin/python benchmarks/bench_serve_ram_cache.py [--model FILE] [--threads N]
                                                         [--chats 3] [--turns 6] [--ntg 32]

--chats conversations take turns on one sequence: chat 1's turn 1, chat 2's turn 1, ..., chat 1's
turn 2, and so on, each turn resending the whole conversation plus a new user message of about 100
tokens (streaming, greedy, ignore_eos), as chat clients do. Every turn's request lands on a sequence
whose cells hold another conversation. Reported per server: the mean time to first token of turns
2 and later, and the prompt and cached tokens of the last round (usage.prompt_tokens_details).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import BIN, Server, free_port, repack_flags, smollm2
from bench_serve_chat import ask, user_message

CTX = 4096


def localllm(model: Path, threads: int, home: str, cache_ram: str) -> Server:
    command = [sys.executable, "-m", "localllm", "serve", "-m", str(model), "--port", str(port := free_port())]
    command += ["--threads", str(threads), "--parallel", "1", "--ctx", str(CTX), "--keep-alive", "-1"]
    command += ["--cache-ram", cache_ram]
    return Server(f"localllm serve --cache-ram {cache_ram}", command, port, env={"LOCALLLM_HOME": home})


def llama_server(model: Path, threads: int) -> Server:
    command = [str(BIN / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(port := free_port())]
    command += ["-t", str(threads), "-tb", str(threads), "-np", "1", "-c", str(CTX), "--no-webui", *repack_flags()]
    return Server("llama-server -np 1", command, port)


def take_turns(url: str, chats: int, turns: int, ntg: int) -> tuple[float, list[dict]]:
    """(mean TTFT of turns 2.., usage of each chat's last turn)."""
    history = [[{"role": "system", "content": f"You are museum assistant number {c}."}] for c in range(chats)]
    ttfts, last = [], []
    with httpx.Client(timeout=600) as client:
        ask(client, url, [{"role": "user", "content": "Hello."}], 4)  # warm-up
        for turn in range(1, turns + 1):
            last = []
            for c, messages in enumerate(history):
                messages.append({"role": "user", "content": user_message(turn * 10 + c)})
                ttft, answer, usage = ask(client, url, messages, ntg)
                messages.append({"role": "assistant", "content": answer})
                if turn > 1:
                    ttfts.append(ttft)
                last.append(usage)
    return statistics.mean(ttfts), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chats", type=int, default=3)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--ntg", type=int, default=32)
    args = parser.parse_args()
    model = args.model or smollm2()
    print(
        f"model {model.name}, threads {args.threads}, {args.chats} chats taking turns on one sequence, {args.turns} turns each"
    )
    print(f"\n{'server':<30} {'mean TTFT, turns 2+':>20} {'last round: prompt / cached tokens':>36}")
    with tempfile.TemporaryDirectory() as home:
        for start in (
            lambda: localllm(model, args.threads, home, "0"),
            lambda: localllm(model, args.threads, home, "1G"),
            lambda: llama_server(model, args.threads),
        ):
            server = start()
            try:
                mean, last = take_turns(server.url, args.chats, args.turns, args.ntg)
            finally:
                server.stop()
            tokens = ", ".join(
                f"{u.get('prompt_tokens', 0)} / {(u.get('prompt_tokens_details') or {}).get('cached_tokens', 0)}"
                for u in last
            )
            print(f"{server.name:<30} {mean * 1000:>17.0f} ms {tokens:>36}", flush=True)


if __name__ == "__main__":
    main()
