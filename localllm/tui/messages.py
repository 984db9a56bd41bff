"""Typed messages that workers post to screens (never widget calls from a thread)."""

from __future__ import annotations

from textual.message import Message

from .services import PullProgress


class ModelLoaded(Message):
    def __init__(self, label: str, error: Exception | None = None) -> None:
        super().__init__()
        self.label = label
        self.error = error


class ContextTrimmed(Message):
    """Old turns left the context: the oldest messages are left out of the prompt from this reply on."""

    def __init__(self, dropped: int) -> None:
        super().__init__()
        self.dropped = dropped


class ReplyFinished(Message):
    def __init__(
        self, text: str, status: str, stats: dict | None, error: Exception | None = None, *, discarded: bool = False
    ) -> None:
        super().__init__()
        self.text = text
        self.status = status
        self.stats = stats
        self.error = error
        self.discarded = discarded  # failed before its first word: not kept


class PullProgressed(Message):
    """Download progress; bursts merge (only the newest waiting one is handled)."""

    def __init__(self, progress: PullProgress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PullProgressed)


class PullDone(Message):
    def __init__(self, error: Exception | None = None, cancelled: bool = False) -> None:
        super().__init__()
        self.error = error
        self.cancelled = cancelled
