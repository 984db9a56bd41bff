"""Issue 12: a chat people keep open all day (following the stream, line breaks, multi-line input,
switching models, slash commands, keys). Each test here fails on the code before the issue."""

from __future__ import annotations

import re
import threading

import pytest
from support.chat_pilot import chat_screen, reply_done, scripted_app, send, views, wait_for
from support.scripted_engine import ScriptedModel
from textual import events
from textual.widgets._markdown import MarkdownBlock

from localllm.chat import history as hist

pytestmark = pytest.mark.anyio

POEM = "Roses are red,\nviolets are blue,\nsugar is sweet,\nand so are you."
LONG = "\n\n".join(f"Paragraph {n}: " + " ".join(f"w{n}.{i}" for i in range(30)) for n in range(60))


@pytest.fixture
def anyio_backend():
    return "asyncio"


def at_bottom(app) -> bool:
    transcript = chat_screen(app).query_one("#transcript")
    return transcript.scroll_y >= transcript.max_scroll_y - 1


def shown_text(view) -> str:
    return "\n".join(block._content.plain for block in view.markdown.query(MarkdownBlock))


async def test_a_long_reply_is_followed_to_its_end():
    hold = threading.Event()  # the reply's last piece waits: sampled while generating, without a race
    app = scripted_app(ScriptedModel([LONG], tokens_per_s=1000, hold=hold))
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Write a lot")
        # Sampled once everything but the held last piece is shown: the reply is still generating,
        # and no piece lands between a sample and the scroll that follows it (a race on 2 busy cores).
        await wait_for(pilot, lambda: len(views(app)[-1].content) >= len(LONG) - 12)
        samples = []
        while chat_screen(app).generating and len(samples) < 5:
            await pilot.pause(0.2)
            samples.append(at_bottom(app))
        hold.set()
        await wait_for(pilot, lambda: not chat_screen(app).generating)
        await pilot.pause(0.3)
        assert len(samples) == 5 and all(samples), samples
        assert at_bottom(app) and chat_screen(app).query_one("#transcript").max_scroll_y > 100


async def test_scrolling_up_stops_following_until_back_at_the_bottom():
    app = scripted_app(ScriptedModel([LONG], tokens_per_s=300))
    async with app.run_test(size=(80, 24)) as pilot:
        await send(pilot, "Write a lot")
        transcript = chat_screen(app).query_one("#transcript")
        await wait_for(pilot, lambda: transcript.max_scroll_y > 30)
        for _ in range(5):
            transcript.post_message(events.MouseScrollUp(transcript, 0, 0, 0, 0, 0, False, False, False))
        await pilot.pause(0.3)
        held = transcript.scroll_y
        await pilot.pause(0.5)
        assert transcript.scroll_y == held and not at_bottom(app)  # the reader's place is kept
        transcript.scroll_end(animate=False)
        await pilot.pause(0.5)
        assert at_bottom(app)  # following again
        chat_screen(app).action_stop()
        await reply_done(pilot)


async def test_line_breaks_in_a_reply_are_shown():
    app = scripted_app(ScriptedModel([POEM]))
    async with app.run_test() as pilot:
        await send(pilot, "A poem")
        await reply_done(pilot)
        await pilot.pause(0.2)
        assert "Roses are red,\nviolets are blue," in shown_text(views(app)[-1])


async def test_multi_line_input_and_pasted_text_are_sent_whole():
    model = ScriptedModel(["Ok."])
    app = scripted_app(model)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        prompt = chat_screen(app).query_one("#prompt")
        prompt.focus()
        await pilot.press("a", "ctrl+j", "b")
        app.post_message(events.Paste("\nline one\nline two"))  # as the terminal delivers it
        await pilot.pause(0.1)
        await pilot.press("enter")
        await reply_done(pilot)
        await wait_for(pilot, lambda: len(model.prompts) == 1)
        assert model.prompts[0][-1]["content"] == "a\nb\nline one\nline two"
        assert views(app)[0].content == "a\nb\nline one\nline two"


async def test_a_reply_being_written_is_not_labelled_interrupted_and_says_it_reads_first():
    app = scripted_app(ScriptedModel(["Fine, thanks."], tokens_per_s=20, prompt_s=1.2))
    async with app.run_test() as pilot:
        await send(pilot, "How are you?")
        label = views(app)[-1].query_one(".role")
        assert "interrupted" not in str(label.render())
        await wait_for(pilot, lambda: "reading the conversation" in str(label.render()), timeout=5)
        # ... with how far it has read (the runtime reports prompt evaluation batch by batch).
        await wait_for(pilot, lambda: re.search(r"reading the conversation… \d+%", str(label.render())), timeout=5)
        await wait_for(pilot, lambda: bool(views(app)[-1].content), timeout=5)
        await pilot.pause(0.1)
        assert str(label.render()) == "Assistant"
        await reply_done(pilot)
        assert views(app)[-1].status == hist.COMPLETE


