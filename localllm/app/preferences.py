"""The user's preferences that outlive a session (the TUI's theme), in ``<data>/settings.json``.

A small JSON object written atomically; a missing or damaged file reads as no preferences.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localllm import paths
from localllm.fs import atomic_write


def settings_path() -> Path:
    return paths.data_dir() / "settings.json"


def load() -> dict[str, Any]:
    try:
        data = json.loads(settings_path().read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(**changes: Any) -> None:
    """Merge ``changes`` into the saved preferences."""
    data = {**load(), **changes}
    path = settings_path()
    paths.ensure_dir(path.parent)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
