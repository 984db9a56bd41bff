"""F1: the app's own keys first (the screen's, then the app's), then the prompt's editing keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

EDITING = [
    ("Enter", "send the message"),
    ("Shift+Enter, ^j", "a new line in the message"),
    ("Up (empty prompt)", "edit your last message"),
    ("^p", "command palette"),
    ("/help", "the slash commands"),
]


def key_lines(app, screen: Screen) -> list[tuple[str, str]]:
    """(keys, what) for every binding of ``screen`` and the app that has a description."""
    rows, seen = [], set()
    for owner in (screen, app):
        for binding in owner.BINDINGS:
            action = binding.action.removeprefix("app.") if isinstance(binding, Binding) else ""
            if not isinstance(binding, Binding) or not binding.description or action in seen:
                continue
            seen.add(action)  # "app.quit" on a screen and "quit" on the app are one key to list
            display = app.get_key_display(binding)
            rows.append(
                (display.upper() if display[:1] == "f" and display[1:].isdigit() else display, binding.description)
            )
    return rows


class KeysDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close")]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self._under = screen

    def compose(self) -> ComposeResult:
        rows = key_lines(self.app, self._under)
        width = max(len(k) for k, _ in rows + EDITING)
        text = "\n".join(f"{k:<{width}}  {what}" for k, what in rows)
        if type(self._under).__name__ == "ChatScreen":
            text += "\n\nIn the prompt:\n" + "\n".join(f"{k:<{width}}  {what}" for k, what in EDITING)
        with VerticalScroll(classes="dialog wide", id="keys"):
            yield Static("Keys", classes="question")
            yield Static(text)
            yield Static("Esc closes", classes="hint")
