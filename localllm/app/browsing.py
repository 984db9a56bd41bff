"""What the TUI's model browser shows: one row per model (a catalog entry and/or its installed
copies, a GGUF found in another app's folder, a damaged manifest entry), and the model a row's
quantization opens in a chat."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from localllm.format import format_count, terminal_safe
from localllm.models import catalog, store
from localllm.models.resolve import ResolvedModel

from .fitting import QuantOption
from .library import list_models


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

    def resolved(self) -> ResolvedModel:
        return ResolvedModel(path=self.path, label=self.label, installed=self.installed)


def _plain(text: str) -> str:
    """Text read from a damaged file, safe in a terminal and in Textual markup."""
    return terminal_safe(text).replace("[", "(").replace("]", ")")


def model_items() -> list[ModelItem]:
    """Installed models first (most recently used first), then the rest of the catalog, then
    GGUFs found in other apps' folders, then damaged manifest entries (shown as bad, the rest still
    listed)."""
    listed = list_models(found_elsewhere=True, judge=False)
    by_name: dict[str, list[store.InstalledModel]] = {}
    for row in listed:
        if row.model is not None:
            by_name.setdefault(row.name.lower(), []).append(row.model)
    entries = list(catalog.load_catalog())
    for e in entries:  # a row opens a chat, which an embedding model cannot hold: they serve `docs`
        if "embedding" in e.tags:
            by_name.pop(e.name, None)
    items = [
        ModelItem(e.name, e.display, format_count(e.params), e.description, entry=e, installed=by_name.pop(e.name, []))
        for e in entries
        if "embedding" not in e.tags
    ]
    for models in by_name.values():  # Hub references outside the catalog, imports
        first = models[0]
        items.append(ModelItem(first.name, first.name, "", f"installed from {first.source}", installed=models))
    for row in listed:
        if not row.installed and row.path is not None:
            items.append(
                ModelItem(
                    row.path.stem,
                    row.path.name,
                    "",
                    f"found in {row.source}: {row.path}",
                    foreign_path=row.path,
                    foreign_app=row.source,
                )
            )
    for i, row in enumerate(r for r in listed if r.error is not None):
        items.append(
            ModelItem(f"damaged-{i}:{row.key}", _plain(row.key), "", _plain(row.problem), error=row.error or "damaged")
        )

    def recency(item: ModelItem) -> float:
        return max((m.last_used or m.installed_at for m in item.installed), default=0.0)

    installed_items = sorted((i for i in items if i.installed), key=recency, reverse=True)
    return installed_items + [i for i in items if not i.installed]


def chat_target(item: ModelItem, option: QuantOption) -> ChatTarget | None:
    """The model a row's quantization opens in a chat; None when it is not on this machine."""
    if option.installed is not None:
        model = option.installed
        return ChatTarget(model.key, model.path(), model.quant or "", model)
    if item.foreign_path is not None:
        return ChatTarget(item.foreign_path.name, item.foreign_path, "")
    return None
