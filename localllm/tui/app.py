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
    think: bool | None = None  # a reasoning model's thinking: None the template's default, False off
    think_budget: int | None = None  # the most tokens of thinking (None: no limit)
    draft: str | None = None  # speculative decoding (--draft ngram|MODEL)
    lora: tuple[tuple[str, float], ...] = ()  # --lora: (adapter name or file, scale) for the chat's model


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
        self.lora: tuple[tuple[str, float], ...] = ()  # the LoRA adapters it was loaded with

    def switch(self, target: ChatTarget, load, lora: tuple[tuple[str, float], ...] = ()) -> Any:
        """Close the current model (freeing its memory), then load ``target`` with ``load`` (which
        applies the adapters ``lora``)."""
        with self.lock:
            self._close()
            self.model = load(target)
            self.target, self.lora = target, lora
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
        self.lora = ()


class LocalLLMApp(App):
    """localllm's terminal UI: a models screen, a chat screen, and dialogs over them."""

    CSS_PATH = "app.tcss"
    TITLE = "localllm"
    BINDINGS = [
        Binding("f9", "toggle_theme", "Light/Dark", show=False),
        # ? works outside a text box (a prompt or search box types it)
        Binding("f1,question_mark", "keys", "Keys", show=False),
        # Textual's own ctrl+q is hidden from the footer: people looked for how to quit.
        Binding("ctrl+q", "quit", "Quit", priority=True),
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
        theme: str | None = None,
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
        remembered = self.services.preferences().get("theme")
        self.theme = theme or (remembered if remembered in self.available_themes else "textual-dark")
        self._remember_theme = theme is None  # --light for one session is not a new preference

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

    def watch_theme(self, theme: str) -> None:
        if self.is_running:  # chosen now (F9 or the palette), not the one we started with
            try:
                self.services.save_preferences(theme=theme)
            except OSError as exc:
                self.notify(f"Could not remember the theme: {exc}", severity="warning")

    def action_keys(self) -> None:
        from .keys_dialog import KeysDialog

        if not isinstance(self.screen, KeysDialog):
            self.push_screen(KeysDialog(self.screen))

    def get_system_commands(self, screen):
        """The palette (^p): the app's own commands first, then Textual's."""
        from textual.app import SystemCommand

        from .chat_screen import ChatScreen
        from .models_screen import ModelsScreen

        if isinstance(screen, ModelsScreen):
            yield SystemCommand("Chats", "Open the chat screen with the saved chats (c)", screen.action_chats)
            yield SystemCommand("Search models", "Search the catalog and installed models (/)", screen.action_search)
            yield SystemCommand("Pull model", "Download the selected quantization (p)", screen.action_pull)
            yield SystemCommand("Delete model", "Delete the selected installed model (d)", screen.action_delete)
            yield SystemCommand("Hardware", "What this machine has, and what fits (h)", screen.action_hardware)
        if isinstance(screen, ChatScreen):
            yield SystemCommand("New chat", "Start a new chat (^n)", screen.action_new_chat)
            yield SystemCommand("Models", "The models list (^o)", screen.action_models)
            yield SystemCommand(
                "Chat settings", "System prompt and sampling for this chat (^s)", screen.action_settings
            )
            yield SystemCommand("Rename chat", "Rename this chat (F2)", screen.action_rename)
            yield SystemCommand("Export chat", "Save this chat as Markdown or JSON (F3)", screen.action_export)
            yield SystemCommand("Delete chat", "Delete this chat (F8)", screen.action_delete_chat)
            yield SystemCommand(
                "Copy last reply", "Copy the last reply to the clipboard (^y)", screen.action_copy_reply
            )
            yield SystemCommand(
                "Copy code block", "Copy the last reply's last code block", lambda: screen.action_copy_reply(code=True)
            )
            yield SystemCommand("Toggle chats list", "Show or hide the saved chats (^b)", screen.action_toggle_sidebar)
        yield SystemCommand(
            "Light/dark theme", "Switch between the light and dark theme (F9)", self.action_toggle_theme
        )
        yield SystemCommand("Keys", "Every key of this screen (F1, ?)", self.action_keys)
        # Textual's own "Keys" (its help panel) would be listed beside ours under the same name
        yield from (c for c in super().get_system_commands(screen) if c.title != "Keys")

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
    theme: str | None = None,
) -> LocalLLMApp:
    """The app as ``localllm`` runs it; tests pass fake services and a fixed-clock history."""
    if history is None:
        history = History(history_path)
    return LocalLLMApp(
        services,
        history,
        chat_target=chat,
        conversation_id=conversation_id,
        open_chat=open_chat,
        defaults=defaults,
        theme=theme,
    )
