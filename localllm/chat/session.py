"""One chat and its turns, without any screen: what the terminal chat (``localllm run`` with no
prompt) and the TUI's chat screen both drive.

A turn: :meth:`ChatSession.send` saves the user's message (creating the conversation on the first
one), :meth:`ChatSession.reply` saves an empty reply to fill, and :meth:`Reply.stream` fits the
history to the model's context, streams the reply (each piece to a callback), saves it as it grows
and saves how it ended: complete, stopped (Esc, Ctrl-C, a cancel event) or failed. A reply that
failed before its first word is not kept. Slash commands that need no model or screen are
:meth:`ChatSession.command`.

Saved in one history, so a terminal chat can be reopened in the TUI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localllm.errors import LocalLLMError

from . import commands, reasoning
from . import history as hist
from .context import fit_messages, reply_reserve
from .toolcalls import ReasoningDelta

SAVE_INTERVAL = 1.0  # seconds between saves of a reply being written (a crash loses at most this)


class ChatSession:
    """A conversation (none until the first message), its model, system prompt and settings."""

    def __init__(
        self,
        history: hist.History,
        *,
        model_label: str = "",
        model_path: Path | str = "",
        system_prompt: str = "",
        settings: dict[str, Any] | None = None,
        conversation_id: int | None = None,
        think: bool | None = None,
        think_budget: int | None = None,
    ) -> None:
        self.history = history
        # a reasoning model's thinking: None the template's default, False off (enable_thinking);
        # think_budget caps its tokens (see localllm.chat.reasoning)
        self.think, self.think_budget = think, think_budget
        self.model_label, self.model_path = model_label, str(model_path)
        self.system_prompt = system_prompt
        self.settings: dict[str, Any] = dict(settings or {})
        self.conversation_id = conversation_id
        self.last_reply = ""

    @classmethod
    def resume(cls, history: hist.History, conversation_id: int) -> ChatSession:
        """A saved conversation, to go on with (its system prompt, settings and model)."""
        info = history.info(conversation_id)
        return cls(
            history,
            model_label=info.model,
            model_path=info.model_path,
            system_prompt=info.system_prompt,
            settings=info.settings,
            conversation_id=conversation_id,
        )

    # -- what the chat is set to -------------------------------------------------------------------

    def switch_model(self, label: str, path: Path | str) -> None:
        """Go on with another model (saved with the conversation, if there is one yet)."""
        self.model_label, self.model_path = label, str(path)
        if self.conversation_id is not None:
            self.history.configure(self.conversation_id, model=label, model_path=self.model_path)

    def configure(self, *, system_prompt: str | None = None, settings: dict[str, Any] | None = None) -> None:
        """Change the system prompt and/or the settings (saved with the conversation)."""
        if system_prompt is not None:
            self.system_prompt = system_prompt
        if settings is not None:
            self.settings = dict(settings)
        if self.conversation_id is not None:
            self.history.configure(self.conversation_id, system_prompt=self.system_prompt, settings=self.settings)

    @property
    def docs(self) -> str | None:
        """The document collection attached to this chat (``/docs NAME``), kept in its settings."""
        value = self.settings.get(commands.DOCS_SETTING)
        return value if isinstance(value, str) and value else None

    def attach_docs(self, name: str | None) -> None:
        """Answer from the collection ``name`` from now on (None: from the model alone); saved."""
        settings = {k: v for k, v in self.settings.items() if k != commands.DOCS_SETTING}
        self.configure(settings={**settings, commands.DOCS_SETTING: name} if name else settings)

    def clear(self) -> None:
        """A new chat with the same model, system prompt and settings (the previous one stays saved)."""
        self.conversation_id, self.last_reply = None, ""

    def command(self, command: commands.Command) -> str:
        """Carry out a command that needs no model or screen; what to tell the user. Raises
        :class:`~localllm.errors.LocalLLMError` (a command this shell carries out itself, a failed export)."""
        name = command.name
        if name == "help":
            return commands.help_text()
        if name == "system":
            self.configure(system_prompt=command.arg)
            return "System prompt set for this chat." if command.arg else "System prompt cleared."
        if name == "set":
            assert command.setting is not None  # parse() gives /set its setting
            self.configure(settings=commands.apply_setting(self.settings, command.setting))
            key, value = command.setting
            return f"{key} = {value if value is not None else 'default'} for this chat."
        if name == "clear":
            self.clear()
            return "New chat (the previous one is saved)."
        if name == "save":
            return self.export(command.arg)
        raise commands.CommandError(f"/{name} is not available here")

    def export(self, path: Path | str) -> str:
        """Write the conversation to ``path`` (.md or .json); what to tell the user (the full path)."""
        if self.conversation_id is None:
            return "Nothing to save yet: this chat is empty."
        return f"Saved {self.history.export(self.conversation_id, Path(path)).resolve()}"

    # -- a turn ------------------------------------------------------------------------------------

    def send(self, text: str) -> int:
        """Save the user's message (the first one creates the conversation, titled after it); its id."""
        if self.conversation_id is None:
            self.conversation_id = self.history.create(
                title=hist.title_from(text),
                model=self.model_label,
                model_path=self.model_path,
                system_prompt=self.system_prompt,
                settings=self.settings,
            )
        else:  # the model it is answered with is the conversation's model from now on
            self.history.configure(self.conversation_id, model=self.model_label, model_path=self.model_path)
        return self.history.add_message(self.conversation_id, "user", text)

    def reply(self) -> Reply:
        """An empty reply to the conversation as it stands, saved as interrupted until it ends."""
        if self.conversation_id is None:
            raise LocalLLMError("there is nothing to reply to yet", hint="send a message first")
        conversation = self.history.get(self.conversation_id)
        # Where the last reply's context started: the next one starts there while it fits, so its
        # prompt shares the cached prefix (saved with the reply, so a reopened chat keeps it too).
        keep_from = next(
            (int(m.stats.get("context_dropped", 0)) for m in reversed(conversation.messages) if m.stats), 0
        )
        message_id = self.history.add_message(self.conversation_id, "assistant", "", status=hist.PARTIAL)
        return Reply(self, message_id, conversation.chat_messages(), keep_from=keep_from)


