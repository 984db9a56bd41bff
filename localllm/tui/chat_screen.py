"""The chat screen: wiring between the transcript (:mod:`.transcript`), the prompt, the status line
(:mod:`.status_line`), the saved chats (:mod:`.sidebar`) and the chat turn
(:class:`localllm.chat.session.ChatSession`), which it drives from a thread worker.

The worker hands each piece of the reply to a buffer; on the UI side, whatever has arrived moves into
the Markdown widget in one append, at most 10 times a second and less often when drawing the reply
costs the UI thread more than its budget (:mod:`.pacing`). The UI's work therefore does not grow
with the model's speed, and the worker never waits for it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from textual import getters, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer

from localllm.chat import commands
from localllm.chat import history as hist
from localllm.chat.session import ChatSession, Reply
from localllm.errors import LocalLLMError

from .app import LocalLLMApp
from .errors import notify_error
from .messages import ContextTrimmed, ModelLoaded, ReplyFinished
from .pacing import Pacer
from .prompt_area import PromptArea
from .services import ChatTarget
from .sidebar import ConversationItem, Sidebar
from .sources import DocsAttachment
from .status_line import StatusLine, fit_line
from .transcript import SHOWN_MESSAGES, MessageView, Transcript, reply_parser

__all__ = ["ChatScreen", "ConversationItem", "MessageView", "SHOWN_MESSAGES", "fit_line", "reply_parser"]

READING_NOTE_AFTER = 0.5  # seconds without a first token before the label says the prompt is being read


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "regenerate", "Regen"),
        # priority: the prompt's own ctrl+e (go to end; End does the same) must not swallow it
        Binding("ctrl+e", "edit_last", "Edit", priority=True),
        Binding("ctrl+n", "new_chat", "New"),
        # off the footer so that "^q Quit" fits at 80 columns; listed by ? / F1 and in the palette
        Binding("ctrl+s", "settings", "Settings", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+o", "models", "Models"),
        Binding("f2", "rename", "Rename", show=False),
        Binding("f3", "export", "Export", show=False),
        Binding("f8", "delete_chat", "Delete chat", show=False),
        # priority: the prompt's own ctrl+y (redo) must not swallow "copy the last reply"
        Binding("ctrl+y", "copy_reply", "Copy reply", show=False, priority=True),
        # priority: while a reply is written Ctrl+C stops it (as in the terminal chat), else it is
        # the prompt's copy or the app's quit hint
        Binding("ctrl+c", "stop_reply", "Stop", show=False, priority=True),
        Binding("ctrl+q", "app.quit", "Quit", show=False),
    ]

    app = getters.app(LocalLLMApp)  # self.app typed as this app, with its services

    def __init__(self, target: ChatTarget | None = None, conversation_id: int | None = None) -> None:
        super().__init__()
        self._initial = (target, conversation_id)
        self.target: ChatTarget | None = None
        self.session: ChatSession  # made on mount, from the app's history and defaults
        self._loading = False
        self._generating = False
        self.cancel = threading.Event()
        self._queued: str | None = None
        self._editing: MessageView | None = None  # the message "edit last" will replace
        self._pending: list[str] = []
        self._pending_reasoning: list[str] = []  # a reasoning model's thinking, shown apart
        self._pending_lock = threading.Lock()
        self._stream_view: MessageView | None = None
        self._reply: Reply | None = None  # the reply being written, for its prompt progress
        self._reply_started = 0.0
        self.pacer = Pacer()  # how often the streaming reply is drawn
        self.docs = DocsAttachment(lambda name: self.app.services.open_retriever(name))
        self.lora: tuple[tuple[str, float], ...] = ()  # LoRA adapters (name or file, scale) for the model

    # -- state the widgets show -----------------------------------------------------------------

    @property
    def conversation_id(self) -> int | None:
        return self.session.conversation_id

    @property
    def system_prompt(self) -> str:
        return self.session.system_prompt

    @property
    def settings(self) -> dict[str, Any]:
        return self.session.settings

    @property
    def loading(self) -> bool:
        return self._loading

    @loading.setter
    def loading(self, value: bool) -> None:
        self._loading = self.status_line.loading = value

    @property
    def generating(self) -> bool:
        return self._generating

    @generating.setter
    def generating(self, value: bool) -> None:
        self._generating = self.status_line.generating = value

    @property
    def transcript(self) -> Transcript:
        return self.query_one("#transcript", Transcript)

    @property
    def status_line(self) -> StatusLine:
        return self.query_one("#status", StatusLine)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one("#sidebar", Sidebar)

    @property
    def prompt(self) -> PromptArea:
        return self.query_one("#prompt", PromptArea)

    def _set_target(self, target: ChatTarget | None) -> None:
        """The model this chat is answered with (the next turn saves it with the conversation)."""
        self.target = target
        if target is not None:
            self.session.model_label, self.session.model_path = target.label, str(target.path)
        self.status_line.model = target.label if target is not None else ""

    # -- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat-main"):
                yield Transcript(id="transcript")
                yield PromptArea(
                    placeholder="Message (Enter sends, Shift+Enter or ^j for a new line, /help)", id="prompt"
                )
                yield StatusLine(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.app.cancel_events.add(self.cancel)
        self.lora = tuple(self.app.defaults.lora)
        self.session = self._new_session()
        self.sidebar.display = self.app.size.width >= 100
        self.set_interval(self.pacer.fastest, self._tick, name="flush")
        self.refresh_sidebar()
        target, conversation_id = self._initial
        self.open(target, conversation_id)
        if self.conversation_id is None:
            self.transcript.show_empty_hint()
        self.prompt.focus()

    def on_unmount(self) -> None:
        self.cancel.set()
        self.app.cancel_events.discard(self.cancel)
        self.docs.close()

    def _new_session(self) -> ChatSession:
        defaults = self.app.defaults
        target = self.target
        return ChatSession(
            self.app.history,
            model_label=target.label if target else "",
            model_path=target.path if target else "",
            system_prompt=defaults.system_prompt,
            settings=defaults.settings,
            think=defaults.think,
            think_budget=defaults.think_budget,
        )

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
            self.session.switch_model(target.label, target.path)
            self.notify(f"This chat continues with {target.label}.")
        holder = self.app.holder
        if target is not None and (target != self.target or holder.target != target or holder.lora != self.lora):
            self.load(target)
        elif self.target is None:
            self._set_target(self.app.holder.target)
        self.status_line.show_model(self.app.holder.model)

    def _conversation_target(self, conversation_id: int) -> ChatTarget | None:
        info = self.app.history.info(conversation_id)
        if not info.model_path:
            return None
        if self.target is not None and str(self.target.path) == info.model_path:
            return None
        path = Path(info.model_path)
        if not path.is_file():
            self.notify(f"{info.model} is no longer installed; pick another model (^o).", severity="warning")
            return None
        return ChatTarget(info.model, path, info.model.rpartition(":")[2] if ":" in info.model else "")

    def load(self, target: ChatTarget) -> None:
        if self.target is not None and target.path != self.target.path:
            self.lora = tuple(self.app.defaults.lora)  # adapters chosen for one base stay with it
        self._set_target(target)
        self.loading = True
        self._load(target, self.lora)

    @work(thread=True, exclusive=True, group="load")
    def _load(self, target: ChatTarget, lora: tuple[tuple[str, float], ...] = ()) -> None:
        app = self.app
        n_ctx, n_gpu_layers = app.defaults.n_ctx, app.defaults.n_gpu_layers
        # the collection the chat answers from: its embedding model loads beside the chat model
        docs = self.session.docs or app.defaults.settings.get("docs")
        try:
            app.holder.switch(
                target,
                lambda t: app.services.load_model(
                    t, n_ctx, n_gpu_layers, lora=lora, draft=app.defaults.draft, docs=docs
                ),
                lora,
            )
        except LocalLLMError as exc:
            self.post_message(ModelLoaded(target.label, exc))
        else:
            self.post_message(ModelLoaded(target.label))

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        if message.error is not None:
            self._set_target(None)
            notify_error(self, message.error, title="Could not load the model", timeout=10)
        self.status_line.show_model(self.app.holder.model)
        self.loading = False
        if self._queued is not None and message.error is None:
            text, self._queued = self._queued, None
            await self.send(text)

    def new_conversation(self) -> None:
        self.session = self._new_session()
        self._show_new_chat()

    def _show_new_chat(self) -> None:
        self.transcript.clear()
        self.status_line.show_stats({})  # nothing used yet in a new chat: not the last chat's numbers
        self.refresh_sidebar()

    def show_conversation(self, conversation_id: int) -> None:
        self.session = ChatSession.resume(self.app.history, conversation_id)
        if self.target is not None:  # answered with the model on screen unless another one loads
            self._set_target(self.target)
        messages = self.app.history.get(conversation_id).messages
        self.transcript.show(messages)
        # this chat's own last numbers (none yet: zero), never the previous chat's
        last: dict[str, Any] = next((m.stats for m in reversed(messages) if m.stats), {})
        self.status_line.show_stats(last)
        self.refresh_sidebar()

    def refresh_sidebar(self) -> None:
        self.sidebar.show(self.app.history.conversations(), self.conversation_id)

    def on_sidebar_chosen(self, event: Sidebar.Chosen) -> None:
        self.open(None, event.conversation_id)
        # after the transcript and the sidebar are rebuilt: focus would otherwise move on from the
        # removed list item to the next focusable widget ("Show N earlier messages"), and Enter
        # would load history instead of sending the message typed
        self.call_after_refresh(self.prompt.focus)

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
            event.prompt.select_all()  # kept to correct, but typing replaces it rather than appending
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

    async def send(self, text: str) -> None:
        first = self.conversation_id is None
        message_id = self.session.send(text)
        if first:
            self.refresh_sidebar()
        await self.transcript.add(MessageView("user", text, message_id))
        await self.start_reply()

    async def start_reply(self) -> None:
        reply = self.session.reply()
        view = MessageView("assistant", "", reply.message_id, hist.PARTIAL, writing=True)
        self._stream_view, self._reply = view, reply
        self._reply_started = time.monotonic()
        self.pacer.reset()
        await self.transcript.add(view)
        self.generating = True
        self.cancel.clear()
        self.generate(reply)

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, reply: Reply) -> None:
        holder = self.app.holder
        with holder.lock:
            model = self._write(reply)
            if model is not None and reply.conversation_id is not None:
                try:
                    self.app.services.save_state(model, reply.conversation_id)  # reopening the chat is fast
                except OSError as exc:  # a full disk must not break the chat: the cache is optional
                    self.app.call_from_thread(
                        self.notify, f"Could not keep this chat's cache: {exc}", severity="warning"
                    )

    def _write(self, reply: Reply) -> Any:
        """Stream one reply into the pending buffer (the turn saves it); the model, if it replied."""
        app, holder = self.app, self.app.holder
        model = holder.model
        try:
            if model is None:
                raise LocalLLMError("the model is not loaded", hint="pick a model with ^o")
            if reply.conversation_id is None:  # ChatSession.send made the chat before the reply
                raise LocalLLMError("the chat was not saved")
            if holder.conversation_id != reply.conversation_id:
                holder.conversation_id = None
                app.services.restore_state(model, reply.conversation_id)
                holder.conversation_id = reply.conversation_id
            sampling = app.services.sampling(self.settings)
            if self.docs.name != self.session.docs:  # a reopened chat's collection, or /docs off
                self.docs.attach(self.session.docs)
        except LocalLLMError as exc:
            reply.fail(exc)
        else:
            reply.stream(
                model,
                sampling,
                cancel=self.cancel,
                on_piece=self._arrived,
                on_reasoning=self._thought,
                on_trimmed=self._trimmed,
                ground=self.docs.ground,
            )
        self.post_message(ReplyFinished(reply.text, reply.status, reply.stats, reply.error, discarded=reply.discarded))
        return model if reply.error is None else None

    def _trimmed(self, dropped: int) -> None:
        self.post_message(ContextTrimmed(dropped))

    def _arrived(self, piece: str) -> None:
        """A piece of the reply (from the worker): shown at the next flush."""
        with self._pending_lock:
            self._pending.append(piece)

    def _thought(self, piece: str) -> None:
        """A piece of the reply's thinking (from the worker): shown apart at the next flush."""
        with self._pending_lock:
            self._pending_reasoning.append(piece)

    async def _tick(self) -> None:
        """The draw timer: the reply is drawn when the pacer says it is due."""
        if self._stream_view is not None and self.pacer.due(time.monotonic()):
            await self.flush()
            self.pacer.drew(time.monotonic(), time.thread_time())

    async def flush(self) -> None:
        """Move text that arrived since the last draw into the transcript."""
        view = self._stream_view
        if view is None or not view.is_mounted:
            return
        with self._pending_lock:
            thought = "".join(self._pending_reasoning)
            self._pending_reasoning.clear()
            if not self._pending and not thought:
                if (
                    not view.content
                    and not view.reasoning
                    and time.monotonic() - self._reply_started > READING_NOTE_AFTER
                ):
                    generation = self._reply.generation if self._reply is not None else None
                    fraction = getattr(generation, "prompt_fraction", None)
                    view.set_note("reading the conversation…" + (f" {fraction:.0%}" if fraction else ""))
                return
            text = "".join(self._pending)
            self._pending.clear()
        if thought:
            view.set_note("thinking…")
            await view.add_reasoning(thought)
        if not text:
            return
        view.set_note("")
        view.fold_thinking()
        # The transcript is anchored: it follows the growing reply unless the user scrolled up,
        # and follows again once they scroll back to the bottom.
        view.content += text
        await view.markdown.append(text)

    async def on_reply_finished(self, message: ReplyFinished) -> None:
        await self.flush()
        view = self._stream_view
        self._stream_view = self._reply = None
        if view is not None:
            if message.discarded:  # failed before its first word: not kept, not shown
                await view.remove()
            else:
                view.set_status(message.status)
                view.show_stats(message.stats)
        if message.error is not None:
            notify_error(self, message.error, title="The reply failed", timeout=10)
        if message.stats:
            self.status_line.show_stats(message.stats)
        self.generating = False

    def on_context_trimmed(self, message: ContextTrimmed) -> None:
        n = message.dropped
        text = (
            f"⚠ Old turns left the context: the {n} oldest message{'s are' if n != 1 else ' is'} left out"
            " from this reply on (they stay in the chat)."
        )
        self.transcript.add_notice_before(text, self._stream_view)
        self.notify(text, severity="warning")

    # -- actions --------------------------------------------------------------------------------

    def action_stop_reply(self) -> None:
        """Ctrl+C: stop the reply being written; otherwise the key does what it does elsewhere."""
        if not self.generating:
            raise SkipAction()
        self.cancel.set()

    def action_stop(self) -> None:
        if self.generating:
            self.cancel.set()
        elif self._editing is not None:
            self._editing.remove_class("editing")
            self._editing = None
            self.prompt.set_text("")
            self.notify("Edit cancelled.")
        elif self.sidebar.display and self.focused is not self.prompt:
            self.prompt.focus()

    def _views(self) -> list[MessageView]:
        return self.transcript.views()

    async def _remove_from(self, view: MessageView) -> None:
        await self.transcript.remove_from(view)
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
        prompt = self.prompt
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
        self.prompt.focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.sidebar
        sidebar.display = not sidebar.display
        if sidebar.display:
            sidebar.focus_list()

    def action_models(self) -> None:
        """The models list over this chat, which stays as it is (a reply goes on being written)."""
        from .models_screen import ModelsScreen

        self.app.push_screen(ModelsScreen())

    def action_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        def saved(result) -> None:
            if result is None:
                return
            system_prompt, settings, lora = result
            self.session.configure(system_prompt=system_prompt, settings=settings)
            self.notify("Settings saved for this conversation.")
            if lora != self.lora:  # the model reloads with the adapters chosen (the same path as --lora)
                self.lora = lora
                if self.target is not None:
                    self.load(self.target)

        available = self.app.services.adapters_for(self.target) if self.target is not None else []
        self.app.push_screen(SettingsDialog(self.system_prompt, self.settings, available, self.lora), saved)

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
        try:
            self.notify(self.session.export(path))
        except LocalLLMError as exc:
            self.notify(str(exc), severity="error")

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
            await self.transcript.add_notice("Commands:\n" + commands.help_text(), "help", markup=False)
        elif name in ("system", "set"):
            self.notify(self.session.command(command))
        elif name == "clear":  # a new chat with this one's system prompt and settings
            if self.generating:
                self.action_stop()
            self.session.clear()
            self._show_new_chat()
            self.prompt.focus()
        elif name == "model" and not command.arg:  # no name: the list of models to pick from
            self.action_models()
        elif name == "model":
            self.notify(f"Looking for {command.arg}…")
            self._find_model(command.arg)
        elif name == "save":
            self.export(command.arg)
        elif name == "copy":
            self.action_copy_reply(code=command.arg.lower() == "code")
        elif name == "docs":
            self._docs_command(command.arg)
        elif name == "bye":
            self.app.exit()

    @work(thread=True, exclusive=True, group="find")
    def _find_model(self, name: str) -> None:
        try:
            target = self.app.services.resolve(name)
        except LocalLLMError as exc:
            self.app.call_from_thread(notify_error, self, exc, title="")
        else:
            self.app.call_from_thread(self.open, target, None)

    @work(thread=True, exclusive=True, group="docs")
    def _docs_command(self, arg: str) -> None:
        """``/docs``: list the collections; ``/docs NAME|off``: answer from one (or none) from now on."""
        app = self.app
        try:
            if not arg:
                names = [f"{'* ' if c.name == self.session.docs else ''}{c.name}" for c in app.services.collections()]
                text = (
                    ("Collections: " + ", ".join(names)) if names else "No collections (localllm docs add NAME PATH)."
                )
                app.call_from_thread(self.notify, text)
                return
            name = None if arg == "off" else arg
            with app.holder.lock:  # not while a reply is grounded in the collection being replaced
                said = self.docs.attach(name)
                self.session.attach_docs(name)  # saved with the chat (the reply worker saves from a thread too)
            app.call_from_thread(self.notify, said)
        except LocalLLMError as exc:
            app.call_from_thread(notify_error, self, exc, title="")

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
