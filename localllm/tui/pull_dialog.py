"""Downloading a model: live bytes, speed and ETA; Esc cancels (a later pull resumes)."""

from __future__ import annotations

import threading

from textual import getters, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, ProgressBar

from localllm.app.types import CatalogEntry
from localllm.errors import LocalLLMError
from localllm.format import format_bytes, format_clock, format_rate

from .app import LocalLLMApp
from .messages import PullDone, PullProgressed
from .services import PullCancelled, PullProgress


def progress_text(p: PullProgress) -> str:
    if p.total:
        parts = [f"{format_bytes(p.done)} of {format_bytes(p.total)}"]
    else:
        parts = [format_bytes(p.done) if p.done else "starting"]
    if p.speed > 0:
        parts.append(format_rate(p.speed))
    if p.eta_s is not None:
        parts.append(f"{format_clock(p.eta_s)} left")
    if p.note:
        parts.append(p.note)
    return " · ".join(parts)


class PullDialog(ModalScreen[bool]):
    """Dismissed with True once the model is installed, False otherwise."""

    app = getters.app(LocalLLMApp)  # self.app typed as this app, with its services

    BINDINGS = [Binding("escape", "cancel", "Cancel download")]

    def __init__(self, entry: CatalogEntry, quant: str) -> None:
        super().__init__()
        self.entry = entry
        self.quant = quant
        self.cancel = threading.Event()
        self.started = False  # a byte arrived (a cancelled pull has something to resume)
        self.failed = False  # the error is shown here until Esc

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Downloading {self.entry.name}:{self.quant}", classes="question")
            yield ProgressBar(total=None, show_eta=False, id="bar")
            yield Label("asking the Hub what to fetch…", id="pull-detail", markup=False)
            yield Label("Esc cancels; pulling again resumes.", classes="hint", id="pull-hint")

    def on_mount(self) -> None:
        self.app.cancel_events.add(self.cancel)
        self.download()

    @work(thread=True, exclusive=True, group="pull")
    def download(self) -> None:
        try:
            self.app.services.pull(self.entry, self.quant, lambda p: self.post_message(PullProgressed(p)), self.cancel)
        except PullCancelled:
            self.post_message(PullDone(cancelled=True))
        except LocalLLMError as exc:
            # Esc early (while the Hub is asked what to fetch) can end in any error: it was cancelled.
            self.post_message(PullDone(cancelled=True) if self.cancel.is_set() else PullDone(error=exc))
        else:
            self.post_message(PullDone(cancelled=self.cancel.is_set()))

    def on_pull_progressed(self, message: PullProgressed) -> None:
        p = message.progress
        self.started = self.started or p.done > 0
        bar = self.query_one("#bar", ProgressBar)
        bar.update(total=p.total, progress=p.done)
        self.query_one("#pull-detail", Label).update(progress_text(p))

    def on_pull_done(self, message: PullDone) -> None:
        self.app.cancel_events.discard(self.cancel)
        if message.error is not None:
            # shown in the dialog until the user closes it, not in a toast that goes by
            error = message.error
            self.failed = True
            self.query_one("#bar", ProgressBar).display = False
            self.query_one("#pull-detail", Label).update(
                f"Download failed: {error}" + (f"\n{hint}" if (hint := getattr(error, "hint", "")) else "")
            )
            self.query_one("#pull-hint", Label).update("Esc closes.")
        elif message.cancelled:
            resume = "; pull again to resume" if self.started else ""
            self.app.notify(f"Download cancelled{resume}.", title="Cancelled")
            self.dismiss(False)
        else:
            self.app.notify(f"{self.entry.name}:{self.quant} is installed.", title="Downloaded")
            self.dismiss(True)

    def action_cancel(self) -> None:
        if self.failed:
            self.dismiss(False)
            return
        self.cancel.set()
        self.query_one("#pull-detail", Label).update("cancelling…")
