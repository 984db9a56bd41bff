"""The calibration data (tests/fit/calibration/): real loads on a CUDA build, and the GGUF headers of
the models they loaded, rebuilt without the weights.

The memory estimate reads only a model's header: tensor names, shapes and types. Those depend only
on the arguments the calibration's ``synth_model.py`` was given and on llama.cpp's quantizer (its
type choice per tensor, ``llama_tensor_get_type`` in src/llama-quant.cpp, mirrored in
:func:`_q4_k_m_type` for the tensors these models have), not on the random weights. So the headers
here equal those of the files that were measured; ``model_bytes`` checks that against the logged
model buffers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from localllm.gguf.header import GGML_QUANT_SIZES, ArrayInfo, GGUFHeader, TensorInfo

DATA = Path(__file__).resolve().parent.parent / "fit" / "calibration" / "h100-cuda"
MiB = 1 << 20

F32, F16, Q5_0, Q8_0, Q4_K, Q6_K = 0, 1, 6, 8, 12, 14
T_STRING = 8


@dataclass(frozen=True)
class Synth:
    """The arguments of the calibration's synth_model.py."""

    arch: str  # llama, qwen3moe, gemma3
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int = 49152  # SmolLM2's tokenizer
    n_expert: int = 0
    n_expert_used: int = 0
    n_swa: int = 0
    head_dim: int | None = None  # default n_embd // n_head
    context_length: int = 32768
    tied_output: bool = False


# The models of tests/fit/calibration/h100-cuda/README.md, by file name, with their quantization.
MODELS: dict[str, tuple[Synth, str]] = {
    "c-llama.gguf": (Synth("llama", 24, 1536, 4096, 12, 4), "F16"),
    "c-llama-q4_k_m.gguf": (Synth("llama", 24, 1536, 4096, 12, 4), "Q4_K_M"),
    "c-moe-q4_k_m.gguf": (Synth("qwen3moe", 16, 768, 256, 12, 2, n_expert=64, n_expert_used=8), "Q4_K_M"),
    "c-gemma3-q8_0.gguf": (Synth("gemma3", 12, 640, 2048, 4, 1, n_swa=1024), "Q8_0"),
    "v-llama-q4_k_m.gguf": (Synth("llama", 16, 2048, 5632, 16, 8, n_vocab=262144), "Q4_K_M"),
    "v-gemma3-q8_0.gguf": (Synth("gemma3", 18, 640, 2048, 4, 1, n_vocab=262144, n_swa=512), "Q8_0"),
}


def loads(name: str = "loads.jsonl") -> list[dict]:
    """The calibration rows of one file (see the README beside them)."""
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def all_loads() -> list[dict]:
    return loads("loads.jsonl") + loads("loads-vocab262k.jsonl")


def header_for(file_name: str) -> GGUFHeader:
    synth, quant = MODELS[file_name]
    return build_header(synth, quant)


def build_header(s: Synth, quant: str) -> GGUFHeader:
    """The header of the model synth_model.py writes for ``s``, quantized to ``quant``."""
    tensors = _tensor_shapes(s)
    if quant != "F16":  # llama.cpp's quantizer writes in its loader's order (weight_name_comparer)
        tensors.sort(key=lambda t: (int(t[0].split(".")[1]) if t[0].startswith("blk.") else -1, t[0]))
    types = _types(s, tensors, quant)
    infos, offset = [], 0
    for (name, shape), ggml_type in zip(tensors, types):
        n = 1
        for d in shape:
            n *= d
        block, size = GGML_QUANT_SIZES[ggml_type]
        n_bytes = n // block * size
        infos.append(TensorInfo(name, shape, ggml_type, offset, n, n_bytes))
        offset += (n_bytes + 31) // 32 * 32
    return GGUFHeader(
        version=3, metadata=_metadata(s, quant), tensors=tuple(infos), alignment=32, data_offset=4096,
        header_size=4000, file_size=None,
    )  # fmt: skip


