"""Operations: ``/health`` as load balancers probe it, ``/metrics`` as Prometheus scrapes it (read
with prometheus_client's own text parser), against the real SmolLM2."""

from __future__ import annotations

import threading

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families
from support.serving import MODEL, QUESTION

from localllm.app.serving import ServeOptions
from localllm.fit import hardware
from localllm.server.app import ServerSettings


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_health_is_ok_before_any_model_loads_and_needs_no_key(serve):
    server = serve(settings=ServerSettings(api_key="secret"))
    for path in ("/health", "/v1/health"):
        response = httpx.get(f"{server.url}{path}", timeout=30)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401  # the metrics name models
    assert "localllm_requests_total" in {name for name, _ in scrape(server.url, authorization="Bearer secret")}


def test_health_is_an_error_with_the_reason_when_the_last_load_failed(serve):
    tiny = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=50 << 20, vram=0)
    server = serve(hardware=tiny)
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    try:
        api.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    except openai.APIStatusError as exc:
        assert exc.status_code >= 400
    response = httpx.get(f"{server.url}/health", timeout=30)
    assert response.status_code == 500
    body = response.json()
    assert body["status"] == "error"
    assert MODEL in body["error"]["message"] and "fit" in body["error"]["message"]
    samples = scrape(server.url)
    assert samples[("localllm_model_load_failures_total", ())] == 1
    assert samples[("localllm_model_loads_total", ())] == 0


def test_health_says_loading_while_the_first_model_loads(serve):
    server = serve()
    seen: list[int] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            seen.append(httpx.get(f"{server.url}/health", timeout=30).status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        server.manager.load(MODEL)
    finally:
        done.set()
        prober.join()
    assert httpx.get(f"{server.url}/health", timeout=30).json() == {"status": "ok"}
    assert 503 in seen  # the load takes long enough for a probe to land in it


def test_metrics_count_requests_tokens_first_token_time_slots_and_loads(serve):
    server = serve(options=ServeOptions(n_ctx_seq=1024, n_parallel=2))
    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120)
    replies = [
        api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=12) for _ in range(2)
    ]
    httpx.get(f"{server.url}/no/such/path", timeout=30)
    samples = scrape(server.url)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    route = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value("localllm_requests_total", **route) == 2
    assert value("localllm_requests_total", route="other", method="GET", status="404") == 1
    assert value("localllm_prompt_tokens_total", model=MODEL) == sum(r.usage.prompt_tokens for r in replies)
    generated = sum(r.usage.completion_tokens for r in replies)
    assert value("localllm_generated_tokens_total", model=MODEL) == generated
    seconds = value("localllm_generation_seconds_total", model=MODEL)
    assert seconds > 0 and value("localllm_tokens_per_second", model=MODEL) > 0
    assert value("localllm_time_to_first_token_seconds_count", model=MODEL) == 2
    first = value("localllm_time_to_first_token_seconds_sum", model=MODEL)
    assert first > 0
    assert value("localllm_time_to_first_token_seconds_bucket", model=MODEL, le="+Inf") == 2
    assert value("localllm_slots_total", model=MODEL) == 2
    assert value("localllm_slots_busy", model=MODEL) == 0
    assert value("localllm_queue_depth", model=MODEL) == 0
    assert value("localllm_models_loaded") == 1
    assert value("localllm_model_loads_total") == 1
    assert value("localllm_model_unloads_total") == 0
    server.manager.load(MODEL, keep_alive_s=0)  # 0: unload when done
    samples = scrape(server.url)
    assert value("localllm_model_unloads_total") == 1
    assert value("localllm_models_loaded") == 0


def test_metrics_show_busy_slots_and_the_queue_while_replies_run(serve):
    server = serve(options=ServeOptions(n_ctx_seq=512, n_parallel=1))
    server.manager.load(MODEL)
    long = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]
    body = {"model": MODEL, "messages": long, "temperature": 0, "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as first:
            lines = first.iter_lines()  # kept: a line iterator that is dropped closes the response
            next(lines)  # the first reply is decoding in the only slot
            with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as second:
                assert second.status_code == 200  # accepted, waiting for the slot
                samples = scrape(server.url)
                assert samples[("localllm_slots_busy", (("model", MODEL),))] == 1
                assert samples[("localllm_queue_depth", (("model", MODEL),))] == 1
