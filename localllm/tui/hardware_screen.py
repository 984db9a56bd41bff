"""The hardware panel: what was detected, and the memory budget models are measured against."""

from __future__ import annotations

from textual import getters, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from localllm.app.types import Hardware
from localllm.format import format_bytes

from .app import LocalLLMApp


def describe(hw: Hardware) -> str:
    """The same facts, in the same units, as ``localllm hw``."""
    gpus = (
        ", ".join(f"{g.name} ({format_bytes(g.free_bytes)} free of {format_bytes(g.total_bytes)})" for g in hw.gpus)
        or "none detected"
    )
    rows = [
        ("CPU", hw.cpu_model),
        ("Cores", f"{hw.cores_physical} physical, {hw.cores_logical} logical"),
        ("RAM", f"{format_bytes(hw.ram_total)} total, {format_bytes(hw.ram_available)} available"),
        ("GPU", gpus),
        ("GPU offload", "yes" if hw.gpu_offload else "no (CPU build of llama.cpp)"),
        ("RAM budget", f"{format_bytes(hw.ram_budget)} (what models may use now)"),
    ]
    if hw.gpu_budget:
        rows.append(("GPU budget", f"{format_bytes(hw.gpu_budget)} (free GPU memory less the driver's share)"))
    rows += [("Note", note) for note in hw.notes]
    return "\n".join(f"[b]{name:<13}[/b] {value}" for name, value in rows)


class HardwareScreen(ModalScreen[None]):
    app = getters.app(LocalLLMApp)  # self.app typed as this app, with its services
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