async def test_ctrl_o_keeps_the_chat_and_a_chosen_model_switches_it():
    from pathlib import Path

    from localllm.tui.models_screen import ModelsScreen
    from localllm.tui.services import ChatTarget

    hold = threading.Event()
    model = ScriptedModel([" ".join(f"w{i}" for i in range(60))], tokens_per_s=60, hold=hold)
    app = scripted_app(model)
    other = ChatTarget("other:Q8_0", Path("other.gguf"), "Q8_0")
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "Count")
        screen = chat_screen(app)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        await pilot.pause(0.3)
        assert screen.generating  # the reply goes on behind the models list
        hold.set()
        app.open_chat()  # "c": back to the chat
        await wait_for(pilot, lambda: app.screen is screen)
        await reply_done(pilot)
        conversation = screen.conversation_id
        assert views(app)[-1].status == hist.COMPLETE and len(views(app)[-1].content) > 100
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        app.open_chat(other)  # Enter on another model
        await wait_for(pilot, lambda: app.screen is screen and not screen.loading)
        assert screen.conversation_id == conversation and len(views(app)) == 2
        assert app.services.loaded[-1] == other and app.history.info(conversation).model == "other:Q8_0"
        await send(pilot, "And now?")
        await reply_done(pilot)
        assert [m.role for m in app.history.get(conversation).messages] == ["user", "assistant"] * 2


def long_history(history, turns: int = 30) -> int:
    conversation = history.create(title="Long chat", model="smollm2", model_path="")
    for n in range(turns):
        history.add_message(
            conversation,
            "user",
            f"Question {n}: tell me something about rivers, bridges and boats "
            "in old European cities, in two sentences.",
        )
        history.add_message(
            conversation,
            "assistant",
            f"Answer {n}: rivers carried boats through old cities, and "
            "bridges joined their banks; trade and stories crossed both "
            "ways for centuries, as ferries do today.",
        )
    return conversation


async def test_a_reopened_long_chat_replies_from_its_saved_cache(installed_starter):
    from localllm.tui.app import ChatDefaults, make_app
    from localllm.tui.services import Services

    defaults = ChatDefaults(n_ctx=4096, n_gpu_layers=0, settings={"temperature": 0.0, "max_tokens": 4})
    services = Services()
    target = services.resolve(None)
    first = make_app(services=services, chat=target, defaults=defaults)
    conversation = long_history(first.history)
    async with first.run_test() as pilot:  # the first reply evaluates the whole chat, then keeps its cache
        first.open_chat(None, conversation)
        await send(pilot, "And one more?")
        await reply_done(pilot, timeout=180)  # ~2500 tokens evaluated on CI's two slow cores
        await wait_for(pilot, lambda: not first.holder.lock.locked(), timeout=60)
    history_path = first.history.path
    second = make_app(
        services=Services(), chat=target, conversation_id=conversation, defaults=defaults, history_path=history_path
    )
    async with second.run_test() as pilot:
        await send(pilot, "Last one?")
        await reply_done(pilot, timeout=120)
        stats = second.history.get(conversation).messages[-1].stats
    # Only the new turn is evaluated (its time is in benchmarks/bench_tui.py: it depends on the machine).
    assert stats["prompt_tokens"] > 2000 and stats["cached_tokens"] > stats["prompt_tokens"] - 40


async def type_line(pilot, text: str) -> None:
    prompt = chat_screen(pilot.app).query_one("#prompt")
    prompt.focus()
    prompt.load_text(text)
    await pilot.press("enter")
    await pilot.pause(0.1)