def _metadata(s: Synth, quant: str) -> dict[str, object]:
    a = s.arch
    head_dim = s.head_dim or s.n_embd // s.n_head
    meta: dict[str, object] = {
        "general.architecture": a, "general.name": f"calibration {a}",
        "general.file_type": {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}[quant],
        f"{a}.block_count": s.n_layer, f"{a}.context_length": s.context_length,
        f"{a}.embedding_length": s.n_embd, f"{a}.feed_forward_length": s.n_ff,
        f"{a}.attention.head_count": s.n_head, f"{a}.attention.head_count_kv": s.n_head_kv,
        "tokenizer.ggml.tokens": ArrayInfo(T_STRING, s.n_vocab),
    }  # fmt: skip
    if a in ("qwen3moe", "gemma3") or s.head_dim:
        meta[f"{a}.attention.key_length"] = head_dim
        meta[f"{a}.attention.value_length"] = head_dim
    if a == "llama":
        meta[f"{a}.rope.dimension_count"] = head_dim
    if s.n_expert:
        meta[f"{a}.expert_count"] = s.n_expert
        meta[f"{a}.expert_used_count"] = s.n_expert_used
        meta[f"{a}.expert_feed_forward_length"] = s.n_ff
    if s.n_swa:
        meta[f"{a}.attention.sliding_window"] = s.n_swa
    return meta


def _tensor_shapes(s: Synth) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and ggml shapes (ne[0] first), in synth_model.py's order."""
    head_dim = s.head_dim or s.n_embd // s.n_head
    kv = s.n_head_kv * head_dim
    q = s.n_head * head_dim
    out = [("token_embd.weight", (s.n_embd, s.n_vocab)), ("output_norm.weight", (s.n_embd,))]
    if not s.tied_output:
        out.append(("output.weight", (s.n_embd, s.n_vocab)))
    for i in range(s.n_layer):
        p = f"blk.{i}."
        out.append((p + "attn_norm.weight", (s.n_embd,)))
        out += [(p + "attn_q.weight", (s.n_embd, q)), (p + "attn_k.weight", (s.n_embd, kv)),
                (p + "attn_v.weight", (s.n_embd, kv))]  # fmt: skip
        out.append((p + "attn_output.weight", (q, s.n_embd)))
        out.append((p + "ffn_norm.weight", (s.n_embd,)))
        if s.arch in ("qwen3moe", "gemma3"):
            out += [(p + "attn_q_norm.weight", (head_dim,)), (p + "attn_k_norm.weight", (head_dim,))]
        if s.arch == "gemma3":
            out += [(p + "post_attention_norm.weight", (s.n_embd,)), (p + "post_ffw_norm.weight", (s.n_embd,))]
        if s.n_expert:
            out += [
                (p + "ffn_gate_inp.weight", (s.n_embd, s.n_expert)),
                (p + "ffn_gate_exps.weight", (s.n_embd, s.n_ff, s.n_expert)),
                (p + "ffn_up_exps.weight", (s.n_embd, s.n_ff, s.n_expert)),
                (p + "ffn_down_exps.weight", (s.n_ff, s.n_embd, s.n_expert)),
            ]
        else:
            out += [(p + "ffn_gate.weight", (s.n_embd, s.n_ff)), (p + "ffn_up.weight", (s.n_embd, s.n_ff)),
                    (p + "ffn_down.weight", (s.n_ff, s.n_embd))]  # fmt: skip
    return out


def _types(s: Synth, tensors: list[tuple[str, tuple[int, ...]]], quant: str) -> list[int]:
    types = []
    for name, shape in tensors:
        if len(shape) == 1 or name.endswith("ffn_gate_inp.weight"):
            types.append(F32)  # norms and the router: written as f32 and never quantized
        elif quant == "F16":
            types.append(F16)
        elif quant == "Q8_0":
            types.append(Q8_0)
        else:
            types.append(_q4_k_m_type(s, name, shape))
    return types


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _q4_k_m_type(s: Synth, name: str, shape: tuple[int, ...]) -> int:
    """llama.cpp's Q4_K_M choice for the tensors of these models (no 8-expert or falcon rules)."""
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    if name == "output.weight" or (s.tied_output and name == "token_embd.weight"):
        wanted = Q6_K
    elif (name.endswith("attn_v.weight") or "ffn_down" in name) and _more_bits(layer, s.n_layer):
        wanted = Q6_K
    else:
        wanted = Q4_K
    if shape[0] % 256:  # the quantizer's fallback for rows that are not whole super-blocks
        wanted = {Q4_K: Q5_0, Q6_K: Q8_0}[wanted]
    return wanted
