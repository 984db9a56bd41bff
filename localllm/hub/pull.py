"""Pull a model: reference -> the files to fetch (plan) -> verified files in the store (execute).

Planning asks the Hub (through one :class:`~localllm.hub.client.Hub`) for the repository's file
list (sizes and LFS sha256) unless the model is already installed, in which case nothing touches the
network; without a quantization it judges which one fits the machine the caller passes. Executing
links a copy another app already holds (:mod:`localllm.models.discover`) or downloads
(:mod:`localllm.hub.download`), then moves every file into place and records the model; a model with
several parts appears only once all are there.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localllm import fs
from localllm.errors import LocalLLMError, UsageError
from localllm.gguf import quants
from localllm.models import catalog, discover, refs, store
from localllm.models.catalog import CatalogEntry, is_split_part, match_quant_file

from . import download
from .client import Hub
from .errors import DownloadPermissionError, HubFileNotFoundError, offline_error

Notice = Callable[[str], None]


def default_quant(quants: list[str]) -> tuple[str, str]:
    """The quantization to pull when the planner cannot judge (no header): Q4_K_M, else the first."""
    if not quants:
        raise UsageError("no quantization to choose from")
    if "Q4_K_M" in quants:
        return "Q4_K_M", "Q4_K_M is the usual balance of size and quality (its fit could not be judged)"
    return quants[0], f"{quants[0]} is the first quantization offered (its fit could not be judged)"


def choose_quant(
    repo: str,
    revision: str | None,
    offered: dict[str, list[tuple[str, int]]],
    hardware=None,
    *,
    hub: Hub | None = None,
    max_kld: float | None = None,
    kld=None,
) -> tuple[str, str]:
    """The planner's choice among a repository's quantizations (quant -> [(path, size)]), and why.

    One header is read by range requests through ``hub`` (a few MB, cached); the others are judged
    from their sizes (:func:`localllm.fit.plan.sized_header`), against ``hardware``: the caller's
    machine, or a function that detects it (called only here, when a choice is really made); None:
    this one, detected without asking llama.cpp. Raises :class:`DoesNotFitError` when nothing fits.

    ``max_kld``: the quality floor instead: the smallest quantization that fits and whose KL
    divergence (``kld(quant)``: measured or prior; default the prior of its type) is at most it.
    """
    from localllm.errors import DoesNotFitError, LocalLLMError
    from localllm.fit import hardware as hardware_module
    from localllm.fit.plan import plan_quants, sized_header

    from . import headers as remoteheader

    quants = list(offered)
    probe = "Q4_K_M" if "Q4_K_M" in offered else quants[0]
    try:
        header = remoteheader.read_remote_header(repo, offered[probe][0][0], revision=revision or "main", hub=hub)
        hw = (hardware() if callable(hardware) else hardware) or hardware_module.detect()
        candidates = [(q, sum(size for _, size in files), sized_header(header, sum(size for _, size in files)))
                      for q, files in offered.items()]  # fmt: skip
        choice = plan_quants(candidates, hw)
    except LocalLLMError as exc:
        if max_kld is not None:
            raise
        quant, why = default_quant(quants)
        return quant, f"{why}: {exc.message}{_quality_note(quant, kld)}"
    if max_kld is not None:
        return _smallest_within(repo, choice, max_kld, kld)
    if choice.chosen is None:
        raise DoesNotFitError(
            f"{repo}: {choice.reason}",
            hint="name a quantization to pull it anyway (MODEL:QUANT), or pick a smaller model",
        )
    return choice.chosen.quant, choice.reason + _quality_note(choice.chosen.quant, kld)


def _kld_cost(quant: str, kld=None) -> tuple[float, str] | None:
    """The KL divergence of ``quant`` and where it comes from: ``kld(quant)`` (measured by eval or
    the prior), else the prior of its type."""
    if kld is not None:
        return kld(quant)
    prior = quants.kld_prior(quant)
    return (prior.kld, prior.label) if prior is not None else None


def _quality_note(quant: str, kld=None) -> str:
    """``; quality: KLD 0.0313 (prior from ...)``: what the chosen quantization costs, for its reason."""
    cost = _kld_cost(quant, kld)
    return f"; quality: KLD {cost[0]:.4f} ({cost[1]})" if cost is not None else ""


def _smallest_within(repo: str, choice, max_kld: float, kld=None) -> tuple[str, str]:
    """The smallest fitting quantization of ``choice`` whose KLD is at most ``max_kld``, and why."""
    from localllm.errors import DoesNotFitError
    from localllm.fit.plan import Verdict

    known = [(c, _kld_cost(c.quant, kld)) for c in choice.choices]
    within = [(c, k) for c, k in known if k is not None and k[0] <= max_kld]
    fitting = [(c, k) for c, k in within if c.plan.verdict in (Verdict.FITS, Verdict.TIGHT)]
    if not fitting:
        if within:
            raise DoesNotFitError(
                f"{repo}: no quantization with KLD at most {max_kld:g} fits this machine "
                f"({', '.join(c.quant for c, _ in within)} would, but do not fit)",
                hint="raise --max-kld, or pick a smaller model",
            )
        best = min((k[0] for _, k in known if k is not None), default=None)
        raise DoesNotFitError(
            f"{repo}: no quantization offered has KLD at most {max_kld:g}"
            + (f" (the lowest is {best:.4f})" if best is not None else ""),
            hint="raise --max-kld, or name a quantization (MODEL:QUANT)",
        )
    chosen, (value, label) = min(fitting, key=lambda ck: (ck[0].plan.estimate.total, ck[0].quant))
    return chosen.quant, (
        f"{chosen.quant}: the smallest quantization with KLD at most {max_kld:g} that fits "
        f"(KLD {value:.4f}, {label}; {chosen.plan.reason})"
    )


def quants_in(filenames: list[str]) -> list[str]:
    """Quantizations present in a repository listing, in llama.cpp's usual order of preference."""
    return sorted(q for q in quants.OFFERED if match_quant_file(filenames, q))


