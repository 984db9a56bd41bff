"""The reasoning budget's bookkeeping (:class:`~localllm.runtime.budget.BudgetTracker`): which
tokens count, when the closing marker is fed, and that a reply closing its reasoning itself is left
alone. The real model's side is tested through the server (tests/server/test_anthropic.py) and
``run`` (tests/cli/test_run_thinking.py)."""

from __future__ import annotations

from localllm.runtime.budget import BudgetTracker
from localllm.runtime.options import ThinkBudget

CLOSE = [901, 902, 903]  # the tokens of "</think>\n\n", say


def drive(tracker: BudgetTracker, pieces: list[str]) -> list[int | None]:
    """Feed ``pieces`` as sampled tokens (fed tokens take the place of the next one); the forced tokens."""
    forced: list[int | None] = []
    for piece in pieces:
        token = tracker.forced()
        forced.append(token)
        tracker.after("<forced>" if token is not None else piece)
    return forced


def test_the_closing_marker_is_fed_once_the_budget_is_spent_inside_an_opened_block():
    tracker = BudgetTracker(ThinkBudget(3, "<think>", "</think>", inside=True), CLOSE)
    forced = drive(tracker, ["a", "b", "c", "x", "x", "x", "answer", "more"])
    assert forced == [None, None, None, 901, 902, 903, None, None]
    assert tracker.spent == 3 and tracker.state == "done"


def test_counting_starts_at_the_opening_marker_even_split_across_pieces():
    tracker = BudgetTracker(ThinkBudget(2, "<think>", "</think>"), CLOSE)
    forced = drive(tracker, ["Hi ", "<th", "ink>", "a", "b", "x", "x", "x", "ok"])
    assert forced == [None, None, None, None, None, 901, 902, 903, None]


def test_a_block_closed_within_the_budget_is_left_alone():
    tracker = BudgetTracker(ThinkBudget(5, "<think>", "</think>", inside=True), CLOSE)
    forced = drive(tracker, ["a", "</thi", "nk>", "answer", "<think>", "b", "c", "d", "e", "f"])
    assert forced == [None] * 10 and tracker.state == "done"


def test_a_zero_budget_closes_at_once():
    tracker = BudgetTracker(ThinkBudget(0, "<think>", "</think>", inside=True), CLOSE)
    assert drive(tracker, ["x", "x", "x", "answer"]) == [901, 902, 903, None]
