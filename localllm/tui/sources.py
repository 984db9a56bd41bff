"""A document collection attached to a TUI chat (``/docs NAME``, ``localllm chat --docs NAME``),
and the sources listed under each answer from it: one button per source, which opens a dialog with
the chunk's text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from localllm.errors import LocalLLMError


def _title(source: dict[str, Any]) -> str:
    text = str(source.get("text", "")).lstrip()
    first = text.split("\n", 1)[0]
    if first.startswith("#"):
        return first.lstrip("#").strip()
    return str(source.get("heading", "")).split(" > ")[-1].lstrip("#").strip()


class SourceDialog(ModalScreen[None]):
    """One source's chunk: where it is from, and its text."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, source: dict[str, Any]) -> None:
        super().__init__()
        self.source = source

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(str(self.source.get("cite", "")), classes="question")
            with VerticalScroll(classes="source-text"):
                yield Static(str(self.source.get("text", "")), markup=False, id="source-text")
            yield Label("Esc to close", classes="hint")


class SourcesList(Vertical):
    """The sources of an answer, under it; selecting one shows its text."""

    def __init__(self, sources: list[dict[str, Any]]) -> None:
        super().__init__(classes="sources")
        self.sources = sources

    def compose(self) -> ComposeResult:
        if not self.sources:
            yield Static("Sources: none of the collection's chunks matched", classes="sources-label", markup=False)
            return
        yield Static("Sources:", classes="sources-label")
        for i, source in enumerate(self.sources):
            label = f"{source.get('cite', '')}  {_title(source)}".rstrip()
            yield Button(label, id=f"source-{i}", classes="source", compact=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id and event.button.id.startswith("source-"):
            event.stop()
            self.app.push_screen(SourceDialog(self.sources[int(event.button.id.removeprefix("source-"))]))


class DocsAttachment:
    """The collection a chat screen's replies are grounded in: its retriever (opened in a worker,
    the embedding model loading beside the chat model), or None."""

    def __init__(self, open_retriever: Callable[[str], Any]) -> None:
        self._open = open_retriever
        self.name: str | None = None
        self.retriever: Any = None

    def attach(self, name: str | None) -> str:
        """Open ``name``'s retriever (None: detach); what to tell the user. Call from a worker.
        Raises LocalLLMError (an unknown collection), leaving the attachment as it was."""
        if name == self.name and (name is None or self.retriever is not None):
            return f"This chat answers from {name}." if name else "No collection is attached."
        retriever = self._open(name) if name else None
        self.close()
        self.name, self.retriever = name, retriever
        if name is None:
            return "Answers come from the model alone from now on."
        return f"Answers come from the collection {name} from now on, citing [file:lines] (/docs off to stop)."

    @property
    def ground(self) -> Callable[..., Any] | None:
        return self.retriever.ground if self.retriever is not None else None

    def close(self) -> None:
        if self.retriever is not None:
            try:
                self.retriever.close()
            except LocalLLMError:
                pass
        self.name, self.retriever = None, None
