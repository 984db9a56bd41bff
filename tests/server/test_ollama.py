"""The Ollama API, through the official ``ollama`` client, against the real SmolLM2."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import pytest
from support.serving import MODEL, QUESTION


def client(server) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=120)


def test_chat_streams_the_reply_then_the_counts(serve):
    server = serve()
    parts = list(
        client(server).chat(model=MODEL, messages=QUESTION, stream=True, options={"temperature": 0, "num_predict": 40})
    )
    assert len(parts) > 3
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    text = "".join(p.message.content for p in parts)
    assert "Paris" in text
    last = parts[-1]
    assert last.done_reason in ("stop", "length")
    assert last.prompt_eval_count > 5 and 0 < last.eval_count <= 40
    whole = client(server).chat(
        model=MODEL, messages=QUESTION, stream=False, options={"temperature": 0, "num_predict": 40}
    )
    assert whole.message.content == text
    assert whole.message.role == "assistant"


def test_generate_answers_a_prompt_with_the_chat_template(serve):
    server = serve()
    reply = client(server).generate(
        model=MODEL,
        prompt=QUESTION[0]["content"],
        stream=False,
        options={"temperature": 0, "num_predict": 40, "seed": 1},
    )
    assert "Paris" in reply.response
    assert reply.done and reply.eval_count <= 40
    streamed = "".join(
        p.response
        for p in (
            client(server).generate(
                model=MODEL, prompt=QUESTION[0]["content"], stream=True, options={"temperature": 0, "num_predict": 40}
            )
        )
    )
    assert streamed == reply.response


def test_stream_defaults_to_true_as_newline_delimited_json(serve):
    server = serve()
    answer = httpx.post(
        server.url + "/api/generate",
        timeout=120,
        json={"model": MODEL, "prompt": "Hi", "options": {"temperature": 0, "num_predict": 5}},
    )
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert len(lines) == 6 and lines[-1]["done"] and lines[-1]["eval_count"] == 5


def test_stop_and_num_predict_are_honoured(serve):
    server = serve()
    short = client(server).generate(
        model=MODEL, prompt="Count to ten.", stream=False, options={"temperature": 0, "num_predict": 3}
    )
    assert short.eval_count == 3 and short.done_reason == "length"


def test_sampling_options_reach_the_sampler(serve):
    """Ollama's repeat_penalty (its default is 1.1), min_p and top_k through /api/chat: the
    penalties sampler is built and greedy decoding with a penalty differs from without (issue 20)."""
    server = serve()
    story = [{"role": "user", "content": "Write the word 'cat' ten times."}]

    def reply(**options) -> str:
        answer = client(server).chat(
            model=MODEL, messages=story, stream=False, options={"temperature": 0, "num_predict": 30, **options}
        )
        assert answer.done and answer.eval_count > 0
        return answer.message.content

    plain = reply()
    assert reply(repeat_penalty=1.0, min_p=0.0, top_k=40) == plain
    assert reply(repeat_penalty=1.1) != plain
    assert reply(repeat_penalty=1.1, top_k=1, min_p=0.5) == reply(repeat_penalty=1.1)


def test_format_json_gives_a_json_object(serve):
    server = serve()
    reply = client(server).chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        format="json",
        stream=False,
        options={"temperature": 0, "num_predict": 60},
    )
    assert isinstance(json.loads(reply.message.content), dict)


def test_tags_show_and_ps_describe_the_models(serve):
    server = serve()
    api = client(server)
    tags = api.list()
    assert [m.model for m in tags.models] == [MODEL]
    assert tags.models[0].details.family == "llama"
    assert tags.models[0].details.quantization_level == "Q4_1"
    assert tags.models[0].size > 50_000_000
    shown = api.show(MODEL)
    assert "im_start" in shown.template  # SmolLM2's ChatML template, from the GGUF
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.details.parameter_size.endswith("M")
    assert api.ps().models == []  # nothing loaded yet
    api.generate(model=MODEL, prompt="Hi", options={"num_predict": 1}, stream=False)
    running = api.ps().models
    assert [m.model for m in running] == [MODEL]
    assert running[0].expires_at is not None


def test_keep_alive_zero_unloads_the_model_when_done(serve):
    server = serve()
    api = client(server)
    api.generate(model=MODEL, prompt="Hi", options={"num_predict": 1}, stream=False, keep_alive=0)
    for _ in range(200):  # the unloading thread runs at once; give it a moment on a busy machine
        if not api.ps().models:
            break
        time.sleep(0.05)
    assert api.ps().models == []


def test_a_model_not_installed_is_an_error_with_the_pull_command(serve):
    server = serve()
    with pytest.raises(ollama.ResponseError) as caught:
        client(server).chat(model="qwen3-0.6b", messages=QUESTION)
    assert caught.value.status_code == 404
    assert "localllm pull qwen3-0.6b" in caught.value.error


def test_embed_gives_one_unit_vector_per_text(serve):
    server = serve()
    answer = client(server).embed(model=MODEL, input=["The cat sat on the mat.", "Revenue rose."])
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) == 576
    assert abs(sum(x * x for x in answer.embeddings[0]) - 1.0) < 1e-3
    legacy = client(server).embeddings(model=MODEL, prompt="The cat sat on the mat.")
    assert legacy.embedding == pytest.approx(answer.embeddings[0], abs=1e-5)


def test_root_and_version_answer_as_ollama_does(serve):
    server = serve()
    assert httpx.get(server.url + "/").text == "localllm is running"
    assert httpx.get(server.url + "/api/version").json()["version"]
