"""Fitting a conversation into a model's context window.

When a conversation outgrows the context, the oldest turns are dropped (the system prompt is always
kept) until the prompt plus room for the reply fits; the caller is told how many messages were
dropped so it can say so. Only when even the last message alone does not fit is it an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from localllm.errors import ContextOverflowError


class ChatModel(Protocol):
    n_ctx: int

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]: ...


@dataclass(frozen=True)
class Fitted:
    messages: list[dict[str, str]]
    dropped: int  # messages left out from the start of the conversation
    prompt_tokens: int


def reply_reserve(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply: max_tokens if set, else a quarter of the context (≤ 1024)."""
    room = max_tokens if max_tokens else min(1024, n_ctx // 4)
    return max(1, min(room, n_ctx // 2))


def count_tokens(model: ChatModel, messages: Sequence[dict[str, str]]) -> int:
    """The prompt's size as the model will evaluate it (``Model.chat_tokens``: the one rule)."""
    return len(model.chat_tokens(messages))


def fit_messages(model: ChatModel, messages: Sequence[dict[str, str]], reserve: int) -> Fitted:
    """The longest recent part of ``messages`` whose prompt leaves ``reserve`` tokens free."""
    messages = list(messages)
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    budget = model.n_ctx - reserve

    def size(start: int) -> int:
        return count_tokens(model, system + rest[start:])

    whole = size(0)
    if whole <= budget:
        return Fitted(messages, 0, whole)
    # Start at a user message where possible, so the model never sees a reply without its question.
    starts = [i for i, m in enumerate(rest) if m["role"] == "user"] or list(range(len(rest)))
    starts = [i for i in starts if i > 0] or [len(rest) - 1]
    # Fewer messages never take more tokens: binary-search the earliest start that fits.
    lo, hi = 0, len(starts) - 1
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        tokens = size(starts[mid])
        if tokens <= budget:
            best = (starts[mid], tokens)
            hi = mid - 1
        else:
            lo = mid + 1
    if best is None:
        last = size(starts[-1])
        raise ContextOverflowError(
            f"the last message is {last} tokens but the context holds {model.n_ctx} with {reserve} kept for the reply",
            hint="shorten the message, or start the chat with a larger context (localllm chat --ctx N)",
        )
    start, tokens = best
    return Fitted(system + rest[start:], start, tokens)
