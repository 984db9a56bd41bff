"""Speculative decoding (issue 28) against real llama.cpp and the real SmolLM2 model: the reply is
the plain reply, token for token, whichever drafter proposes; a draft of another vocabulary is
refused before anything is generated."""

from __future__ import annotations

import struct

import pytest
from support import ggufedit

from localllm import runtime
from localllm.errors import DraftMismatchError
from localllm.runtime.speculative import NgramDrafter, Speculation

PASSAGE = (
    "Local models run on your own machine, keep your data private, and work without a network "
    "connection. They are slower than hosted ones but cost nothing per token, and a small one "
    "answers simple questions well enough for everyday notes and drafts."
)
REPEAT = [{"role": "user", "content": f"Repeat the following text exactly, word for word:\n\n{PASSAGE}"}]
STORY = [{"role": "user", "content": "Write a short story about a dragon who learns to cook."}]
GREEDY = runtime.SamplingOptions(temperature=0, max_tokens=80)


def _load(path, draft=None):
    return runtime.Model(path, runtime.LoadOptions(n_ctx=1024, n_threads=1, draft=draft))


@pytest.fixture(scope="module")
def plain(smollm2_path):
    with _load(smollm2_path) as model:
        yield model


@pytest.fixture(scope="module")
def ngram(smollm2_path):
    with _load(smollm2_path, "ngram") as model:
        yield model


@pytest.fixture(scope="module")
def drafted(smollm2_path):
    # The same GGUF is a valid draft of itself: same vocabulary, and it agrees with every pick.
    with _load(smollm2_path, smollm2_path) as model:
        yield model


def _reply(model, messages, sampling=GREEDY):
    generation = model.chat(messages, sampling)
    return generation.read(), generation.stats


def test_ngram_greedy_reply_is_the_plain_reply_and_accepts_repeated_text(plain, ngram):
    expected, plain_stats = _reply(plain, REPEAT)
    text, stats = _reply(ngram, REPEAT)
    assert text == expected
    assert stats.generated_tokens == plain_stats.generated_tokens
    assert "your own machine" in text  # the model really repeats the passage
    assert stats.draft == "ngram"
    # (how many depends on the machine: the draft length follows measured speed-ups)
    assert stats.accepted_tokens > 0
    assert stats.accepted_tokens <= stats.drafted_tokens
    assert stats.as_dict()["acceptance"] == round(stats.acceptance, 4) > 0.5


def test_ngram_greedy_reply_is_the_plain_reply_where_nothing_repeats(plain, ngram):
    assert _reply(ngram, STORY)[0] == _reply(plain, STORY)[0]


def test_draft_model_greedy_reply_is_the_plain_reply(plain, drafted):
    expected, _ = _reply(plain, STORY)
    text, stats = _reply(drafted, STORY)
    assert text == expected
    assert stats.draft.endswith(".gguf")
    assert stats.drafted_tokens > 0
    assert stats.acceptance > 0.9  # a model drafting for itself is (nearly) always right


def test_seeded_sampling_gives_the_plain_reply(plain, ngram, drafted):
    """Each reply token is drawn once from the model's own distribution, as in plain decoding, so
    the same seed gives the same reply (the standard acceptance rule for a one-token draft)."""
    sampling = runtime.SamplingOptions(temperature=0.7, seed=11, max_tokens=60)
    expected, _ = _reply(plain, REPEAT, sampling)
    for model in (ngram, drafted):
        text, stats = _reply(model, REPEAT, sampling)
        assert text == expected
        assert stats.drafted_tokens > 0 and stats.as_dict()["drafted_tokens"] == stats.drafted_tokens


def test_limits_and_stop_strings_end_where_plain_decoding_ends(plain, ngram):
    for sampling in (
        runtime.SamplingOptions(temperature=0, max_tokens=7),
        runtime.SamplingOptions(temperature=0, max_tokens=80, stop=("private",)),
    ):
        expected, plain_stats = _reply(plain, REPEAT, sampling)
        text, stats = _reply(ngram, REPEAT, sampling)
        assert (text, stats.generated_tokens, stats.finish_reason) == (
            expected,
            plain_stats.generated_tokens,
            plain_stats.finish_reason,
        )


def test_the_next_turn_reuses_a_cache_that_holds_exactly_the_reply(plain, ngram):
    """Refused drafts leave no cell behind: the second turn of a chat reuses the first one's
    tokens and still answers as plain decoding does."""
    for model in (plain, ngram):
        first, _ = _reply(model, REPEAT)
        turn = [*REPEAT, {"role": "assistant", "content": first}, {"role": "user", "content": "Now repeat it again."}]
        text, stats = _reply(model, turn)
        assert stats.cached_tokens > len(model.chat_tokens(REPEAT)) - 2
        if model is plain:
            expected = text
    assert text == expected


def test_plain_generation_has_no_draft_stats(plain):
    _, stats = _reply(plain, STORY, runtime.SamplingOptions(temperature=0, max_tokens=4))
    assert stats.draft == "" and "acceptance" not in stats.as_dict()


