"""``localllm batch --endpoint``: the lines of a job answered by real ``localllm serve`` servers on
127.0.0.1 (with the real SmolLM2), servers killed mid-job, a rate-limiting gateway in front of one,
and the batch itself killed and resumed."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from support.serving import MODEL, serve  # noqa: F401 - the fixture

from localllm.app.serving import ServeOptions
from localllm.batch import remote
from localllm.errors import UsageError
from localllm.server.app import ServerSettings


def lines_of(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def read_records(path: Path) -> list[dict]:
    data = path.read_text()
    assert data == "" or data.endswith("\n"), "the output ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def counting_lines(n: int, max_tokens: int = 24) -> str:
    return lines_of(
        *(
            {"id": f"r{i}", "prompt": f"Count from 1 to {i + 3}.", "max_tokens": max_tokens, "ignore_eos": True}
            for i in range(n)
        )
    )


def batch_command(src: Path, out: Path, *endpoints: str, extra: tuple[str, ...] = ()) -> list[str]:
    urls = [arg for url in endpoints for arg in ("--endpoint", url)]
    return [sys.executable, "-m", "localllm", "batch", str(src), "-o", str(out), "-m", MODEL, *urls, *extra]


def start_serve_process(*extra: str) -> tuple[subprocess.Popen, str]:
    """A real ``localllm serve`` process on a free port of 127.0.0.1, and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "localllm", "serve", "--port", "0", "-m", MODEL, "--ctx", "256", "--threads", "1"]
        + list(extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    banner = ""
    while "Ctrl-C" not in banner:
        line = process.stderr.readline()
        if not line:
            process.kill()
            raise AssertionError(f"the server stopped before listening: {banner}")
        banner += line
    url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner).group(1)
    # Drain its log so a full pipe never blocks it.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, url


