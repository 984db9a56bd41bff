"""Will it fit: every quantization of a model judged on a machine, by the planner alone.

``localllm fit``, ``localllm list`` and the TUI's badges all ask here, so a model gets one verdict,
in the same words, whatever screen shows it. A quantization whose header has not been read (a
catalog model never fetched) is judged from a sibling's header scaled to its size
(:func:`~localllm.fit.plan.sized_header`); with no header at all, from the catalog's size of the
file alone (:func:`judge_size`), marked as an estimate until a header is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localllm.errors import LocalLLMError, ModelNotFoundError, NetworkError
from localllm.fit import estimate, loadlog
from localllm.fit.hardware import Hardware
from localllm.fit.plan import HEADROOM, ModelPlan, Verdict, plan_load, plan_quants, sized_header
from localllm.format import format_bytes
from localllm.gguf import cache as headercache
from localllm.gguf import quants
from localllm.gguf.adapter import check_fits
from localllm.gguf.header import GGUFHeader
from localllm.models import catalog, refs, store
from localllm.models.catalog import CatalogEntry
from localllm.models.store import InstalledModel

# --- localllm fit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitRow:
    label: str  # "qwen3-8b:Q4_K_M", a file name
    where: str  # "installed", "local file", "on the Hub"
    header: GGUFHeader
    path: Path | None  # the local file, when there is one
    sha256: str | None = None  # an installed file's, from the manifest

    @property
    def quant(self) -> str:
        return self.label.rsplit(":", 1)[-1]


@dataclass
class FitReport:
    results: list[dict[str, Any]]  # per row: the plan (as JSON), and the last real load if any
    choice: ModelPlan | None  # across quantizations, when several were judged
    not_judged: list[str] = field(default_factory=list)  # quants whose header could not be read
    why_not_judged: str = ""


def _local_rows(reference: str) -> tuple[list[FitRow], CatalogEntry | None, str | None, set[str]]:
    ref = refs.parse_ref(reference)
    if ref.kind == "file":
        path = refs.require_file(ref)
        return [FitRow(path.name, "local file", headercache.read_header(path), path)], None, None, set()
    entry: CatalogEntry | None = None
    if ref.kind == "catalog":
        entry = catalog.load_catalog().get(ref.name)
        name = entry.name
    else:
        name = ref.repo
    installed = {m.quant: m for m in store.installed() if m.name.lower() == name.lower()}
    rows = [
        FitRow(m.key, "installed", headercache.read_header(m.path()), m.path(), m.sha256)
        for quant, m in installed.items()
        if ref.quant in (None, quant)
    ]
    return rows, entry, ref.quant, {q for q in installed if q is not None}


def catalog_files(entry: CatalogEntry, hub) -> tuple[dict[str, list[tuple[str, int]]], str, bool]:
    """The file(s) of each quantization of a catalog model: from the Hub's listing when it can be
    had (and the revision it was taken at), else from the catalog's file pattern at "main" (offline,
    or the Hub unreachable: cached headers may still do). The last value says whether it was listed."""
    from localllm.hub.pull import files_by_quant

    if not hub.offline:
        try:
            listing = hub.list_files(entry.repo)
        except NetworkError:
            listing = None
        if listing is not None:
            return files_by_quant(listing, entry), listing.revision or "main", True
    return {q: [(f, 0)] for q in entry.quants if (f := entry.filename(q))}, "main", False


def _remote_rows(
    entry: CatalogEntry, quant: str | None, skip: set
) -> tuple[list[FitRow], list[str], LocalLLMError | None]:
    """Headers of the catalog's quants, fetched from the Hub by range requests (cached)."""
    from localllm.hub.client import Hub, offline_error
    from localllm.hub.errors import HubFileNotFoundError, OfflineError
    from localllm.hub.headers import read_remote_header

    hub = Hub()
    files, revision, listed = catalog_files(entry, hub)
    if quant and quant not in files:
        if not listed:
            raise offline_error(f"{entry.name}:{quant}")
        raise HubFileNotFoundError(f"{entry.repo} has no {quant} file", hint=f"quantizations there: {', '.join(files)}")
    rows: list[FitRow] = []
    skipped: list[str] = []
    first_error: LocalLLMError | None = None
    for q in [quant] if quant else list(files):
        if q in skip:
            continue
        if isinstance(first_error, NetworkError) and not isinstance(first_error, OfflineError):
            skipped.append(q)  # the Hub is unreachable: do not wait for it once per quant
            continue
        try:
            header = read_remote_header(entry.repo, files[q][0][0], revision=revision)
        except LocalLLMError as exc:
            if quant:  # the one asked for: say why
                raise
            first_error = first_error or exc
            skipped.append(q)
            continue
        rows.append(FitRow(f"{entry.name}:{q}", "on the Hub", header, None))
    return rows, skipped, first_error


