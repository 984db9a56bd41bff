"""The user's models: list, pull, import, remove, inspect."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.errors import LocalLLMError, ModelNotFoundError, UsageError
from localllm.fit.hardware import Hardware
from localllm.fit.plan import Verdict, plan_load
from localllm.gguf import cache as headercache
from localllm.models import store
from localllm.models.store import InstalledModel

from . import machine

if TYPE_CHECKING:
    from localllm.models.importing import Imported, Mode

Notice = Callable[[str], None]


# --- list ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedModel:
    name: str
    quant: str | None
    size: int
    path: Path | None  # None for a damaged manifest entry
    source: str
    installed: bool  # False: found in another app's folder
    last_used: float | None = None
    verdict: Verdict | None = None  # None: not judged (an odd or missing file, or not asked)
    model: InstalledModel | None = None  # the store's record, for installed models
    error: str | None = None  # why a manifest entry cannot be used (it is listed, never run)
    adapter_for: list[str] | None = None  # a LoRA adapter: the installed models it fits (None: a model)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.quant}" if self.quant else self.name

    @property
    def problem(self) -> str:
        """What is wrong with a damaged manifest entry and how to forget it (raw text: each shell
        makes it safe to show)."""
        return f"damaged manifest entry: {self.error} (localllm rm {self.key} forgets it)"

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "name": self.name,
            "quant": self.quant,
            "size": self.size,
            "last_used": self.last_used,
            "path": str(self.path) if self.path is not None else None,
            "source": self.source,
            "installed": self.installed,
        }
        if self.verdict is not None:
            row["fits"] = self.verdict.value
        if self.error is not None:
            row["error"] = self.error
        if self.adapter_for is not None and self.model is not None:
            row["kind"] = "adapter"
            row["base_architecture"] = self.model.extra.get("base_architecture")
            row["base_model"] = self.model.extra.get("base_model")
            row["fits_models"] = self.adapter_for
        return row


def verdict_of(model: InstalledModel, hw: Hardware) -> Verdict | None:
    """The planner's verdict for an installed model on ``hw``; None when its file cannot be judged."""
    try:
        return plan_load(headercache.read_header(model.path()), hw).verdict
    except (LocalLLMError, OSError):
        return None  # a missing or odd file: `localllm fit` says why


def bases_of(adapter: InstalledModel, models: list[InstalledModel]) -> list[str]:
    """The installed models a LoRA adapter fits (architecture and tensor shapes, from the headers)."""
    from localllm.gguf.adapter import check_fits, read_adapter

    try:
        info = read_adapter(adapter.path())
    except (LocalLLMError, OSError):
        return []
    fits = []
    for m in models:
        try:
            check_fits(info, headercache.read_header(m.path()), m.key)
        except (LocalLLMError, OSError):
            continue
        fits.append(m.key)
    return fits


def _bad_row(entry: store.BadEntry) -> ListedModel:
    raw = entry.raw if isinstance(entry.raw, dict) else {}
    size = raw.get("size")
    source = raw.get("source")
    return ListedModel(
        entry.name,
        entry.quant,
        size if isinstance(size, int) and size >= 0 else 0,
        None,
        source if isinstance(source, str) else "",
        True,
        error=entry.reason,
    )


def list_models(
    *, found_elsewhere: bool = False, judge: bool = True, hardware: Hardware | None = None
) -> list[ListedModel]:
    """Installed models (by name), each judged on this machine unless ``judge`` is False, then the
    manifest entries that cannot be used (with ``error`` saying why); then, if asked, the GGUFs
    other apps hold (Hugging Face cache, LM Studio, Ollama) not installed here."""
    everything = sorted(store.installed(), key=lambda m: m.key)
    models = [m for m in everything if not m.is_adapter]
    adapters = [m for m in everything if m.is_adapter]
    # RAM and GPUs only: loading llama.cpp would cost more than the listing.
    hw = hardware or (machine.detect(ask_llama_cpp=False) if models and judge else None)
    rows = [
        ListedModel(
            m.name,
            m.quant,
            m.size,
            m.path(),
            m.source,
            True,
            m.last_used,
            verdict_of(m, hw) if hw is not None else None,
            m,
        )
        for m in models
    ]
    rows += [
        ListedModel(
            m.name, None, m.size, m.path(), m.source, True, m.last_used, None, m, adapter_for=bases_of(m, models)
        )
        for m in adapters
    ]
    rows += [_bad_row(b) for b in store.unusable()]
    if found_elsewhere:
        from localllm.models.discover import scan_all

        known = {str(p.resolve()) for m in models for p in m.paths()}
        rows += [
            ListedModel(f.name, f.quant, f.size, f.path, f.source, False)
            for f in scan_all()
            if str(f.path.resolve()) not in known
        ]
    return rows


