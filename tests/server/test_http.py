"""What the server does at the HTTP level, whatever the client: body limits, malformed requests,
CORS, a full queue, a client that goes away, the access log."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from support.serving import MODEL, QUESTION

from localllm.app.serving import ServeOptions, parse_keep_alive
from localllm.server.app import ServerSettings

CHAT = "/v1/chat/completions"
LONG = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]  # greedy: a long reply


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_a_body_over_the_limit_is_refused_with_413(serve):
    server = serve(settings=ServerSettings(max_body=4096))
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 10_000}]}
    answer = httpx.post(server.url + CHAT, json=big)
    assert answer.status_code == 413
    assert "larger than" in answer.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit holds for a chunked body too
        for _ in range(10):
            yield b" " * 1000

    assert httpx.post(server.url + "/api/chat", content=chunks()).status_code == 413


def test_the_default_body_limit_is_8_mib(serve):
    server = serve()
    answer = httpx.post(
        server.url + CHAT, content=b" " * (8 << 20) + b"{}", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413


def test_malformed_json_is_a_400_with_an_openai_error_object(serve):
    server = serve()
    answer = httpx.post(
        server.url + CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]
    for bad in (b"[]", b"NaN", b'{"messages": "hi"}', b"[" * 100_000):
        answer = httpx.post(server.url + CHAT, content=bad)
        assert answer.status_code == 400, bad[:20]
        assert answer.json()["error"]["message"]


def test_ollama_routes_answer_errors_in_ollamas_shape(serve):
    server = serve()
    answer = httpx.post(server.url + "/api/chat", content=b"{oops")
    assert answer.status_code == 400
    assert isinstance(answer.json()["error"], str)
    answer = httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "options": {"top_p": 7}})
    assert answer.status_code == 400 and "options.top_p" in answer.json()["error"]


def test_sampling_fields_have_the_limits_of_every_other_surface(serve):
    """One schema (issue 20): each API's field is checked as run's flag is, and a bad value is a 400
    naming the field as that API spells it."""
    server = serve()
    for field, value, flag in [
        ("top_k", -100, "--top-k"),
        ("max_completion_tokens", -3, "--max-tokens"),
        ("min_p", 2, "--min-p"),
        ("seed", 1.5, "--seed"),
    ]:
        answer = httpx.post(server.url + CHAT, json={"model": MODEL, "messages": QUESTION, field: value})
        assert answer.status_code == 400, field
        error = answer.json()["error"]
        assert error["param"] == field and error["message"].startswith(f"'{field}' must be a ")
        assert error["message"].split(" must be ")[1] == cli_message(flag, value).split(" must be ")[1]
    for field, value in [("num_predict", -3), ("repeat_penalty", 11), ("num_ctx", 8)]:  # num_ctx 8: was taken
        body = {"model": MODEL, "messages": QUESTION, "stream": False, "options": {field: value}}
        answer = httpx.post(server.url + "/api/chat", json=body)
        assert answer.status_code == 400 and answer.json()["error"].startswith(f"'options.{field}' must be a "), field


def cli_message(flag: str, value: object) -> str:
    from localllm.app.options import OPTIONS, OptionError

    [option] = [o for o in OPTIONS.values() if o.flag == flag]
    try:
        option.check(value)
    except OptionError as exc:
        return exc.message
    raise AssertionError(f"{flag} {value} was accepted")


def test_unknown_paths_and_methods_are_json_errors(serve):
    server = serve()
    answer = httpx.get(server.url + "/v1/nothing")
    assert answer.status_code == 404 and answer.json()["error"]["message"]
    assert httpx.get(server.url + CHAT).status_code == 405


def test_no_cors_headers_unless_an_origin_is_allowed(serve):
    origin = {"Origin": "http://app.example"}
    closed = serve()
    answer = httpx.get(closed.url + "/v1/models", headers=origin)
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(closed.url + CHAT, headers=preflight).headers

    opened = serve(settings=ServerSettings(cors=("http://app.example",), api_key="k"))
    answer = httpx.options(opened.url + CHAT, headers={**preflight, "Access-Control-Request-Headers": "authorization"})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    answer = httpx.get(opened.url + "/v1/models", headers={**origin, "Authorization": "Bearer k"})
    assert answer.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.get(opened.url + "/v1/models", headers={"Origin": "http://evil.example", "Authorization": "Bearer k"})
    assert "access-control-allow-origin" not in other.headers


def test_the_api_key_guards_every_api_route_but_not_the_root(serve):
    server = serve(settings=ServerSettings(api_key="k"))
    assert httpx.get(server.url + "/").status_code == 200
    for method, path in (("GET", "/api/tags"), ("POST", "/api/chat"), ("GET", "/v1/models"), ("POST", CHAT)):
        answer = httpx.request(method, server.url + path, json={})
        assert answer.status_code == 401, path
    assert httpx.get(server.url + "/api/tags", headers={"Authorization": "Bearer k"}).status_code == 200


def test_a_full_queue_answers_503_with_retry_after(serve):
    server = serve(ServeOptions(n_parallel=1, n_ctx_seq=512, queue_size=0))
    body = {"model": MODEL, "messages": LONG, "temperature": 0, "max_tokens": 200, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + CHAT, json=body, timeout=120) as first:
        lines = first.iter_lines()  # kept: a line iterator that is dropped closes the response
        next(lines)  # the one sequence is running
        busy = httpx.post(server.url + CHAT, json={**body, "stream": False}, timeout=120)
        assert busy.status_code == 503
        assert int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["message"]


def test_a_client_that_goes_away_frees_its_sequence_at_once(serve):
    server = serve(ServeOptions(n_parallel=1, n_ctx_seq=512, queue_size=0))
    # No max_tokens: uncancelled, the reply would fill the context (about 480 tokens, seconds).
    body = {"model": MODEL, "messages": LONG, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + CHAT, json=body, timeout=120) as first:
        lines = first.iter_lines()
        for _ in range(3):
            next(lines)
        assert server.manager.running()[0].active == 1
    # The connection is closed: its sequence is cancelled within about a second, so the one slot
    # takes the next request (with no queue, a busy slot would answer 503).
    wait_until(lambda: server.manager.running()[0].active == 0, timeout=1.5)
    reply = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120).chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=4
    )
    assert reply.usage.completion_tokens == 4
    first_line = next(line for line in server.log_lines() if "(cancelled)" in line)
    assert first_line.startswith(f"POST {CHAT} model={MODEL}")
    assert int(first_line.split("generated=")[1].split()[0]) < 200


def test_a_client_that_gives_up_on_a_whole_reply_cancels_it_too(serve):
    server = serve(ServeOptions(n_parallel=1, n_ctx_seq=512, queue_size=0))
    body = {"model": MODEL, "messages": LONG, "temperature": 0, "max_tokens": 450, "ignore_eos": True}
    server.manager.load(MODEL)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + CHAT, json=body, timeout=1.0)  # the client hangs up after a second
    wait_until(lambda: any("(cancelled)" in line for line in server.log_lines()))
    assert server.manager.running()[0].active == 0
    line = server.log_lines()[-1]
    assert int(line.split("generated=")[1].split()[0]) < 450


def test_each_request_logs_one_line_with_model_tokens_speed_status_and_time(serve):
    server = serve()
    httpx.post(
        server.url + CHAT, timeout=120, json={"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 6}
    )
    httpx.get(server.url + "/v1/models")
    httpx.post(server.url + CHAT, content=b"{")
    wait_until(lambda: len(server.log_lines()) >= 3)  # written once the last byte has gone out
    lines = server.log_lines()
    assert len(lines) == 3
    chat, models, bad = lines
    assert chat.startswith(f"POST {CHAT} model={MODEL} prompt=")
    assert "generated=6 (length)" in chat and "tok/s 200 " in chat and chat.endswith(" ms")
    assert models.startswith("GET /v1/models ") and " 200 " in models
    assert bad.startswith(f"POST {CHAT} ") and " 400 " in bad


def test_sixteen_concurrent_greedy_streams_each_get_the_text_they_get_alone(serve):
    server = serve(ServeOptions(n_parallel=4, n_ctx_seq=256))
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)
    prompts = [f"Write one sentence about the number {n}." for n in range(16)]

    def ask(prompt: str) -> str:
        stream = api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=8, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    alone = [ask(p) for p in prompts]
    together: list[str | None] = [None] * len(prompts)

    def run(i: int) -> None:
        together[i] = ask(prompts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    assert len(set(alone)) > 8  # different prompts, different replies


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("5m", 300.0),
        ("30s", 30.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (0, 0.0),
        ("0", 0.0),
        (90, 90.0),
        (-1, float("inf")),
        ("-1", float("inf")),
        ("-5m", float("inf")),
    ],
)
def test_keep_alive_reads_ollamas_durations(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", True, None, [], "1d"])
def test_keep_alive_refuses_anything_else(value):
    with pytest.raises(ValueError):
        parse_keep_alive(value)


def test_a_bad_keep_alive_is_a_400(serve):
    server = serve()
    answer = httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "keep_alive": "soon"})
    assert answer.status_code == 400 and "keep_alive" in json.dumps(answer.json())


def _broken_start(error: Exception):
    def start(request):  # fault injection: the manager fails as a bug or llama.cpp would
        raise error

    return start


def test_a_bug_answers_500_without_its_stack_and_the_log_keeps_the_whole_traceback(serve, monkeypatch):
    server = serve()
    monkeypatch.setattr(server.manager, "start", _broken_start(RuntimeError("a bug in the server")))
    answer = httpx.post(server.url + CHAT, json={"model": MODEL, "messages": QUESTION})
    assert answer.status_code == 500
    message = answer.json()["error"]["message"]
    assert message == "internal server error (see the server's log)"
    deadline = time.monotonic() + 10  # the access line is written after the answer is sent
    while "POST /v1/chat/completions" not in server.log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log.getvalue()
    assert "Traceback (most recent call last)" in log
    assert "in start" in log and "RuntimeError: a bug in the server" in log  # the frame that raised
    assert log.index("RuntimeError") < log.index("POST /v1/chat/completions")  # logged before its access line


@pytest.mark.parametrize("debug", [False, True])
def test_serve_debug_logs_the_traceback_of_a_core_error_answered_500(serve, monkeypatch, debug):
    from localllm.errors import ModelLoadError

    server = serve(settings=ServerSettings(debug=debug))
    failure = ModelLoadError("llama.cpp could not load the model", hint="see the log with --verbose")
    monkeypatch.setattr(server.manager, "start", _broken_start(failure))
    answer = httpx.post(server.url + "/api/chat", json={"model": MODEL, "messages": QUESTION, "stream": False})
    assert answer.status_code == 500
    assert answer.json() == {"error": "llama.cpp could not load the model (see the log with --verbose)"}
    log = server.log.getvalue()
    assert ("Traceback (most recent call last)" in log) == debug
    assert ("ModelLoadError: llama.cpp could not load the model" in log) == debug
