"""The saved chats beside the transcript (newest first; the one on screen in bold)."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from localllm.chat import history as hist


class ConversationItem(ListItem):
    def __init__(self, info: hist.ConversationInfo, current: bool) -> None:
        super().__init__(Static(info.title), classes="current" if current else "")
        self.conversation_id = info.id


class Sidebar(Vertical):
    class Chosen(Message):
        """The user picked a saved chat."""

        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def compose(self) -> ComposeResult:
        yield Static("Chats", classes="sidebar-title")
        yield ListView(id="conversations")

    def show(self, conversations: Iterable[hist.ConversationInfo], current: int | None) -> None:
        listing = self.query_one("#conversations", ListView)
        listing.clear()
        listing.extend(ConversationItem(info, info.id == current) for info in conversations)

    def focus_list(self) -> None:
        self.query_one("#conversations", ListView).focus()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        if isinstance(event.item, ConversationItem):
            event.stop()
            self.post_message(self.Chosen(event.item.conversation_id))
