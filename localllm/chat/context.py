"""Fitting a conversation into a model's context window.

When a conversation outgrows the context, old turns are dropped in large steps (the system prompt is
always kept): the oldest half of the turns still in the context goes at once, again until the prompt
plus room for the reply fits. The next turns start where the last one did (``keep_from``) for as long
as they fit, so consecutive turns at the limit share their prompt's prefix and the runtime reuses its
KV cache instead of reading the whole conversation again each turn. The caller is told how many
messages were dropped so it can say so. Only when even the last message alone does not fit is it an
error.
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


def fit_messages(model: ChatModel, messages: Sequence[dict[str, str]], reserve: int, keep_from: int = 0) -> Fitted:
    """A recent part of ``messages`` whose prompt leaves ``reserve`` tokens free, starting no earlier
    than ``keep_from`` (the messages, after the system prompt, that the previous turn dropped)."""
    messages = list(messages)
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system) :]
    budget = model.n_ctx - reserve

    def size(start: int) -> int:
        return count_tokens(model, system + rest[start:])

    # Start at a user message where possible, so the model never sees a reply without its question.
    starts = [i for i, m in enumerate(rest) if m["role"] == "user"] or list(range(len(rest)))
    # Where the previous turn started (a history edited since may have moved it: the nearest start before).
    start = max([0] + [i for i in starts if i <= keep_from])
    tokens = size(start)
    while tokens > budget:
        later = [i for i in starts if i > start]
        if not later:
            raise ContextOverflowError(
                f"the last message is {tokens} tokens but the context holds {model.n_ctx} with {reserve} kept for the reply",
                hint="shorten the message, or start the chat with a larger context (localllm chat --ctx N)",
            )
        # Drop the oldest half of what is left at once (at least one turn): the prompt then has room
        # to grow for many turns with the same prefix before it has to move again.
        half = start + (len(rest) - start) // 2
        start = next((i for i in later if i >= half), later[-1])
        tokens = size(start)
    return Fitted(system + rest[start:], start, tokens)
