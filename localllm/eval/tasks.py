"""Multiple-choice tasks scored by log-likelihood, the way lm-evaluation-harness scores
HellaSwag, ARC and MMLU.

Each line of a task file is ``{"id", "context", "choices": [...], "answer": i}``. For each choice
the context and ``context + choice`` are tokenized; the choice's tokens are those after the
context's (lm-eval's ``continuation_enc = whole_enc[len(context_enc):]``, the context's trailing
spaces moved to the choice), and its score is the sum of their log-probabilities after the
context. ``acc`` takes the best score; ``acc_norm`` the best score per character of the choice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import metrics


class TaskLineError(Exception):
    def __init__(self, message: str, ident: object = None) -> None:
        super().__init__(message)
        self.ident = ident


@dataclass(frozen=True)
class Task:
    id: object
    context: str
    choices: list[str]
    answer: int | None


def parse_task(text: str) -> Task:
    """One line of a task file; TaskLineError saying what is wrong with it."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TaskLineError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise TaskLineError("a line must be a JSON object")
    ident = obj.get("id")
    if ident is None or isinstance(ident, (dict, list, bool)):
        raise TaskLineError(
            '"id" is required (a string or a number)', ident if not isinstance(ident, (dict, list)) else None
        )
    context, choices, answer = obj.get("context"), obj.get("choices"), obj.get("answer")
    if not isinstance(context, str):
        raise TaskLineError('"context" must be a string', ident)
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise TaskLineError('"choices" must be a list of at least two non-empty strings', ident)
    if answer is not None and (
        isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices)
    ):
        raise TaskLineError(f'"answer" must be the index of a choice (0 to {len(choices) - 1})', ident)
    return Task(ident, context, choices, answer)


def choice_tokens(tokenize: Callable[[str], list[int]], context: str, choice: str) -> tuple[list[int], list[int]]:
    """The context's tokens and the choice's, as lm-eval splits them."""
    spaces = len(context) - len(context.rstrip(" "))
    if spaces:
        context, choice = context[:-spaces], context[-spaces:] + choice
    whole = tokenize(context + choice)
    ctx = tokenize(context)
    n = len(ctx)
    if whole[:n] != ctx:  # the choice merged with the context's last token: split where they agree
        n = next((i for i, (a, b) in enumerate(zip(whole, ctx)) if a != b), min(len(whole), n))
    return whole[:n], whole[n:]


def loglikelihood(
    logits: Callable[[Sequence[int], int], np.ndarray], context: list[int], continuation: list[int], n_ctx: int
) -> tuple[float, bool]:
    """Sum of the continuation's log-probabilities after the context, and whether each of its
    tokens was the most likely one (lm-eval's ``is_greedy``). The context is cut from the left to
    fit ``n_ctx``."""
    tokens = (context + continuation)[-n_ctx:]
    first = len(tokens) - len(continuation) - 1
    if first < 0:
        raise TaskLineError(f"a choice of {len(continuation)} tokens does not fit a context of {n_ctx}")
    out = logits(tokens, first)[:-1]
    targets = np.asarray(continuation, dtype=np.int64)
    logp = metrics.target_logp(out, targets)
    return float(logp.sum()), bool((out.argmax(axis=1) == targets).all())


def score(
    task: Task,
    logits: Callable[[Sequence[int], int], np.ndarray],
    tokenize: Callable[[str], list[int]],
    n_ctx: int,
) -> dict:
    """The record of one task: the choice picked by ``acc`` and by ``acc_norm``, and every score."""
    lls, greedy, counts = [], [], []
    for choice in task.choices:
        ctx, cont = choice_tokens(tokenize, task.context, choice)
        if not cont:
            raise TaskLineError("a choice adds no token to the context", task.id)
        ll, is_greedy = loglikelihood(logits, ctx, cont, n_ctx)
        lls.append(ll)
        greedy.append(is_greedy)
        counts.append(len(cont))
    lengths = np.array([float(len(c)) for c in task.choices])
    picked = int(np.argmax(lls))
    picked_norm = int(np.argmax(np.array(lls) / lengths))
    record: dict = {"id": task.id, "text": task.choices[picked], "predicted": picked, "predicted_norm": picked_norm}
    if task.answer is not None:
        record.update(answer=task.answer, correct=picked == task.answer, correct_norm=picked_norm == task.answer)
    record.update(loglikelihoods=[round(x, 6) for x in lls], greedy=greedy, tokens=counts)
    return record


def summarize(records: Sequence[dict]) -> dict:
    """acc and acc_norm over the records that have an answer (error records are counted apart)."""
    scored = [r for r in records if "correct" in r]
    errors = sum(1 for r in records if "error" in r)
    n = len(scored)
    return {
        "tasks": n,
        "acc": sum(r["correct"] for r in scored) / n if n else None,
        "acc_norm": sum(r["correct_norm"] for r in scored) / n if n else None,
        "errors": errors,
    }
