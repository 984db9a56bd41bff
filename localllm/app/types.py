"""The core's types that the shells name (in annotations, isinstance checks and comparisons),
re-exported so that a shell imports only :mod:`localllm.app` (the import contract in pyproject)."""

from __future__ import annotations

from localllm.fit.hardware import Hardware
from localllm.fit.plan import Verdict
from localllm.hub.errors import DownloadCancelled
from localllm.models.catalog import CatalogEntry
from localllm.models.store import InstalledModel

__all__ = ["CatalogEntry", "DownloadCancelled", "Hardware", "InstalledModel", "Verdict"]
