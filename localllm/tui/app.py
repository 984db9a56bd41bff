"""The Textual app and its factory (shared by the CLI and the tests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from localllm.chat.history import History

from .services import ChatTarget, Services


@dataclass
class ChatDefaults:
    """What ``localllm chat`` options set for new conversations."""

    n_ctx: int | None = None
    n_gpu_layers: int | None = None  # None: the planner's
    system_prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # SamplingOptions fields


class ModelHolder:
    """The one loaded model, owned by the app (never a module global).

    ``lock`` is held while the model loads, generates or closes: llama.cpp contexts are not
    thread-safe, and switching models must wait for a reply to stop before freeing memory.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.model: Any = None
        self.target: ChatTarget | None = None
        self.conversation_id: int | None = None  # whose KV cache the model holds

    def switch(self, target: ChatTarget, load) -> Any:
        """Close the current model (freeing its memory), then load ``target`` with ``load``."""
        with self.lock:
            self._close()
            self.model = load(target)
            self.target = target
            return self.model

    def release(self, path: Path | None = None) -> None:
        """Close the model (only if it is the file at ``path``, when given)."""
        with self.lock:
            if path is None or (self.target is not None and self.target.path == path):
                self._close()

    def _close(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = None
        self.target = None
        self.conversation_id = None


class LocalLLMApp(App):
    """localllm's terminal UI: a models screen, a chat screen, and dialogs over them."""

    CSS_PATH = "app.tcss"
    TITLE = "localllm"
    BINDINGS = [
        Binding("f9", "toggle_theme", "Light/Dark", show=False),
        Binding("f1", "show_help_panel", "Keys", show=False),
    ]

    def __init__(
        self,
        services: Services | None = None,
        history: History | None = None,
        *,
        chat_target: ChatTarget | None = None,
        conversation_id: int | None = None,
        open_chat: bool = False,
        defaults: ChatDefaults | None = None,
        theme: str = "textual-dark",
    ) -> None:
        super().__init__()
        self.services = services or Services()
        self.history = history if history is not None else History()
        self.holder = ModelHolder()
        self.defaults = defaults or ChatDefaults()
        self.cancel_events: set[threading.Event] = set()
        self._chat_target = chat_target
        self._conversation_id = conversation_id
        self._open_chat = open_chat or chat_target is not None or conversation_id is not None
        self.theme = theme

    def get_default_screen(self):
        from .models_screen import ModelsScreen

        return ModelsScreen()

    def on_mount(self) -> None:
        if self._open_chat:
            self.open_chat(self._chat_target, self._conversation_id)

    def open_chat(self, target: ChatTarget | None = None, conversation_id: int | None = None) -> None:
        """Show the chat screen (one instance), with ``target`` loaded and/or a saved conversation."""
        from .chat_screen import ChatScreen

        screen = next((s for s in self.screen_stack if isinstance(s, ChatScreen)), None)
        if screen is None:
            self.push_screen(ChatScreen(target, conversation_id))
            return
        while self.screen is not screen:
            self.pop_screen()
        screen.open(target, conversation_id)

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def exit(self, *args: Any, **kwargs: Any) -> None:
        # Worker threads are not daemons: ask every reply or download to stop before leaving.
        for event in list(self.cancel_events):
            event.set()
        super().exit(*args, **kwargs)

    def on_unmount(self) -> None:
        self.holder.release()
        self.history.close()


def make_app(
    *,
    services: Services | None = None,
    history_path: Path | None = None,
    history: History | None = None,
    chat: ChatTarget | None = None,
    conversation_id: int | None = None,
    open_chat: bool = False,
    defaults: ChatDefaults | None = None,
    theme: str = "textual-dark",
) -> LocalLLMApp:
    """The app as ``localllm`` runs it; tests pass fake services and a fixed-clock history."""
    if history is None:
        history = History(history_path)
    return LocalLLMApp(
        services, history, chat_target=chat, conversation_id=conversation_id,
        open_chat=open_chat, defaults=defaults, theme=theme,
    )
