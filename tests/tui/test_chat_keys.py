"""Keys, focus and what the chat screen shows after a switch (issue 22, items 2, 4, 7, 8, 9), driven
with Pilot as a person would."""

from __future__ import annotations

import re

import pytest
from support.chat_pilot import chat_screen, reply_done, scripted_app, send, views, wait_for
from support.scripted_engine import FakeServices, ScriptedModel

from localllm.chat import history as hist
from localllm.chat.history import History
from localllm.errors import LocalLLMError
from localllm.tui.app import make_app
from localllm.tui.keys_dialog import KeysDialog, key_lines
from localllm.tui.models_screen import ModelsScreen
from localllm.tui.sidebar import ConversationItem

pytestmark = pytest.mark.anyio

LONG_REPLY = " ".join(f"word{n}" for n in range(400))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.parametrize("by", ["click", "keys", "after-a-chat"])
async def test_a_message_typed_after_opening_a_long_chat_from_the_sidebar_is_sent(tmp_path, by):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create(title="Long")
    for n in range(60):
        db.add_message(conv, "user", f"question {n}")
        db.add_message(conv, "assistant", f"answer {n}")
    app = scripted_app(ScriptedModel(["Fine."]), history=db, conversation_id=conv if by == "start" else None)
    async with app.run_test(size=(120, 35)) as pilot:
        screen = chat_screen(app)
        await wait_for(pilot, lambda: not screen.loading)
        if by == "after-a-chat":
            await send(pilot, "first")
            await reply_done(pilot)
            item = next(i for i in app.screen.query(ConversationItem) if i.conversation_id == conv)
            await pilot.click(item)
        elif by == "click":
            await pilot.click(ConversationItem)
        else:  # ^b twice: hidden, then shown with the focus in the list
            await pilot.press("ctrl+b", "ctrl+b", "down", "enter")
        await wait_for(pilot, lambda: len(views(app)) > 0)
        await pilot.pause()
        await pilot.press(*"hello", "enter")
        await wait_for(pilot, lambda: views(app)[-1].role == "assistant" and views(app)[-2].content == "hello")
        await reply_done(pilot)
        assert db.get(conv).messages[-2].content == "hello"


async def test_ctrl_y_copies_the_last_reply_with_the_focus_in_the_prompt():
    app = scripted_app(ScriptedModel(["The reply."]))
    async with app.run_test() as pilot:
        await send(pilot, "Hi")
        await reply_done(pilot)
        assert app.focused is chat_screen(app).prompt
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert app.clipboard == "The reply."


async def test_ctrl_c_stops_the_reply_and_the_app_goes_on():
    app = scripted_app(ScriptedModel([LONG_REPLY], tokens_per_s=100))
    async with app.run_test() as pilot:
        await send(pilot, "Count")
        await wait_for(pilot, lambda: len(views(app)[-1].content) > 20)
        await pilot.press("ctrl+c")
        await reply_done(pilot)
        assert 0 < len(views(app)[-1].content) < len(LONG_REPLY)
        assert app.history.get(app.history.conversations()[0].id).messages[-1].status == hist.STOPPED
        assert app.is_running


async def test_question_mark_shows_the_keys_outside_a_text_box_and_types_in_it():
    app = scripted_app(ScriptedModel())
    async with app.run_test() as pilot:
        await pilot.press("question_mark")  # the prompt has the focus: a question mark is typed
        await pilot.pause()
        assert chat_screen(app).prompt.text == "?"
        chat_screen(app).transcript.focus()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, KeysDialog))