@dataclass(frozen=True)
class PlannedFile:
    repo_path: str  # inside the repository
    size: int
    sha256: str | None
    relative: str  # where it goes, relative to the models directory
    reuse: discover.FoundModel | None = None  # a copy another app holds

    @property
    def name(self) -> str:
        return self.repo_path.rsplit("/", 1)[-1]


@dataclass
class PullPlan:
    name: str  # catalog name, or owner/repo
    quant: str | None
    repo: str | None = None
    revision: str | None = None
    files: list[PlannedFile] = field(default_factory=list)
    reason: str | None = None  # why this quantization was chosen, when the user did not say
    installed: store.InstalledModel | None = None  # already there: nothing to do
    starter: CatalogEntry | None = None  # fetched through pip, not the Hub

    @property
    def key(self) -> str:
        return f"{self.name}:{self.quant}" if self.quant else self.name

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def download_size(self) -> int:
        return sum(f.size for f in self.files if f.reuse is None)


def plan(
    reference: str, hub: Hub, *, look_for_copies: bool = True, hardware=None, max_kld: float | None = None, kld=None
) -> PullPlan:
    """What pulling ``reference`` means; asks the Hub only when the model is not installed.

    ``hardware`` (a :class:`localllm.fit.hardware.Hardware`) is the machine a quantization is
    chosen for when the reference names none; None: this machine. ``max_kld`` (and ``kld``, see
    :func:`choose_quant`): choose the smallest quantization that keeps that quality instead."""
    ref = refs.parse_ref(reference)
    if max_kld is not None and (ref.quant is not None or ref.kind == "hf_file"):
        raise UsageError("--max-kld chooses the quantization", hint=f"leave the quantization out of {reference}")
    if ref.kind == "file":
        raise UsageError(f"{reference} is a local file", hint=f"adopt it with: localllm import {reference}")
    cat = catalog.load_catalog()
    entry: CatalogEntry | None = None
    reason = None
    if ref.kind == "catalog" and cat.find(ref.name) is None:
        adapter = cat.find_adapter(ref.name)
        if adapter is not None:
            if ref.quant is not None or max_kld is not None:
                raise UsageError(
                    f"{adapter.name} is a LoRA adapter (for {adapter.base}): it has no quantizations to choose",
                    hint=f"localllm pull {adapter.name}",
                )
            return adapter_plan(adapter, hub, look_for_copies=look_for_copies)
    if ref.kind == "catalog":
        entry = cat.get(ref.name)  # unknown names raise with suggestions
        name, repo = entry.name, entry.repo
        quant = ref.quant
        if quant is None and hub.offline:
            if max_kld is not None:
                raise offline_error(ref.raw.strip())
            quant, reason = _offline_choice(entry)
            if quant is not None:
                reason += _quality_note(quant, (lambda q: kld(name, q)) if kld is not None else None)
        if entry.pypi is not None and quant == entry.pypi.quant:
            found = store.find_installed(name, quant)
            return PullPlan(name, quant, installed=found, starter=entry, reason=reason)
    else:
        name, repo, quant = ref.repo, ref.repo, ref.quant
        entry = next((e for e in cat if e.repo.lower() == repo.lower()), None)

    if ref.kind != "hf_file" and quant is not None:
        found = store.find_installed(name, quant)
        if found is not None:
            return PullPlan(name, quant, repo=repo, installed=found, reason=reason)
    if ref.kind == "hf_file":
        found = store.find_installed_file(name, ref.filename)
        if found is not None:
            return PullPlan(name, found.quant, repo=repo, installed=found)
    if hub.offline:
        raise offline_error(ref.raw.strip())

    listing = hub.list_files(repo)
    names = [f.path for f in listing.gguf_files()]
    if ref.kind == "hf_file":
        chosen, quant = _split_parts(listing, names, repo, ref.filename)
    else:
        if quant is None:
            offered = files_by_quant(listing, entry)
            if not offered:
                raise HubFileNotFoundError(
                    f"{repo} has no GGUF files", hint="pick a repository whose name ends in -GGUF"
                )
            quant, reason = choose_quant(
                repo, listing.revision, offered, hardware, hub=hub, max_kld=max_kld,
                kld=(lambda q: kld(name, q)) if kld is not None else None,
            )  # fmt: skip
            if entry is not None and entry.pypi is not None and quant == entry.pypi.quant:
                return PullPlan(name, quant, installed=store.find_installed(name, quant), starter=entry, reason=reason)
            found = store.find_installed(name, quant)
            if found is not None:
                return PullPlan(name, quant, repo=repo, installed=found, reason=reason)
        chosen = entry.match_quant_file(names, quant) if entry is not None else match_quant_file(names, quant)
        if not chosen:
            raise HubFileNotFoundError(
                f"{repo} has no {quant} file", hint=f"quantizations there: {', '.join(quants_in(names)) or 'none'}"
            )
    files = _planned_files(listing, chosen, name, look_for_copies)
    return PullPlan(name, quant, repo=repo, revision=listing.revision, files=files, reason=reason)


