"""A conversation's system prompt and generation settings."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from localllm.app.options import SAMPLING, OptionError

# The settings the dialog shows (the schema gives each its label, type, default and limits).
FIELDS = [SAMPLING[name] for name in ("temperature", "top_p", "top_k", "max_tokens", "seed")]


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
                for option in FIELDS:
                    value = self.settings.get(option.name, option.default)
                    yield Label(option.label)
                    yield Input("" if value is None else str(value), id=option.name, compact=True)
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
        settings: dict[str, Any] = dict(self.settings)  # the ones the dialog does not show (/set min_p) stay
        for option in FIELDS:
            settings.pop(option.name, None)
            try:
                value = option.parse(self.query_one(f"#{option.name}", Input).value, option.label)
            except OptionError as exc:
                self.query_one("#error", Label).update(exc.message)
                return
            if value is not None:
                settings[option.name] = value
        self.dismiss((self.query_one("#system", TextArea).text, settings))