async def test_the_palette_on_the_models_screen_has_the_apps_commands_each_once():
    app = make_app(services=FakeServices())
    async with app.run_test() as pilot:
        await pilot.pause()
        assert isinstance(app.screen, ModelsScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Chats", "Pull model", "Hardware", "Search models"} <= set(titles)
        assert len(titles) == len(set(titles))  # "Keys" once, not ours and Textual's


async def test_every_key_of_the_chat_screen_is_listed_once():
    app = scripted_app(ScriptedModel())
    async with app.run_test() as pilot:
        await pilot.pause()
        rows = key_lines(app, chat_screen(app))
        described = [what for _, what in rows]
        assert described.count("Quit") == 1 and described.count("Keys") == 1


async def test_the_status_line_forgets_the_last_chats_numbers_after_clear_and_a_switch(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    other = db.create(title="Other")
    db.add_message(other, "user", "old question")
    db.add_message(other, "assistant", "old answer", stats={"context_used": 77, "n_ctx": 4096, "tokens_per_s": 9.5})
    app = scripted_app(ScriptedModel(["A reply of some words."]), history=db)
    async with app.run_test(size=(120, 35)) as pilot:
        await send(pilot, "Hi")
        await reply_done(pilot)
        status = chat_screen(app).status_line
        assert status.context_used > 0
        chat_screen(app).open(None, other)
        await pilot.pause()
        assert (status.context_used, status.tokens_per_s) == (77, 9.5)
        await pilot.click("#prompt")
        await pilot.press(*"/clear", "enter")
        await pilot.pause()
        assert (status.context_used, status.tokens_per_s) == (0, 0.0)
        assert "ctx 0/" in str(status.render())


async def test_help_keeps_its_brackets():
    app = scripted_app(ScriptedModel())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"/help", "enter")
        await wait_for(pilot, lambda: bool(app.screen.query(".help")))
        assert "[code]" in str(app.screen.query_one(".help").render())


async def test_typing_after_a_refused_command_replaces_it():
    app = scripted_app(ScriptedModel())
    async with app.run_test() as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"/nonesuch", "enter")
        await pilot.pause()
        await pilot.press(*"hi")
        assert chat_screen(app).prompt.text == "hi"


async def test_a_cut_title_in_the_sidebar_ends_with_an_ellipsis(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    db.create(title="A rather long title that cannot fit in the sidebar at all")
    app = scripted_app(ScriptedModel(), history=db)
    async with app.run_test(size=(120, 35)) as pilot:
        await pilot.pause()
        line = app.screen.query_one(ConversationItem).query_one("Static")
        rendered = "".join(s.text for s in line.render_line(0)).rstrip()
        assert rendered.endswith("…")


class FailingPull(FakeServices):
    def pull(self, entry, quant, progress, cancel):
        raise LocalLLMError("the Hub could not be reached", hint="check the connection, or pull --offline")


class NeverStartedPull(FakeServices):
    def pull(self, entry, quant, progress, cancel):
        cancel.wait(5)
        from localllm.tui.services import PullCancelled

        raise PullCancelled("cancelled")


async def test_a_failed_pull_says_why_in_the_dialog_until_closed(isolated_home):
    app = make_app(services=FailingPull())
    async with app.run_test() as pilot:
        await pilot.press("slash", *"qwen3-0.6b", "enter", "p")
        await wait_for(pilot, lambda: "could not be reached" in str(app.screen.query_one("#pull-detail").render()))
        detail = str(app.screen.query_one("#pull-detail").render())
        assert "--%" not in detail and "check the connection" in detail
        await pilot.pause(0.5)
        assert not isinstance(app.screen, ModelsScreen)  # still shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))


async def test_a_pull_cancelled_before_it_started_does_not_offer_to_resume(isolated_home):
    app = make_app(services=NeverStartedPull())
    async with app.run_test() as pilot:
        await pilot.press("slash", *"qwen3-0.6b", "enter", "p")
        await pilot.pause()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        said = [n.message for n in app._notifications]
        assert any("cancelled" in m for m in said) and not any("resume" in m for m in said)


async def test_model_with_no_name_opens_the_models_list():
    app = scripted_app(ScriptedModel())
    async with app.run_test() as pilot:
        await pilot.click("#prompt")
        await pilot.press(*"/model", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))


async def test_a_replys_speed_and_first_token_time_show_on_its_label(tmp_path):
    app = scripted_app(ScriptedModel(["A reply of a few words."], tokens_per_s=50))
    async with app.run_test() as pilot:
        await send(pilot, "Hi")
        await reply_done(pilot)
        tip = str(views(app)[-1].query_one(".role").tooltip)
        assert "tok/s" in tip and "first token" in tip
    # and when the chat is opened again, from its saved stats
    db = History(tmp_path / "h.sqlite3")
    conv = db.create(title="Saved")
    db.add_message(conv, "user", "q")
    db.add_message(conv, "assistant", "a", stats={"generated_tokens": 5, "tokens_per_s": 12.0, "ttft_s": 0.5})
    app = scripted_app(ScriptedModel(), history=db, conversation_id=conv)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: len(views(app)) == 2)
        assert str(views(app)[-1].query_one(".role").tooltip) == "5 tokens · 12.0 tok/s · first token 0.50 s"


async def test_the_footer_shows_quit_whole_at_80_columns():
    app = scripted_app(ScriptedModel())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()

        def shown() -> str:  # what a person sees (the footer's keys are cut at its edge)
            return "".join(re.findall(r">([^<]*)</text>", app.export_screenshot())).replace("&#160;", " ")

        await wait_for(pilot, lambda: "palette" in shown())
        assert " Quit" in shown() and " Models" in shown(), shown()