def adapter_plan(adapter: catalog.CatalogAdapter, hub: Hub, *, look_for_copies: bool = True) -> PullPlan:
    """Pulling a LoRA adapter the catalog names: its one file, stored under the adapter's name
    (``--lora NAME`` finds it); asks the Hub only when it is not installed."""
    found = store.find_adapter(adapter.name)
    if found is not None:
        return PullPlan(adapter.name, None, repo=adapter.repo, installed=found)
    if hub.offline:
        raise offline_error(adapter.name)
    listing = hub.list_files(adapter.repo)
    if adapter.file not in {f.path for f in listing.gguf_files()}:
        raise HubFileNotFoundError(
            f"{adapter.repo} has no file {adapter.file} (the catalog's adapter {adapter.name})",
            hint="the catalog entry is out of date: pull the adapter's file by its owner/repo/file.gguf",
        )
    files = _planned_files(listing, [adapter.file], adapter.name, look_for_copies)
    return PullPlan(adapter.name, None, repo=adapter.repo, revision=listing.revision, files=files)


def _split_parts(listing, names: list[str], repo: str, filename: str) -> tuple[list[str], str | None]:
    """The file a reference names (every part, for a split GGUF) and its quantization."""
    wanted = listing.get(filename)
    if wanted is None:
        raise HubFileNotFoundError(f"{repo} has no file {filename}", hint=_offered(names))
    chosen = [wanted.path]
    if is_split_part(wanted.path):
        prefix = re.sub(r"-\d{5}-of-\d{5}\.gguf$", "", wanted.path, flags=re.IGNORECASE)
        chosen = sorted(n for n in names if n.startswith(prefix + "-") and is_split_part(n))
    return chosen, discover.guess_quant(wanted.path)


