"""`localllm chat MODEL` opens straight into a working chat with that model (README, issue 16)."""

from __future__ import annotations

import types

import pytest
from support.chat_pilot import reply_done, send, views

from localllm.tui.chat_screen import ChatScreen

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class _Tty:
    def isatty(self) -> bool:
        return True


async def test_chat_model_opens_a_working_chat_with_that_model(installed_starter, monkeypatch):
    import localllm.tui.app as tui_app
    from localllm.cli import chat as chat_cmd
    from localllm.cli import main

    made = []
    real_make_app = tui_app.make_app

    def make_app(**kwargs):
        app = real_make_app(**kwargs)
        monkeypatch.setattr(app, "run", lambda *a, **k: None)  # the test drives it with Pilot instead
        made.append(app)
        return app

    monkeypatch.setattr(tui_app, "make_app", make_app)
    monkeypatch.setattr(chat_cmd, "sys", types.SimpleNamespace(stdin=_Tty(), stdout=_Tty()))  # a terminal
    assert main(["chat", f"{installed_starter.name}:{installed_starter.quant}", "-t", "0"]) == 0
    [app] = made
    async with app.run_test(size=(100, 30)) as pilot:
        assert isinstance(app.screen, ChatScreen)  # straight into a chat, not the models screen
        await send(pilot, "What is the capital city of France? Answer in one sentence.")
        await reply_done(pilot)
        reply = views(app)[-1]
        assert reply.role == "assistant" and "Paris" in reply.content
        status = str(app.screen.query_one("#status").render())
        assert installed_starter.key in status


def test_chat_without_a_terminal_is_one_line(cli, installed_starter):
    result = cli("chat", installed_starter.name)
    assert result.returncode == 2 and "interactive terminal" in result.stderr
    assert result.stderr.count("\n") <= 2
