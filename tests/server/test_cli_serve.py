"""``localllm serve`` as a user runs it: a real process, stopped with Ctrl-C (SIGINT) mid-stream."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys

import httpx
from support.serving import MODEL, QUESTION
from support.signals import default_sigint


def test_ctrl_c_lets_the_stream_in_flight_finish_then_exits_0(installed_starter):
    """Also: it listens on 127.0.0.1 by default, and LOCALLLM_API_KEY requires the key."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localllm",
            "serve",
            "--port",
            "0",
            "-m",
            MODEL,
            "--parallel",
            "1",
            "--ctx",
            "256",
            "--grace",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOCALLLM_API_KEY": "k"},
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite ignores SIGINT
    )
    try:
        banner = ""
        while "Ctrl-C" not in banner:
            line = process.stderr.readline()
            assert line, f"the server stopped before listening: {banner}"
            banner += line
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner).group(1)
        assert f'base_url="{url}/v1"' in banner and f"OLLAMA_HOST={url}" in banner

        assert httpx.get(url + "/v1/models").status_code == 401  # LOCALLLM_API_KEY asks for the key

        body = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 12, "stream": True}
        events: list[str] = []
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, timeout=300, headers={"Authorization": "Bearer k"}
        ) as answer:
            lines = answer.iter_lines()
            events.append(next(lines))
            process.send_signal(signal.SIGINT)  # Ctrl-C while the reply streams
            events += list(lines)
        code = process.wait(timeout=120)
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    data = [e.removeprefix("data: ") for e in events if e.startswith("data: ")]
    assert data[-1] == "[DONE]"
    last = json.loads(data[-2])
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    assert last["usage"]["completion_tokens"] >= 1
    assert code == 0, stderr
    assert "stopped" in stderr and "Traceback" not in stderr
    assert "POST /v1/chat/completions model=" in stderr  # the request's log line


def test_a_port_in_use_is_one_clear_error(installed_starter):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "localllm", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        taken.close()
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_model_that_is_not_installed(installed_starter):
    result = subprocess.run(
        [sys.executable, "-m", "localllm", "serve", "-m", "qwen3-0.6b"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "localllm pull qwen3-0.6b" in result.stderr


def test_a_bad_cache_ram_size_is_one_clear_error(installed_starter):
    result = subprocess.run(
        [sys.executable, "-m", "localllm", "serve", "--cache-ram", "lots"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "--cache-ram: not a memory size: 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