# --- remove --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removed:
    model: InstalledModel | None  # None: only interrupted downloads (or damaged entries) were removed
    partial_bytes: int  # interrupted downloads deleted
    damaged_entries: int = 0  # unusable manifest entries forgotten (their files are left alone)


def catalog_quants(hw: Hardware) -> list[dict[str, Any]]:
    """Each catalog quantization with its size and the planner's verdict on ``hw`` (installed
    ones marked), judged from the catalog alone (``list --catalog``); then each LoRA adapter the
    catalog names (``kind: adapter``, with the model it is for)."""
    from localllm.models import catalog

    from .fitting import quant_options

    rows = []
    for entry in catalog.load_catalog():
        for option in quant_options(entry, store.find_all(entry.name), None, hw):
            rows.append(
                {
                    "name": entry.name,
                    "params": entry.params,
                    "quant": option.quant,
                    "size": option.size,
                    "exact_size": option.exact,
                    "installed": option.installed is not None,
                    "fits": option.fit.verdict.label,
                    "estimated": option.fit.estimated,  # from the size alone: no header read yet
                    "why": option.fit.reason,
                }
            )
    for entry in catalog.load_catalog():
        for adapter in entry.adapters:  # after the models, as `list --json` puts installed adapters
            rows.append(
                {
                    "kind": "adapter",
                    "name": adapter.name,
                    "base": entry.name,
                    "repo": adapter.repo,
                    "file": adapter.file,
                    "description": adapter.description,
                    "installed": store.find_adapter(adapter.name) is not None,
                }
            )
    return rows


def completion_names() -> list[str]:
    """Installed model names (``name:QUANT`` too when a name has several), only those made of
    letters, digits and ``._+-/`` (the store's own rule: nothing a shell would act on). A damaged
    manifest gives none: ``localllm list`` says why, completion stays quiet."""
    try:
        models = store.installed()
    except LocalLLMError:
        return []

    def plain(name: str) -> bool:
        try:
            store.model_dir_name(name)
        except LocalLLMError:
            return False
        return True

    names = {m.name for m in models if plain(m.name)}
    for m in models:
        if m.name in names and m.quant and plain(m.quant) and sum(o.name == m.name for o in models) > 1:
            names.add(m.key)
    return sorted(names)


def remove_model(reference: str, *, confirm: Callable[[InstalledModel], bool] | None = None) -> Removed | None:
    """Delete an installed model (``name[:QUANT]``), its manifest entry and any interrupted
    download of it. ``confirm`` is asked first when given; None is returned when it says no."""
    from localllm.hub.pull import remove_partials

    name, _, tag = reference.strip().partition(":")
    quant = tag.upper() or None
    models = store.find_all(name, quant)
    if len(models) > 1 and quant is None:
        keys = ", ".join(m.key for m in models)
        raise UsageError(
            f"{name} is installed in several quantizations: {keys}",
            hint=f"say which one, e.g. localllm rm {models[0].key}",
        )
    if not models:
        freed = remove_partials(name, quant)
        forgotten = (
            store.forget_bad(reference.strip())
            if any(
                b.key.lower() == reference.strip().lower() or b.name.lower() == name.lower()
                for b in store.bad_entries()
            )
            else 0
        )
        if freed or forgotten:
            return Removed(None, freed, forgotten)
        raise ModelNotFoundError(f"{reference} is not installed", hint="`localllm list` shows what is")
    model = models[0]
    if confirm is not None and not confirm(model):
        return None
    return remove_installed(model)


def remove_installed(model: InstalledModel) -> Removed:
    """Delete one installed model (the store's record of it), and interrupted downloads of it."""
    from localllm.hub.pull import remove_partials

    store.remove(model)
    return Removed(model, remove_partials(model.name, model.quant))


# --- import and inspect --------------------------------------------------------------------------


def import_file(path: Path, *, mode: Mode = "copy", name: str | None = None) -> Imported:
    """Adopt a local GGUF: ``copy``, ``hardlink`` or ``symlink``. Returns a
    :class:`localllm.models.importing.Imported` (the model, and whether it was already there)."""
    from localllm.models.importing import import_gguf

    return import_gguf(Path(path), mode=mode, name=name)


def inspect_model(reference: str, *, notice: Notice | None = None) -> dict[str, Any]:
    """What a model's GGUF holds, from its header alone: the installed file, or, for a catalog
    model that is not installed, its file on the Hub (a few MB by range requests, cached)."""
    from localllm.models.inspect import describe
    from localllm.models.resolve import resolve

    try:
        resolved = resolve(reference, notice=notice, fetch=False)  # inspecting installs nothing
    except ModelNotFoundError as not_installed:
        described = _inspect_on_the_hub(reference, notice)
        if described is None:
            raise not_installed from None
        return described
    return describe(resolved.path, resolved.entry)


