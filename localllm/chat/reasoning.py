"""A reply's reasoning apart from its answer: what ``run``, the terminal chat and the TUI show.

A reasoning model writes its thoughts in its family's markers before the answer (``<think>`` ...
``</think>`` for Qwen 3, DeepSeek R1, SmolLM3; ``[THINK]`` for Magistral; gpt-oss's analysis
channel...). :func:`chat` starts a reply with the model's own chat template and turns the pieces it
streams into :class:`~localllm.chat.toolcalls.ReasoningDelta` and
:class:`~localllm.chat.toolcalls.ContentDelta` parts, through the tool-call module's parser (the one
the server uses: one parser of each family's markup). A template that opens the reasoning block in
the prompt (a generation prompt ending in ``<think>``) starts the reply inside reasoning.

``think`` reaches the template as ``enable_thinking`` (False: the template's way to skip
reasoning); ``budget`` caps the reasoning's tokens (the runtime feeds the closing marker once they
are spent, as llama-server's ``--reasoning-budget`` does).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from localllm.runtime.options import SamplingOptions, ThinkBudget

from .toolcalls import ContentDelta, ReasoningDelta, ToolFormat, detect

__all__ = ["Part", "SplitGeneration", "chat", "reasoning_format", "think_budget"]

Part = ContentDelta | ReasoningDelta


def reasoning_format(model: Any) -> ToolFormat:
    """The markup family of ``model``'s chat template (its reasoning markers, if it has any)."""
    return detect(getattr(model, "chat_template_source", None))


def opens_reasoning(fmt: ToolFormat, prompt: str) -> bool:
    """Whether the prompt ends inside a reasoning block (the template opened it for the model)."""
    return fmt.think is not None and prompt.rstrip().endswith(fmt.think[0])


def think_budget(fmt: ToolFormat, tokens: int | None, prompt: str) -> ThinkBudget | None:
    """The runtime's budget for at most ``tokens`` reasoning tokens in ``fmt`` (None: no cap, or
    no reasoning markers). Tag formats get ``</think>`` and a blank line injected, as their
    templates write a finished reasoning block."""
    if tokens is None or fmt.think is None:
        return None
    open_, close = fmt.think
    force = close + "\n\n" if close.startswith("</") else close
    return ThinkBudget(max(0, tokens), open_, close, force, inside=opens_reasoning(fmt, prompt))


class SplitGeneration:
    """A streaming reply as reasoning and answer parts; ``stats`` (the runtime's) once it ends."""

    def __init__(self, generation: Any, fmt: ToolFormat, prompt: str) -> None:
        self.generation = generation
        self.fmt = fmt
        thinks = fmt.think is not None or bool(fmt.drop)
        self._parser = fmt.parser((), in_reasoning=opens_reasoning(fmt, prompt)) if thinks else None
        self._answer: list[str] = []
        self._reasoning: list[str] = []

    @property
    def stats(self) -> Any:
        return self.generation.stats

    @property
    def prompt_fraction(self) -> float | None:
        return getattr(self.generation, "prompt_fraction", None)

    @property
    def answer(self) -> str:
        """The answer so far (never a reasoning marker or its text)."""
        return "".join(self._answer)

    @property
    def reasoning(self) -> str:
        """The reasoning so far, without its markers."""
        return "".join(self._reasoning).strip()

    def close(self) -> None:
        self.generation.close()

    def _keep(self, parts: Sequence[Part]) -> list[Part]:
        for part in parts:
            (self._reasoning if isinstance(part, ReasoningDelta) else self._answer).append(part.text)
        return list(parts)

    def __iter__(self) -> Iterator[Part]:
        parser = self._parser
        for piece in self.generation:
            if parser is None:
                yield from self._keep([ContentDelta(piece)])
            else:
                yield from self._keep([p for p in parser.feed(piece) if isinstance(p, (ContentDelta, ReasoningDelta))])
        if parser is not None:
            yield from self._keep([p for p in parser.finish() if isinstance(p, (ContentDelta, ReasoningDelta))])


def chat(
    model: Any,
    messages: Sequence[dict[str, str]],
    sampling: SamplingOptions,
    cancel: threading.Event | None = None,
    *,
    think: bool | None = None,
    budget: int | None = None,
) -> SplitGeneration:
    """Start ``model``'s reply to ``messages``, split into reasoning and answer as it streams.
    ``think``: None the template's default, False asks the template to skip reasoning (its
    ``enable_thinking``); ``budget``: the most reasoning tokens (None: no cap)."""
    fmt = reasoning_format(model)
    template_vars = {"enable_thinking": think} if think is not None and fmt.think is not None else {}
    if budget is not None and think is not False and fmt.think is not None:
        # the budget's state at the start depends on the prompt's end (the template may open the block)
        capped = think_budget(fmt, budget, model.render_chat(messages, **template_vars))
        sampling = replace(sampling, think_budget=capped)
    generation = model.chat(
        messages,
        sampling,
        cancel,
        template_vars=template_vars,
        special_tokens=fmt.special_tokens and fmt.think is not None,
    )
    return SplitGeneration(generation, fmt, getattr(generation, "prompt_text", ""))
