"""LoRA adapters in GGUF: what one holds, and whether it fits a base model, before llama.cpp sees it.

A LoRA GGUF (llama.cpp's ``convert_lora_to_gguf.py``) has ``general.type = "adapter"``,
``adapter.type = "lora"``, ``adapter.lora.alpha`` and, per adapted base weight ``W`` (ggml shape
``[n_in, n_out]``), two tensors ``W.lora_a`` (``[n_in, rank]``) and ``W.lora_b`` (``[rank, n_out]``).
llama.cpp applies ``scale * alpha / rank * B(A x)`` beside ``W x``.

llama.cpp refuses a mismatched adapter by logging and returning NULL at best; here the same checks
run on the headers first (:func:`check_fits`), so a mismatch is one :class:`AdapterMismatchError`
line naming the adapter and the base, and a damaged file is a :class:`CorruptModelError` like a
damaged model's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from localllm.errors import AdapterMismatchError, CorruptModelError, ModelFileError

from .info import GGUFHeader, TensorInfo

__all__ = ["AdapterInfo", "adapter_info", "check_fits", "is_adapter", "read_adapter"]

_SUFFIXES = (".lora_a", ".lora_b")
MAX_RANK = 1 << 16


def is_adapter(header: GGUFHeader) -> bool:
    """Whether ``header`` is an adapter's (``general.type = "adapter"``), of any kind."""
    return header.get("general.type") == "adapter"


@dataclass(frozen=True)
class AdapterInfo:
    """What a LoRA adapter file says about itself."""

    path: Path | None
    name: str  # general.name, else the file's stem
    architecture: str
    rank: int
    alpha: float | None  # adapter.lora.alpha (None: llama.cpp then scales by 1)
    tensors: tuple[str, ...]  # the base weights it adapts ("blk.0.attn_q.weight", ...)
    base_name: str | None  # general.base_model.0.name (or .repo_url) when the converter recorded it
    file_size: int
    pairs: dict[str, tuple[TensorInfo, TensorInfo]]  # base weight -> (lora_a, lora_b)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "architecture": self.architecture,
            "rank": self.rank,
            "alpha": self.alpha,
            "tensors": list(self.tensors),
            "base_model": self.base_name,
            "file_size": self.file_size,
        }


def adapter_info(header: GGUFHeader, label: str, path: Path | None = None) -> AdapterInfo:
    """The :class:`AdapterInfo` of a LoRA header; ModelFileError if it is not a LoRA adapter,
    CorruptModelError if its tensors do not make A/B pairs of one rank."""
    if not is_adapter(header):
        raise ModelFileError(
            f"{label} is not a LoRA adapter (general.type is {header.get('general.type', 'model')!r})",
            hint="pass a base model with -m and the adapter with --lora",
        )
    kind = header.get("adapter.type")
    if kind != "lora":
        raise ModelFileError(f"{label} is a {kind!r} adapter, not a LoRA adapter")
    arch = header.architecture
    if arch is None:
        raise CorruptModelError(f"{label} is damaged: the adapter names no general.architecture")
    alpha_raw = header.get("adapter.lora.alpha")
    alpha: float | None = None
    if alpha_raw is not None:
        if isinstance(alpha_raw, bool) or not isinstance(alpha_raw, (int, float)) or not alpha_raw == alpha_raw:
            raise CorruptModelError(f"{label} is damaged: adapter.lora.alpha is not a number")
        alpha = float(alpha_raw)
    halves: dict[str, dict[str, TensorInfo]] = {}
    for t in header.tensors:
        for suffix in _SUFFIXES:
            if t.name.endswith(suffix):
                halves.setdefault(t.name[: -len(suffix)], {})[suffix] = t
                break
        else:
            raise CorruptModelError(f"{label} is damaged: tensor {t.name} is neither a lora_a nor a lora_b")
    if not halves:
        raise CorruptModelError(f"{label} is damaged: the adapter has no lora_a/lora_b tensors")
    pairs: dict[str, tuple[TensorInfo, TensorInfo]] = {}
    ranks: set[int] = set()
    for base, parts in halves.items():
        if len(parts) != 2:
            missing = next(s for s in _SUFFIXES if s not in parts)
            raise CorruptModelError(f"{label} is damaged: {base}{missing} is missing")
        a, b = parts[".lora_a"], parts[".lora_b"]
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[1] != b.shape[0]:
            raise CorruptModelError(
                f"{label} is damaged: {base}.lora_a {list(a.shape)} and .lora_b {list(b.shape)} do not chain"
            )
        if not 0 < a.shape[1] <= MAX_RANK:
            raise CorruptModelError(f"{label} is damaged: {base} has rank {a.shape[1]}")
        ranks.add(a.shape[1])
        pairs[base] = (a, b)
    name = header.name or (path.stem if path else label)
    base_name = header.get("general.base_model.0.name") or header.get("general.base_model.0.repo_url")
    return AdapterInfo(
        path=path,
        name=name,
        architecture=arch,
        rank=max(ranks),
        alpha=alpha,
        tensors=tuple(sorted(pairs)),
        base_name=base_name if isinstance(base_name, str) else None,
        file_size=header.file_size or 0,
        pairs=pairs,
    )


def store_fields(header: GGUFHeader, label: str) -> dict[str, object]:
    """What the store records of an adapter file (its manifest entry's extra fields): empty for a
    model; for a LoRA adapter its kind, base architecture, base model (when recorded) and rank.
    A damaged adapter raises as :func:`adapter_info` does."""
    if not is_adapter(header):
        return {}
    info = adapter_info(header, label)
    return {"kind": "adapter", "base_architecture": info.architecture, "base_model": info.base_name, "rank": info.rank}


def read_adapter(path: str | os.PathLike[str]) -> AdapterInfo:
    """Read and check a LoRA adapter file (through the header cache): NotAGGUFError or
    CorruptModelError for a damaged file, ModelFileError for one that is not a LoRA adapter."""
    from . import cache

    path = Path(path)
    return adapter_info(cache.read_header(path), path.name, path)


def check_fits(adapter: AdapterInfo, base: GGUFHeader, base_label: str) -> None:
    """AdapterMismatchError (one line naming both) unless every pair of ``adapter`` adapts a tensor
    of ``base`` of matching shape, as llama.cpp's loader requires."""
    label = adapter.path.name if adapter.path else adapter.name

    def refuse(why: str) -> AdapterMismatchError:
        return AdapterMismatchError(
            f"adapter {label} does not fit {base_label}: {why}",
            hint="use the base model the adapter was trained on"
            + (f" ({adapter.base_name})" if adapter.base_name else ""),
        )

    if adapter.architecture != base.architecture:
        raise refuse(f"it is for architecture {adapter.architecture}, the model is {base.architecture}")
    if base.get("general.type") == "adapter":
        raise refuse("that file is an adapter too, not a base model")
    tensors = {t.name: t for t in base.tensors}
    for name, (a, b) in adapter.pairs.items():
        weight = tensors.get(name)
        if weight is None:
            raise refuse(f"the model has no tensor {name}")
        if len(weight.shape) < 2 or weight.shape[0] != a.shape[0] or weight.shape[1] != b.shape[1]:
            raise refuse(
                f"{name} is {list(weight.shape[:2])} in the model but the adapter makes {[a.shape[0], b.shape[1]]}"
            )
