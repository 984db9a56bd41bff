"""Multi-turn chat through `localllm serve`: time to first token as the conversation grows (issue 28).

    .venv/bin/python benchmarks/bench_serve_chat.py [--model FILE] [--threads N] [--turns 20]
                                                    [--baseline-src DIR] [--llama-server]

A client holds a conversation: each turn it sends the whole history plus a new user message of about
100 tokens through /v1/chat/completions (streaming, greedy, 48 tokens generated with ignore_eos), so
the prompt grows by about 150 tokens a turn, as chat clients resend it. Reported per turn 1, 5, 10, 20:
the prompt tokens, the server's cached tokens (usage.prompt_tokens_details.cached_tokens) and the time
to the first content chunk.

"before": the same requests (the conversation's prompts at those turns, built from the "after" run's
answers) to a server started from the sources in --baseline-src (a tree without the prompt cache, e.g.
`git archive df3ad6b localllm models.toml | tar -x -C .bench/base`); with a cold server each prompt is read whole,
so only the measured turns are sent. --llama-server also runs llama.cpp's server (cache_prompt on).

--agent: an agent loop instead: 10 calls that share a system prompt of about 2,500 tokens (the
agent's instructions and its tool list, as JSON text so that both servers render the same prompt),
each adding the last call's answer and a tool result of about 60 tokens, as an agent framework
resends them. Reported: each call's prompt and cached tokens, and the total time of the 10 calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import BIN, Server, free_port, repack_flags, smollm2

CTX = 4096
MEASURED = (1, 5, 10, 20)
TOPICS = ["harbours", "glaciers", "printing", "orchards", "clocks", "lighthouses", "bridges", "salt", "silk", "maps"]


def user_message(turn: int) -> str:
    topic = TOPICS[turn % len(TOPICS)]
    return (
        f"Turn {turn}. I am writing notes about {topic} for a small local museum and I would like your help. "
        f"Please describe how {topic} changed the lives of ordinary people over the last three centuries, "
        f"which inventions mattered most, what a visitor should look for in an old photograph of {topic}, "
        "and which simple words a child would understand. Keep the tone friendly, avoid lists, and write "
        "in plain sentences that a volunteer guide could read aloud in front of a group of visitors."
    )


def tool_list() -> str:
    """An agent's instructions and 12 tools as JSON schemas: 2,541 tokens of system prompt (SmolLM2)."""
    tools = []
    for n, topic in enumerate(TOPICS + ["tides", "kilns"]):
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": f"search_{topic}_archive",
                    "description": f"Search the museum's archive of {topic}: catalogue entries, photographs, "
                    f"letters and maps about {topic}, newest first. Use it before answering any question about "
                    f"{topic}, and quote the catalogue number of each item you use.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "query": {"type": "string", "description": f"words to look for in the {topic} archive"},
                            "decade": {"type": "integer", "description": "only items from this decade, e.g. 1890"},
                            "limit": {"type": "integer", "description": f"at most this many items (default {n + 3})"},
                        },
                        "required": ["query"],
                    },
                },
            }
        )
    return (
        "You are the museum's research agent. Answer visitors' questions from the archives only. To call a "
        'tool, reply with one line of JSON: {"tool": NAME, "arguments": {...}}. After each tool result, '
        "either call another tool or answer in plain sentences. Never invent a catalogue number.\n\n"
        "Tools:\n" + json.dumps(tools, indent=1)
    )


def agent_loop(url: str, calls: int, ntg: int) -> tuple[float, list[dict]]:
    """(total seconds, a row per call) of an agent loop of ``calls`` requests sharing the system prompt."""
    messages: list[dict] = [
        {"role": "system", "content": tool_list()},
        {"role": "user", "content": "Which inventions changed the harbours most, and is there a photograph of one?"},
    ]
    rows = []
    with httpx.Client(timeout=600) as client:
        ask(client, url, [{"role": "user", "content": "Hello."}], 4)  # warm-up: the model loads on demand
        started = time.perf_counter()
        for call in range(1, calls + 1):
            ttft, answer, usage = ask(client, url, messages, ntg)
            rows.append(row(ttft, usage))
            messages.append({"role": "assistant", "content": answer})
            topic = TOPICS[call % len(TOPICS)]
            messages.append(
                {
                    "role": "user",
                    "content": f"Tool result (search_{topic}_archive): 3 items. HA-{call}01: a steam crane on the "
                    f"north quay, photograph, 1894. HA-{call}02: a letter from the harbour master about the new "
                    f"lighthouse lamp, 1902. HA-{call}03: a map of the dredged channel with depths in fathoms, 1911.",
                }
            )
        total = time.perf_counter() - started
    return total, rows


def show_agent(name: str, total: float, rows: list[dict]) -> None:
    prompts = ", ".join(f"{r['prompt']}/{r['cached']}" for r in rows)
    print(f"{name:<22} agent loop: {len(rows)} calls in {total:.2f} s; prompt/cached tokens per call: {prompts}")


