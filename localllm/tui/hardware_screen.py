"""The hardware panel: what was detected, and the memory budget models are measured against."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from .services import Hardware, human_bytes


def describe(hw: Hardware) -> str:
    rows = [
        ("CPU", hw.cpu),
        ("Cores", f"{hw.physical_cores} physical, {hw.logical_cores} logical"),
        ("RAM", f"{human_bytes(hw.total_ram)} total, {human_bytes(hw.available_ram)} available"),
        ("GPU", hw.gpu),
        ("GPU offload", "yes" if hw.gpu_offload else "no (CPU build of llama.cpp)"),
    ]
    if hw.detected is None:
        rows.append(("Model budget", f"{human_bytes(hw.budget)} (available RAM less a margin)"))
    else:
        d = hw.detected
        rows.append(("RAM budget", f"{human_bytes(d.ram_budget)} (what models may use now)"))
        if d.gpu_budget:
            rows.append(("GPU budget", f"{human_bytes(d.gpu_budget)} (free GPU memory less the driver's share)"))
        rows += [("Note", note) for note in d.notes]
    return "\n".join(f"[b]{name:<13}[/b] {value}" for name, value in rows)


class HardwareScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close"), Binding("h", "dismiss(None)", "Close", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Hardware", classes="question")
            yield Static("Detecting…", id="hardware")
            yield Label("Badges compare each model's estimated memory with the budget. Esc closes.", classes="hint")

    def on_mount(self) -> None:
        self.detect()

    @work(thread=True, exclusive=True, group="hardware")
    def detect(self) -> None:
        hw = self.app.services.hardware()  # loads llama.cpp to ask about GPU offload: a worker
        self.app.call_from_thread(self.query_one("#hardware", Static).update, describe(hw))
