"""Where localllm keeps its files.

Looking a path up never creates it: callers that write call :func:`ensure_dir`.
``LOCALLLM_HOME`` overrides the platform data directory (tests point it at a temp dir).
"""

from __future__ import annotations

from pathlib import Path

from . import config
from .fs import ensure_dir

__all__ = ["cache_dir", "data_dir", "ensure_dir", "models_dir"]


def data_dir() -> Path:
    override = config.home()
    if override is not None:
        return override
    from platformdirs import user_data_path

    return user_data_path("localllm", appauthor=False)


def models_dir() -> Path:
    """Installed model files live here, one folder per model."""
    return data_dir() / "models"


def cache_dir() -> Path:
    """Derived data that can be rebuilt: parsed headers, downloads in progress."""
    return data_dir() / "cache"