async def test_slash_commands_set_the_chat_up(tmp_path):
    model = ScriptedModel(["Sure.\n\n```python\nprint(1)\n```\n"])
    app = scripted_app(model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        await type_line(pilot, "/help")
        assert "/set NAME VALUE" in str(chat_screen(app).query_one(".help").render())
        await type_line(pilot, "/system Answer in French.")
        await type_line(pilot, "/set temperature 0.2")
        await type_line(pilot, "/set nonsense 3")  # refused with a notice, nothing sent
        await send(pilot, "Hello")
        await reply_done(pilot)
        screen = chat_screen(app)
        info = app.history.info(screen.conversation_id)
        assert info.system_prompt == "Answer in French." and info.settings["temperature"] == 0.2
        assert model.prompts[0][0] == {"role": "system", "content": "Answer in French."}
        assert len(model.prompts) == 1 and all(m["content"][0] != "/" for m in model.prompts[0])
        await type_line(pilot, "/copy code")
        assert app.clipboard == "print(1)\n"
        await type_line(pilot, "/copy")
        assert app.clipboard.startswith("Sure.")
        await type_line(pilot, f"/save {tmp_path / 'chat.md'}")
        assert "Hello" in (tmp_path / "chat.md").read_text()
        first = screen.conversation_id
        await type_line(pilot, "/clear")
        assert screen.conversation_id is None and not views(app) and screen.system_prompt == "Answer in French."
        assert app.history.info(first).title  # the old chat is kept


async def test_model_command_switches_this_chats_model(installed_starter):
    app = scripted_app(ScriptedModel(["Ok."]))
    async with app.run_test() as pilot:
        await send(pilot, "Hello")
        await reply_done(pilot)
        conversation = chat_screen(app).conversation_id
        await type_line(pilot, "/model smollm2-135m-instruct")
        await wait_for(pilot, lambda: len(app.services.loaded) == 2 and not chat_screen(app).loading)
        assert app.services.loaded[-1].label.startswith("smollm2-135m-instruct")
        assert chat_screen(app).conversation_id == conversation
        assert app.history.info(conversation).model.startswith("smollm2-135m-instruct")


async def test_palette_keys_and_the_remembered_theme():
    from localllm.app import preferences
    from localllm.tui.keys_dialog import KeysDialog

    app = scripted_app(ScriptedModel())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert titles[:3] == ["New chat", "Models", "Chat settings"] and "Export chat" in titles
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysDialog))
        text = "\n".join(str(s.render()) for s in app.screen.query("Static"))
        assert text.index("Rename") < text.index("Shift+Enter")  # the app's own keys first
        assert "F8" in text and "Export" in text
        await pilot.press("escape")
        hint = str(chat_screen(app).query_one(".empty-hint").render())
        assert "F2" in hint and "F3" in hint and "F8" in hint and "F9" in hint
        theme = app.theme
        await pilot.press("f9")
        await pilot.pause(0.1)
        assert preferences.load()["theme"] == app.theme != theme
    again = scripted_app(ScriptedModel())
    assert again.theme == app.theme


async def test_esc_early_in_a_pull_says_cancelled_and_down_enters_the_list(isolated_home):

    from support.scripted_engine import FakeServices

    from localllm.errors import LocalLLMError
    from localllm.tui.app import make_app
    from localllm.tui.models_screen import ModelsScreen

    class EarlyServices(FakeServices):
        def pull(self, entry, quant, progress, cancel):
            cancel.wait(5)  # still asking the Hub what to fetch when Esc comes
            raise LocalLLMError("connection closed")

    app = make_app(services=EarlyServices())
    notes = []
    app.notify = lambda message, **kw: notes.append((message, kw.get("title")))
    async with app.run_test() as pilot:
        await pilot.press("slash", *"qwen3-0.6b")
        await pilot.press("down")
        assert app.focused is app.screen.query_one("#model-list")
        await pilot.press("p")
        await pilot.pause()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        await pilot.pause(0.1)
    assert any(title == "Cancelled" for _, title in notes) and not any(t == "Download failed" for _, t in notes)


@pytest.mark.parametrize("width", [80, 100])
async def test_the_status_line_fits_the_terminal(width):
    from pathlib import Path

    from support.scripted_engine import FakeServices

    from localllm.tui.app import make_app
    from localllm.tui.services import ChatTarget

    target = ChatTarget("smollm2-135m-instruct-extra-long-name:Q4_K_M", Path("x.gguf"), "Q4_K_M")
    app = make_app(services=FakeServices(ScriptedModel([LONG], tokens_per_s=200, n_ctx=8192)), chat=target)
    async with app.run_test(size=(width, 24)) as pilot:
        await send(pilot, "Go")
        await pilot.pause(0.3)
        status = chat_screen(app).query_one("#status")
        text = str(status.render())
        assert len(text) <= status.content_size.width and "Esc stops" in text and target.label in text
        chat_screen(app).action_stop()
        await reply_done(pilot)
        text = str(status.render())
        assert len(text) <= status.content_size.width and "ctx " in text


async def test_notices_do_not_cover_the_prompt():
    app = scripted_app(ScriptedModel())
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        chat_screen(app).notify("A notice with quite a few words in it, to take some room.")
        await pilot.pause(0.5)
        from textual.widgets._toast import Toast, ToastRack

        toast = app.screen.get_child_by_type(ToastRack).query_one(Toast)
        prompt = chat_screen(app).query_one("#prompt")
        assert toast.region.bottom <= prompt.region.y