@pytest.fixture
def serve_process(installed_starter):
    started: list[subprocess.Popen] = []

    def start(*extra: str) -> tuple[subprocess.Popen, str]:
        process, url = start_serve_process(*extra)
        started.append(process)
        return process, url

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 180, also: str = "") -> None:
    """Until ``out`` holds ``n`` lines (one of them containing ``also``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        data = out.read_bytes() if out.exists() else b""
        if data.count(b"\n") >= n and also.encode() in data:
            return
        time.sleep(0.02)
    assert proc.poll() is None, f"the batch ended before {n} lines were answered: {proc.communicate()}"
    raise AssertionError(f"fewer than {n} lines answered in {timeout} s")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- two servers, one killed mid-job; the batch killed and resumed ------------------------------


def test_a_server_killed_mid_job_is_drained_onto_the_other_and_every_id_is_answered_once(serve_process, tmp_path):
    (_, url_a), (b, url_b) = serve_process("--parallel", "2"), serve_process("--parallel", "2")
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    # Enough lines that the survivor is still busy when the killed server has failed the 4 times
    # (0.25 s, 0.5 s, 1 s backoffs) that put it down: the job cannot end before it says so.
    ids = [f"r{i}" for i in range(20)]
    src.write_text(counting_lines(len(ids)))
    batch = subprocess.Popen(
        batch_command(src, out, url_a, url_b, extra=("--parallel", "2")),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    label_a, label_b = url_a.removeprefix("http://"), url_b.removeprefix("http://")
    try:
        wait_for_lines(out, 3, batch, also=f'"endpoint": "{label_b}"')
        b.send_signal(signal.SIGKILL)  # two of its lines are in flight
        _, stderr = batch.communicate(timeout=300)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert batch.returncode == 0, stderr
    records = read_records(out)
    assert sorted(r["id"] for r in records) == sorted(ids)  # each once: none lost, none twice
    assert all(r["text"] and r["completion_tokens"] == 24 for r in records)
    assert {r["endpoint"] for r in records} == {label_a, label_b}  # both answered before the kill
    assert re.search(rf"{re.escape(label_b)} is down \(\w+Error: .*\); its lines go to the others", stderr)
    assert "20 done, 0 errors" in stderr
    assert re.search(rf"{re.escape(label_a)}: \d+ lines, \d+ tokens generated, [\d.]+ lines/s", stderr)

    # The batch itself killed mid-job: the rerun finishes the rest, answering no id twice.
    out2 = tmp_path / "out2.jsonl"
    command = batch_command(src, out2, url_a, extra=("--parallel", "2", "--quiet"))
    killed = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_lines(out2, 2, killed)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
    first = read_records(out2)
    assert 2 <= len(first) < len(ids)
    again = subprocess.run(command[:-1], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    records = read_records(out2)
    assert records[: len(first)] == first
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert f"{len(ids) - len(first)} done, 0 errors, {len(first)} skipped" in again.stderr


def test_every_endpoint_down_stops_with_one_line_and_exit_4_and_the_rerun_goes_on(serve_process, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(counting_lines(4, max_tokens=4))
    dead = closed_port_url()
    down = subprocess.run(batch_command(src, out, dead), capture_output=True, text=True, timeout=120)
    assert down.returncode == 4, down.stderr
    error_lines = [line for line in down.stderr.splitlines() if line.startswith("localllm: error:")]
    assert len(error_lines) == 1 and "every endpoint is down" in error_lines[0]
    assert "ConnectError" in error_lines[0]
    assert "run the same command when a server is back" in down.stderr
    assert "Traceback" not in down.stderr
    assert read_records(out) == []

    _, url = serve_process()
    back = subprocess.run(batch_command(src, out, url), capture_output=True, text=True, timeout=300)
    assert back.returncode == 0, back.stderr
    assert sorted(r["id"] for r in read_records(out)) == ["r0", "r1", "r2", "r3"]


# -- one in-process server: errors, keys, 429s ---------------------------------------------------


@pytest.fixture
def server(serve):
    return serve(ServeOptions(n_ctx_seq=256, n_parallel=2, n_threads=1))


def test_lines_a_server_refuses_are_error_records_and_the_rest_run(server, cli, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    src.write_text(
        lines_of(
            {"id": "fine", "prompt": "Say hi.", "max_tokens": 4},
            {"id": "long", "prompt": "word " * 600, "max_tokens": 4},  # longer than the server's context
            {"id": "wat", "prompt": "Say no.", "json_schema": {"type": "wat"}},  # no grammar for it
            "broken",
            {"id": "json", "prompt": "Is the sky blue? Answer in JSON.", "json_schema": schema, "max_tokens": 16},
            {"id": "docs", "prompt": "When do I bake?", "docs": "notes"},  # a collection of this machine
        )
    )
    # No -m: each line goes to the first model the server lists.
    result = cli("batch", str(src), "-o", str(out), "--endpoint", server.url + "/v1")
    assert result.returncode == 3, result.stderr
    assert "4 of 6 lines failed" in result.stderr
    records = {r["id"]: r for r in read_records(out) if r["id"] is not None}
    assert "text" in records["fine"]
    label = server.url.removeprefix("http://")
    assert records["long"]["line"] == 2 and records["long"]["error"].startswith(f"{label} answered 400: ")
    assert "context" in records["long"]["error"]
    assert records["wat"]["line"] == 3 and "400" in records["wat"]["error"]
    assert json.loads(records["json"]["text"])["ok"] in (True, False)  # the schema went as response_format
    assert records["docs"]["line"] == 6 and "local batch only" in records["docs"]["error"]  # never sent
    requests = [line for line in server.log_lines() if "POST /v1/chat/completions" in line]
    assert len(requests) == 4  # a refused line is not retried


def test_the_key_comes_from_the_environment_and_a_wrong_one_puts_the_endpoint_down(serve, cli, tmp_path):
    server = serve(ServeOptions(n_ctx_seq=256, n_parallel=1, n_threads=1), ServerSettings(api_key="sekrit"))
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(lines_of({"id": 1, "prompt": "Say hi.", "max_tokens": 4}))
    endpoints = tmp_path / "endpoints.txt"
    endpoints.write_text(f"# the lab's server\n{server.url}  parallel=1  key_env=LAB_KEY  # its own key\n")

    wrong = cli(
        "batch",
        str(src),
        "-o",
        str(out),
        "-m",
        MODEL,
        "--endpoint",
        server.url,
        env={"LOCALLLM_ENDPOINT_API_KEY": "nope"},
    )
    assert wrong.returncode == 4, wrong.stderr
    assert "answered 401" in wrong.stderr and "every endpoint is down" in wrong.stderr
    unset = cli("batch", str(src), "-o", str(out), "--endpoints", str(endpoints))
    assert unset.returncode == 2 and "key_env=LAB_KEY names an environment variable that is not set" in unset.stderr

    right = cli(
        "batch", str(src), "-o", str(out), "-m", MODEL, "--endpoints", str(endpoints), env={"LAB_KEY": "sekrit"}
    )
    assert right.returncode == 0, right.stderr
    assert [r["id"] for r in read_records(out)] == [1]


class RateLimitingGateway:
    """What an API gateway in front of a server does: at most ``allowed`` requests at once are
    forwarded to the real server upstream; the others get 429 with Retry-After."""

    def __init__(self, upstream: str, allowed: int = 1, broken_on: str | None = None) -> None:
        self.active = self.most = self.refused = self.forwarded = self.broken = 0
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if broken_on is not None and broken_on.encode() in body:  # a line the server fails on
                    with gateway.lock:
                        gateway.broken += 1
                    error = {"error": {"message": "internal server error", "type": "server_error"}}
                    self._send(500, json.dumps(error).encode(), {"Content-Type": "application/json"})
                    return
                with gateway.lock:
                    refuse = gateway.active >= allowed
                    if refuse:
                        gateway.refused += 1
                    else:
                        gateway.active += 1
                        gateway.most = max(gateway.most, gateway.active)
                if refuse:
                    error = {"error": {"message": "rate limit reached", "type": "rate_limit_error"}}
                    self._send(
                        429, json.dumps(error).encode(), {"Content-Type": "application/json", "Retry-After": "0"}
                    )
                    return
                try:
                    answer = httpx.post(
                        upstream + self.path, content=body, headers={"Content-Type": "application/json"}, timeout=300
                    )
                finally:
                    with gateway.lock:
                        gateway.active -= 1
                        gateway.forwarded += 1
                self._send(answer.status_code, answer.content, {"Content-Type": "application/json"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_endpoint_answering_429_gets_fewer_requests_at_once_and_every_line_completes(server, cli, tmp_path):
    gateway = RateLimitingGateway(server.url, allowed=1)
    try:
        src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        src.write_text(counting_lines(6, max_tokens=6))
        result = cli("batch", str(src), "-o", str(out), "-m", MODEL, "--endpoint", gateway.url, "--parallel", "4")
    finally:
        gateway.stop()
    assert result.returncode == 0, result.stderr
    assert sorted(r["id"] for r in read_records(out)) == [f"r{i}" for i in range(6)]
    label = gateway.url.removeprefix("http://")
    assert f"{label} answered 429: rate limit reached; sending it 2 at a time" in result.stderr
    assert f"{label} answered 429: rate limit reached; sending it 1 at a time" in result.stderr
    assert gateway.refused >= 2 and gateway.forwarded == 6 and gateway.most == 1


def test_a_line_the_server_fails_on_three_times_is_an_error_record_and_the_server_stays_up(server, cli, tmp_path):
    gateway = RateLimitingGateway(server.url, allowed=8, broken_on="POISON")
    try:
        src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        src.write_text(
            lines_of(
                {"id": "a", "prompt": "Say hi.", "max_tokens": 4},
                {"id": "p", "prompt": "POISON", "max_tokens": 4},
                {"id": "b", "prompt": "Say bye.", "max_tokens": 4},
                {"id": "c", "prompt": "Say yes.", "max_tokens": 4},
            )
        )
        result = cli("batch", str(src), "-o", str(out), "-m", MODEL, "--endpoint", gateway.url, "--parallel", "1")
    finally:
        gateway.stop()
    assert result.returncode == 3, result.stderr
    records = {r["id"]: r for r in read_records(out)}
    assert sorted(records) == ["a", "b", "c", "p"]
    assert records["p"]["line"] == 2
    assert records["p"]["error"].endswith("answered 500: internal server error (3 times; not retried)")
    assert gateway.broken == 3 and "is down" not in result.stderr


# -- the endpoints file and the options ----------------------------------------------------------


def test_an_endpoints_file_gives_urls_models_limits_and_key_variables():
    text = "\n".join(
        [
            "# servers of the lab",
            "http://10.0.0.2:8080",
            "  https://gpu.example.com/v1   model=qwen3-8b parallel=16 key_env=GPU_KEY  # the big one",
            "",
            "http://10.0.0.3:8000/openai/v1/ parallel=2",
        ]
    )
    specs = remote.parse_endpoints(text)
    assert [(s.url, s.model, s.parallel, s.key_env) for s in specs] == [
        ("http://10.0.0.2:8080", None, None, None),
        ("https://gpu.example.com/v1", "qwen3-8b", 16, "GPU_KEY"),
        ("http://10.0.0.3:8000/openai/v1/", None, 2, None),
    ]
    assert [s.base for s in specs] == [
        "http://10.0.0.2:8080/v1",
        "https://gpu.example.com/v1",
        "http://10.0.0.3:8000/openai/v1",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.2:8080", "is not an http:// or https:// URL"),
        ("http://10.0.0.2:80x", "port that is not a number"),
        ("http://a:1 parallel=0", "parallel= must be a whole number"),
        ("http://a:1 paralel=2", "is not one of model=NAME"),
        ("http://a:1\nhttp://a:1/v1", "is given twice"),
        ("# nothing here\n", "no endpoints given"),
    ],
)
def test_a_bad_endpoints_file_is_one_usage_error_naming_the_line(text, message):
    with pytest.raises(UsageError, match=message):
        remote.check_distinct(remote.parse_endpoints(text, "eps.txt"))


def test_local_only_options_are_refused_with_endpoints(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(lines_of({"id": 1, "prompt": "x"}))
    result = cli("batch", str(src), "--endpoint", "http://127.0.0.1:9", "--ctx", "512", "--threads", "2")
    assert result.returncode == 2
    assert "--ctx, --threads apply to a model loaded here, not to a batch over endpoints" in result.stderr
    bad = cli("batch", str(src), "--endpoint", "localhost:8080")
    assert bad.returncode == 2 and "is not an http:// or https:// URL" in bad.stderr
