"""The one check of header-derived values, before any of them reaches llama.cpp, the memory
estimate or an allocation.

:func:`localllm.gguf.header.read_header` (and so the header cache, ``inspect``, ``fit``, ``list``,
the load path and remote headers) calls :func:`check` on every header it parses; the estimator
calls it again on headers built by hand. A value of the wrong type (``context_length`` as a string,
a head count as an array of the wrong length), out of bounds (``block_count`` in the millions) or
contradicting the tensors (``block_count`` 1000 against 30 layers of ``blk.N`` tensors; an
``expert_used_count`` without experts; heads that do not divide the embedding) raises
:class:`CorruptModelError` naming the key, instead of an abort inside llama.cpp or a minute of
arithmetic over ten million layers.

The bounds are llama.cpp's own where it has them (``LLAMA_MAX_LAYERS``, ``LLAMA_MAX_EXPERTS``,
``uint32`` hyperparameters), generous elsewhere: no real model comes near them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeGuard

from localllm.errors import CorruptModelError

if TYPE_CHECKING:
    from .header import GGUFHeader

__all__ = ["MAX_LAYERS", "MAX_EXPERTS", "check"]

MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: per-layer arrays are this long
MAX_EXPERTS = 512  # llama.cpp's LLAMA_MAX_EXPERTS
MAX_NESTING = 8  # arrays of arrays: no model has more than 2 levels
_U32 = (1 << 32) - 1

# Architecture keys (after "<arch>.") that hold one count, with their upper bound.
_COUNTS: dict[str, int] = {
    "context_length": _U32,
    "block_count": MAX_LAYERS,
    "embedding_length": 1 << 20,
    "vocab_size": 1 << 24,
    "expert_count": MAX_EXPERTS,
    "expert_used_count": MAX_EXPERTS,
    "expert_shared_count": MAX_EXPERTS,
    "expert_feed_forward_length": 1 << 22,
    "attention.key_length": 1 << 16,
    "attention.value_length": 1 << 16,
    "attention.sliding_window": _U32,
    "attention.kv_lora_rank": 1 << 16,
    "attention.q_lora_rank": 1 << 16,
    "rope.dimension_count": 1 << 16,
    "ssm.conv_kernel": 1 << 10,
    "ssm.inner_size": 1 << 20,
    "ssm.state_size": 1 << 16,
    "ssm.group_count": 1 << 16,
    "wkv.head_size": 1 << 12,
}
# Keys that are one count or a per-layer array of counts (one per block).
_PER_LAYER: dict[str, int] = {
    "attention.head_count": 1 << 16,
    "attention.head_count_kv": 1 << 16,
    "feed_forward_length": 1 << 22,
}
_BLK = re.compile(r"^blk\.(\d+)\.")
_EXPERT_TENSOR = re.compile(r"_(?:ch_)?exps\b")


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _depth(v: object, limit: int) -> int:
    """How deep lists nest in ``v`` (counting no further than ``limit + 1``), without recursion."""
    depth, level = 0, [v]
    while level and depth <= limit:
        lists = [item for item in level if isinstance(item, list)]
        if not lists:
            break
        depth += 1
        level = [x for items in lists for x in items]
    return depth


class _Bad(Exception):
    pass


def _count(key: str, value: object, high: int) -> int:
    if not _is_int(value):
        raise _Bad(f"{key} must be an integer, not {_describe(value)}")
    if value < 0 or value > high:
        raise _Bad(f"{key} is out of range: {value} (0 to {high})")
    return value


def _describe(value: object) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, float):
        return "a float"
    return f"a {type(value).__name__}"  # ArrayInfo: a big array


def _per_layer(key: str, value: object, high: int, n_layer: int | None) -> list[int]:
    """A per-layer value as a list (a single int stands for every layer)."""
    if isinstance(value, list):
        if n_layer is None:
            raise _Bad(f"{key} is a per-layer array but the header has no block_count")
        if len(value) != n_layer:
            raise _Bad(f"{key} has {len(value)} entries for {n_layer} layers")
        return [_count(f"{key}[{i}]", v, high) for i, v in enumerate(value)]
    n = _count(key, value, high)
    return [n] * (n_layer or 1)


def check(header: GGUFHeader, label: str) -> None:
    """Raise CorruptModelError (``label`` is damaged: ...) for a header llama.cpp or the estimate
    must not be given."""
    try:
        _check(header)
    except _Bad as e:
        raise CorruptModelError(f"{label} is damaged: {e}", hint="download or convert the model again") from None


def _check(header: GGUFHeader) -> None:
    meta = header.metadata
    for key, value in meta.items():
        if isinstance(value, list) and _depth(value, MAX_NESTING) > MAX_NESTING:
            raise _Bad(f"metadata array {key} is nested more than {MAX_NESTING} deep")
    for key in ("general.architecture", "general.name", "tokenizer.chat_template"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise _Bad(f"{key} must be a string, not {_describe(value)}")
    arch = header.architecture
    if arch is None:
        return
    counts: dict[str, int] = {}
    for suffix, high in _COUNTS.items():
        key = f"{arch}.{suffix}"
        if key in meta:
            counts[suffix] = _count(key, meta[key], high)
    n_layer = counts.get("block_count")
    if n_layer == 0:
        raise _Bad(f"{arch}.block_count is 0")
    layers: dict[str, list[int]] = {}
    for suffix, high in _PER_LAYER.items():
        key = f"{arch}.{suffix}"
        if key in meta:
            layers[suffix] = _per_layer(key, meta[key], high, n_layer)
    if "context_length" in counts and counts["context_length"] == 0:
        raise _Bad(f"{arch}.context_length is 0")
    _check_heads(arch, counts, layers)
    _check_experts(header, arch, counts)
    if n_layer is not None:
        _check_blocks(header, arch, n_layer)


def _check_heads(arch: str, counts: dict[str, int], layers: dict[str, list[int]]) -> None:
    heads = layers.get("attention.head_count")
    if heads is None:
        return
    n_embd = counts.get("embedding_length")
    if n_embd and "attention.key_length" not in counts:
        for n in set(heads):
            if n and n_embd % n:
                raise _Bad(f"{arch}.attention.head_count {n} does not divide {arch}.embedding_length {n_embd}")
    heads_kv = layers.get("attention.head_count_kv")
    if heads_kv is None:
        return
    if len(heads_kv) != len(heads):
        heads = heads * len(heads_kv) if len(heads) == 1 else heads
        heads_kv = heads_kv * len(heads) if len(heads_kv) == 1 else heads_kv
    for il, (n, n_kv) in enumerate(zip(heads, heads_kv)):
        if n_kv and (n_kv > n or n % n_kv):
            raise _Bad(
                f"{arch}.attention.head_count_kv {n_kv} does not divide {arch}.attention.head_count {n}"
                + (f" (layer {il})" if len(set(heads_kv)) > 1 else "")
            )


def _check_experts(header: GGUFHeader, arch: str, counts: dict[str, int]) -> None:
    n_expert = counts.get("expert_count", 0)
    n_used = counts.get("expert_used_count", 0)
    if n_used and not n_expert:
        raise _Bad(f"{arch}.expert_used_count is {n_used} but the header gives no {arch}.expert_count")
    if n_used > n_expert:
        raise _Bad(f"{arch}.expert_used_count {n_used} is more than {arch}.expert_count {n_expert}")
    if n_expert and header.tensors and any(_BLK.match(t.name) for t in header.tensors):
        if not any(_EXPERT_TENSOR.search(t.name) for t in header.tensors):
            raise _Bad(f"{arch}.expert_count is {n_expert} but the file has no expert tensors")


def _check_blocks(header: GGUFHeader, arch: str, n_layer: int) -> None:
    """``block_count`` against the ``blk.N`` tensors, when the file has any."""
    present: set[int] = set()
    for t in header.tensors:
        m = _BLK.match(t.name)
        if m:
            il = int(m.group(1))
            if il >= n_layer:
                raise _Bad(f"tensor {t.name} is past {arch}.block_count {n_layer}")
            present.add(il)
    if present and len(present) != n_layer:
        missing = min(set(range(n_layer)) - present)
        raise _Bad(
            f"{arch}.block_count is {n_layer} but the file has tensors for {len(present)} layers"
            f" (none for layer {missing})"
        )