def last_load(header: GGUFHeader, path: Path | None, hw: Hardware) -> dict[str, Any] | None:
    """The last real load of ``path``: what llama.cpp allocated against the estimate for the same
    settings (on ``hw``: its GPU backend, and its CPU's repacking when that load repacked), and the
    process's peak RSS against the estimated RAM."""
    last = loadlog.last_load(path, header.file_size) if path is not None else None
    if last is None:
        return None
    s = last.get("settings", {})
    settings = estimate.Settings(
        n_ctx=int(s.get("n_ctx") or 4096), n_gpu_layers=int(s.get("n_gpu_layers") or 0),
        type_k=str(s.get("type_k") or "f16"), type_v=str(s.get("type_v") or "f16"),
        flash_attn=s.get("flash_attn"), n_batch=int(s.get("n_batch") or 512), n_ubatch=int(s.get("n_ubatch") or 512),
        cpu_moe_layers=int(s.get("cpu_moe_layers") or 0),
    )  # fmt: skip
    est = estimate.estimate(
        header,
        settings,
        backend=hw.gpu_backend if settings.n_gpu_layers else None,
        cpu_features=hw.simd if s.get("repack") else (),
    )
    allocated = int(sum(last.get("buffers_mib", {}).values()) * estimate.MiB)
    predicted = est.cpu.llama_cpp + est.gpu.llama_cpp
    return {
        "time": last.get("time"), "n_ctx": settings.n_ctx, "n_gpu_layers": settings.n_gpu_layers,
        "allocated": allocated, "estimated": predicted,
        "error": (predicted - allocated) / allocated if allocated else None,
        "peak_rss": last.get("peak_rss"), "estimated_rss": est.cpu.total, "gpu_bytes": last.get("gpu_bytes"),
    }  # fmt: skip


def fit_model(
    reference: str,
    hw: Hardware,
    n_ctx: int | None = None,
    adapters: Sequence[str] | None = None,
    docs: str | None = None,
) -> FitReport:
    """The plan for the file a reference names, or for every quantization of a catalog model (the
    installed ones from disk, the others by reading their headers from the Hub), and the choice.
    ``adapters``: ``--lora`` references whose tensors count with the weights (``adapters`` bytes
    in each result); ``docs``: a collection whose embedding model is loaded beside it (its RAM is
    left for it: ``docs`` in each result)."""
    from localllm.fit.plan import adapter_bytes, with_adapters

    from . import drafting
    from .adapters import adapter_infos, adapter_specs

    infos = adapter_infos(adapter_specs(adapters or ()))
    extra = adapter_bytes(infos)
    beside = 0
    if docs is not None:
        from . import documents
        from .loading import leaving

        beside = documents.embedder_bytes(docs)
        hw = leaving(hw, beside)
    rows, entry, quant, installed = _local_rows(reference)
    skipped: list[str] = []
    error: LocalLLMError | None = None
    if entry is not None and (quant is None or quant not in installed):
        remote, skipped, error = _remote_rows(entry, quant, installed)
        if not remote and not rows and error is not None:
            raise error
        rows += remote
    if not rows:
        raise ModelNotFoundError(f"{reference} is not installed", hint=f"download it with: localllm pull {reference}")
    results = []
    for row in rows:
        for info in infos:
            check_fits(info, row.header, row.label)
        plan = plan_load(with_adapters(row.header, infos), hw, n_ctx)
        result = {"model": row.label, "where": row.where, "file_size": row.header.file_size, **plan.as_dict()}
        if infos:
            result["adapters"] = {"names": [i.name for i in infos], "bytes": extra}
        if docs is not None:
            result["docs"] = {"name": docs, "embedder_bytes": beside}
        measured = last_load(row.header, row.path, hw)
        if measured is not None:
            result["last_load"] = measured
        result["quality"] = _quality(row)
        speculative = drafting.propose(entry, row.header, row.path, row.sha256, hw, n_ctx)
        if speculative is not None:
            result["speculative"] = speculative
        results.append(result)
    choice = None
    if len(rows) > 1:
        candidates = [(r.quant, r.header.file_size or r.header.data_end, r.header) for r in rows]
        choice = plan_quants(candidates, hw, n_ctx)
    return FitReport(results, choice, skipped, str(error) if skipped and error else "")


