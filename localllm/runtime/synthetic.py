"""Random-weight GGUF models of a chosen architecture and shape, for memory tests and benchmarks.

How much memory llama.cpp allocates, and how fast it runs, does not depend on the weights' values,
so a model written here with random weights (and a real tokenizer copied from another GGUF) stands
in for a real one of the same shape. Written with ``gguf.GGUFWriter`` as F16, then quantized with
llama.cpp (:func:`localllm.runtime.quantize.quantize_model`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gguf

# A tokenizer key, its value (a string, a list or a number, as its value types say) and its value
# types: (type,) or (ARRAY, element type).
TokenizerField = tuple[str, Any, "tuple[gguf.GGUFValueType, ...]"]

__all__ = ["Shape", "SHAPES", "write_model"]


@dataclass(frozen=True)
class Shape:
    arch: str  # llama, qwen2, qwen3moe, gemma3, deepseek2 (MLA, dense layers only)
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    context_length: int = 32768
    head_dim: int | None = None  # default n_embd // n_head
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    sliding_window: int = 0  # gemma3
    tied_output: bool = False  # no output.weight: the token embedding is reused
    kv_lora_rank: int = 0  # deepseek2: the latent KV size (MLA); head_dim is then the q/k head size
    n_rot: int = 0  # deepseek2: the rope part of each q/k head


# Shapes used by the tests (tiny) and the benchmark (closer to real models' proportions).
SHAPES: dict[str, Shape] = {
    "tiny-llama": Shape("llama", 2, 256, 4, 2, 512, context_length=4096),
    "tiny-qwen3moe": Shape("qwen3moe", 2, 256, 4, 2, 512, head_dim=64, n_expert=8, n_expert_used=2, n_ff_exp=128),
    "tiny-gemma3": Shape("gemma3", 6, 256, 4, 1, 512, head_dim=64, sliding_window=128, tied_output=True),
    "tiny-qwen2": Shape("qwen2", 2, 256, 4, 2, 512, context_length=4096),
    # Experts and KV cache big enough next to the vocabulary for the planner's choices to show.
    "plan-qwen3moe": Shape("qwen3moe", 6, 256, 4, 4, 512, head_dim=128, n_expert=16, n_expert_used=2, n_ff_exp=256),
    "bench-qwen3moe": Shape("qwen3moe", 8, 1024, 16, 4, 3072, head_dim=64, n_expert=16, n_expert_used=4, n_ff_exp=512),
    "bench-qwen2": Shape("qwen2", 12, 1024, 16, 2, 2816),
    "tiny-deepseek2": Shape("deepseek2", 2, 256, 4, 1, 512, head_dim=64, kv_lora_rank=128, n_rot=32),
}


@functools.lru_cache(maxsize=4)
def _tokenizer_fields(source: str) -> tuple[TokenizerField, ...]:
    """``tokenizer.*`` key/values of a real GGUF: (key, value, gguf value type)."""
    import gguf

    reader = gguf.GGUFReader(source)
    fields: list[TokenizerField] = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            fields.append((key, value, (vtype, sub)))
        elif vtype == gguf.GGUFValueType.STRING:
            fields.append((key, bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace"), (vtype,)))
        else:
            fields.append((key, field.parts[field.data[0]].tolist()[0], (vtype,)))
    return tuple(fields)


def write_model(
    dest: str | Path,
    shape: Shape,
    tokenizer_from: str | Path,
    *,
    quant: str = "Q8_0",
    seed: int = 0,
) -> Path:
    """Write a random-weight model of ``shape`` to ``dest``, quantized to ``quant``."""
    import gguf
    import numpy as np

    from .quantize import quantize_model

    dest = Path(dest)
    tok = _tokenizer_fields(str(tokenizer_from))
    n_vocab = next(len(v) for k, v, _ in tok if k == "tokenizer.ggml.tokens")
    s = shape
    head_dim = s.head_dim or s.n_embd // s.n_head

    f16_path = dest.with_name(dest.name + ".f16.tmp")
    writer = gguf.GGUFWriter(str(f16_path), s.arch)
    _write_metadata(writer, s, head_dim, n_vocab, tok)
    _add_tensors(writer, s, head_dim, n_vocab, np.random.default_rng(seed))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        if quant.upper() == "F16":
            f16_path.replace(dest)
        else:
            quantize_model(f16_path, dest, quant)
    finally:
        f16_path.unlink(missing_ok=True)
    return dest


def _write_metadata(writer, s: Shape, head_dim: int, n_vocab: int, tok) -> None:
    """The model's hyperparameters, and the tokenizer copied from a real GGUF."""
    import gguf

    writer.add_name(f"synthetic {s.arch}")
    writer.add_file_type(1)
    writer.add_context_length(s.context_length)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if s.kv_lora_rank:
        _write_mla(writer, s, head_dim)
    elif s.head_dim:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if s.arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(n_vocab)
    if s.n_expert:
        writer.add_expert_count(s.n_expert)
        writer.add_expert_used_count(s.n_expert_used)
        writer.add_expert_feed_forward_length(s.n_ff_exp)
    if s.sliding_window:
        writer.add_sliding_window(s.sliding_window)
    for key, value, vtype in tok:
        if vtype[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
        elif vtype[0] == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        else:
            writer.add_key_value(key, value, vtype[0])


def _write_mla(writer, s: Shape, head_dim: int) -> None:
    """deepseek2's MLA keys, as converted files carry them: the cache holds the latent KV and the rope
    part (key_length), V reads the latent part; every layer dense (no experts)."""
    import gguf

    a = s.arch
    u32 = gguf.GGUFValueType.UINT32
    writer.add_key_length(s.kv_lora_rank + s.n_rot)
    writer.add_value_length(s.kv_lora_rank)
    for key, value in (
        ("attention.key_length_mla", head_dim), ("attention.value_length_mla", head_dim),
        ("attention.kv_lora_rank", s.kv_lora_rank), ("attention.q_lora_rank", 0), ("rope.dimension_count", s.n_rot),
        ("leading_dense_block_count", s.n_layer), ("expert_feed_forward_length", s.n_ff), ("expert_shared_count", 0),
    ):  # fmt: skip
        writer.add_key_value(f"{a}.{key}", value, u32)


def _add_mla_attention(tensor, b: str, s: Shape, head_dim: int) -> None:
    nope = head_dim - s.n_rot
    tensor(b + "attn_q.weight", s.n_embd, s.n_head * head_dim)
    tensor(b + "attn_kv_a_mqa.weight", s.n_embd, s.kv_lora_rank + s.n_rot)
    tensor(b + "attn_kv_a_norm.weight", s.kv_lora_rank)
    tensor(b + "attn_k_b.weight", nope, s.kv_lora_rank, s.n_head)
    tensor(b + "attn_v_b.weight", s.kv_lora_rank, head_dim, s.n_head)
    tensor(b + "attn_output.weight", s.n_head * head_dim, s.n_embd)


def _add_tensors(writer, s: Shape, head_dim: int, n_vocab: int, rng) -> None:
    """Every tensor of ``s``'s architecture: norms of ones, weights of small random values."""
    import numpy as np

    def tensor(name: str, *shape_ne: int) -> None:
        # GGUFWriter takes numpy shapes (slowest dimension first); ggml's ne is the reverse.
        dims = tuple(reversed(shape_ne))
        if len(shape_ne) == 1:
            data = np.ones(dims, dtype=np.float32)
        else:
            data = (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float16)
        writer.add_tensor(name, data)

    q_dim = head_dim * s.n_head
    kv_dim = head_dim * s.n_head_kv
    tensor("token_embd.weight", s.n_embd, n_vocab)
    tensor("output_norm.weight", s.n_embd)
    if not s.tied_output:
        tensor("output.weight", s.n_embd, n_vocab)
    for i in range(s.n_layer):
        b = f"blk.{i}."
        tensor(b + "attn_norm.weight", s.n_embd)
        if s.kv_lora_rank:
            _add_mla_attention(tensor, b, s, head_dim)
            _add_ffn(tensor, b, s)
            continue
        tensor(b + "attn_q.weight", s.n_embd, q_dim)
        tensor(b + "attn_k.weight", s.n_embd, kv_dim)
        tensor(b + "attn_v.weight", s.n_embd, kv_dim)
        tensor(b + "attn_output.weight", q_dim, s.n_embd)
        if s.arch == "qwen2":
            tensor(b + "attn_q.bias", q_dim)
            tensor(b + "attn_k.bias", kv_dim)
            tensor(b + "attn_v.bias", kv_dim)
        if s.arch in ("qwen3moe", "gemma3"):
            tensor(b + "attn_q_norm.weight", head_dim)
            tensor(b + "attn_k_norm.weight", head_dim)
        if s.arch == "gemma3":
            tensor(b + "post_attention_norm.weight", s.n_embd)
            tensor(b + "post_ffw_norm.weight", s.n_embd)
        _add_ffn(tensor, b, s)


def _add_ffn(tensor, b: str, s: Shape) -> None:
    tensor(b + "ffn_norm.weight", s.n_embd)
    if s.n_expert:
        tensor(b + "ffn_gate_inp.weight", s.n_embd, s.n_expert)
        tensor(b + "ffn_gate_exps.weight", s.n_embd, s.n_ff_exp, s.n_expert)
        tensor(b + "ffn_up_exps.weight", s.n_embd, s.n_ff_exp, s.n_expert)
        tensor(b + "ffn_down_exps.weight", s.n_ff_exp, s.n_embd, s.n_expert)
    else:
        tensor(b + "ffn_gate.weight", s.n_embd, s.n_ff)
        tensor(b + "ffn_up.weight", s.n_embd, s.n_ff)
        tensor(b + "ffn_down.weight", s.n_ff, s.n_embd)


def scaled(shape: Shape, **changes: Any) -> Shape:
    return replace(shape, **changes)
