"""What a person sees on every screen, pinned as SVG snapshots (80x24 unless noted).

Deterministic: fixed hardware, a scripted engine with a fixed rate (stats computed, not timed), a
history with a fixed clock, the real catalog. Regenerate after an intended change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support.scripted_engine import FakeServices, ScriptedModel

from localllm.chat.history import History
from localllm.tui.app import make_app
from localllm.tui.chat_screen import ChatScreen
from localllm.tui.prompt_area import PromptArea
from localllm.tui.services import ChatTarget

REPLY = """Here is a function that adds two numbers:

```python
def add(a: int, b: int) -> int:
    return a + b
```

It **returns** the sum."""

TARGET = ChatTarget("scripted-model:Q4_K_M", Path("scripted.gguf"), "Q4_K_M")


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch):
    """The prompt's cursor does not blink: a snapshot taken mid-blink (as happens on a busy
    machine) would otherwise show it or not by chance."""
    monkeypatch.setattr(PromptArea, "cursor_blink", False)


def fixed_history(tmp_path: Path) -> History:
    return History(tmp_path / "history.sqlite3", clock=lambda: 1_700_000_000.0)


async def settle(pilot, condition=lambda: True, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() or pilot.app.workers._workers and any(w.is_running for w in pilot.app.workers._workers):
        if time.monotonic() > deadline:
            raise AssertionError("UI did not settle")
        await pilot.pause(0.05)
    pilot.app.clear_notifications()  # toasts expire on a timer: keep them out of the pictures
    await pilot.pause()


def chat(app) -> ChatScreen:
    return next(s for s in app.screen_stack if isinstance(s, ChatScreen))


async def ask(pilot, text: str) -> None:
    await settle(pilot, lambda: not chat(pilot.app).loading)
    await pilot.press(*text, "enter")
    await settle(pilot, lambda: not chat(pilot.app).generating)


def test_models_screen(snap_compare, installed_starter, tmp_path):
    app = make_app(services=FakeServices(), history=fixed_history(tmp_path))
    assert snap_compare(app, run_before=settle)


def test_models_screen_light_theme_search(snap_compare, installed_starter, tmp_path):
    app = make_app(services=FakeServices(), history=fixed_history(tmp_path), theme="textual-light")
    assert snap_compare(app, press=["slash", *"qwen3", "enter", "down", "down"], run_before=settle)


def test_chat_screen_with_a_markdown_reply(snap_compare, tmp_path):
    model = ScriptedModel([REPLY], tokens_per_s=1000)
    app = make_app(services=FakeServices(model), history=fixed_history(tmp_path), chat=TARGET)

    async def run_before(pilot):
        await ask(pilot, "Write add() in Python")

    assert snap_compare(app, run_before=run_before)


def test_chat_screen_with_sidebar_wide(snap_compare, tmp_path):
    db = fixed_history(tmp_path)
    for title in ("Trip to Lisbon", "Python help"):
        conv = db.create(title=title)
        db.add_message(conv, "user", "Hello")
    model = ScriptedModel(["Hi! What can I do for you?"], tokens_per_s=1000)
    app = make_app(services=FakeServices(model), history=db, chat=TARGET)

    async def run_before(pilot):
        await ask(pilot, "Hello there")

    assert snap_compare(app, terminal_size=(110, 30), run_before=run_before)


def test_settings_dialog(snap_compare, tmp_path):
    app = make_app(services=FakeServices(), history=fixed_history(tmp_path), chat=TARGET)

    async def run_before(pilot):
        await settle(pilot, lambda: not chat(pilot.app).loading)
        await pilot.press("ctrl+s")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_delete_confirmation(snap_compare, installed_starter, tmp_path):
    app = make_app(services=FakeServices(), history=fixed_history(tmp_path))
    assert snap_compare(app, press=["d"], run_before=settle)


def test_pull_dialog_in_progress(snap_compare, tmp_path):
    gate = threading.Event()
    app = make_app(services=FakeServices(pull_gate=gate), history=fixed_history(tmp_path))

    async def run_before(pilot):
        await pilot.press("slash", *"qwen3-0.6b", "enter", "p")
        for expected in ("19 MiB of", "38 MiB of"):
            gate.set()
            deadline = time.monotonic() + 10
            while expected not in str(pilot.app.screen.query_one("#pull-detail").render()):
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
        pilot.app.clear_notifications()
        await pilot.pause()

    try:
        assert snap_compare(app, run_before=run_before)
    finally:
        for event in app.cancel_events:
            event.set()
        gate.set()


def test_hardware_panel(snap_compare, tmp_path):
    app = make_app(services=FakeServices(), history=fixed_history(tmp_path))

    async def run_before(pilot):
        await pilot.press("h")
        await settle(pilot, lambda: "Test CPU" in str(pilot.app.screen.query_one("#hardware").render()))

    assert snap_compare(app, run_before=run_before)


def test_rename_dialog(snap_compare, tmp_path):
    model = ScriptedModel(["Sure."], tokens_per_s=1000)
    app = make_app(services=FakeServices(model), history=fixed_history(tmp_path), chat=TARGET)

    async def run_before(pilot):
        await ask(pilot, "Plan a trip")
        await pilot.press("f2")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_context_notice(snap_compare, tmp_path):
    model = ScriptedModel(["Sure " * 8], n_ctx=80, tokens_per_s=1000)
    app = make_app(services=FakeServices(model), history=fixed_history(tmp_path), chat=TARGET)

    async def run_before(pilot):
        for n in range(5):
            await ask(pilot, f"question {n} with a few words")

    assert snap_compare(app, run_before=run_before)
