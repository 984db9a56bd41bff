"""Fitting a conversation into the context: oldest turns go first, the system prompt stays."""

from __future__ import annotations

import pytest
from support.scripted_engine import ScriptedModel

from localllm.chat.context import fit_messages, reply_reserve
from localllm.errors import ContextOverflowError


def conversation(turns: int) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": "Be brief."}]
    for n in range(turns):
        messages.append({"role": "user", "content": f"question {n} " + "word " * 10})
        messages.append({"role": "assistant", "content": f"answer {n} " + "word " * 10})
    return messages + [{"role": "user", "content": "last question"}]


def test_short_conversation_is_untouched():
    model = ScriptedModel(n_ctx=4096)
    fitted = fit_messages(model, conversation(3), reserve=100)
    assert fitted.dropped == 0 and fitted.messages == conversation(3)


def test_drops_oldest_turns_and_keeps_system_prompt():
    model = ScriptedModel(n_ctx=200)
    messages = conversation(20)
    fitted = fit_messages(model, messages, reserve=50)
    assert fitted.dropped > 0
    assert fitted.messages[0]["role"] == "system"
    assert fitted.messages[1]["role"] == "user"  # never starts with an orphaned reply
    assert fitted.messages[-1] == {"role": "user", "content": "last question"}
    assert fitted.messages[1:] == messages[1 + fitted.dropped :]
    assert fitted.prompt_tokens <= 150
    # and it dropped in a large step: at most the older half of what it kept before the last step
    assert fitted.prompt_tokens > 150 // 8


def test_trims_in_large_steps_so_consecutive_turns_share_a_prefix():
    """At the limit, the start moves rarely (half the turns at once) and stays put while the prompt
    fits: the turns between two moves share their prefix, so the KV cache is reused."""
    model = ScriptedModel(n_ctx=400)
    messages = [{"role": "system", "content": "Be brief."}]
    dropped, moves, trimmed_turns = 0, 0, 0
    for n in range(60):
        messages.append({"role": "user", "content": f"question {n} " + "word " * 10})
        fitted = fit_messages(model, messages, reserve=50, keep_from=dropped)
        assert fitted.prompt_tokens <= 350 and fitted.messages[0]["role"] == "system"
        assert fitted.messages[1]["role"] == "user" and fitted.messages[-1] == messages[-1]
        moves += fitted.dropped != dropped
        trimmed_turns += fitted.dropped > 0
        dropped = fitted.dropped
        messages.append({"role": "assistant", "content": f"answer {n} " + "word " * 10})
    assert trimmed_turns > 40  # the conversation was at its limit most of the time
    assert 1 < moves <= trimmed_turns // 4


def test_a_start_kept_from_before_an_edit_falls_back_to_the_nearest_user_message():
    model = ScriptedModel(n_ctx=4096)
    messages = conversation(3)
    fitted = fit_messages(model, messages, reserve=100, keep_from=3)  # 3: an assistant message
    assert fitted.dropped == 2 and fitted.messages[1] == messages[3]


def test_a_single_message_too_long_is_an_error_with_a_hint():
    model = ScriptedModel(n_ctx=64)
    with pytest.raises(ContextOverflowError) as err:
        fit_messages(model, [{"role": "user", "content": "word " * 200}], reserve=16)
    assert "--ctx" in err.value.hint


def test_reply_reserve():
    assert reply_reserve(4096, None) == 1024
    assert reply_reserve(4096, 200) == 200
    assert reply_reserve(256, 10_000) == 128
