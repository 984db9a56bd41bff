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


# -- the RAM cache: cells of a prompt whose slot another request took --------------------------


SAMPLING = runtime.SamplingOptions(temperature=0, max_tokens=4)


def other_story(model, sampling):
    text = "Once upon a time, in a land far away, there lived a baker who never slept. " * 2
    return runtime.BatchRequest(key="o", tokens=model.tokenize(text, add_special=True), sampling=sampling)


def test_a_conversation_that_lost_its_slot_is_put_back_from_ram(model):
    bakery = chat(model, "When do you open?", max_tokens=8)
    story = other_story(model, bakery.sampling)
    follow = chat(model, "Is there spelt?", max_tokens=8)
    shared = next(i for i, (x, y) in enumerate(zip(bakery.tokens, follow.tokens, strict=False)) if x != y)
    with runtime.BatchEngine(model, 1, 512, n_threads=1, cache_ram=64 << 20) as engine:
        result_of(engine, bakery)
        assert result_of(engine, story).cached_tokens == 0  # the one slot now holds the story
        got = result_of(engine, follow)
        store = engine._session.ram_cache
        assert store is not None and store.hits == 1 and store.tokens_restored == shared
        back_again = result_of(engine, story)  # the story was saved in turn when the bakery came back
    assert got.cached_tokens == shared
    assert got.text == cold(model, follow)
    assert back_again.cached_tokens == len(story.tokens) - 1
    assert back_again.text == cold(model, story)


def test_without_ram_cache_the_lost_prefix_is_evaluated_again(model):
    bakery = chat(model, "When do you open?", max_tokens=8)
    story = other_story(model, bakery.sampling)
    with runtime.BatchEngine(model, 1, 512, n_threads=1) as engine:
        result_of(engine, bakery)
        result_of(engine, story)
        assert engine._session.ram_cache is None
        assert result_of(engine, chat(model, "Is there spelt?", max_tokens=8)).cached_tokens == 0


def test_the_ram_cache_holds_no_more_than_its_limit(model):
    bakery = chat(model, "When do you open?", max_tokens=8)
    story = other_story(model, bakery.sampling)
    with runtime.BatchEngine(model, 1, 512, n_threads=1, cache_ram=1 << 20) as engine:  # < one prompt's cells
        result_of(engine, bakery)
        result_of(engine, story)
        store = engine._session.ram_cache
        assert store is not None and len(store) == 0 and store.size == 0
        assert result_of(engine, chat(model, "Is there spelt?", max_tokens=8)).cached_tokens == 0


def test_an_adapter_set_never_restores_another_sets_cells(smollm2_path, tmp_path):
    from tests.support.lora import write_lora

    alpha = write_lora(tmp_path / "alpha.gguf", smollm2_path, seed=1)
    options = runtime.LoadOptions(
        n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1, adapters=(runtime.AdapterSpec(alpha, 0.0),)
    )
    with runtime.Model(smollm2_path, options) as model:
        base = chat(model, "When do you open?", max_tokens=4)
        story = other_story(model, base.sampling)
        tuned = dataclasses.replace(chat(model, "Is there spelt?", max_tokens=4), adapters=[("alpha", 1.0)])
        with runtime.BatchEngine(model, 1, 512, n_threads=1, cache_ram=64 << 20) as engine:
            result_of(engine, base)
            result_of(engine, story)
            assert result_of(engine, tuned).cached_tokens == 0  # the saved bakery prefix is the base model's
            assert result_of(engine, chat(model, "Is there spelt?", max_tokens=4)).cached_tokens > 60


# -- a prefix copied from a running sequence: requests sharing a system prompt at the same time --


def test_a_request_copies_the_prefix_a_running_sequence_evaluated(model):
    first, second = chat(model, "When do you open?"), chat(model, "Do you sell rye bread?")
    shared = next(i for i, (x, y) in enumerate(zip(first.tokens, second.tokens, strict=False)) if x != y)
    with runtime.BatchSession(model, 2, 512, n_threads=1, prompt_cache=True) as session:
        session.admit(first)
        session.step()  # the first prompt is evaluated; its sequence generates
        slot = session.admit(second)
        assert slot == 1 and session.saved_tokens == shared
        results = {}
        while session.active():
            for i, item in session.step():
                if isinstance(item, runtime.BatchResult):
                    results[i] = item
    assert results[1].cached_tokens == shared
    assert results[1].text == cold(model, second)
    assert results[0].text == cold(model, first)  # the source's own cells were left as they were


def test_a_short_prefix_is_copied_only_when_the_stream_it_moves_is_small(model):
    def story(ending):
        text = f"Once upon a time, in a land far away, there lived a baker who {ending}"
        return runtime.BatchRequest(key=ending, tokens=model.tokenize(text, add_special=True), sampling=SAMPLING)

    first, second = story("never slept."), story("sang all day.")
    shared = next(i for i, (x, y) in enumerate(zip(first.tokens, second.tokens, strict=False)) if x != y)
    assert 16 <= shared < 8192 // 256
    copied = {}
    for n_ctx_seq in (512, 8192):
        with runtime.BatchSession(model, 2, n_ctx_seq, n_threads=1, prompt_cache=True) as session:
            assert session.n_ctx_seq == n_ctx_seq
            session.admit(first)
            session.step()
            session.admit(second)
            copied[n_ctx_seq] = session.saved_tokens
            session.drop_all()
    assert copied == {512: shared, 8192: 0}  # 8,192 cells moved to save ~20 tokens: not worth it
