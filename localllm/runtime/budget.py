"""Keeping a reply's reasoning within its budget (:class:`~localllm.runtime.options.ThinkBudget`).

llama-server's way (its reasoning-budget sampler): the generated text is watched for the opening
marker; each token written after it is counted; when the count reaches the budget the closing
marker's tokens are fed one per step instead of sampled ones, and sampling resumes after them, so
the answer still comes. A reply that closes its reasoning itself is left alone from then on.
Pure Python over token ids and text pieces: the generation loops (:mod:`.model` and
:mod:`.batching`) ask :meth:`BudgetTracker.forced` before sampling and tell :meth:`BudgetTracker.after`
each token's text.
"""

from __future__ import annotations

from collections.abc import Sequence

from .options import ThinkBudget

__all__ = ["BudgetTracker"]

BEFORE, THINKING, FORCING, DONE = "before", "thinking", "forcing", "done"


class BudgetTracker:
    """The state of one reply's reasoning budget. ``close_tokens``: the tokens of the text to inject."""

    __slots__ = ("budget", "state", "spent", "_tail", "_queue", "_close_tokens")

    def __init__(self, budget: ThinkBudget, close_tokens: Sequence[int]) -> None:
        self.budget = budget
        self.spent = 0  # tokens written inside the reasoning block
        self._tail = ""  # recent text, to find a marker split across pieces
        self._queue: list[int] = []
        self._close_tokens = list(close_tokens)
        self.state = BEFORE
        if budget.inside:
            self._start()

    def _start(self) -> None:
        self.state, self._tail = THINKING, ""
        if self.budget.tokens <= 0:
            self._force()

    def _force(self) -> None:
        self.state, self._queue = FORCING, list(self._close_tokens)
        if not self._queue:
            self.state = DONE

    def forced(self) -> int | None:
        """The token to feed next instead of sampling one (None: sample)."""
        if self.state == FORCING and self._queue:
            return self._queue.pop(0)
        return None

    def after(self, piece: str) -> None:
        """The text of the token just generated (sampled or forced)."""
        state = self.state
        if state == DONE:
            return
        if state == FORCING:
            if not self._queue:
                self.state = DONE
            return
        b = self.budget
        tail = self._tail + piece
        if state == BEFORE:
            at = tail.find(b.open)
            if at < 0:
                self._tail = tail[-(len(b.open) - 1) :] if len(b.open) > 1 else ""
                return
            self._start()
            rest = tail[at + len(b.open) :]
            if b.close and b.close in rest:
                self.state = DONE
            else:
                self._tail = rest
            return
        self.spent += 1
        if b.close and b.close in tail:
            self.state = DONE
            return
        self._tail = tail[-(len(b.close) - 1) :] if len(b.close) > 1 else ""
        if self.spent >= b.tokens:
            self._force()