def _quality(row: FitRow) -> dict[str, Any] | None:
    """What the row's quantization costs in quality: measured by ``eval``, or the prior for its type."""
    from localllm.eval.quality import quality_cost

    quant = row.header.file_type_name if row.path is not None else row.quant
    size = row.path.stat().st_size if row.path is not None else None
    return quality_cost(quant or row.quant, row.path, size, row.sha256)


def quality_of(path: Path | None, quant: str | None, sha256: str | None = None) -> dict[str, Any] | None:
    """What a model file costs in quality (``eval``'s measured KLD, else its quant type's prior)."""
    from localllm.eval.quality import quality_cost

    size = path.stat().st_size if path is not None and path.is_file() else None
    return quality_cost(quant, path if size is not None else None, size, sha256)


# --- the TUI's badges ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    verdict: Verdict
    reason: str
    need_bytes: int  # 0 when not judged
    estimated: bool = False  # judged from the file's size alone (no header of the model read yet)


@dataclass(frozen=True)
class QuantOption:
    quant: str
    size: int
    exact: bool  # the size of a real file (True), or typical for the quantization (False)
    installed: InstalledModel | None
    fit: Fit
    quality: dict[str, Any] | None = None  # its KLD: measured by eval, else its type's prior


NOT_JUDGED = "not judged: no header of this model has been read yet (`localllm fit NAME` reads one)"


def _local_header(path: Path) -> GGUFHeader | None:
    try:
        return headercache.read_header(path)
    except (LocalLLMError, OSError):
        return None


# Beyond its weights a model needs its KV cache and compute buffers; without a header (layers,
# heads) they are guessed as a share of the weights plus a floor, about what a 4k-8k context takes.
SIZE_OVERHEAD = 0.15
SIZE_OVERHEAD_MIN = 512 * 1024**2


def judge_size(size: int, hw: Hardware) -> Fit:
    """A verdict from the file's size alone (no header read yet): an estimate, said as one."""
    need = int(size * (1 + SIZE_OVERHEAD)) + SIZE_OVERHEAD_MIN
    room = hw.ram_budget + hw.gpu_budget  # layers that do not fit the GPU stay on the CPU
    verdict = Verdict.FITS if need <= room * HEADROOM else Verdict.TIGHT if need <= room else Verdict.NO
    reason = (
        f"{verdict.label}, estimated from its size (no header read yet): needs about {format_bytes(need)}"
        f" of {format_bytes(room)} available"
    )
    return Fit(verdict, reason, need, estimated=True)


def judge(header: GGUFHeader | None, hw: Hardware) -> Fit:
    """The planner's verdict for one file (header) on ``hw``."""
    if header is None:
        return Fit(Verdict.UNKNOWN, NOT_JUDGED, 0)
    try:
        plan = plan_load(header, hw)
    except LocalLLMError as exc:
        return Fit(Verdict.UNKNOWN, f"not judged: {exc}", 0)
    return Fit(plan.verdict, plan.reason, plan.estimate.total)


def quant_options(
    entry: CatalogEntry | None, installed: list[InstalledModel], foreign: Path | None, hw: Hardware
) -> list[QuantOption]:
    """Every quantization a model offers here: its installed copies, a file found in another app,
    and the catalog's other quantizations (judged from a sibling's header, without the network)."""
    options: list[QuantOption] = []
    seen: set[str] = set()
    sibling: GGUFHeader | None = None
    for model in installed:
        size = sum(p.stat().st_size for p in model.paths() if p.is_file()) or model.size
        header = _local_header(model.path())
        sibling = sibling or header
        seen.add((model.quant or "").upper())
        quality = quality_of(model.path(), model.quant, model.sha256)
        options.append(QuantOption(model.quant or "?", size, True, model, judge(header, hw), quality))
    if foreign is not None:
        header = _local_header(foreign)
        quant = header.file_type_name if header is not None else None
        options.append(
            QuantOption("file", foreign.stat().st_size, True, None, judge(header, hw), quality_of(foreign, quant))
        )
    if entry is None:
        return options
    if sibling is None:
        from localllm.hub.headers import cached_header_for

        sibling = cached_header_for(entry.repo)
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
        fit = judge(sized_header(sibling, size), hw) if sibling is not None else judge_size(size, hw)
        options.append(QuantOption(quant, size, exact, None, fit, quality_of(None, quant)))
    return options