def _planned_files(listing, chosen: list[str], name: str, look_for_copies: bool) -> list[PlannedFile]:
    """Each file to fetch, with a copy another app holds (same size and sha256) when there is one."""
    found_copies = discover.scan_all() if look_for_copies else []
    files = []
    for path in chosen:
        meta = listing.get(path)
        reuse = None
        if meta.sha256 and found_copies:
            reuse = discover.find_copy(meta.size, meta.sha256, found_copies)
        files.append(
            PlannedFile(path, meta.size, meta.sha256, store.relative_path(name, path.rsplit("/", 1)[-1]), reuse)
        )
    return files


def files_by_quant(listing, entry: CatalogEntry | None) -> dict[str, list[tuple[str, int]]]:
    """quant -> [(path, size)] for every quantization the listing offers (the entry's, if any)."""
    names = [f.path for f in listing.gguf_files()]
    quants = [q for q in entry.quants] if entry is not None else quants_in(names)
    result = {}
    for quant in quants:
        chosen = entry.match_quant_file(names, quant) if entry is not None else match_quant_file(names, quant)
        if chosen:
            result[quant] = [(path, listing.get(path).size) for path in chosen]
    if entry is not None and not result:  # the catalog's list is stale: take what is there
        return files_by_quant(listing, None)
    return result


def _offline_choice(entry: CatalogEntry) -> tuple[str | None, str]:
    """Offline, without a quant: an installed one (the largest), else the PyPI starter, else Q4_K_M."""
    installed = [m for m in store.installed() if m.name.lower() == entry.name.lower()]
    if installed:
        best = max(installed, key=lambda m: m.size)
        return best.quant, f"{best.quant} is already installed (offline: nothing else judged)"
    if entry.pypi is not None:
        return entry.pypi.quant, f"{entry.pypi.quant} comes from PyPI (offline: the Hub is not asked)"
    return default_quant([entry.default_quant])


def _offered(names: list[str]) -> str:
    shown = ", ".join(n.rsplit("/", 1)[-1] for n in names[:6])
    return f"GGUF files there: {shown}{', …' if len(names) > 6 else ''}" if names else "it has no GGUF files"


def link_copy(source: Path, dest: Path) -> str:
    """Hard-link ``source`` at ``dest`` (symlink across file systems); returns which."""
    tmp = fs.temp_beside(dest, suffix=".link")  # unique: two pulls at once never share it
    tmp.unlink()  # the name is ours; the link takes its place
    try:
        try:
            os.link(source.resolve(), tmp)
            kind = "hardlink"
        except OSError:
            os.symlink(source.resolve(), tmp)
            kind = "symlink"
        os.replace(tmp, dest)
        tmp.unlink(missing_ok=True)  # rename() does nothing when both names are one file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return kind


def execute(
    pull: PullPlan,
    hub: Hub,
    *,
    progress: download.ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    notice: Notice | None = None,
    policy: download.RetryPolicy | None = None,
) -> store.InstalledModel:
    """Fetch (or link) every planned file, move them into place, record the model."""
    if pull.installed is not None:
        return pull.installed
    if pull.starter is not None:
        from localllm.models import starter

        return starter.install_starter(pull.starter, progress=notice)
    if hub.offline:
        raise offline_error(pull.key)
    store.check_writable()  # a read-only data directory: one line before anything is fetched
    download.check_disk_space(store.partial_dir(), pull.download_size)
    staged = _fetch_all(pull, hub, progress=progress, cancel=cancel, notice=notice, policy=policy)
    # Everything is verified: move into place, then record (a crash in between leaves files the
    # manifest does not list, which the next pull of the same model finds and reuses).
    links = _move_into_place(pull, staged)
    return _record(pull, links)


