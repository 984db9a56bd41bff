"""``localllm run`` with a reasoning model (the real SmolLM2 given a Qwen 3 style template that
opens ``<think>`` for it): the thinking is shown dimmed on a terminal, apart from the answer, as
``ollama run`` shows it; a pipe and ``--json``'s ``reply`` get the answer alone."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys

import pytest
from support.thinking import thinking_model

from localllm.runtime import LoadOptions, Model

ASK = "What is the capital of France?"
DIM, RESET = "\x1b[2m", "\x1b[0m"


@pytest.fixture(scope="module")
def thinking_path(smollm2_path, tmp_path_factory):
    return thinking_model(smollm2_path, tmp_path_factory.mktemp("thinking") / "thinking.gguf")


def run_json(cli, path, *extra: str) -> dict:
    result = cli("run", "-m", str(path), "--temperature", "0", "-n", "40", "--json", *extra, ASK)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def on_a_terminal(*args: str, timeout: float = 180) -> tuple[int, str]:
    """Run ``localllm ARGS`` with stdout on a pseudo-terminal (stdin and stderr not); what it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                raise AssertionError("no output in time")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: the process ended
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        rc = proc.wait(timeout=timeout)
    return rc, out.decode("utf-8", "replace").replace("\r\n", "\n")


def test_json_has_the_reasoning_apart_and_the_budget_caps_it(cli, thinking_path):
    capped = run_json(cli, thinking_path, "--reasoning-budget", "3")
    assert capped["reasoning"] and "<think>" not in capped["reply"] and "</think>" not in capped["reply"]
    assert capped["reply"].strip()  # the budget closed the thinking: the answer came
    assert not capped["reply"].startswith(capped["reasoning"])
    with Model(thinking_path, LoadOptions(n_ctx=256)) as model:
        assert len(model.tokenize(capped["reasoning"], add_special=False, parse_special=False)) <= 3
    free = run_json(cli, thinking_path)
    # left alone the model thinks and stops: all it wrote is reasoning, none of it is the reply
    assert free["reasoning"].startswith(capped["reasoning"]) and len(free["reasoning"]) > len(capped["reasoning"])
    assert free["reasoning"] not in free["reply"]
    off = run_json(cli, thinking_path, "--no-think")  # enable_thinking=false: the template skips it
    assert off["reasoning"] == "" and off["reply"].strip()


def test_a_pipe_gets_the_answer_alone(cli, thinking_path):
    expected = run_json(cli, thinking_path, "--reasoning-budget", "3")
    piped = cli("run", "-m", str(thinking_path), "--temperature", "0", "-n", "40", "--reasoning-budget", "3", ASK)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == expected["reply"] + ("" if expected["reply"].endswith("\n") else "\n")
    assert "Thinking" not in piped.stdout and "Thinking" not in piped.stderr and DIM not in piped.stdout


def test_a_terminal_shows_the_thinking_dimmed_before_the_answer(cli, thinking_path):
    expected = run_json(cli, thinking_path, "--reasoning-budget", "3")
    args = ("run", "-m", str(thinking_path), "--temperature", "0", "-n", "40", "--reasoning-budget", "3", ASK)
    rc, shown = on_a_terminal(*args)
    assert rc == 0, shown
    # everything between "Thinking..." and "...done thinking." is dimmed: the thoughts
    start, end = shown.index(f"{DIM}Thinking...{RESET}\n"), shown.index(f"\n{DIM}...done thinking.{RESET}\n\n")
    between = shown[start + len(f"{DIM}Thinking...{RESET}\n") : end]
    assert between.startswith(DIM) and between.endswith(RESET)
    assert between.replace(DIM, "").replace(RESET, "") == expected["reasoning"]
    answer = shown[end + len(f"\n{DIM}...done thinking.{RESET}\n\n") :]
    assert DIM not in answer and answer.strip() == expected["reply"].strip()  # then the answer, plain
    rc, hidden = on_a_terminal(*args, "--hide-thinking")
    assert rc == 0 and "Thinking" not in hidden and DIM not in hidden
    assert hidden.strip() == expected["reply"].strip()
