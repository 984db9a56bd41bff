"""The chat's transcript: one view per message (who said it, then its Markdown), notices between
them, and a long conversation shown from its last messages with the rest on demand."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Button, Collapsible, Markdown, Static
from textual.widgets._markdown import MarkdownParagraph  # not re-exported; the block type Markdown.BLOCKS names

from localllm.chat import history as hist

from .sources import SourcesList

if TYPE_CHECKING:
    from typing_extensions import Self

SHOWN_MESSAGES = 24  # a long conversation opens with its last messages; the rest on demand

ROLE_LABEL = {"user": "You", "assistant": "Assistant", "system": "System"}
STATUS_NOTE = {hist.PARTIAL: "interrupted", hist.STOPPED: "stopped"}
EMPTY_HINT = (
    "Ask anything. Enter sends, Shift+Enter or ^j breaks the line; Esc stops a reply; ^r "
    "regenerates; ^e edits your last message; ^y copies the last reply. F2 renames this chat, "
    "F3 exports it, F8 deletes it, F9 switches light/dark, F1 lists every key, /help the "
    "commands (/system, /set temperature 0.2, /model, /save ...). Chats are saved as you go."
)


def _soft_breaks_are_hard(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


@functools.cache
def reply_parser() -> MarkdownIt:
    """Markdown as models write it: a single newline is a line break (a poem keeps its lines).
    One parser for the app: Markdown asks for it on every append while a reply streams, and
    building one costs more than parsing the piece."""
    parser = MarkdownIt("gfm-like", {"breaks": True})
    parser.core.ruler.push("soft_breaks_are_hard", _soft_breaks_are_hard)
    return parser


class ReplyParagraph(MarkdownParagraph):
    """A paragraph that grows as a reply streams in. Most pieces only lengthen its last line: then
    that line alone is drawn again, without a layout of the whole screen (before, most of the UI's
    CPU while streaming). A piece that wraps onto a new line, or restyles earlier text (a closing
    ``**``), lays out and draws the paragraph as usual."""

    _only_line: Region | None = None  # the line to draw at the next refresh, if only it changed

    def set_content(self, content: Content) -> None:
        old, size = self._content, self.content_size
        self._content = content
        if not size.width or self._height_of(content, size.width) != size.height:
            self.update(content)
            return
        if content.plain.startswith(old.plain) and content.spans[: len(old.spans)] == old.spans:
            # text added at the end, nothing before it restyled: wrapping is greedy, so with the
            # same height only the last line can differ
            self._only_line = Region(0, size.height - 1, size.width, 1)
        self.update(content, layout=False)

    def _height_of(self, content: Content, width: int) -> int:
        return content.get_height(self.styles, width)  # type: ignore[arg-type]  # as Widget.get_content_height does

    def refresh(self, *regions: Region, **kwargs: Any) -> Self:
        line, self._only_line = self._only_line, None
        if line is not None and not regions and not kwargs.get("layout"):
            regions = (line,)
        return super().refresh(*regions, **kwargs)


class ReplyMarkdown(Markdown):
    """A message's Markdown, whose paragraphs grow without relayouts (:class:`ReplyParagraph`)."""

    BLOCKS = {**Markdown.BLOCKS, "paragraph_open": ReplyParagraph}


def speed_text(stats: dict[str, Any] | None) -> str | None:
    """ "42 tokens · 31.0 tok/s · first token 0.42 s" for a reply's stats (None: nothing known)."""
    if not stats or not stats.get("generated_tokens"):
        return None
    parts = [f"{stats['generated_tokens']} tokens"]
    if stats.get("tokens_per_s"):
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if stats.get("ttft_s") is not None:
        parts.append(f"first token {stats['ttft_s']:.2f} s")
    if stats.get("prompt_tokens"):
        parts.append(f"prompt {stats['prompt_tokens']} tokens")
    return " · ".join(parts)


class ThinkingView(Collapsible):
    """A reasoning model's thinking above its answer: dimmed, folded under "Thinking" (open while
    it is being written, folded once the answer begins)."""

    def __init__(self, text: str = "", *, collapsed: bool = True) -> None:
        self.text = text
        super().__init__(Static(text, classes="thinking-text", markup=False), title="Thinking", collapsed=collapsed)
        self.add_class("thinking")

    def append(self, text: str) -> None:
        if not self.text:
            text = text.lstrip()
        self.text += text
        self.query_one(".thinking-text", Static).update(self.text)