def _fetch_all(
    pull: PullPlan,
    hub: Hub,
    *,
    progress: download.ProgressCallback | None,
    cancel: threading.Event | None,
    notice: Notice | None,
    policy: download.RetryPolicy | None,
) -> list[Path | None]:
    """Download every planned file not reused from another app; None for those linked."""
    staged: list[Path | None] = []
    for planned in pull.files:
        if planned.reuse is not None:
            if notice:
                notice(f"reusing {planned.reuse.path} ({planned.reuse.source}, same sha256): no download")
            staged.append(None)
            continue
        if pull.repo is None:  # plan_pull names the repository of every file it plans
            raise ValueError(f"{pull.key}: a file to download but no repository")
        done = download.download(
            hub.resolve_url(pull.repo, planned.repo_path, pull.revision or "main"),
            size=planned.size,
            sha256=planned.sha256,
            hub=hub,
            label=planned.name,
            progress=progress,
            cancel=cancel,
            policy=policy,
            meta={"model": pull.name, "quant": pull.quant, "file": planned.relative, "repo": pull.repo},
            on_wait=notice,
        )
        staged.append(done)
    return staged


def _move_into_place(pull: PullPlan, staged: list[Path | None]) -> list[str]:
    """Install downloaded files and link reused ones; returns how each copy was linked."""
    links: list[str] = []
    for planned, done in zip(pull.files, staged):
        dest = store.file_path(planned.relative)
        try:
            if done is not None:
                store.install_file(done, planned.relative)
                download.finish(done)
            elif planned.reuse is not None:  # not downloaded: a copy another app holds is linked
                links.append(link_copy(planned.reuse.path, dest))
        except PermissionError as exc:
            raise DownloadPermissionError(
                f"permission denied: {exc.filename or dest}",
                hint="make the models directory writable, or set LOCALLLM_HOME to a folder you own",
            ) from exc
    return links


def _adapter_fields(first: Path) -> dict[str, object]:
    """The store's fields for a LoRA adapter (``general.type = adapter``); none for a model, or for
    a header this reader refuses (llama.cpp judges the model when it loads it, as before)."""
    from localllm.gguf import cache as headercache
    from localllm.gguf.adapter import store_fields

    try:
        header = headercache.read_header(first)
    except (LocalLLMError, OSError):
        return {}
    return store_fields(header, first.name)


def _record(pull: PullPlan, links: list[str]) -> store.InstalledModel:
    shas = [f.sha256 or "" for f in pull.files]
    source = f"hf:{pull.repo}@{pull.revision}" if pull.revision else f"hf:{pull.repo}"
    reused = [f.reuse for f in pull.files if f.reuse is not None]
    adapter = _adapter_fields(store.file_path(pull.files[0].relative))
    if links and reused:
        source += f" (linked from {reused[0].source})"
    model = store.InstalledModel(
        name=pull.name,
        quant=pull.quant,
        files=[f.relative for f in pull.files],
        sha256=shas[0] or None,
        size=pull.total_size,
        source=source,
        sha256s=shas,
        repo=pull.repo,
        revision=pull.revision,
        link=links[0] if links and len(links) == len(pull.files) else None,
        extra=adapter,
    )
    store.record(model)
    return model


def remove_partials(name: str, quant: str | None = None) -> int:
    """Delete interrupted downloads of ``name`` (one quant, or all); returns bytes freed."""
    freed = 0
    for info in download.partials():
        if str(info.get("model", "")).lower() != name.lower():
            continue
        if quant is not None and (info.get("quant") or "").upper() != quant.upper():
            continue
        freed += info["bytes"]
        download.discard_partial(info["key"])
    return freed
