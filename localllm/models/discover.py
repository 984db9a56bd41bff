"""GGUF files other apps already downloaded: reuse them instead of a second multi-GB download.

Looked for, without reading more than a few bytes of any file:

- the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``):
  ``models--owner--repo/snapshots/<rev>/**.gguf``, links into ``blobs/<sha256>``, so the sha256 is
  known for free;
- LM Studio (``~/.lmstudio/models``, ``~/.cache/lm-studio/models``; ``LOCALLLM_LMSTUDIO_DIRS``
  overrides, paths separated by ``os.pathsep``): ``publisher/repo/*.gguf``;
- Ollama (``OLLAMA_MODELS``, else ``~/.ollama/models``): ``blobs/sha256-<hex>`` files that start
  with the GGUF magic, named through ``manifests/<registry>/<namespace>/<model>/<tag>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localllm import config
from localllm.gguf import quants

from .catalog import match_quant_file

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_OLLAMA_MODEL_TYPE = "application/vnd.ollama.image.model"


@dataclass(frozen=True)
class FoundModel:
    source: str  # "hf-cache", "lmstudio", "ollama"
    name: str  # owner/repo, publisher/repo, or ollama's model:tag
    path: Path
    size: int
    sha256: str | None  # known without reading the file (HF blobs, Ollama digests)
    quant: str | None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.quant}" if self.quant else self.name


def hf_cache_dir() -> Path:
    return config.hf_cache_dir()


def lmstudio_dirs() -> list[Path]:
    override = config.lmstudio_dirs()
    if override is not None:
        return override
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def ollama_dir() -> Path:
    return config.ollama_dir()


def guess_quant(filename: str) -> str | None:
    for quant in sorted(quants.OFFERED, key=len, reverse=True):
        if match_quant_file([filename if filename.endswith(".gguf") else filename + ".gguf"], quant):
            return quant
    return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def scan_hf_cache(root: Path | None = None) -> Iterator[FoundModel]:
    root = root or hf_cache_dir()
    if not root.is_dir():
        return
    for repo_dir in sorted(root.glob("models--*--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
        for path in sorted(repo_dir.glob("snapshots/*/**/*.gguf")):
            size = _size(path)
            if size is None:
                continue  # a dangling link: the blob was deleted
            blob = path.resolve().name
            sha = blob if _SHA_RE.match(blob) else None
            yield FoundModel("hf-cache", repo, path, size, sha, guess_quant(path.name))


def scan_lmstudio(roots: list[Path] | None = None) -> Iterator[FoundModel]:
    for root in roots if roots is not None else lmstudio_dirs():
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*/*/**/*.gguf")):
            if "mmproj" in path.name.lower():
                continue
            size = _size(path)
            if size is None:
                continue
            rel = path.relative_to(root).parts
            yield FoundModel("lmstudio", f"{rel[0]}/{rel[1]}", path, size, None, guess_quant(path.name))


def _ollama_names(root: Path) -> dict[str, str]:
    """blob digest (hex) -> model:tag, from Ollama's manifests."""
    names: dict[str, str] = {}
    manifests = root / "manifests"
    if not manifests.is_dir():
        return names
    for manifest in sorted(manifests.glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        try:
            layers = json.loads(manifest.read_text("utf-8")).get("layers", [])
        except (OSError, ValueError, AttributeError):
            continue
        _registry, namespace, model, tag = manifest.relative_to(manifests).parts
        name = f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
        for layer in layers:
            if isinstance(layer, dict) and layer.get("mediaType") == _OLLAMA_MODEL_TYPE:
                digest = str(layer.get("digest", "")).removeprefix("sha256:")
                names.setdefault(digest, name)
    return names


def scan_ollama(root: Path | None = None) -> Iterator[FoundModel]:
    root = root or ollama_dir()
    blobs = root / "blobs"
    if not blobs.is_dir():
        return
    names = _ollama_names(root)
    for path in sorted(blobs.glob("sha256-*")):
        digest = path.name.removeprefix("sha256-")
        try:
            with open(path, "rb") as f:
                if f.read(4) != b"GGUF":
                    continue  # templates, licences, parameters: not a model
        except OSError:
            continue
        size = _size(path)
        if size is None:
            continue
        name = names.get(digest, f"ollama-{digest[:12]}")
        yield FoundModel("ollama", name, path, size, digest if _SHA_RE.match(digest) else None, None)


def scan_all() -> list[FoundModel]:
    return [*scan_hf_cache(), *scan_lmstudio(), *scan_ollama()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def find_copy(size: int, sha256: str, found: list[FoundModel] | None = None) -> FoundModel | None:
    """A file another app holds with exactly this size and sha256 (hashing only same-size files)."""
    candidates = [m for m in (found if found is not None else scan_all()) if m.size == size]
    candidates.sort(key=lambda m: m.sha256 is None)  # free matches first
    for model in candidates:
        known = model.sha256
        if known is None:
            known = sha256_of(model.path)
        if known == sha256.lower():
            return model
    return None