class MessageView(Vertical):
    """One message: who said it, a reply's thinking (folded), then its Markdown."""

    def __init__(
        self,
        role: str,
        content: str,
        message_id: int | None = None,
        status: str = hist.COMPLETE,
        *,
        writing: bool = False,
        reasoning: str = "",
    ) -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.content = content
        self.reasoning = reasoning  # a reply's thinking, shown apart from its answer
        self._folded = False  # the thinking was folded when the answer began (the user may reopen it)
        self.message_id = message_id
        self.status = status
        self.writing = writing  # being streamed: no "(interrupted)" note until it ends
        self.note = ""  # what the label says meanwhile ("reading the conversation…")
        self.stats: dict[str, Any] | None = None  # a reply's speed, shown when the pointer is on its label

    @classmethod
    def of(cls, message: hist.StoredMessage) -> MessageView:
        view = cls(message.role, message.content, message.id, message.status, reasoning=message.reasoning)
        view.stats = message.stats
        return view

    def compose(self) -> ComposeResult:
        label = Static(self._label(), classes="role")
        label.tooltip = speed_text(self.stats)
        yield label
        if self.reasoning:
            yield ThinkingView(self.reasoning)
        yield ReplyMarkdown(self.content, parser_factory=reply_parser)
        if self.stats and isinstance(self.stats.get("sources"), list):
            yield SourcesList(self.stats["sources"])

    @property
    def thinking(self) -> ThinkingView | None:
        found = self.query(ThinkingView)
        return found.first() if found else None

    async def add_reasoning(self, text: str) -> None:
        """More of the reply's thinking (the fold opens, unfolded, at its first piece)."""
        self.reasoning += text
        view = self.thinking
        if view is None:
            if not text.strip():
                self.reasoning = ""
                return
            view = ThinkingView(collapsed=False)
            await self.mount(view, before=self.markdown)
        view.append(text)

    def fold_thinking(self) -> None:
        """The answer has begun: the thinking folds away (a click opens it again)."""
        view = self.thinking
        if view is not None and not self._folded:
            view.collapsed = True
            self._folded = True

    def show_stats(self, stats: dict[str, Any] | None) -> None:
        """The reply's speed and first-token time, on its label's tooltip; the sources it was
        answered from (a chat with a document collection), under it."""
        self.stats = stats
        self.query_one(".role", Static).tooltip = speed_text(stats)
        if stats and isinstance(stats.get("sources"), list) and not self.query(SourcesList):
            self.mount(SourcesList(stats["sources"]))

    def _label(self) -> str:
        note = self.note if self.writing else STATUS_NOTE.get(self.status)
        return ROLE_LABEL.get(self.role, self.role) + (f" ({note})" if note else "")

    def set_status(self, status: str) -> None:
        self.status = status
        self.writing = False
        self.note = ""
        self.query_one(".role", Static).update(self._label())

    def set_note(self, note: str) -> None:
        """A word on the label while the reply is being written (empty: none)."""
        if note != self.note:
            self.note = note
            self.query_one(".role", Static).update(self._label())

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)


class Transcript(VerticalScroll):
    """The messages of the chat on screen, oldest first."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hidden: list[hist.StoredMessage] = []  # the earlier messages not shown yet

    def on_mount(self) -> None:
        # Anchored: it follows a growing reply unless the user scrolled up, and follows again once
        # they scroll back to the bottom.
        self.anchor()

    def show(self, messages: Sequence[hist.StoredMessage]) -> None:
        """Show a conversation (its last messages, a button for the rest); the empty hint if none."""
        self.remove_children()
        shown = list(messages[-SHOWN_MESSAGES:])
        self._hidden = list(messages[: len(messages) - len(shown)])
        views: list[Widget] = []
        if self._hidden:
            views.append(Button(f"Show {len(self._hidden)} earlier messages", id="show-earlier", classes="earlier"))
        views += [MessageView.of(m) for m in shown]
        if not views:
            self.show_empty_hint()
        self.mount_all(views)
        self.scroll_end(animate=False)

    def clear(self) -> None:
        """Nothing but the empty chat's hint."""
        self._hidden = []
        self.remove_children()
        self.show_empty_hint()

    def show_empty_hint(self) -> None:
        self.mount(Static(EMPTY_HINT, classes="empty-hint"))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "show-earlier":
            event.stop()
            hidden, self._hidden = self._hidden, []
            self.mount_all([MessageView.of(m) for m in hidden], after=event.button)
            event.button.remove()

    async def add(self, view: MessageView) -> None:
        """A new message at the end (the empty hint goes)."""
        for hint in self.query(".empty-hint"):
            hint.remove()
        await self.mount(view)
        self.scroll_end(animate=False)

    async def add_notice(self, text: str, kind: str = "", *, markup: bool = True) -> None:
        """A line of the app's own (``markup=False`` for text with brackets, such as /help's)."""
        await self.mount(Static(text, classes=f"notice {kind}".strip(), markup=markup))
        self.scroll_end(animate=False)

    def add_notice_before(self, text: str, view: MessageView | None) -> None:
        """A notice above ``view`` (the reply it concerns), or at the end."""
        notice = Static(text, classes="notice")
        if view is not None and view.is_mounted:
            self.mount(notice, before=view)
        else:
            self.mount(notice)

    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    async def remove_from(self, view: MessageView) -> None:
        """Take ``view`` and every later message off the screen."""
        views = self.views()
        await self.remove_children(views[views.index(view) :])
