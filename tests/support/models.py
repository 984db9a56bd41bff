"""The starter model installed in a data directory (the ``installed_starter`` fixture's work, also
for module-scoped servers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def install_starter(isolated_home: Path, smollm2_path: Path):
    """A data directory in which the starter model is installed (hard-linked, not copied)."""
    from localllm.models import catalog, store

    entry = catalog.load_catalog().starter()
    relative = f"{store.model_dir_name(entry.name)}/{smollm2_path.name}"
    dest = isolated_home / "models" / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(smollm2_path, dest)
    except OSError:
        shutil.copyfile(smollm2_path, dest)
    model = store.InstalledModel(
        name=entry.name,
        quant=entry.pypi.quant,
        files=[relative],
        sha256=entry.pypi.sha256,
        size=entry.pypi.size,
        source="test",
    )
    store.record(model)
    return model
