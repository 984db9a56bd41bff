"""The server's prompt cache in RAM: KV cells of prompts no sequence holds any more (issue 28).

Each of a :class:`~localllm.runtime.batching.BatchSession`'s free sequences keeps the cells its last
request left, and a new request takes the one sharing the longest prefix with its prompt. With more
conversations than sequences (three chats on two sequences, agents taking turns), a sequence's cells
are overwritten while their conversation is still going. The session then copies them out first
(llama.cpp's ``llama_state_seq_get_data``) into a :class:`PromptStore`, and a later request whose
prompt they begin puts them back (``llama_state_seq_set_data``) instead of evaluating them again,
as llama-server's ``--cache-ram`` does.

The store knows nothing of llama.cpp: an entry is the tokens the cells hold, the key they were made
under (the LoRA adapter set: other weights never share cells) and an opaque block of bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Sized(Protocol):
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Entry:
    key: object
    tokens: tuple[int, ...]
    data: Sized

    @property
    def size(self) -> int:
        return len(self.data)


class PromptStore:
    """Cells of prompts, least recently used dropped first once they pass ``limit`` bytes.

    An entry larger than the whole limit is not kept. An entry whose tokens begin another's (same
    key) makes the shorter one useless: storing the longer drops it, and the shorter is not stored
    while the longer is there.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the prompt cache's limit must not be negative")
        self.limit = limit
        self.size = 0  # bytes held
        self.hits = 0  # entries put back into a sequence
        self.tokens_restored = 0  # prompt tokens not evaluated thanks to them
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # oldest first
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, key: object, tokens: Sequence[int]) -> bool:
        """Whether an entry already holds ``tokens`` (or more tokens beginning with them)."""
        n = len(tokens)
        return any(
            e.key == key and len(e.tokens) >= n and e.tokens[:n] == tuple(tokens) for e in self._entries.values()
        )

    def put(self, key: object, tokens: Sequence[int], data: Sized) -> bool:
        """Keep ``data`` (the cells of ``tokens`` under ``key``); False if it was not kept."""
        entry = Entry(key, tuple(tokens), data)
        if not entry.tokens or entry.size > self.limit or self.covers(key, entry.tokens):
            return False
        n = len(entry.tokens)
        for handle, e in list(self._entries.items()):  # entries this one makes useless
            if e.key == key and len(e.tokens) < n and entry.tokens[: len(e.tokens)] == e.tokens:
                self._drop(handle)
        while self._entries and self.size + entry.size > self.limit:
            self._drop(next(iter(self._entries)))
        self._entries[self._next] = entry
        self._next += 1
        self.size += entry.size
        return True

    def best(self, key: object, prompt: Sequence[int]) -> tuple[int | None, int]:
        """(handle, tokens shared) of the entry sharing the longest prefix with ``prompt`` under
        ``key``; (None, 0) when none shares any."""
        best, best_n = None, 0
        for handle, e in self._entries.items():
            if e.key != key:
                continue
            n = common_prefix(e.tokens, prompt)
            if n > best_n:
                best, best_n = handle, n
        return best, best_n

    def take(self, handle: int) -> Entry:
        """The entry ``handle`` (from :meth:`best`), now the most recently used."""
        self._entries.move_to_end(handle)
        return self._entries[handle]

    def discard(self, handle: int) -> None:
        """Forget ``handle`` (llama.cpp refused its cells)."""
        if handle in self._entries:
            self._drop(handle)

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, handle: int) -> None:
        self.size -= self._entries.pop(handle).size


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
