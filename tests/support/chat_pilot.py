"""Driving the chat screen in Pilot tests as a person would: type, send, wait for the reply."""

from __future__ import annotations

import time
from pathlib import Path

from localllm.tui.app import make_app
from localllm.tui.chat_screen import ChatScreen, MessageView
from localllm.tui.services import ChatTarget
from support.scripted_engine import FakeServices, ScriptedModel

TARGET = ChatTarget("scripted:Q4_K_M", Path("scripted.gguf"), "Q4_K_M")


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the UI")
        await pilot.pause(0.05)


def chat_screen(app) -> ChatScreen:
    return next(s for s in app.screen_stack if isinstance(s, ChatScreen))


def views(app) -> list[MessageView]:
    return list(chat_screen(app).query(MessageView))


async def send(pilot, text: str) -> None:
    screen = chat_screen(pilot.app)
    await wait_for(pilot, lambda: not screen.loading)
    await pilot.click("#prompt")
    await pilot.press(*text)
    await pilot.press("enter")
    # The reply has begun once an assistant message is on screen (a fast reply may already be done).
    await wait_for(pilot, lambda: bool(views(pilot.app)) and views(pilot.app)[-1].role == "assistant")


async def reply_done(pilot, timeout: float = 30.0) -> None:
    screen = chat_screen(pilot.app)
    await wait_for(pilot, lambda: not screen.generating, timeout)


def scripted_app(model: ScriptedModel, **kwargs):
    return make_app(services=FakeServices(model), chat=TARGET, **kwargs)
