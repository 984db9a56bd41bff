"""What a GGUF header holds (metadata, tensor infos) and the values derived from it: the
architecture's hyperparameters, parameter count, bits per weight, the quantization mix.

Built by :mod:`localllm.gguf.reader`; read everywhere (the estimator, ``inspect``, the load path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from . import quants
from .tables import VALUE_TYPE_NAMES, ggml_type_name


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # as stored: ne[0] (the contiguous dimension) first, like GGUFReader
    ggml_type: int
    offset: int  # relative to GGUFHeader.data_offset
    n_elements: int
    n_bytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)


@dataclass
class ArrayInfo:
    """Stands in for a big metadata array that was skipped (e.g. the vocabulary)."""

    element_type: int
    count: int
    # Absolute offset of the first element in the file, to read the array later if needed.
    offset: int | None = field(default=None, compare=False)

    @property
    def element_type_name(self) -> str:
        return VALUE_TYPE_NAMES.get(self.element_type, str(self.element_type))


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, object] = field(repr=False)
    tensors: tuple[TensorInfo, ...] = field(repr=False)
    alignment: int
    data_offset: int  # absolute offset of the tensor data (header end, aligned up)
    header_size: int  # bytes up to the end of the tensor infos (before the alignment padding)
    file_size: int | None

    def get(self, key: str, default: object = None) -> object:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_key(self, suffix: str, default: object = None) -> object:
        """The value of ``f"{architecture}.{suffix}"``, e.g. ``arch_key("context_length")``."""
        arch = self.architecture
        if arch is None:
            return default
        return self.metadata.get(f"{arch}.{suffix}", default)

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    # The counts below are checked by validate.py when a header is read (an integer in range, or a
    # per-layer list of them for the head counts), so they are what arch_key returns for them.
    @property
    def context_length(self) -> int | None:
        return cast(int | None, self.arch_key("context_length"))

    @property
    def block_count(self) -> int | None:
        return cast(int | None, self.arch_key("block_count"))

    @property
    def embedding_length(self) -> int | None:
        return cast(int | None, self.arch_key("embedding_length"))

    @property
    def head_count(self) -> int | list[int] | None:
        return cast(int | list[int] | None, self.arch_key("attention.head_count"))

    @property
    def head_count_kv(self) -> int | list[int] | None:
        """An int, or a per-layer list for hybrid models (kept as it is)."""
        return cast(int | list[int] | None, self.arch_key("attention.head_count_kv"))

    @property
    def file_type(self) -> int | None:
        value = self.metadata.get("general.file_type")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def file_type_name(self) -> str | None:
        """``"Q4_K_M"`` and so on (llama.cpp's llama_ftype names); None when the file says nothing."""
        ftype = self.file_type
        if ftype is None:
            return None
        return quants.ftype_name(ftype)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        n = self.n_params
        return self.tensor_bytes * 8 / n if n else 0.0

    @property
    def quant_mix(self) -> dict[str, int]:
        """Bytes of tensor data per ggml type name, e.g. ``{"Q4_1": 70_000_000, "F32": 200_000}``."""
        mix: dict[str, int] = {}
        for t in self.tensors:
            name = t.type_name
            mix[name] = mix.get(name, 0) + t.n_bytes
        return mix

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def vocab_size(self) -> int | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, ArrayInfo):
            return tokens.count
        if isinstance(tokens, list):
            return len(tokens)
        return None

    @property
    def data_end(self) -> int:
        """Where the last tensor's data ends: the smallest size a complete file can have."""
        if not self.tensors:
            return self.header_size
        return self.data_offset + max(t.offset + t.n_bytes for t in self.tensors)
