"""Adopt a GGUF file the user already has: copy it, hard-link it, or link to it where it is.

The file is validated with :mod:`localllm.ggufmeta` (header only) and hashed once; its quantization
comes from the header's file type. The parts of a split GGUF come along with the first one.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localllm import fs
from localllm.errors import ModelFileError, UsageError
from localllm.gguf import header as ggufmeta
from localllm.gguf.adapter import store_fields

from . import store
from .catalog import is_split_part
from .discover import guess_quant

Mode = Literal["copy", "hardlink", "symlink"]
_NAME_RE = re.compile(r"[^a-z0-9._-]+")


def default_name(path: Path, quant: str | None) -> str:
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", path.stem, flags=re.IGNORECASE)
    if quant:
        stem = re.sub(rf"[-._]{re.escape(quant)}$", "", stem, flags=re.IGNORECASE)
    return _NAME_RE.sub("-", stem.lower()).strip("-.") or "imported"


def split_parts(path: Path) -> list[Path]:
    if not is_split_part(path.name):
        return [path]
    prefix = re.sub(r"-\d{5}-of-\d{5}\.gguf$", "", path.name, flags=re.IGNORECASE)
    parts = sorted(p for p in path.parent.glob(f"{glob.escape(prefix)}-*-of-*.gguf") if is_split_part(p.name))
    count = int(path.name[-10:-5])
    if len(parts) != count:
        raise ModelFileError(
            f"{path.name} is one of {count} parts but {len(parts)} are in {path.parent}",
            hint="put every part in the same folder",
        )
    return parts


class _AlreadyThere(Exception):
    """The file hashed the same as the installed copy: nothing is placed."""


def _place(src: Path, dest: Path, mode: Mode, keep: Callable[[str], bool] | None = None) -> str:
    """Put ``src`` at ``dest`` as asked; returns its sha256 (hashed once, while copying if copying).

    ``keep(sha256)`` is asked once the file is hashed and before ``dest`` changes; when it says no,
    nothing is placed and :class:`_AlreadyThere` is raised."""
    digest = hashlib.sha256()
    try:
        if mode == "copy":
            with open(src, "rb") as inp, fs.replacing(dest) as out:  # dest appears only once complete
                while block := inp.read(4 << 20):
                    digest.update(block)
                    out.write(block)
                if keep is not None and not keep(digest.hexdigest()):
                    raise _AlreadyThere
        else:
            with open(src, "rb") as inp:
                while block := inp.read(4 << 20):
                    digest.update(block)
            if keep is not None and not keep(digest.hexdigest()):
                raise _AlreadyThere
            _link_into_place(src, dest, mode)
    except OSError as exc:
        if mode == "hardlink" and exc.errno == 18:  # EXDEV
            raise UsageError(
                f"cannot hard-link {src} into {dest.parent}: different file systems",
                hint="use --symlink, or import without a link to copy it",
            ) from exc
        raise ModelFileError(f"cannot import {src}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _link_into_place(src: Path, dest: Path, mode: Mode) -> None:
    """Link ``src`` at a unique temporary name beside ``dest`` (two imports of one file at once
    never share it), then rename the link over ``dest``."""
    tmp = fs.temp_beside(dest, suffix=".import")
    try:
        tmp.unlink()  # the name is ours; the link takes the place of the empty file
        if mode == "hardlink":
            os.link(src, tmp)
        else:
            os.symlink(src.resolve(), tmp)
        os.replace(tmp, dest)
        # rename() does nothing when both names are links to one file (a hard link imported again)
        tmp.unlink(missing_ok=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Imported:
    model: store.InstalledModel
    already_installed: bool = False  # the same file (sha256) was installed under this name: nothing done


def _model_name(path: Path, quant: str | None, name: str | None) -> str:
    name = (name if name is not None else default_name(path, quant)).lower()
    try:
        store.model_dir_name(name)
    except store.UnsafePathError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None
    return name


def import_gguf(path: Path, *, mode: Mode = "copy", name: str | None = None) -> Imported:
    path = path.expanduser()
    if not path.is_file():
        raise ModelFileError(f"no such file: {path}")
    header = ggufmeta.read_header(path)  # raises NotAGGUFError / CorruptModelError
    if not header.tensors:
        raise ModelFileError(f"{path.name} is a GGUF header with no tensors: there is no model in it")
    adapter = store_fields(header, path.name)  # a LoRA adapter is stored too (checked here)
    parts = split_parts(path)
    quant = None if adapter else guess_quant(path.name) or (header.file_type_name or None)
    quant = quant.upper() if quant else None
    name = _model_name(path, quant, name)
    key = f"{name}:{quant}" if quant else name
    store.read_manifest()  # a damaged manifest is refused before anything is copied
    store.check_writable()
    existing = next((m for m in store.installed() if m.key == key), None)

    def keep(sha: str) -> bool:
        if existing is None:
            return True
        if existing.sha256 == sha:
            return False
        raise UsageError(
            f"{existing.key} is already installed from another file",
            hint=f"import this one with another --name, or first: localllm rm {existing.key}",
        )

    relatives, shas = [], []
    for i, part in enumerate(parts):
        relative = store.relative_path(name, part.name)
        try:
            shas.append(_place(part, store.file_path(relative), mode, keep if i == 0 else None))
        except _AlreadyThere:
            if existing is None:  # keep() says so only of an installed model
                raise
            return Imported(existing, already_installed=True)
        relatives.append(relative)
    model = store.InstalledModel(
        name=name,
        quant=quant,
        files=relatives,
        sha256=shas[0],
        size=sum(p.stat().st_size for p in parts),
        source=f"import:{path.resolve()}",
        sha256s=shas,
        link=None if mode == "copy" else mode,
        extra=adapter,
    )
    store.record(model)
    return Imported(model)
