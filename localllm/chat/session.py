"""A chat in the terminal (``localllm run`` with no prompt): the conversation, its slash commands and
its saving, without any input or output (the shell reads lines and prints replies).

Saved in the same history as the TUI's chats, so a terminal chat can be reopened there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import commands
from . import history as hist
from .context import fit_messages, reply_reserve


class ChatSession:
    def __init__(
        self,
        history: hist.History,
        *,
        model_label: str,
        model_path: Path | str,
        system_prompt: str = "",
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.history = history
        self.model_label, self.model_path = model_label, str(model_path)
        self.system_prompt = system_prompt
        self.settings: dict[str, Any] = dict(settings or {})
        self.conversation_id: int | None = None
        self.last_reply = ""

    def command(self, command: commands.Command) -> str:
        """Carry out a command that needs no model or screen; what to tell the user."""
        name = command.name
        if name == "help":
            return commands.help_text()
        if name == "system":
            self.system_prompt = command.arg
            self._keep()
            return "System prompt set." if command.arg else "System prompt cleared."
        if name == "set" and command.setting is not None:  # parse() gives every /set its setting
            self.settings = commands.apply_setting(self.settings, command.setting)
            self._keep()
            key, value = command.setting
            return f"{key} = {value if value is not None else 'default'}"
        if name == "clear":
            self.conversation_id, self.last_reply = None, ""
            return "New chat (the previous one is saved)."
        if name == "save":
            if self.conversation_id is None:
                return "Nothing to save yet."
            return f"Saved {self.history.export(self.conversation_id, Path(command.arg)).resolve()}"
        raise commands.CommandError(f"/{name} is not available here")

    def switch_model(self, label: str, path: Path | str) -> None:
        self.model_label, self.model_path = label, str(path)
        if self.conversation_id is not None:
            self.history.configure(self.conversation_id, model=label, model_path=self.model_path)

    def ask(self, text: str, model: Any) -> tuple[list[dict[str, str]], int, int]:
        """Record ``text`` and an empty reply; (the messages for the model, fitted to its context;
        the reply's id; how many old messages were left out)."""
        if self.conversation_id is None:
            self.conversation_id = self.history.create(
                title=hist.title_from(text),
                model=self.model_label,
                model_path=self.model_path,
                system_prompt=self.system_prompt,
                settings=self.settings,
            )
        self.history.add_message(self.conversation_id, "user", text)
        messages = self.history.get(self.conversation_id).chat_messages()
        reply_id = self.history.add_message(self.conversation_id, "assistant", "", status=hist.PARTIAL)
        fitted = fit_messages(model, messages, reply_reserve(model.n_ctx, self.settings.get("max_tokens")))
        return fitted.messages, reply_id, fitted.dropped

    def answered(self, reply_id: int, text: str, stats: Any, cancelled: bool) -> None:
        self.last_reply = text
        self.history.update_message(
            reply_id,
            text,
            status=hist.STOPPED if cancelled else hist.COMPLETE,
            stats=stats.as_dict() if stats is not None else None,
        )

    def _keep(self) -> None:
        if self.conversation_id is not None:
            self.history.configure(self.conversation_id, system_prompt=self.system_prompt, settings=self.settings)
