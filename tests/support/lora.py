"""LoRA adapter files for tests, written with gguf's writer against a real base model's shapes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_TARGETS = ("attn_q", "attn_v", "ffn_down")


def write_lora(
    dest: Path,
    base: Path,
    *,
    targets: Sequence[str] = DEFAULT_TARGETS,
    layers: Sequence[int] | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    magnitude: float = 0.05,
    seed: int = 0,
    arch: str | None = None,
    n_out_delta: int = 0,
    base_name: str | None = "SmolLM2-135M-Instruct",
    name: str | None = None,
) -> Path:
    """A LoRA GGUF for ``base`` adapting the ``targets`` weights of ``layers`` (default: all) with
    random A and B (entries of size ``magnitude``). ``arch`` writes another architecture;
    ``n_out_delta`` makes the B matrices that much too wide (a mismatched adapter)."""
    import gguf

    from localllm.gguf.header import read_header

    header = read_header(base)
    arch = arch or header.architecture or "llama"
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(dest), arch)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    writer.add_name(name or dest.stem)
    if base_name:
        writer.add_uint32("general.base_model.count", 1)
        writer.add_base_model_name(0, base_name)
    n_layer = header.block_count or 0
    for il in layers if layers is not None else range(n_layer):
        for target in targets:
            tname = f"blk.{il}.{target}.weight"
            weight = next(t for t in header.tensors if t.name == tname)
            n_in, n_out = weight.shape[0], weight.shape[1] + n_out_delta
            # numpy shapes are ggml's reversed: lora_a is [n_in, rank] in ggml, lora_b [rank, n_out].
            a = (rng.standard_normal((rank, n_in)) * magnitude).astype(np.float32)
            b = (rng.standard_normal((n_out, rank)) * magnitude).astype(np.float32)
            writer.add_tensor(f"{tname}.lora_a", a)
            writer.add_tensor(f"{tname}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest
