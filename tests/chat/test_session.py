"""One chat turn (``localllm.chat.session``), as the terminal chat and the TUI both drive it: the
conversation made, the user's message saved, the history fitted to the context, the reply streamed
and saved however it ends."""

from __future__ import annotations

import threading

import pytest
from support.scripted_engine import ScriptedModel

from localllm.chat import commands
from localllm.chat import history as hist
from localllm.chat.history import History
from localllm.chat.session import ChatSession
from localllm.errors import ContextOverflowError
from localllm.runtime import SamplingOptions


@pytest.fixture
def history(tmp_path):
    db = History(tmp_path / "history.sqlite3")
    yield db
    db.close()


def session_of(history: History, **kwargs) -> ChatSession:
    return ChatSession(history, model_label="scripted:Q4_K_M", model_path="/models/scripted.gguf", **kwargs)


def test_a_turn_saves_the_conversation_the_message_and_the_reply(history):
    model = ScriptedModel(["Paris is the capital."])
    session = session_of(history, system_prompt="Be brief.", settings={"temperature": 0.0})
    pieces: list[str] = []
    session.send("What is the capital of France?")
    reply = session.reply().stream(model, SamplingOptions(temperature=0.0), on_piece=pieces.append)
    assert "".join(pieces) == reply.text == session.last_reply == "Paris is the capital."
    assert reply.status == hist.COMPLETE and reply.error is None and not reply.discarded
    conv = history.get(session.conversation_id)
    assert conv.info.title == "What is the capital of France?" and conv.info.model == "scripted:Q4_K_M"
    assert conv.info.model_path == "/models/scripted.gguf"
    assert conv.info.system_prompt == "Be brief." and conv.info.settings == {"temperature": 0.0}
    assert [(m.role, m.content, m.status) for m in conv.messages] == [
        ("user", "What is the capital of France?", hist.COMPLETE),
        ("assistant", "Paris is the capital.", hist.COMPLETE),
    ]
    stats = conv.messages[1].stats
    assert stats["n_ctx"] == 4096 and stats["context_used"] == stats["prompt_tokens"] + stats["generated_tokens"] > 0
    # The model was given the system prompt and the question, in order.
    assert [m["role"] for m in model.prompts[0]] == ["system", "user"]


def test_the_second_turn_answers_the_whole_conversation(history):
    model = ScriptedModel(["First.", "Second."])
    session = session_of(history)
    for text in ("one", "two"):
        session.send(text)
        session.reply().stream(model, SamplingOptions())
    assert [m["content"] for m in model.prompts[1]] == ["one", "First.", "two"]
    assert len(history.conversations()) == 1


def test_a_long_conversation_is_fitted_to_the_context_and_says_so(history):
    model = ScriptedModel(["word " * 5], n_ctx=120)
    session = session_of(history, system_prompt="Be brief.")
    told: list[int] = []
    for n in range(12):
        session.send(f"question {n} " + "word " * 8)
        reply = session.reply().stream(model, SamplingOptions(max_tokens=10), on_trimmed=told.append)
    assert told and reply.dropped == told[-1] > 0 and reply.status == hist.COMPLETE
    last_prompt = model.prompts[-1]
    assert last_prompt[0] == {"role": "system", "content": "Be brief."}
    assert last_prompt[1]["role"] == "user" and len(last_prompt) < 1 + 2 * 12
    # Nothing is lost from the history: trimming is only what the model sees.
    assert len(history.get(session.conversation_id).messages) == 24


def test_turns_at_the_context_limit_share_the_prompt_prefix_even_after_reopening(history):
    """Old turns leave in large steps and rarely: most turns at the limit start with the previous
    turn's prompt (the KV cache is reused), and a reopened chat starts where it was."""
    model = ScriptedModel(["word " * 5], n_ctx=300)
    session = session_of(history, system_prompt="Be brief.")
    told: list[int] = []
    for n in range(30):
        session.send(f"question {n} " + "word " * 8)
        session.reply().stream(model, SamplingOptions(max_tokens=10), on_trimmed=told.append)
    prompts = model.prompts
    shared = sum(later[: len(earlier)] == earlier for earlier, later in zip(prompts, prompts[1:]))
    assert told and len(told) <= 4 and shared >= len(prompts) - 1 - len(told)
    reopened = ChatSession.resume(history, session.conversation_id)
    reopened.send("one more " + "word " * 8)
    reopened.reply().stream(model, SamplingOptions(max_tokens=10), on_trimmed=told.append)
    assert model.prompts[-1][: len(prompts[-2])] == prompts[-2]


def test_a_cancelled_reply_keeps_what_was_written_as_stopped(history):
    model = ScriptedModel(["one two three four five"])
    cancel = threading.Event()
    session = session_of(history)
    session.send("count")
    reply = session.reply().stream(model, SamplingOptions(), cancel=cancel, on_piece=lambda _: cancel.set())
    assert reply.status == hist.STOPPED and reply.text == "one"
    [_, saved] = history.get(session.conversation_id).messages
    assert (saved.content, saved.status) == ("one", hist.STOPPED)


