"""What a GGUF file holds, as plain values, from its header alone (no tensor data is read)."""

from __future__ import annotations

from pathlib import Path

from localllm.gguf import header as ggufmeta

from .catalog import CatalogEntry


def _scalar(value: object) -> object:
    """Per-layer lists (e.g. KV heads of hybrid models) shown as their distinct values."""
    if isinstance(value, list):
        distinct = sorted(set(value))
        return distinct[0] if len(distinct) == 1 else distinct
    return value


def describe(path: Path, entry: CatalogEntry | None = None) -> dict:
    """A local file's header, as plain values."""
    return describe_header(ggufmeta.read_header(path), str(path), entry)


def describe_header(header: ggufmeta.GGUFHeader, where: str, entry: CatalogEntry | None = None) -> dict:
    """A header read from anywhere (a local file, or a Hub file by range requests); ``where``
    says which file it is. A LoRA adapter's: its rank, alpha, adapted tensors and base."""
    from localllm.gguf.adapter import adapter_info, is_adapter

    if is_adapter(header):
        info = adapter_info(header, where.rsplit("/", 1)[-1])
        return {
            "path": where,
            "file_size": header.file_size,
            "gguf_version": header.version,
            "kind": "adapter",
            "name": header.name,
            "architecture": info.architecture,
            "base_model": info.base_name,
            "rank": info.rank,
            "alpha": info.alpha,
            "parameters": header.n_params,
            "tensors": list(info.tensors),
        }
    total = header.tensor_bytes or 1
    mix = {name: size / total for name, size in sorted(header.quant_mix.items(), key=lambda kv: -kv[1])}
    license_ = header.get("general.license") or (entry.license if entry else None)
    return {
        "path": where,
        "file_size": header.file_size,
        "gguf_version": header.version,
        "name": header.name,
        "architecture": header.architecture,
        "parameters": header.n_params,
        "file_type": header.file_type_name,
        "bits_per_weight": round(header.bits_per_weight, 3),
        "tensor_types": mix,
        "context_length": header.context_length,
        "layers": header.block_count,
        "head_count": _scalar(header.head_count),
        "head_count_kv": _scalar(header.head_count_kv),
        "embedding_length": header.embedding_length,
        "vocab_size": header.vocab_size,
        "license": license_,
        "chat_template": header.chat_template,
        "catalog": entry.name if entry else None,
    }