def _inspect_on_the_hub(reference: str, notice: Notice | None = None) -> dict[str, Any] | None:
    """A catalog model's header from the Hub; None when the reference is no catalog name or the
    header cannot be had (offline and not cached, unreachable)."""
    from localllm.hub.client import Hub
    from localllm.hub.headers import read_remote_header
    from localllm.models.catalog import load_catalog
    from localllm.models.inspect import describe_header
    from localllm.models.refs import parse_ref

    from .fitting import catalog_files

    ref = parse_ref(reference)
    entry = load_catalog().find(ref.name) if ref.kind == "catalog" else None
    if entry is None:
        return None
    quant = ref.quant or entry.default_quant
    hub = Hub()
    try:
        files, revision, _ = catalog_files(entry, hub)
        if quant not in files:
            return None
        name = files[quant][0][0]
        if notice is not None and not hub.offline:
            notice(f"{entry.name}:{quant} is not installed: reading its header from {entry.repo} (a few MB)")
        header = read_remote_header(entry.repo, name, revision=revision, hub=hub)
    except LocalLLMError:
        return None
    return describe_header(header, f"{entry.repo}/{name} (on the Hub; not installed)", entry)


# --- pull ----------------------------------------------------------------------------------------


@dataclass
class Pull:
    """What pulling a reference means (files, sizes, sha256, the quantization and why), ready to run."""

    plan: Any  # localllm.hub.pull.PullPlan
    hub: Any  # localllm.hub.client.Hub

    def run(
        self,
        *,
        progress: Callable[[Any], None] | None = None,
        notice: Notice | None = None,
        cancel: threading.Event | None = None,
    ) -> InstalledModel:
        from localllm.hub.pull import execute

        return execute(self.plan, self.hub, progress=progress, notice=notice, cancel=cancel)


def plan_pull(reference: str, *, offline: bool = False, reuse: bool = True, max_kld: float | None = None) -> Pull:
    """Plan a pull; asks the Hub only when the model is not installed (never when offline).
    ``max_kld``: choose the smallest quantization whose KL divergence (measured by ``eval`` for an
    installed copy, else the prior of its type) is at most this."""
    from localllm.hub.client import Hub
    from localllm.hub.pull import plan

    hub = Hub(offline=offline)
    # The planner needs the machine (GPUs included) only when it must choose the quantization:
    # detected then, not for a model that is installed or named with its quantization.
    return Pull(plan(reference, hub, look_for_copies=reuse, hardware=machine.detect, max_kld=max_kld, kld=_kld_of), hub)


def plan_adapter_pulls(base: str, names: list[str], *, offline: bool = False, reuse: bool = True) -> list[Pull]:
    """``pull BASE --adapter NAME``: a pull for each LoRA adapter the catalog names for the model
    ``base`` (a catalog name, or the repository of a catalog entry). An adapter the catalog does not
    name for that model is refused before anything is downloaded."""
    from localllm.errors import ModelNotFoundError, UsageError
    from localllm.hub.client import Hub
    from localllm.hub.pull import adapter_plan
    from localllm.models import catalog, refs

    ref = refs.parse_ref(base)
    cat = catalog.load_catalog()
    entry: catalog.CatalogEntry | None
    if ref.kind == "catalog":
        entry = cat.get(ref.name)
    else:
        repo = getattr(ref, "repo", None)
        entry = next((e for e in cat if repo and e.repo.lower() == repo.lower()), None)
    if entry is None:
        raise UsageError(
            f"--adapter takes adapters the catalog names for a model, and {base} is not in the catalog",
            hint="pull the adapter's file by its owner/repo/file.gguf",
        )
    hub = Hub(offline=offline)
    pulls = []
    for name in names:
        adapter = cat.find_adapter(name)
        if adapter is None or adapter.base != entry.name:
            known = ", ".join(a.name for a in entry.adapters)
            where = f" (it is an adapter for {adapter.base})" if adapter is not None else ""
            raise ModelNotFoundError(
                f"the catalog names no adapter {name!r} for {entry.name}{where}",
                hint=f"its adapters: {known}" if known else f"the catalog names no adapters for {entry.name}",
            )
        pulls.append(Pull(adapter_plan(adapter, hub, look_for_copies=reuse), hub))
    return pulls


def _kld_of(name: str, quant: str) -> tuple[float, str] | None:
    """The KL divergence of ``name:quant`` and where it comes from: measured for an installed copy,
    else the prior of its quantization type."""
    from localllm.eval.quality import quality_cost

    found = store.find_installed(name, quant)
    if found is not None:
        path = found.path()
        cost = quality_cost(quant, path, path.stat().st_size if path.is_file() else None, found.sha256)
    else:
        cost = quality_cost(quant)
    return (cost["kld"], cost["label"]) if cost is not None else None