def test_ctrl_c_in_the_terminal_stops_the_reply_and_keeps_it(history):
    model = ScriptedModel(["one two three four five"])
    session = session_of(history)
    seen: list[str] = []

    def ctrl_c_on_the_second(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            raise KeyboardInterrupt

    session.send("count")
    reply = session.reply().stream(model, SamplingOptions(), on_piece=ctrl_c_on_the_second)
    assert reply.status == hist.STOPPED and reply.text == "one two"
    assert history.get(session.conversation_id).messages[1].status == hist.STOPPED


def test_a_reply_that_fails_before_its_first_word_is_not_kept(history):
    model = ScriptedModel(n_ctx=64)
    session = session_of(history)
    session.send("word " * 200)  # longer than the whole context
    reply = session.reply().stream(model, SamplingOptions())
    assert isinstance(reply.error, ContextOverflowError) and reply.discarded and reply.status == hist.STOPPED
    assert [m.role for m in history.get(session.conversation_id).messages] == ["user"]


def test_a_crash_before_the_first_word_leaves_no_empty_reply(history):
    """What the terminal chat did after `/model nonesuch` (issue 22): the model was gone."""
    session = session_of(history)
    session.send("hello")
    with pytest.raises(AttributeError):
        session.reply().stream(None, SamplingOptions())
    assert [m.role for m in history.get(session.conversation_id).messages] == ["user"]


def test_commands_change_the_chat_and_are_saved_with_it(history, tmp_path):
    session = session_of(history)
    assert session.command(commands.parse("/save x.md")) == "Nothing to save yet: this chat is empty."
    assert session.command(commands.parse("/system Answer in French.")) == "System prompt set for this chat."
    assert session.command(commands.parse("/set temperature 0.2")) == "temperature = 0.2 for this chat."
    session.send("Bonjour")
    session.reply().stream(ScriptedModel(["Salut"]), SamplingOptions())
    first = session.conversation_id
    info = history.info(first)
    assert info.system_prompt == "Answer in French." and info.settings == {"temperature": 0.2}
    assert session.command(commands.parse("/set temperature default")) == "temperature = default for this chat."
    assert history.info(first).settings == {}
    assert session.command(commands.parse(f"/save {tmp_path / 'chat.md'}")) == f"Saved {tmp_path / 'chat.md'}"
    assert "Salut" in (tmp_path / "chat.md").read_text()
    with pytest.raises(commands.CommandError):
        session.command(commands.parse("/copy"))
    session.command(commands.parse("/clear"))
    assert session.conversation_id is None and session.system_prompt == "Answer in French."
    session.send("Encore")
    assert session.conversation_id != first and history.info(session.conversation_id).system_prompt == (
        "Answer in French."
    )


def test_a_resumed_chat_goes_on_with_its_settings_and_a_switched_model(history):
    session = session_of(history, system_prompt="Be brief.", settings={"top_k": 5})
    session.send("one")
    session.reply().stream(ScriptedModel(["First."]), SamplingOptions())
    again = ChatSession.resume(history, session.conversation_id)
    assert (again.system_prompt, again.settings, again.model_label) == ("Be brief.", {"top_k": 5}, "scripted:Q4_K_M")
    again.switch_model("other:Q8_0", "/models/other.gguf")
    assert history.info(again.conversation_id).model == "other:Q8_0"
    model = ScriptedModel(["Second."])
    again.send("two")
    again.reply().stream(model, SamplingOptions())
    assert [m["content"] for m in model.prompts[0]] == ["Be brief.", "one", "First.", "two"]


def test_a_turn_with_the_real_model(installed_starter, history):
    """The real SmolLM2: the reply answers, and the context fitting counts the prompt exactly as
    the model evaluates it (Model.chat_tokens, the one rule)."""
    from localllm import app

    with app.open_model(installed_starter.name, n_ctx=1024) as model:
        session = ChatSession(
            history, model_label=model.label, model_path=model.resolved.path, system_prompt="Answer in one sentence."
        )
        session.send("What is the capital city of France?")
        reply = session.reply()
        prompt_tokens = len(model.chat_tokens(reply.messages))
        reply.stream(model, SamplingOptions(temperature=0.0, max_tokens=24))
    assert reply.status == hist.COMPLETE and "Paris" in reply.text
    stats = history.get(session.conversation_id).messages[1].stats
    assert stats["prompt_tokens"] + stats["cached_tokens"] == prompt_tokens
    assert stats["n_ctx"] == 1024


# -- a reasoning model (the real SmolLM2 with a template that opens <think> for it) ------------


def test_a_reasoning_reply_keeps_its_thinking_apart_and_out_of_the_next_prompt(history, smollm2_path, tmp_path):
    from support.thinking import thinking_model

    from localllm.runtime import LoadOptions, Model

    path = thinking_model(smollm2_path, tmp_path / "thinking.gguf")
    session = session_of(history, think_budget=3)
    with Model(path, LoadOptions(n_ctx=1024)) as model:
        thoughts: list[str] = []
        answer: list[str] = []
        session.send("What is the capital of France?")
        first = session.reply().stream(
            model, SamplingOptions(temperature=0.0, max_tokens=30), on_piece=answer.append, on_reasoning=thoughts.append
        )
        assert first.status == hist.COMPLETE and first.error is None
        assert "".join(thoughts).strip() == first.reasoning.strip() and first.reasoning.strip()
        assert "".join(answer) == first.text == session.last_reply and first.text.strip()
        assert "<think>" not in first.text and "</think>" not in first.text
        saved = history.get(session.conversation_id).messages[-1]
        assert saved.content == first.text and saved.reasoning == first.reasoning.strip()
        session.send("And of Italy?")
        second = session.reply().stream(model, SamplingOptions(temperature=0.0, max_tokens=10))
        prompt = second.generation.generation.prompt_text  # what the model was given
    assert first.text.strip() in prompt  # the earlier answer is in the prompt ...
    assert prompt.count("<think>") == 1 and prompt.rstrip().endswith("<think>")  # ... its thinking is not
    assert first.reasoning.strip() + "</think>" not in prompt.replace("\n", "")
    exported = history.to_json(session.conversation_id)["messages"][1]
    assert exported["content"] == first.text and exported["reasoning"] == first.reasoning.strip()