def ask(client: httpx.Client, url: str, messages: list[dict], ntg: int) -> tuple[float, str, dict]:
    """(seconds to the first content chunk, the answer, usage) of one streamed chat completion."""
    body = {
        "model": "",
        "messages": messages,
        "max_tokens": ntg,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": True,
    }
    sent = time.perf_counter()
    first, text, usage = None, [], {}
    # a connection per request: llama-server drops a kept-alive connection between streamed requests
    # now and then ("Server disconnected without sending a response"); both servers get the same
    with client.stream("POST", url + "/v1/chat/completions", json=body, headers={"Connection": "close"}) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    if first is None:
                        first = time.perf_counter() - sent
                    text.append(piece)
            if chunk.get("usage"):
                usage = chunk["usage"]
    return first or 0.0, "".join(text), usage


def converse(url: str, turns: int, ntg: int) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """Rows per measured turn, and the messages sent at each measured turn."""
    messages: list[dict] = [{"role": "system", "content": "You are a helpful museum assistant."}]
    rows, sent = {}, {}
    with httpx.Client(timeout=600) as client:
        ask(client, url, [{"role": "user", "content": "Hello."}], 4)  # warm-up: the model loads on demand
        for turn in range(1, turns + 1):
            messages.append({"role": "user", "content": user_message(turn)})
            ttft, answer, usage = ask(client, url, messages, ntg)
            if turn in MEASURED:
                rows[turn] = row(ttft, usage)
                sent[turn] = [dict(m) for m in messages]
            messages.append({"role": "assistant", "content": answer})
    return rows, sent


def replay(url: str, sent: dict[int, list[dict]], ntg: int) -> dict[int, dict]:
    with httpx.Client(timeout=600) as client:
        ask(client, url, sent[min(sent)], 4)  # warm-up
        out = {}
        for turn, messages in sent.items():
            ttft, _, usage = ask(client, url, messages, ntg)
            out[turn] = row(ttft, usage)
    return out


def row(ttft: float, usage: dict) -> dict:
    details = usage.get("prompt_tokens_details") or {}
    return {"prompt": usage.get("prompt_tokens", 0), "cached": details.get("cached_tokens", 0), "ttft_s": ttft}


def localllm(model: Path, threads: int, home: str, src: Path | None = None) -> Server:
    port = free_port()
    env = {"LOCALLLM_HOME": home}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    # -P: the current directory (this checkout) does not come before PYTHONPATH's tree.
    command = [sys.executable, "-P", "-m", "localllm", "serve", "-m", str(model), "--port", str(port)]
    command += ["--threads", str(threads), "--parallel", "1", "--ctx", str(CTX), "--keep-alive", "-1"]
    return Server("localllm serve" + (" (baseline)" if src else ""), command, port, env=env)


def llama_server(model: Path, threads: int) -> Server:
    port = free_port()
    command = [str(BIN / "llama-server"), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-t", str(threads), "-tb", str(threads), "-np", "1", "-c", str(CTX), "--no-webui", *repack_flags()]
    return Server("llama-server", command, port)


def show(name: str, rows: dict[int, dict]) -> None:
    first = rows[min(rows)]["ttft_s"] or 1e-9
    for turn, r in rows.items():
        print(
            f"{name:<22} turn {turn:>2}: prompt {r['prompt']:>5} cached {r['cached']:>5}"
            f"  ttft {r['ttft_s'] * 1000:8.0f} ms  ({r['ttft_s'] / first:.2f}x turn {min(rows)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--ntg", type=int, default=48)
    parser.add_argument("--baseline-src", type=Path, help="a localllm source tree without the prompt cache")
    parser.add_argument("--llama-server", action="store_true")
    parser.add_argument("--agent", action="store_true", help="an agent loop of 10 calls instead of a chat")
    parser.add_argument("--rounds", type=int, default=1, help="--agent: alternating rounds of both servers")
    args = parser.parse_args()
    model = args.model or smollm2()
    if args.agent:
        with tempfile.TemporaryDirectory() as home:
            for _ in range(args.rounds):
                for name, start in [("localllm serve", lambda: localllm(model, args.threads, home))] + (
                    [("llama-server", lambda: llama_server(model, args.threads))] if args.llama_server else []
                ):
                    server = start()
                    try:
                        show_agent(name, *agent_loop(server.url, 10, args.ntg))
                    except httpx.HTTPError:
                        server.log.seek(0)
                        print(server.log.read()[-4000:], f"exit code {server.process.poll()}", file=sys.stderr)
                        raise
                    finally:
                        server.stop()
        print(f"model {model.name}, threads {args.threads}, ctx {CTX}, {os.cpu_count()} CPUs")
        return
    with tempfile.TemporaryDirectory() as home:
        server = localllm(model, args.threads, home)
        try:
            after, sent = converse(server.url, args.turns, args.ntg)
        finally:
            server.stop()
        show("after (prompt cache)", after)
        if args.baseline_src is not None:
            server = localllm(model, args.threads, home, args.baseline_src.resolve())
            try:
                show("before (no cache)", replay(server.url, sent, args.ntg))
            finally:
                server.stop()
        if args.llama_server:
            server = llama_server(model, args.threads)
            try:
                show("llama-server", converse(server.url, args.turns, args.ntg)[0])
            finally:
                server.stop()
    print(f"model {model.name}, threads {args.threads}, ctx {CTX}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
