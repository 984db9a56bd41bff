"""A conversation's system prompt and generation settings, and the LoRA adapters of its model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from localllm.app.adapters import parse_scale
from localllm.app.options import SAMPLING, OptionError
from localllm.errors import LocalLLMError

# The settings the dialog shows (the schema gives each its label, type, default and limits).
FIELDS = [SAMPLING[name] for name in ("temperature", "top_p", "top_k", "max_tokens", "seed")]


Lora = tuple[tuple[str, float], ...]  # (adapter name or file, scale), as --lora NAME:SCALE


class SettingsDialog(ModalScreen[tuple[str, dict[str, Any], Lora] | None]):
    """Saves (system prompt, settings, LoRA adapters). The adapters section lists ``adapters`` (the
    installed ones that fit the chat's model) and those already ``chosen``: a scale applies one
    (0: loaded but off), a blank leaves it out. It is not shown when there is nothing to choose."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(
        self, system_prompt: str, settings: dict[str, Any], adapters: Sequence[str] = (), chosen: Lora = ()
    ) -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.settings = settings
        scales = dict(chosen)
        self.adapters = list(dict.fromkeys([*adapters, *scales]))  # the fitting ones, then files from --lora
        self.scales = scales

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("System prompt and settings for this chat", classes="question")
            yield TextArea(self.system_prompt, id="system", soft_wrap=True)
            with Grid(id="fields"):
                for option in FIELDS:
                    value = self.settings.get(option.name, option.default)
                    yield Label(option.label)
                    yield Input("" if value is None else str(value), id=option.name, compact=True)
            if self.adapters:
                yield Label("LoRA adapters: a scale applies one (0 = loaded but off), blank = not used")
                with Grid(id="adapters"):
                    for i, name in enumerate(self.adapters):
                        scale = self.scales.get(name)
                        yield Label(name)
                        yield Input("" if scale is None else f"{scale:g}", id=f"lora-{i}", compact=True)
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
        lora = []
        for i, name in enumerate(self.adapters):
            text = self.query_one(f"#lora-{i}", Input).value.strip()
            if not text:
                continue
            try:
                lora.append((name, parse_scale(text, f"the scale of {name}")))
            except LocalLLMError as exc:
                self.query_one("#error", Label).update(exc.message)
                return
        self.dismiss((self.query_one("#system", TextArea).text, settings, tuple(lora)))