def test_a_draft_of_another_vocabulary_is_refused(smollm2_path, tmp_path):
    """Two token texts swapped is enough: the draft's ids would mean other words."""
    parts = ggufedit.split(smollm2_path, keep_data=True)
    entry = parts.entries["tokenizer.ggml.tokens"]
    tokens, pos = [], 16  # type, item type, count
    (count,) = struct.unpack_from("<Q", entry, 8)
    for _ in range(count):
        (n,) = struct.unpack_from("<Q", entry, pos)
        tokens.append(entry[pos + 8 : pos + 8 + n].decode())
        pos += 8 + n
    tokens[-1], tokens[-2] = tokens[-2], tokens[-1]
    other = ggufedit.write(tmp_path / "other-vocab.gguf", parts, {"tokenizer.ggml.tokens": tokens})
    with pytest.raises(DraftMismatchError) as caught:
        _load(smollm2_path, other)
    assert "other-vocab.gguf has another vocabulary" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_ngram_lookup_proposes_what_followed_the_longest_match():
    drafter = NgramDrafter()
    history = [5, 6, 7, 8, 9, 1, 2, 6, 7, 8, 3, 4, 6, 7]
    # "6 7" was last followed by 8 3 4 ...; the longest suffix match wins over shorter ones.
    assert drafter.propose(history, 3) == [8, 3, 4]
    assert drafter.propose([*history, 8], 2) == [3, 4]  # "6 7 8" then
    assert drafter.propose([1, 2, 3], 4) == []
    drafter.reset()
    assert drafter.propose([1, 2, 9, 1, 2], 4) == [9, 1, 2]
    drafter.reset()
    assert drafter.propose([1, 2, 9, 1], 4) == []  # one token matching is not enough


def test_drafting_switches_itself_off_when_it_does_not_pay():
    spec = Speculation(k_max=8)
    assert spec.want() == 0  # a plain step is timed first
    spec.plain(0.010)
    assert spec.want() == 2  # a short probe first
    while spec.want():  # every draft refused: each round costs more than the one token it gives
        spec.round(spec.want(), 0, 0.020)
    assert spec.paused > 0
    for _ in range(spec.paused):
        assert spec.want() == 0
        spec.plain(0.010)
    assert spec.want() > 0  # tried again after the pause
    spec.round(spec.want(), 0, 0.020)
    spec.round(spec.want(), 0, 0.020)
    assert spec.want() == 0 and spec.paused > 8  # the next pause is longer


def test_drafting_grows_while_drafts_are_accepted():
    spec = Speculation(k_max=8)
    spec.plain(0.010)
    spec.k = 2
    for _ in range(3):
        spec.round(spec.k, spec.k, 0.012)
    assert spec.want() == 8


# -- batch and serve: n-gram drafts verified in the step's batch ------------------------------


def test_batch_session_with_ngram_drafts_gives_the_plain_results(plain):
    from localllm.runtime.batching import BatchRequest

    prompts = [REPEAT, STORY, [{"role": "user", "content": f"Repeat this twice: {PASSAGE[:80]}"}]]
    samplings = [
        GREEDY,
        runtime.SamplingOptions(temperature=0.8, seed=5, max_tokens=40),
        runtime.SamplingOptions(temperature=0, max_tokens=80, stop=("private",)),
        runtime.SamplingOptions(temperature=0, max_tokens=9),
    ]
    requests = [
        BatchRequest(key=(i, j), tokens=plain.chat_tokens(messages), sampling=sampling)
        for i, messages in enumerate(prompts)
        for j, sampling in enumerate(samplings)
    ]
    results = {}
    for draft in (None, "ngram"):
        with runtime.BatchSession(plain, 3, 1024, draft=draft) as session:
            results[draft] = {r.key: r for r in session.run(requests)}
            drafted, accepted = session.drafted_tokens, session.accepted_tokens
    for key, expected in results[None].items():
        got = results["ngram"][key]
        assert (got.text, got.finish_reason, got.completion_tokens) == (
            expected.text,
            expected.finish_reason,
            expected.completion_tokens,
        ), key
    assert 0 < accepted <= drafted == sum(r.drafted_tokens for r in results["ngram"].values())
    assert results["ngram"][(0, 0)].accepted_tokens > 0  # the repeated passage


def test_batch_session_takes_no_draft_model(plain, smollm2_path):
    from localllm.errors import UsageError

    with pytest.raises(UsageError, match="n-gram lookup only"):
        runtime.BatchSession(plain, 2, 256, draft=str(smollm2_path))


@pytest.mark.parametrize("repack", [False, True])
def test_the_draft_model_is_loaded_with_the_targets_weight_repacking(smollm2_path, monkeypatch, repack):
    """AMX builds load without extra buffer types (llama.cpp #20824: AMX's matmul segfaults on
    some CPUs); a draft loaded with them crashed `run --draft MODEL` on such a CPU."""
    from localllm.runtime import llama, speculative

    seen = []
    real_init = llama.LlamaModel.__init__

    def spy(self, path, *args, **kwargs):
        seen.append(kwargs.get("use_extra_bufts", True))
        real_init(self, path, *args, **kwargs)

    monkeypatch.setattr(llama.LlamaModel, "__init__", spy)
    assert speculative.LlamaModel is llama.LlamaModel
    options = runtime.LoadOptions(n_ctx=256, n_threads=1, draft=smollm2_path, repack=repack)
    with runtime.Model(smollm2_path, options) as model:
        assert model.drafter is not None
    assert seen == [repack, repack]  # the target, then its draft
