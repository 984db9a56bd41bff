"""Fixtures for the model store tests: a local Hub, online environment, small split GGUFs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.hubserver import HubServer

REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_K_M.gguf"
SPLIT_REPO = "someone/Tiny-GGUF"


def write_tiny_gguf(path: Path, n: int = 0, tensors: int = 1) -> Path:
    """A small valid GGUF (one f32 tensor); ``n`` varies the content."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_name(f"tiny-{n}")
    writer.add_file_type(15)  # MOSTLY_Q4_K_M
    for i in range(tensors):
        writer.add_tensor(f"t{n}.{i}", np.full((64, 64), n + i, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Network allowed; other apps' model folders point at empty temp dirs; fast retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    env = {
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "LOCALLLM_LMSTUDIO_DIRS": str(tmp_path / "lmstudio"),
        "OLLAMA_MODELS": str(tmp_path / "ollama"),
        "LOCALLLM_DOWNLOAD_BACKOFF": "0.01",
        "LOCALLLM_DOWNLOAD_RETRIES": "3",
        "LOCALLLM_DOWNLOAD_STALL": "5",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def hub(online, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running local Hub serving the real SmolLM2 GGUF and a two-part split GGUF."""
    server = HubServer()
    server.add_repo(REPO, {FILE: smollm2_path})
    parts = tmp_path / "split"
    parts.mkdir()
    split = {
        f"Q4_K_M/Tiny-Q4_K_M-0000{i}-of-00002.gguf": write_tiny_gguf(parts / f"Tiny-Q4_K_M-0000{i}-of-00002.gguf", i)
        for i in (1, 2)
    }
    split["Tiny-Q8_0.gguf"] = write_tiny_gguf(parts / "Tiny-Q8_0.gguf", 9)
    server.add_repo(SPLIT_REPO, split)
    server.add_repo("acme/Gated-GGUF", {"Gated-Q4_K_M.gguf": split["Tiny-Q8_0.gguf"]}, gated=True)
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    online["HF_ENDPOINT"] = server.url
    yield server
    server.stop()


def sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def resolve_gets(server: HubServer) -> list:
    return [r for r in server.requests if r.method == "GET" and "/resolve/" in r.path]


__all__ = ["REPO", "FILE", "SPLIT_REPO", "online", "hub", "sha256", "resolve_gets", "write_tiny_gguf", "os"]
