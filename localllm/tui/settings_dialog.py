"""A conversation's system prompt and generation settings."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

# (field, label, type, default)
FIELDS: list[tuple[str, str, type, Any]] = [
    ("temperature", "Temperature (0 = greedy)", float, 0.8),
    ("top_p", "Top-p", float, 0.95),
    ("top_k", "Top-k (0 = off)", int, 40),
    ("max_tokens", "Max reply tokens (empty = no limit)", int, None),
    ("seed", "Seed (empty = random)", int, None),
]


class SettingsDialog(ModalScreen[tuple[str, dict[str, Any]] | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, system_prompt: str, settings: dict[str, Any]) -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("System prompt and settings for this chat", classes="question")
            yield TextArea(self.system_prompt, id="system", soft_wrap=True)
            with Grid(id="fields"):
                for name, label, _kind, default in FIELDS:
                    value = self.settings.get(name, default)
                    yield Label(label)
                    yield Input("" if value is None else str(value), id=name, compact=True)
            yield Label("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save (^s)", variant="primary", id="save", compact=True)
                yield Button("Cancel (Esc)", id="cancel", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_save(self) -> None:
        settings: dict[str, Any] = {}
        for name, label, kind, _default in FIELDS:
            text = self.query_one(f"#{name}", Input).value.strip()
            if not text:
                continue
            try:
                settings[name] = kind(text)
            except ValueError:
                self.query_one("#error", Label).update(f"{label}: '{text}' is not a number")
                return
        self.dismiss((self.query_one("#system", TextArea).text, settings))
