"""The chat's status line: the model, loading or writing, the context used, the speed, CPU or GPU.

The screen sets what it knows (reactive fields); each change redraws the line in a ``watch_``
method, as Textualize/toolong's ``LogFooter`` does, so no code path can forget to update it.
"""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static


def fit_line(parts: list[tuple[int, str]], width: int, sep: str = " · ") -> str:
    """``parts`` joined by ``sep``, leaving out the lowest-priority ones until the line fits ``width``
    (the first part, the model's name, always stays)."""
    kept = list(parts)
    while len(kept) > 1 and len(sep.join(t for _, t in kept)) > width:
        kept.remove(min(kept[1:], key=lambda part: part[0]))
    return sep.join(t for _, t in kept)


class StatusLine(Static):
    model: reactive[str] = reactive("")  # the model's label; empty: no model
    loading: reactive[bool] = reactive(False)
    generating: reactive[bool] = reactive(False)
    n_ctx: reactive[int] = reactive(0)  # the loaded model's context (0: unknown)
    gpu: reactive[bool] = reactive(False)  # layers offloaded
    context_used: reactive[int] = reactive(0)  # tokens, after the last reply
    tokens_per_s: reactive[float] = reactive(0.0)  # the last reply's speed

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)

    def show_model(self, model: Any) -> None:
        """The facts of a loaded model (its context, CPU or GPU); None: none loaded."""
        self.n_ctx = getattr(model, "n_ctx", 0) or 0
        self.gpu = bool(getattr(getattr(model, "options", None), "n_gpu_layers", 0))

    def show_stats(self, stats: dict[str, Any]) -> None:
        """A finished reply's stats (``context_used``, ``tokens_per_s``)."""
        self.context_used = stats.get("context_used", 0) or 0
        self.tokens_per_s = stats.get("tokens_per_s", 0.0) or 0.0

    def line(self, width: int) -> str:
        if not self.model:
            return "No model: ^o opens the models list"
        parts = [(0, self.model)]  # (priority: the lowest is dropped first when the line is too long)
        if self.loading:
            parts.append((9, "loading…"))
        else:
            if self.n_ctx:
                parts.append((5, f"ctx {self.context_used}/{self.n_ctx}"))
            if self.tokens_per_s:
                parts.append((3, f"{self.tokens_per_s:.1f} tok/s"))
            parts.append((1, "GPU" if self.gpu else "CPU"))
        if self.generating:
            parts.append((8, "writing… Esc stops"))
        return fit_line(parts, width)

    def redraw(self) -> None:
        if self.is_mounted:
            self.update(self.line(self.content_size.width or self.app.size.width - 2))

    def watch_model(self) -> None:
        self.redraw()

    def watch_loading(self) -> None:
        self.redraw()

    def watch_generating(self) -> None:
        self.redraw()

    def watch_n_ctx(self) -> None:
        self.redraw()

    def watch_gpu(self) -> None:
        self.redraw()

    def watch_context_used(self) -> None:
        self.redraw()

    def watch_tokens_per_s(self) -> None:
        self.redraw()

    def on_resize(self) -> None:
        self.redraw()
