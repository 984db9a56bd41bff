"""The engine against real llama.cpp and the real SmolLM2 model."""

from __future__ import annotations

import threading

import pytest

from localllm import runtime
from localllm.errors import ContextOverflowError, GenerationError

GREEDY = runtime.SamplingOptions(temperature=0, max_tokens=24)
QUESTION = [{"role": "user", "content": "What is the capital city of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def model(smollm2_path):
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=1024)) as loaded:
        yield loaded


def test_streams_a_real_answer(model):
    generation = model.chat(QUESTION, GREEDY)
    pieces = list(generation)
    assert len(pieces) > 3
    assert "".join(pieces) == generation.text
    assert "Paris" in generation.text
    stats = generation.stats
    assert stats.finish_reason == "stop"
    assert (
        stats.generated_tokens == len(model.tokenize(generation.text, add_special=False)) or stats.generated_tokens > 3
    )
    assert 0 < stats.ttft_s < 30
    assert stats.tokens_per_s > 0 and stats.prompt_tokens > 20


def test_uses_the_gguf_chat_template(model):
    prompt = model.render_chat(QUESTION)
    assert prompt.startswith("<|im_start|>system")
    assert prompt.endswith("<|im_start|>assistant\n")


def test_max_tokens_stops_with_length(model):
    generation = model.chat(QUESTION, runtime.SamplingOptions(temperature=0, max_tokens=3))
    generation.read()
    assert generation.stats.generated_tokens == 3
    assert generation.stats.finish_reason == "length"


def test_repeat_penalty_builds_the_penalties_sampler_and_changes_the_reply(model):
    """llama_sampler_init_penalties takes the vocabulary size first in this llama.cpp: called
    without it, every repeat_penalty other than 1 was a TypeError (a 500 in serve; issue 20)."""
    cats = [{"role": "user", "content": "Write the word 'cat' ten times."}]

    def reply(penalty: float) -> str:
        return "".join(model.chat(cats, runtime.SamplingOptions(temperature=0, max_tokens=30, repeat_penalty=penalty)))

    plain = reply(1.0)
    assert plain.lower().count("cat") >= 8
    assert reply(1.5) != plain and reply(1.5).lower().count("cat") < plain.lower().count("cat")


def test_cancel_mid_reply_keeps_model_usable(model):
    cancel = threading.Event()
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    generation = model.chat(story, runtime.SamplingOptions(temperature=0, max_tokens=400), cancel)
    for i, _ in enumerate(generation):
        if i == 5:
            cancel.set()
    assert generation.stats.finish_reason == "cancelled"
    assert generation.stats.generated_tokens == 6
    # The next reply is exactly what a fresh model says.
    assert model.chat(QUESTION, GREEDY).read() == _fresh_answer(model)


def _fresh_answer(model) -> str:
    with runtime.Model(model.path, runtime.LoadOptions(n_ctx=1024)) as fresh:
        return fresh.chat(QUESTION, GREEDY).read()


def test_second_turn_reuses_the_cached_prefix(model):
    first = model.chat(QUESTION, GREEDY)
    first.read()
    follow_up = QUESTION + [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And of Germany?"},
    ]
    second = model.chat(follow_up, GREEDY)
    text = second.read()
    assert second.stats.cached_tokens > first.stats.prompt_tokens // 2
    with runtime.Model(model.path, runtime.LoadOptions(n_ctx=1024)) as fresh:
        assert fresh.chat(follow_up, GREEDY).read() == text


def test_same_seed_same_text(model):
    sampling = runtime.SamplingOptions(temperature=0.9, seed=123, max_tokens=30)
    story = [{"role": "user", "content": "Tell me a story."}]
    assert model.chat(story, sampling).read() == model.chat(story, sampling).read()


def test_stop_strings_end_the_reply_before_them(model):
    full = model.chat(QUESTION, GREEDY).read()
    assert "Paris" in full
    generation = model.chat(QUESTION, runtime.SamplingOptions(temperature=0, max_tokens=24, stop=("Paris",)))
    text = generation.read()
    assert text == full[: full.index("Paris")]
    assert generation.stats.finish_reason == "stop"


def test_non_ascii_text_is_never_split_mid_character(model):
    prompt = [{"role": "user", "content": "Écris une phrase en français sur l'été à Montréal."}]
    pieces = list(model.chat(prompt, runtime.SamplingOptions(temperature=0, max_tokens=60)))
    assert "\ufffd" not in "".join(pieces)


def test_prompt_longer_than_context(model):
    with pytest.raises(ContextOverflowError, match="1024"):
        model.chat([{"role": "user", "content": "word " * 2000}], GREEDY)


def test_one_generation_at_a_time(model):
    first = model.chat(QUESTION, GREEDY)
    next(first)
    with pytest.raises(GenerationError, match="already generating"):
        next(iter(model.chat(QUESTION, GREEDY)))
    first.close()
    assert model.chat(QUESTION, GREEDY).read()


def test_load_report_has_llama_cpp_buffer_sizes(model):
    buffers = model.load_report.buffers_mib
    assert any(key.endswith("KV") for key in buffers), buffers
    assert any(key.endswith("compute") for key in buffers), buffers


def test_prompt_evaluation_reports_its_progress(smollm2_path):
    """A long prompt is evaluated batch by batch, and the generation says how far it has got (the
    TUI shows it as 'reading the conversation… N%')."""
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=1024, n_batch=64, n_ubatch=64, n_threads=2)) as model:
        generation = model.complete("word " * 400, runtime.SamplingOptions(temperature=0, max_tokens=1))
        assert generation.prompt_fraction is None  # not started
        seen = []
        generation._evaluated = lambda n: seen.append((n, generation.prompt_to_evaluate))
        generation.read()
        total = seen[0][1]
        assert total > 300 and [n for n, _ in seen] == list(range(0, total, 64))
        assert generation.prompt_fraction == 1.0
