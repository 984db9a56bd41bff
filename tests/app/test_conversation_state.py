"""A conversation's KV cache on disk (issue 12): the real SmolLM2, real llama.cpp state files."""

from __future__ import annotations

import json

from localllm import app
from localllm.app import conversation_state
from localllm.models.resolve import ResolvedModel
from localllm.runtime import SamplingOptions

GREEDY = SamplingOptions(temperature=0.0, max_tokens=12)


def long_chat(turns: int = 12) -> list[dict[str, str]]:
    messages = []
    for n in range(turns):
        messages.append({"role": "user", "content": f"Tell me fact number {n} about the river Thames and its bridges."})
        messages.append(
            {
                "role": "assistant",
                "content": f"Fact {n}: the Thames flows through London under many bridges, "
                "among them Tower Bridge and London Bridge.",
            }
        )
    return messages + [{"role": "user", "content": "Which bridge did you name first?"}]


def opened(path, n_ctx=2048):
    return app.open_model(resolved=ResolvedModel(path=path, label="smollm2"), n_ctx=n_ctx, n_gpu_layers=0)


def test_a_saved_conversation_is_restored_and_replies_the_same(smollm2_path):
    messages = long_chat()
    with opened(smollm2_path) as model:
        expected = model.chat(messages, GREEDY).read()
        assert model.cached_tokens > conversation_state.MIN_TOKENS
        assert conversation_state.save(model, 7)
    state = conversation_state.state_dir() / "7.bin"
    key = json.loads((conversation_state.state_dir() / "7.json").read_text())
    assert state.stat().st_size > 0 and key["settings"]["n_ctx"] == 2048
    with opened(smollm2_path) as model:
        restored = conversation_state.restore(model, 7)
        assert restored == model.cached_tokens > conversation_state.MIN_TOKENS
        generation = model.chat(messages, GREEDY)
        assert generation.read() == expected
        assert generation.stats.cached_tokens == generation.stats.prompt_tokens - 1  # only the last token evaluated


def test_a_cache_saved_with_other_settings_is_dropped(smollm2_path):
    with opened(smollm2_path) as model:
        model.chat(long_chat(), GREEDY).read()
        assert conversation_state.save(model, 3)
    with opened(smollm2_path, n_ctx=1024) as model:
        assert conversation_state.restore(model, 3) == 0 and model.cached_tokens == 0
    assert not list(conversation_state.state_dir().glob("3.*"))


def test_short_chats_and_missing_files_are_no_cache(smollm2_path):
    with opened(smollm2_path) as model:
        model.chat([{"role": "user", "content": "Hi"}], GREEDY).read()
        assert not conversation_state.save(model, 1)
        assert conversation_state.restore(model, 99) == 0


def test_saved_caches_stay_within_the_disk_budget_oldest_evicted_first(smollm2_path):
    with opened(smollm2_path) as model:
        model.chat(long_chat(), GREEDY).read()
        assert conversation_state.save(model, 1)
        one = conversation_state.disk_use()
        assert one > 0
        for conversation_id in (2, 3, 4):  # a budget of two and a half files: the two newest stay
            assert conversation_state.save(model, conversation_id, budget=int(one * 2.5))
        saved = sorted(int(p.stem) for p in conversation_state.state_dir().glob("*.bin"))
        assert saved == [3, 4] and conversation_state.disk_use() <= one * 2.5
        assert not list(conversation_state.state_dir().glob("1.*"))
        # the one just saved always stays, even over the budget
        assert conversation_state.save(model, 5, budget=1)
        assert [p.stem for p in conversation_state.state_dir().glob("*.bin")] == ["5"]
