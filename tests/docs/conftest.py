"""The real embedding model for the documents tests: all-MiniLM-L6-v2 converted to GGUF once
(tests/support/minilm.py) into the test-model cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from support import minilm

    return minilm.build(Path(os.environ.get("LOCALLLM_TEST_CACHE", REPO / ".cache" / "test-models")))
