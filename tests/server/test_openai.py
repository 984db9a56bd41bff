"""The OpenAI API, through the official ``openai`` client, against the real SmolLM2."""

from __future__ import annotations

import json

import openai
import pytest
from support.serving import MODEL, QUESTION

from localllm.app.serving import ServeOptions
from localllm.fit import hardware
from localllm.server.app import ServerSettings


def client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_chat_completion_answers_with_usage(serve):
    server = serve()
    reply = client(server).chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant"
    assert reply.model == MODEL
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_gives_the_same_text_and_usage_in_a_last_chunk(serve):
    server = serve()
    api = client(server)
    whole = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)
    chunks = list(
        api.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            temperature=0,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len(chunks) > 3  # streamed piece by piece, not in one go
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == []  # the usage comes in a chunk of its own, as OpenAI sends it
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    # The same prompt again: all of it but the last token comes from the prompt cache.
    assert whole.usage.prompt_tokens_details.cached_tokens == 0
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == whole.usage.prompt_tokens - 1


def test_two_conversations_on_one_sequence_take_turns_without_reading_again(serve):
    # Two chats on one sequence: each turn overwrites the other's cells; the RAM cache keeps them.
    # (SmolLM2's own system prompt begins both: the cells kept in the slot hold only that much.)
    chats = {
        name: [{"role": "user", "content": f"{opening} " * 6 + "Tell me more."}]
        for name, opening in (("sea", "The sea was calm that morning."), ("city", "Traffic filled every street."))
    }

    def turn(api, name):
        reply = api.chat.completions.create(model=MODEL, messages=chats[name], temperature=0, max_tokens=8)
        chats[name] += [{"role": "assistant", "content": reply.choices[0].message.content}]
        chats[name] += [{"role": "user", "content": "Go on."}]
        return reply.usage

    for cache_ram, reused in ((0, False), (64 << 20, True)):
        server = serve(ServeOptions(n_parallel=1, cache_ram=cache_ram))
        api = client(server)
        first = {name: turn(api, name) for name in ("sea", "city")}
        second = {name: turn(api, name) for name in ("sea", "city")}
        for name in chats:
            cached = second[name].prompt_tokens_details.cached_tokens
            assert (cached >= first[name].prompt_tokens) is reused, (cache_ram, name, cached)


def test_max_tokens_and_stop_are_honoured(serve):
    server = serve()
    api = client(server)
    short = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_completion_tokens=3)
    assert short.usage.completion_tokens == 3
    assert short.choices[0].finish_reason == "length"
    whole = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)
    cut = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40, stop=["Paris"])
    assert "Paris" in whole.choices[0].message.content
    assert cut.choices[0].message.content == whole.choices[0].message.content.split("Paris")[0]
    assert cut.choices[0].finish_reason == "stop"


def test_completion_continues_the_raw_prompt(serve):
    server = serve()
    api = client(server)
    done = api.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8)
    assert "Paris" in done.choices[0].text
    assert done.usage.completion_tokens <= 8
    streamed = api.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == done.choices[0].text


def test_the_same_seed_gives_the_same_sampled_reply(serve):
    server = serve()
    api = client(server)
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], temperature=1.0, max_tokens=12)
    first = api.chat.completions.create(seed=7, **ask).choices[0].message.content
    assert api.chat.completions.create(seed=7, **ask).choices[0].message.content == first


def test_models_lists_the_installed_models(serve):
    server = serve()
    assert [m.id for m in client(server).models.list()] == [MODEL]


def test_an_empty_model_name_uses_the_last_used_model(serve):
    server = serve()
    reply = client(server).chat.completions.create(model="", messages=QUESTION, temperature=0, max_tokens=4)
    assert reply.model == MODEL


def test_a_model_not_installed_is_not_found_with_the_pull_command(serve):
    server = serve()
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).chat.completions.create(model="qwen3-0.6b", messages=QUESTION)
    assert "localllm pull qwen3-0.6b" in caught.value.message
    assert caught.value.body["code"] == "model_not_found"


def test_a_model_that_cannot_fit_is_an_error_with_the_numbers(serve):
    tiny = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=50 << 20, vram=0)
    server = serve(hardware=tiny)
    with pytest.raises(openai.InternalServerError) as caught:
        client(server).chat.completions.create(model=MODEL, messages=QUESTION)
    assert "won't fit: needs" in caught.value.message
    assert caught.value.body["code"] == "model_does_not_fit"


def test_a_file_path_is_not_a_model_a_client_can_name(serve, smollm2_path):
    server = serve()
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model=str(smollm2_path), messages=QUESTION)


def test_a_prompt_longer_than_the_context_is_a_bad_request_with_both_numbers(serve):
    server = serve(ServeOptions(n_ctx_seq=256, n_parallel=1))
    long = [{"role": "user", "content": "Paris is in France. " * 80}]
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(model=MODEL, messages=long, max_tokens=4)
    n_ctx = server.manager.running()[0].n_ctx_seq
    message = caught.value.message
    assert f"context holds {n_ctx}" in message
    assert int(message.split("the prompt is ")[1].split()[0]) > n_ctx


def test_max_tokens_beyond_the_context_is_clamped_to_it(serve):
    server = serve(ServeOptions(n_ctx_seq=256, n_parallel=1))
    prompt = "a" + " a" * 239  # about 240 tokens: the context has room for a few more
    reply = client(server).completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=100_000)
    n_ctx = server.manager.running()[0].n_ctx_seq
    assert reply.usage.prompt_tokens < n_ctx
    assert reply.usage.prompt_tokens + reply.usage.completion_tokens == n_ctx
    assert reply.choices[0].finish_reason == "length"


def test_without_the_api_key_requests_are_refused(serve):
    server = serve(settings=ServerSettings(api_key="s3cret"))
    with pytest.raises(openai.AuthenticationError):
        client(server).models.list()
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").chat.completions.create(model=MODEL, messages=QUESTION)
    assert [m.id for m in client(server, key="s3cret").models.list()] == [MODEL]


def test_bad_fields_are_bad_requests_naming_the_field(serve):
    server = serve()
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(model=MODEL, messages=QUESTION, temperature="hot")
    assert caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(model=MODEL, messages=[])
    assert caught.value.body["param"] == "messages"


def test_json_schema_gives_json_that_matches(serve):
    server = serve()
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    reply = client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give the capital of France and its population as JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"city", "population"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


def test_json_object_gives_a_json_object(serve):
    server = serve()
    reply = client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_embeddings_are_unit_vectors_that_tell_texts_apart(serve):
    server = serve()
    texts = ["The cat sat on the mat.", "A cat was sitting on a mat.", "Quarterly revenue rose by four percent."]
    answer = client(server).embeddings.create(model=MODEL, input=texts)
    vectors = [d.embedding for d in answer.data]
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert len(vectors[0]) == 576  # SmolLM2-135M's embedding length
    for v in vectors:
        assert abs(sum(x * x for x in v) - 1.0) < 1e-3

    def similarity(a, b):
        return sum(x * y for x, y in zip(a, b))

    assert similarity(vectors[0], vectors[1]) > similarity(vectors[0], vectors[2])
    assert answer.usage.prompt_tokens > 10
    single = client(server).embeddings.create(model=MODEL, input="The cat sat on the mat.")
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)


def test_a_schema_that_cannot_be_a_grammar_is_a_bad_request(serve):
    server = serve()
    schema = {"type": "object", "properties": {"name": {"type": "string", "minLength": 5000}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    assert "minLength" in caught.value.message