class Reply:
    """One assistant reply: the messages it answers, its saved message, what has been written."""

    def __init__(
        self, session: ChatSession, message_id: int, messages: list[dict[str, str]], *, keep_from: int = 0
    ) -> None:
        self.session = session
        self.conversation_id = session.conversation_id
        self.message_id = message_id
        self.messages = messages
        self.text = ""  # the answer (never the reasoning)
        self.reasoning = ""  # a reasoning model's thinking, saved apart from the answer
        self.status = hist.PARTIAL
        self.stats: dict[str, Any] | None = None
        self.dropped = 0  # old messages left out to fit the context
        self.keep_from = keep_from  # how many the previous reply left out (this one starts no earlier)
        self.error: LocalLLMError | None = None
        self.discarded = False  # failed before its first word: not kept in the history
        self.generation: Any = None  # the runtime's generation while it runs (for its prompt progress)
        self.sources: list[Any] = []  # the document chunks the reply was asked over (``ground``)

    def stream(
        self,
        model: Any,
        sampling: Any,
        *,
        cancel: threading.Event | None = None,
        on_piece: Callable[[str], None] | None = None,
        on_trimmed: Callable[[int], None] | None = None,
        on_reasoning: Callable[[str], None] | None = None,
        ground: Callable[[Any, list[dict[str, str]], int], tuple[list[dict[str, str]], list[Any]]] | None = None,
    ) -> Reply:
        """Write the reply with ``model`` (a runtime or opened model) and ``sampling``
        (``SamplingOptions``). ``on_trimmed(n)`` is told, before the first piece, when old turns
        left the context for this reply (the ``n`` oldest messages are now left out); ``on_piece``
        gets each piece of the answer as it comes, ``on_reasoning`` each piece of a reasoning
        model's thinking (split out by :mod:`.reasoning`, saved apart, never as the answer). Ctrl-C
        or ``cancel`` stops it (kept, as stopped); a :class:`LocalLLMError` ends it as
        :attr:`error` (never raised). ``ground(model, messages, reserve)`` (a document collection
        attached to the chat) gives the messages with the last question asked over the sources it
        found, and those sources (saved with the reply's stats, as ``sources``: each
        ``.record(text=True)``). Returns self, saved."""
        history = self.session.history
        try:
            reserve = reply_reserve(model.n_ctx, sampling.max_tokens)
            messages = self.messages
            if ground is not None:
                messages, self.sources = ground(model, messages, reserve)
            fitted = fit_messages(model, messages, reserve, keep_from=self.keep_from)
            self.dropped = fitted.dropped
            if fitted.dropped > self.keep_from and on_trimmed is not None:
                on_trimmed(fitted.dropped)
            session = self.session
            self.generation = generation = reasoning.chat(
                model, fitted.messages, sampling, cancel, think=session.think, budget=session.think_budget
            )
            saved_at = time.monotonic()
            try:
                for part in generation:
                    if isinstance(part, ReasoningDelta):
                        self.reasoning += part.text
                        if on_reasoning is not None:
                            on_reasoning(part.text)
                    else:
                        self.text += part.text
                        if on_piece is not None:
                            on_piece(part.text)
                    if time.monotonic() - saved_at >= SAVE_INTERVAL:
                        history.update_message(self.message_id, self.text, reasoning=self.reasoning.strip())
                        saved_at = time.monotonic()
            except KeyboardInterrupt:  # the terminal's Ctrl-C: the reply so far is kept, as stopped
                generation.close()
                self.status = hist.STOPPED
            else:
                self.status = hist.STOPPED if generation.stats.finish_reason == "cancelled" else hist.COMPLETE
            s = generation.stats
            self.stats = {**s.as_dict(), "context_used": s.prompt_tokens + s.generated_tokens, "n_ctx": model.n_ctx}
            self.stats["context_dropped"] = fitted.dropped
            if ground is not None:
                self.stats["sources"] = [source.record(text=True) for source in self.sources]
        except LocalLLMError as exc:
            self.fail(exc)
            return self
        except BaseException:
            self._discard_if_empty()  # a crash: what was written stays, as interrupted
            raise
        self._save()
        return self

    def fail(self, error: LocalLLMError) -> None:
        """End the reply with ``error`` (the model could not write it); saved, or dropped if empty."""
        self.error, self.status = error, hist.STOPPED
        if not self._discard_if_empty():
            self._save()

    def _discard_if_empty(self) -> bool:
        if self.text or self.reasoning.strip() or self.conversation_id is None:
            return False
        self.session.history.delete_messages_from(self.conversation_id, self.message_id)
        self.discarded = True
        return True

    def _save(self) -> None:
        self.session.history.update_message(
            self.message_id, self.text, status=self.status, stats=self.stats, reasoning=self.reasoning.strip()
        )
        if self.status != hist.PARTIAL:
            self.session.last_reply = self.text
