"""Issue 23: serve loads LoRA adapters once with the base and applies them per request (llama-server's
``lora`` field, or a ``base+adapter`` model name), with the real SmolLM2 and suite-made adapters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from support.serving import MODEL

from localllm import runtime
from localllm.app.serving import ServeOptions
from tests.support.lora import write_lora

MAX_TOKENS = 24
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]  # the adapters change this reply


@pytest.fixture
def adapters(smollm2_path, tmp_path):
    a = write_lora(tmp_path / "alpha.gguf", smollm2_path, seed=1)
    b = write_lora(tmp_path / "beta.gguf", smollm2_path, seed=2, targets=("attn_k", "ffn_up"), magnitude=0.08)
    return a, b


def single_process(base, *specs) -> str:
    """The greedy reply of a model loaded on its own with ``specs`` applied."""
    with runtime.Model(base, runtime.LoadOptions(n_ctx=1024, n_threads=2, adapters=specs)) as m:
        return m.chat(QUESTION, runtime.SamplingOptions(temperature=0, max_tokens=MAX_TOKENS)).read()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def ask(server, model=MODEL, **extra) -> openai.types.chat.ChatCompletion:
    return client(server).chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=MAX_TOKENS, extra_body=extra or None
    )


def test_concurrent_requests_with_different_adapters_each_match_a_model_of_their_own(serve, smollm2_path, adapters):
    a, b = adapters
    expected = {
        "base": single_process(smollm2_path),
        "alpha": single_process(smollm2_path, runtime.AdapterSpec(a)),
        "beta": single_process(smollm2_path, runtime.AdapterSpec(b)),
    }
    assert len(set(expected.values())) == 3
    server = serve(
        ServeOptions(
            n_ctx_seq=1024,
            n_parallel=3,
            adapters=(runtime.AdapterSpec(a, 0.0, "alpha"), runtime.AdapterSpec(b, 0.0, "beta")),
        )
    )
    ask(server)  # loaded once, before the concurrent requests
    calls = {
        "alpha": lambda: ask(server, model=f"{MODEL}+alpha"),
        "beta": lambda: ask(server, lora=[{"id": 1, "scale": 1.0}]),
        "base": lambda: ask(server),
    }
    for _ in range(2):
        with ThreadPoolExecutor(3) as pool:
            futures = {k: pool.submit(call) for k, call in calls.items()}
            replies = {k: f.result() for k, f in futures.items()}
        assert {k: r.choices[0].message.content for k, r in replies.items()} == expected
    assert replies["alpha"].model == f"{MODEL}+alpha" and replies["beta"].model == MODEL
    assert server.manager.counters().loads == 1


def test_models_and_tags_list_each_base_with_its_adapters(serve, smollm2_path, adapters, tmp_path):
    a, _ = adapters
    other = write_lora(tmp_path / "qwen.gguf", smollm2_path, arch="qwen2", layers=[0])
    server = serve(
        ServeOptions(
            n_ctx_seq=1024,
            n_parallel=2,
            adapters=(runtime.AdapterSpec(a, 0.0, "alpha"), runtime.AdapterSpec(other, 0.0, "qwen")),
        )
    )
    assert [m.id for m in client(server).models.list()] == [MODEL, f"{MODEL}+alpha"]
    tags = httpx.get(f"{server.url}/api/tags").json()["models"]
    assert [t["name"] for t in tags] == [MODEL, f"{MODEL}+alpha"]
    assert tags[1]["details"] == tags[0]["details"]


def test_bad_lora_fields_are_bad_requests(serve, adapters):
    a, _ = adapters
    server = serve(ServeOptions(n_ctx_seq=1024, n_parallel=2, adapters=(runtime.AdapterSpec(a, 0.0, "alpha"),)))
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 2}
    for lora, says in [
        ("alpha", "'lora' must be a list"),
        ([{"id": 3, "scale": 1}], "lora id 3 is not an adapter of this model (1 loaded)"),
        ([{"id": 0, "scale": 1e9}], "'lora' scales must be numbers"),
        ([{"id": "gamma", "scale": 1}], "no LoRA adapter named 'gamma'"),
    ]:
        response = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "lora": lora}, timeout=120)
        assert response.status_code == 400, response.text
        assert says in response.text
    ok = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "lora": [{"id": 0, "scale": 0.5}]}, timeout=120)
    assert ok.status_code == 200
