"""Issue 25, item 4: the TUI attaches a collection to a chat (``/docs NAME``); each answer lists its
sources under it, and selecting one shows the chunk's text; the chat remembers its collection when
reopened; an unknown collection is a notice and the chat goes on. Real SmolLM2, real MiniLM."""

from __future__ import annotations

import pytest
from support.chat_pilot import chat_screen, reply_done, send, views, wait_for
from support.docs import make_corpus

from localllm.app import documents

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def type_line(pilot, text: str) -> None:
    prompt = chat_screen(pilot.app).query_one("#prompt")
    prompt.focus()
    prompt.load_text(text)
    await pilot.press("enter")
    await pilot.pause(0.1)


def said(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_tui_chat_with_docs_lists_openable_sources_under_each_answer(tmp_path, minilm_path, installed_starter):
    from localllm.tui.app import ChatDefaults, make_app
    from localllm.tui.services import Services
    from localllm.tui.sources import SourceDialog, SourcesList

    documents.add("notes", [make_corpus(tmp_path / "corpus")], str(minilm_path))
    services = Services()
    defaults = ChatDefaults(n_ctx=1024, n_gpu_layers=0, settings={"temperature": 0.0, "max_tokens": 16})
    app = make_app(services=services, chat=services.resolve(None), defaults=defaults)
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await wait_for(pilot, lambda: not chat_screen(app).loading, timeout=60)
        await type_line(pilot, "/docs nosuch")
        await wait_for(pilot, lambda: any("no collection named nosuch" in m for m in said(app)), timeout=30)
        await type_line(pilot, "/docs notes")
        await wait_for(pilot, lambda: any("from the collection notes" in m for m in said(app)), timeout=60)
        await send(pilot, "At what temperature do I bake the sourdough loaf?")
        await reply_done(pilot, timeout=120)
        answer = views(app)[-1]
        await wait_for(pilot, lambda: bool(answer.query("SourcesList Button")), timeout=10)
        buttons = list(answer.query("SourcesList Button"))
        assert str(buttons[0].label).startswith("[kitchen/sourdough.md:7-9]")
        buttons[0].press()
        await wait_for(pilot, lambda: isinstance(app.screen, SourceDialog), timeout=10)
        assert "Dutch oven" in str(app.screen.query_one("#source-text").render())
        await pilot.press("escape")
        conversation = chat_screen(app).conversation_id
        assert app.history.info(conversation).settings["docs"] == "notes"
        stored = app.history.get(conversation).messages[-1]
        assert stored.stats["sources"][0]["cite"] == "[kitchen/sourdough.md:7-9]"
    planned: list = []

    class Planned(Services):  # what the reopened chat's model is loaded beside
        def load_model(self, *args, **kwargs):
            planned.append(kwargs.get("docs"))
            return super().load_model(*args, **kwargs)

    reopened = make_app(
        services=Planned(), chat=services.resolve(None), conversation_id=conversation, defaults=defaults,
        history_path=app.history.path,
    )  # fmt: skip
    async with reopened.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: bool(views(reopened)), timeout=30)
        assert views(reopened)[-1].query(SourcesList)  # the saved answer keeps its sources
        assert planned == ["notes"]  # the planner left room for the collection's embedding model
        await send(pilot, "When was the tax return filed?")
        await reply_done(pilot, timeout=120)  # the chat's collection is attached again for it
        last = reopened.history.get(conversation).messages[-1]
        assert last.stats["sources"][0]["cite"] == "[money/taxes.txt:1-1]"
