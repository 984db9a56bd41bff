"""Where other apps' models are looked for comes from localllm.config (the one environment reader)."""

from __future__ import annotations

import os
from pathlib import Path

from localllm.models import discover


def test_hf_cache_dir_follows_hf_hub_cache_then_hf_home(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert discover.hf_cache_dir() == Path.home() / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert discover.hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert discover.hf_cache_dir() == tmp_path / "cache"


def test_lmstudio_dirs_override_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCALLLM_LMSTUDIO_DIRS", raising=False)
    assert discover.lmstudio_dirs() == [
        Path.home() / ".lmstudio" / "models",
        Path.home() / ".cache" / "lm-studio" / "models",
    ]
    monkeypatch.setenv("LOCALLLM_LMSTUDIO_DIRS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert discover.lmstudio_dirs() == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("LOCALLLM_LMSTUDIO_DIRS", "")  # set but empty: look nowhere
    assert discover.lmstudio_dirs() == []


def test_ollama_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    assert discover.ollama_dir() == Path.home() / ".ollama" / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "o"))
    assert discover.ollama_dir() == tmp_path / "o"
