"""The prompt cache of serve's engine (issue 28): a request reuses the KV cells that a finished
sequence left in a free slot, for the prefix they share, with the real SmolLM2 model."""

from __future__ import annotations

import dataclasses

import pytest

from localllm import runtime

SYSTEM = (
    "You are a careful assistant for a small bakery. You answer questions about bread, opening hours, "
    "ingredients and allergies. Keep answers short, polite and factual. The bakery opens at seven and "
    "closes at six, every day but Sunday. It sells rye, spelt and wheat loaves, croissants and tarts."
)


@pytest.fixture(scope="module")
def model(smollm2_path):
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1)) as m:
        yield m


# llama.cpp's CPU kernels round differently with the number of tokens in a batch, so a prompt
# evaluated in two parts (cached + the rest) can flip a near-tie that one whole batch does not:
# the outputs compared here are short enough that SmolLM2 has no such tie in them.
def chat(model, question, key="q", max_tokens=10, **sampling):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    tokens = model.tokenize(model.render_chat(messages), add_special=False)
    options = runtime.SamplingOptions(**{"temperature": 0, "max_tokens": max_tokens, **sampling})
    return runtime.BatchRequest(key=key, tokens=tokens, sampling=options)


def result_of(engine, req):
    *_, result = list(engine.submit(req))
    assert isinstance(result, runtime.BatchResult)
    return result


def cold(model, req):
    with runtime.BatchEngine(model, 2, 512, n_threads=1, prompt_cache=False) as engine:
        result = result_of(engine, req)
    assert result.cached_tokens == 0
    return result.text


def test_a_shared_prefix_is_reported_cached_and_gives_the_cold_output(model):
    first, second = chat(model, "When do you open?"), chat(model, "Do you sell rye bread?")
    with runtime.BatchEngine(model, 2, 512, n_threads=1) as engine:
        a = result_of(engine, first)
        b = result_of(engine, second)
        again = result_of(engine, second)
    assert a.cached_tokens == 0
    shared = next(i for i, (x, y) in enumerate(zip(first.tokens, second.tokens, strict=False)) if x != y)
    assert shared > 60
    assert b.cached_tokens == shared
    assert again.cached_tokens == len(second.tokens) - 1  # one token is always evaluated again
    assert b.text == again.text == cold(model, second)


def test_a_follow_up_turn_reuses_the_whole_previous_exchange(model):
    first = chat(model, "When do you open?", max_tokens=12)
    with runtime.BatchEngine(model, 1, 512, n_threads=1) as engine:
        answer = result_of(engine, first)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "When do you open?"},
            {"role": "assistant", "content": answer.text},
            {"role": "user", "content": "And on Sunday?"},
        ]
        tokens = model.tokenize(model.render_chat(messages), add_special=False)
        follow = dataclasses.replace(first, tokens=tokens)
        got = result_of(engine, follow)
    assert got.cached_tokens >= len(first.tokens)
    assert got.text == cold(model, follow)


def test_sampling_settings_and_grammars_share_the_cells(model):
    plain = chat(model, "Do you sell rye bread?")
    grammar = 'root ::= "yes" | "no"'
    other = dataclasses.replace(chat(model, "Do you sell rye bread?", repeat_penalty=1.3), grammar=grammar)
    with runtime.BatchEngine(model, 1, 512, n_threads=1) as engine:
        result_of(engine, plain)
        got = result_of(engine, other)
    assert got.cached_tokens == len(other.tokens) - 1
    assert got.text in ("yes", "no")


def test_different_adapter_sets_never_share_cells(smollm2_path, tmp_path):
    from tests.support.lora import write_lora

    alpha = write_lora(tmp_path / "alpha.gguf", smollm2_path, seed=1)
    beta = write_lora(tmp_path / "beta.gguf", smollm2_path, seed=2)
    specs = (runtime.AdapterSpec(alpha, 0.0), runtime.AdapterSpec(beta, 0.0))
    options = runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1, adapters=specs)
    with runtime.Model(smollm2_path, options) as model:
        base = chat(model, "Do you sell rye bread?")
        one = dataclasses.replace(base, key="a", adapters=[("alpha", 1.0)])
        two = dataclasses.replace(base, key="b", adapters=[("beta", 1.0)])
        with runtime.BatchEngine(model, 1, 512, n_threads=1) as engine:
            assert result_of(engine, one).cached_tokens == 0
            assert result_of(engine, two).cached_tokens == 0  # the same tokens, another adapter set
            assert result_of(engine, base).cached_tokens == 0
            assert result_of(engine, base).cached_tokens == len(base.tokens) - 1


def test_a_request_goes_to_the_slot_with_the_longest_shared_prefix(model):
    bakery = chat(model, "When do you open?")
    other = runtime.BatchRequest(
        key="o",
        tokens=model.tokenize("Once upon a time, in a land far away,", add_special=True),
        sampling=bakery.sampling,
    )
    with runtime.BatchEngine(model, 2, 512, n_threads=1) as engine:
        result_of(engine, bakery)  # slot 0
        result_of(engine, other)  # the least recently used slot: 1, slot 0 keeps the bakery
        got = result_of(engine, chat(model, "Is there spelt?"))
    assert got.cached_tokens > 60


def test_a_cancelled_sequence_leaves_a_usable_cache(model):
    long = chat(model, "Tell me everything about your bread.", max_tokens=None, ignore_eos=True)
    with runtime.BatchEngine(model, 1, 512, n_threads=1) as engine:
        stream = engine.submit(long)
        next(iter(stream))
        stream.cancel()
        list(stream)
        question = chat(model, "Do you sell rye bread?")
        got = result_of(engine, question)
    assert got.cached_tokens > 60
    assert got.text == cold(model, question)
