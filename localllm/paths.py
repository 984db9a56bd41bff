"""Where localllm keeps its files.

Looking a path up never creates it: callers that write call :func:`ensure_dir`.
``LOCALLLM_HOME`` overrides the platform data directory (tests point it at a temp dir).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    override = os.environ.get("LOCALLLM_HOME")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path("localllm", appauthor=False)


def models_dir() -> Path:
    """Installed model files live here, one folder per model."""
    return data_dir() / "models"


def cache_dir() -> Path:
    """Derived data that can be rebuilt: parsed headers, downloads in progress."""
    return data_dir() / "cache"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
