"""Small model headers built by hand for the memory estimate and the planner (issue 16).

A llama-style model: 4 layers, n_embd 64, 4 heads of 16, 2 KV heads, a vocabulary of 1000; every
tensor's size is exact, so each byte of an estimate can be counted on paper."""

from __future__ import annotations

from localllm.gguf.header import T_STRING, ArrayInfo, GGUFHeader, TensorInfo

F32, F16 = 0, 1
N_LAYER, N_EMBD, N_VOCAB = 4, 64, 1000
EMBD_BYTES = N_EMBD * N_VOCAB * 2  # token_embd, f16
LAYER_BYTES = N_EMBD * N_EMBD * 4  # one f32 matrix per block
OUT_NORM, OUT_BYTES = N_EMBD * 4, N_EMBD * N_VOCAB * 2


def t(name: str, shape: tuple[int, ...], ggml_type: int = F32) -> TensorInfo:
    n = 1
    for d in shape:
        n *= d
    return TensorInfo(name, shape, ggml_type, 0, n, n * (4 if ggml_type == F32 else 2))


def header(
    arch: str = "llama",
    *,
    tied: bool = False,
    extra: dict | None = None,
    tensors: list[TensorInfo] | None = None,
    n_layer: int = N_LAYER,
) -> GGUFHeader:
    meta: dict[str, object] = {
        "general.architecture": arch,
        "general.name": "tiny",
        f"{arch}.block_count": n_layer,
        f"{arch}.embedding_length": N_EMBD,
        f"{arch}.context_length": 4096,
        f"{arch}.attention.head_count": 4,
        f"{arch}.attention.head_count_kv": 2,
        f"{arch}.feed_forward_length": 128,
        "tokenizer.ggml.tokens": ArrayInfo(T_STRING, N_VOCAB),
    }
    for key, value in (extra or {}).items():
        if value is None:
            meta.pop(key.replace("ARCH", arch), None)
        else:
            meta[key.replace("ARCH", arch)] = value
    infos = [t("token_embd.weight", (N_EMBD, N_VOCAB), F16)]
    infos += [t(f"blk.{i}.attn_q.weight", (N_EMBD, N_EMBD)) for i in range(n_layer)]
    infos += tensors or []
    infos.append(t("output_norm.weight", (N_EMBD,)))
    if not tied:
        infos.append(t("output.weight", (N_EMBD, N_VOCAB), F16))
    return GGUFHeader(3, meta, tuple(infos), 32, 0, 0, None)
