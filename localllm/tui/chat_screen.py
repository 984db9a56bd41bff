"""The chat screen: a streaming Markdown transcript, the prompt, a status line, saved chats aside.

The reply is generated in a thread worker that appends text pieces to a buffer; a 50 ms timer on
the UI side moves whatever has arrived into the Markdown widget in one append. The UI therefore
re-renders at most 20 times a second however fast the model is, and the worker never waits for it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual import getters, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, ListItem, ListView, Markdown, Static

from localllm.chat import commands
from localllm.chat import history as hist
from localllm.chat.context import fit_messages, reply_reserve
from localllm.errors import LocalLLMError

from .app import LocalLLMApp
from .messages import ContextTrimmed, ModelLoaded, ReplyFinished
from .prompt_area import PromptArea
from .services import ChatTarget

FLUSH_INTERVAL = 0.05  # seconds between transcript updates while streaming
SAVE_INTERVAL = 1.0  # seconds between saves of a partial reply
READING_NOTE_AFTER = 0.5  # seconds without a first token before the label says the prompt is being read
SHOWN_MESSAGES = 24  # a long conversation opens with its last messages; the rest on demand

ROLE_LABEL = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTE = {hist.PARTIAL: "interrupted", hist.STOPPED: "stopped"}


def _soft_breaks_are_hard(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def reply_parser() -> MarkdownIt:
    """Markdown as models write it: a single newline is a line break (a poem keeps its lines)."""
    parser = MarkdownIt("gfm-like", {"breaks": True})
    parser.core.ruler.push("soft_breaks_are_hard", _soft_breaks_are_hard)
    return parser


class MessageView(Vertical):
    """One message: who said it, then its Markdown."""

    def __init__(
        self,
        role: str,
        content: str,
        message_id: int | None = None,
        status: str = hist.COMPLETE,
        *,
        writing: bool = False,
    ) -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.content = content
        self.message_id = message_id
        self.status = status
        self.writing = writing  # being streamed: no "(interrupted)" note until it ends
        self.note = ""  # what the label says meanwhile ("reading the conversation…")

    def compose(self) -> ComposeResult:
        yield Static(self._label(), classes="role")
        yield Markdown(self.content, parser_factory=reply_parser)

    def _label(self) -> str:
        note = self.note if self.writing else STATUS_NOTE.get(self.status)
        return ROLE_LABEL.get(self.role, self.role) + (f" ({note})" if note else "")

    def set_status(self, status: str) -> None:
        self.status = status
        self.writing = False
        self.note = ""
        self.query_one(".role", Static).update(self._label())

    def set_note(self, note: str) -> None:
        """A word on the label while the reply is being written (empty: none)."""
        if note != self.note:
            self.note = note
            self.query_one(".role", Static).update(self._label())

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)


def fit_line(parts: list[tuple[int, str]], width: int, sep: str = " · ") -> str:
    """``parts`` joined by ``sep``, leaving out the lowest-priority ones until the line fits ``width``
    (the first part, the model's name, always stays)."""
    kept = list(parts)
    while len(kept) > 1 and len(sep.join(t for _, t in kept)) > width:
        kept.remove(min(kept[1:], key=lambda part: part[0]))
    return sep.join(t for _, t in kept)


class ConversationItem(ListItem):
    def __init__(self, info: hist.ConversationInfo, current: bool) -> None:
        super().__init__(Static(info.title), classes="current" if current else "")
        self.conversation_id = info.id


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "regenerate", "Regen"),
        # priority: the prompt's own ctrl+e (go to end; End does the same) must not swallow it
        Binding("ctrl+e", "edit_last", "Edit", priority=True),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+o", "models", "Models"),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "export", "Export", show=False),
        Binding("f8", "delete_chat", "Delete chat", show=False),
        Binding("ctrl+y", "copy_reply", "Copy reply", show=False),
        Binding("ctrl+q", "app.quit", "Quit", show=False),
    ]

    app = getters.app(LocalLLMApp)  # self.app typed as this app, with its services

    def __init__(self, target: ChatTarget | None = None, conversation_id: int | None = None) -> None:
        super().__init__()
        self._initial = (target, conversation_id)
        self.target: ChatTarget | None = None
        self.conversation_id: int | None = None
        self.system_prompt = ""
        self.settings: dict[str, Any] = {}
        self.loading = False
        self.generating = False
        self.cancel = threading.Event()
        self._queued: str | None = None
        self._editing: MessageView | None = None  # the message "edit last" will replace
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._stream_view: MessageView | None = None
        self._reply_started = 0.0
        self._generation = None  # the reply being written, for its prompt progress
        self._last_stats: dict[str, Any] | None = None
        self._hidden: list[hist.StoredMessage] = []

    # -- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-body"):
            with Vertical(id="sidebar"):
                yield Static("Chats", classes="sidebar-title")
                yield ListView(id="conversations")
            with Vertical(id="chat-main"):
                yield VerticalScroll(id="transcript")
                yield PromptArea(
                    placeholder="Message (Enter sends, Shift+Enter or ^j for a new line, /help)", id="prompt"
                )
                yield Static("", id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.app.cancel_events.add(self.cancel)
        defaults = self.app.defaults
        self.system_prompt, self.settings = defaults.system_prompt, dict(defaults.settings)
        self.query_one("#sidebar").display = self.app.size.width >= 100
        self.set_interval(FLUSH_INTERVAL, self.flush, name="flush")
        self.query_one("#transcript", VerticalScroll).anchor()
        self.refresh_sidebar()
        target, conversation_id = self._initial
        self.open(target, conversation_id)
        if self.conversation_id is None:
            self._show_empty_hint()
        self.query_one("#prompt", PromptArea).focus()

    def on_unmount(self) -> None:
        self.cancel.set()
        self.app.cancel_events.discard(self.cancel)

    # -- opening models and conversations ---------------------------------------------------------

    def open(self, target: ChatTarget | None, conversation_id: int | None) -> None:
        """Switch to a conversation and/or model; the model loads in the background.

        A model alone switches the model of the chat on screen (a reply being written finishes
        first: the load waits for it); another conversation stops the reply.
        """
        if conversation_id is not None and conversation_id != self.conversation_id:
            if self.generating:
                self.action_stop()
            self.show_conversation(conversation_id)
            if target is None:
                target = self._conversation_target(conversation_id)
        elif target is not None and self.conversation_id is not None and target != self.target:
            self.app.history.configure(self.conversation_id, model=target.label, model_path=str(target.path))
            self.notify(f"This chat continues with {target.label}.")
        if target is not None and (target != self.target or self.app.holder.target != target):
            self.load(target)
        elif self.target is None:
            current = self.app.holder.target
            self.target = current
        self.update_status()

    def _conversation_target(self, conversation_id: int) -> ChatTarget | None:
        info = self.app.history.info(conversation_id)
        if not info.model_path:
            return None
        if self.target is not None and str(self.target.path) == info.model_path:
            return None
        from pathlib import Path

        path = Path(info.model_path)
        if not path.is_file():
            self.notify(f"{info.model} is no longer installed; pick another model (^o).", severity="warning")
            return None
        return ChatTarget(info.model, path, info.model.rpartition(":")[2] if ":" in info.model else "")

    def load(self, target: ChatTarget) -> None:
        self.target = target
        self.loading = True
        self.update_status()
        self._load(target)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, target: ChatTarget) -> None:
        app = self.app
        try:
            app.holder.switch(
                target, lambda t: app.services.load_model(t, app.defaults.n_ctx, app.defaults.n_gpu_layers)
            )
        except LocalLLMError as exc:
            self.post_message(ModelLoaded(target.label, exc))
        else:
            self.post_message(ModelLoaded(target.label))

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        self.loading = False
        if message.error is not None:
            self.target = None
            hint = f" ({h})" if (h := getattr(message.error, "hint", None)) else ""
            self.notify(f"{message.error}{hint}", title="Could not load the model", severity="error", timeout=10)
        self.update_status()
        if self._queued is not None and message.error is None:
            text, self._queued = self._queued, None
            await self.send(text)

    def new_conversation(self) -> None:
        self.conversation_id = None
        self._hidden = []
        self.system_prompt, self.settings = self.app.defaults.system_prompt, dict(self.app.defaults.settings)
        self.query_one("#transcript").remove_children()
        self._show_empty_hint()
        self.refresh_sidebar()

    def _show_empty_hint(self) -> None:
        self.query_one("#transcript").mount(
            Static(
                "Ask anything. Enter sends, Shift+Enter or ^j breaks the line; Esc stops a reply; ^r "
                "regenerates; ^e edits your last message; ^y copies the last reply. F2 renames this chat, "
                "F3 exports it, F8 deletes it, F9 switches light/dark, F1 lists every key, /help the "
                "commands (/system, /set temperature 0.2, /model, /save ...). Chats are saved as you go.",
                classes="empty-hint",
            )
        )

    def show_conversation(self, conversation_id: int) -> None:
        conv = self.app.history.get(conversation_id)
        self.conversation_id = conversation_id
        self.system_prompt, self.settings = conv.info.system_prompt, dict(conv.info.settings)
        transcript = self.query_one("#transcript", VerticalScroll)
        transcript.remove_children()
        shown = conv.messages[-SHOWN_MESSAGES:]
        self._hidden = conv.messages[: len(conv.messages) - len(shown)]
        views: list[Any] = []
        if self._hidden:
            views.append(Button(f"Show {len(self._hidden)} earlier messages", id="show-earlier", classes="earlier"))
        views += [MessageView(m.role, m.content, m.id, m.status) for m in shown]
        if not views:
            self._show_empty_hint()
        transcript.mount_all(views)
        transcript.scroll_end(animate=False)
        self.refresh_sidebar()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "show-earlier":
            hidden, self._hidden = self._hidden, []
            transcript = self.query_one("#transcript", VerticalScroll)
            transcript.mount_all([MessageView(m.role, m.content, m.id, m.status) for m in hidden], after=event.button)
            event.button.remove()

    def refresh_sidebar(self) -> None:
        listing = self.query_one("#conversations", ListView)
        listing.clear()
        listing.extend(
            ConversationItem(info, info.id == self.conversation_id) for info in self.app.history.conversations()
        )

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if isinstance(event.item, ConversationItem):
            self.open(None, event.item.conversation_id)
            self.query_one("#prompt", PromptArea).focus()

    # -- sending and streaming ------------------------------------------------------------------

    def on_prompt_area_edit_last(self, event: PromptArea.EditLast) -> None:
        self.action_edit_last()

    async def on_prompt_area_submitted(self, event: PromptArea.Submitted) -> None:
        text = event.text.strip()
        if not text:
            return
        try:
            command = commands.parse(text)
        except commands.CommandError as exc:
            self.notify(f"{exc} ({exc.hint})" if exc.hint else str(exc), severity="warning")
            return
        if command is not None:
            event.prompt.set_text("")
            await self.run_command(command)
            return
        text = commands.message_text(text)
        if self.generating:
            self.notify("A reply is still being written: Esc stops it.")
            return
        event.prompt.set_text("")
        if self._editing is not None:
            editing, self._editing = self._editing, None
            if editing.is_mounted:
                await self._remove_from(editing)
        if self.target is None:
            self.notify("No model loaded: ^o opens the models list.", severity="warning")
            event.prompt.set_text(text)
            return
        if self.loading:
            self._queued = text
            self.notify("The model is loading; your message is sent when it is ready.")
            return
        await self.send(text)

    def _ensure_conversation(self, first_text: str) -> int:
        if self.conversation_id is None:
            target = self.target
            self.conversation_id = self.app.history.create(
                title=hist.title_from(first_text),
                model=target.label if target else "",
                model_path=str(target.path) if target else "",
                system_prompt=self.system_prompt,
                settings=self.settings,
            )
            self.refresh_sidebar()
        elif self.target is not None:
            self.app.history.configure(self.conversation_id, model=self.target.label, model_path=str(self.target.path))
        return self.conversation_id

    async def send(self, text: str) -> None:
        conversation_id = self._ensure_conversation(text)
        message_id = self.app.history.add_message(conversation_id, "user", text)
        transcript = self.query_one("#transcript", VerticalScroll)
        for hint in transcript.query(".empty-hint"):
            hint.remove()
        await transcript.mount(MessageView("user", text, message_id))
        await self.start_reply()

    async def start_reply(self) -> None:
        history, conversation_id = self.app.history, self.conversation_id
        if conversation_id is None:  # send() and regenerate have made or checked it
            return
        conv = history.get(conversation_id)
        messages = conv.chat_messages()
        assistant_id = history.add_message(conversation_id, "assistant", "", status=hist.PARTIAL)
        view = MessageView("assistant", "", assistant_id, hist.PARTIAL, writing=True)
        self._stream_view = view
        self._reply_started = time.monotonic()
        transcript = self.query_one("#transcript", VerticalScroll)
        await transcript.mount(view)
        transcript.scroll_end(animate=False)
        self.generating = True
        self.cancel.clear()
        self.update_status()
        self.generate(messages, assistant_id, self.conversation_id)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, messages: list[dict[str, str]], assistant_id: int, conversation_id: int) -> None:
        holder = self.app.holder
        with holder.lock:
            model = self._reply(messages, assistant_id, conversation_id)
            if model is not None:
                try:
                    self.app.services.save_state(model, conversation_id)  # reopening the chat is fast
                except OSError as exc:  # a full disk must not break the chat: the cache is optional
                    self.app.call_from_thread(
                        self.notify, f"Could not keep this chat's cache: {exc}", severity="warning"
                    )

    def _reply(self, messages: list[dict[str, str]], assistant_id: int, conversation_id: int):
        """Stream one reply into the pending buffer and the history; the model, if it replied."""
        app, cancel, holder = self.app, self.cancel, self.app.holder
        history = app.history
        text, status, stats, error = "", hist.PARTIAL, None, None
        model = None
        try:
            model = holder.model
            if model is None:
                raise LocalLLMError("the model is not loaded", hint="pick a model with ^o")
            if holder.conversation_id != conversation_id:
                holder.conversation_id = None
                app.services.restore_state(model, conversation_id)
                holder.conversation_id = conversation_id
            sampling = app.services.sampling(self.settings)
            fitted = fit_messages(model, messages, reply_reserve(model.n_ctx, sampling.max_tokens))
            if fitted.dropped:
                self.post_message(ContextTrimmed(fitted.dropped))
            generation = model.chat(fitted.messages, sampling, cancel)
            self._generation = generation  # the UI reads its prompt progress
            saved_at = time.monotonic()
            for piece in generation:
                text += piece
                with self._pending_lock:
                    self._pending.append(piece)
                if time.monotonic() - saved_at >= SAVE_INTERVAL:
                    history.update_message(assistant_id, text)
                    saved_at = time.monotonic()
            s = generation.stats
            stats = s.as_dict()
            stats["context_used"] = s.prompt_tokens + s.generated_tokens
            stats["n_ctx"] = model.n_ctx
            status = hist.STOPPED if s.finish_reason == "cancelled" else hist.COMPLETE
        except LocalLLMError as exc:
            error = exc
            status = hist.STOPPED
        history.update_message(assistant_id, text, status=status, stats=stats)
        self.post_message(ReplyFinished(text, status, stats, error))
        return model if error is None else None

    async def flush(self) -> None:
        """Move text that arrived since the last tick into the transcript (the 50 ms timer)."""
        view = self._stream_view
        if view is None or not view.is_mounted:
            return
        with self._pending_lock:
            if not self._pending:
                if not view.content and time.monotonic() - self._reply_started > READING_NOTE_AFTER:
                    fraction = getattr(self._generation, "prompt_fraction", None)
                    view.set_note("reading the conversation…" + (f" {fraction:.0%}" if fraction else ""))
                return
            text = "".join(self._pending)
            self._pending.clear()
        view.set_note("")
        # The transcript is anchored: it follows the growing reply unless the user scrolled up,
        # and follows again once they scroll back to the bottom.
        view.content += text
        await view.markdown.append(text)

    async def on_reply_finished(self, message: ReplyFinished) -> None:
        await self.flush()
        view = self._stream_view
        self._stream_view = None
        self.generating = False
        if view is not None:
            view.set_status(message.status)
        if message.error is not None:
            hint = f" ({h})" if (h := getattr(message.error, "hint", None)) else ""
            self.notify(f"{message.error}{hint}", title="The reply failed", severity="error", timeout=10)
        if message.stats:
            self._last_stats = message.stats
        self.update_status()

    def on_context_trimmed(self, message: ContextTrimmed) -> None:
        n = message.dropped
        text = (
            f"⚠ The conversation is longer than the context: the {n} oldest message"
            f"{'s' if n != 1 else ''} were left out of this reply."
        )
        transcript = self.query_one("#transcript", VerticalScroll)
        if self._stream_view is not None and self._stream_view.is_mounted:
            transcript.mount(Static(text, classes="notice"), before=self._stream_view)
        else:
            transcript.mount(Static(text, classes="notice"))
        self.notify(text, severity="warning")

    def update_status(self) -> None:
        status = self.query_one("#status", Static)
        target = self.target
        if target is None:
            status.update("No model: ^o opens the models list")
            return
        parts = [(0, target.label)]  # (priority: the lowest is dropped first when the line is too long)
        if self.loading:
            parts.append((9, "loading…"))
        else:
            model = self.app.holder.model
            n_ctx = getattr(model, "n_ctx", 0)
            stats = self._last_stats or {}
            if n_ctx:
                parts.append((5, f"ctx {stats.get('context_used', 0)}/{n_ctx}"))
            if stats.get("tokens_per_s"):
                parts.append((3, f"{stats['tokens_per_s']:.1f} tok/s"))
            layers = getattr(getattr(model, "options", None), "n_gpu_layers", 0)
            parts.append((1, "GPU" if layers else "CPU"))
        if self.generating:
            parts.append((8, "writing… Esc stops"))
        status.update(fit_line(parts, status.content_size.width or self.app.size.width - 2))

    def on_resize(self) -> None:
        self.update_status()

    # -- actions --------------------------------------------------------------------------------

    def action_stop(self) -> None:
        if self.generating:
            self.cancel.set()
        elif self._editing is not None:
            self._editing.remove_class("editing")
            self._editing = None
            self.query_one("#prompt", PromptArea).set_text("")
            self.notify("Edit cancelled.")
        elif self.query_one("#sidebar").display and self.focused is not self.query_one("#prompt"):
            self.query_one("#prompt", PromptArea).focus()

    def _views(self) -> list[MessageView]:
        return list(self.query_one("#transcript").query(MessageView))

    async def _remove_from(self, view: MessageView) -> None:
        views = self._views()
        await self.query_one("#transcript").remove_children(views[views.index(view) :])
        if self.conversation_id is not None and view.message_id is not None:
            self.app.history.delete_messages_from(self.conversation_id, view.message_id)

    async def action_regenerate(self) -> None:
        if self.generating or self.conversation_id is None or self.loading:
            return
        views = self._views()
        if not views:
            return
        if views[-1].role == "assistant":
            await self._remove_from(views[-1])
        if self.app.holder.model is None:
            self.notify("No model loaded: ^o opens the models list.", severity="warning")
            return
        await self.start_reply()

    def action_edit_last(self) -> None:
        if self.generating or self.conversation_id is None:
            return
        users = [v for v in self._views() if v.role == "user"]
        if not users:
            return
        last = users[-1]
        prompt = self.query_one("#prompt", PromptArea)
        if prompt.text.strip() and self._editing is None:
            return  # Up in a half-typed message must not replace it
        prompt.set_text(last.content)
        self._editing = last
        last.add_class("editing")
        prompt.focus()
        self.notify("Editing your last message: Enter sends it again (replacing the reply), Esc cancels.")

    def action_new_chat(self) -> None:
        if self.generating:
            self.action_stop()
        self.new_conversation()
        self.query_one("#prompt", PromptArea).focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sidebar")
        sidebar.display = not sidebar.display
        if sidebar.display:
            self.query_one("#conversations", ListView).focus()

    def action_models(self) -> None:
        """The models list over this chat, which stays as it is (a reply goes on being written)."""
        from .models_screen import ModelsScreen

        self.app.push_screen(ModelsScreen())

    def action_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        def saved(result) -> None:
            if result is None:
                return
            self.system_prompt, self.settings = result
            if self.conversation_id is not None:
                self.app.history.configure(
                    self.conversation_id, system_prompt=self.system_prompt, settings=self.settings
                )
            self.notify("Settings saved for this conversation.")

        self.app.push_screen(SettingsDialog(self.system_prompt, self.settings), saved)

    def action_rename(self) -> None:
        conversation_id = self.conversation_id  # the chat the dialog names
        if conversation_id is None:
            return
        from .input_dialog import InputDialog

        def renamed(title: str | None) -> None:
            if title:
                self.app.history.rename(conversation_id, title)
                self.refresh_sidebar()

        title = self.app.history.info(conversation_id).title
        self.app.push_screen(InputDialog("Rename this chat", title), renamed)

    def export(self, path: str) -> None:
        """Write this chat to ``path`` and say where it went (the full path)."""
        if self.conversation_id is None:
            self.notify("Nothing to save yet: this chat is empty.")
            return
        try:
            written = self.app.history.export(self.conversation_id, path)
        except LocalLLMError as exc:
            self.notify(str(exc), severity="error")
        else:
            self.notify(f"Saved {written.resolve()}")

    def action_export(self) -> None:
        if self.conversation_id is None:
            return
        from .input_dialog import InputDialog

        def chosen(path: str | None) -> None:
            if path:
                self.export(path)

        slug = "".join(c if c.isalnum() else "-" for c in self.app.history.info(self.conversation_id).title.lower())
        self.app.push_screen(
            InputDialog("Export this chat to (.md for Markdown, .json for JSON)", f"{slug.strip('-') or 'chat'}.md"),
            chosen,
        )

    # -- slash commands -------------------------------------------------------------------------

    async def run_command(self, command: commands.Command) -> None:
        """Carry out a slash command typed in the prompt (see :mod:`localllm.chat.commands`)."""
        name = command.name
        if name == "help":
            await self._show_notice("Commands:\n" + commands.help_text(), "help")
        elif name == "system":
            self.system_prompt = command.arg
            self._keep_settings()
            self.notify("System prompt set for this chat." if command.arg else "System prompt cleared.")
        elif name == "set" and command.setting is not None:  # parse() gives every /set its setting
            self.settings = commands.apply_setting(self.settings, command.setting)
            self._keep_settings()
            key, value = command.setting
            self.notify(f"{key} = {value if value is not None else 'default'} for this chat.")
        elif name == "clear":
            system, settings = self.system_prompt, self.settings
            self.action_new_chat()
            self.system_prompt, self.settings = system, settings
        elif name == "model":
            self.notify(f"Looking for {command.arg}…")
            self._find_model(command.arg)
        elif name == "save":
            self.export(command.arg)
        elif name == "copy":
            self.action_copy_reply(code=command.arg.lower() == "code")
        elif name == "bye":
            self.app.exit()

    def _keep_settings(self) -> None:
        if self.conversation_id is not None:
            self.app.history.configure(self.conversation_id, system_prompt=self.system_prompt, settings=self.settings)

    async def _show_notice(self, text: str, kind: str = "") -> None:
        transcript = self.query_one("#transcript", VerticalScroll)
        await transcript.mount(Static(text, classes=f"notice {kind}".strip()))
        transcript.scroll_end(animate=False)

    @work(thread=True, exclusive=True, group="find")
    def _find_model(self, name: str) -> None:
        try:
            target = self.app.services.resolve(name)
        except LocalLLMError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            self.app.call_from_thread(self.notify, f"{exc}{hint}", severity="error")
        else:
            self.app.call_from_thread(self.open, target, None)

    def action_copy_reply(self, code: bool = False) -> None:
        """Copy the last reply (or its last code block) to the clipboard (OSC 52 in the terminal)."""
        replies = [v for v in self._views() if v.role == "assistant" and v.content]
        if not replies:
            self.notify("No reply to copy yet.")
            return
        text = replies[-1].content
        if code:
            block = commands.last_code_block(text)
            if block is None:
                self.notify("The last reply has no code block.")
                return
            text = block
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {'the code block' if code else 'the last reply'} ({len(text)} characters).")

    def action_delete_chat(self) -> None:
        conversation_id = self.conversation_id  # the chat the dialog names
        if conversation_id is None or self.generating:
            return
        from .confirm_dialog import ConfirmDialog

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.app.history.delete(conversation_id)
                self.app.services.forget_state(conversation_id)
                self.new_conversation()

        title = self.app.history.info(conversation_id).title
        self.app.push_screen(ConfirmDialog(f"Delete the chat “{title}”?"), confirmed)
