"""``localllm inspect``: what is inside a GGUF file, read from its header alone."""

from __future__ import annotations

import argparse
import json

from localllm.format import format_bytes, format_count, json_terminal_safe, terminal_safe

from . import say


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="catalog name[:QUANT], owner/repo[:QUANT] or a local .gguf file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from localllm import app

    info = app.inspect_model(args.model, notice=say)
    if args.json:
        print(json_terminal_safe(json.dumps(info, ensure_ascii=False, indent=2)))
        return 0
    print(terminal_safe(format_text(info)))  # names and the template come from the file
    return 0


def _count(n: int) -> str:
    return f"{format_count(n)} ({n:,})"


def _adapter_text(info: dict) -> str:
    tensors = info["tensors"]
    kinds = sorted({t.split(".")[-2] if t.count(".") >= 2 else t for t in tensors})
    rows = [
        ("file", info["path"]),
        ("size", format_bytes(info["file_size"])),
        ("kind", "LoRA adapter"),
        ("name", info.get("name") or "-"),
        ("base architecture", info["architecture"]),
        ("base model", info.get("base_model") or "- (not recorded)"),
        ("rank", info["rank"]),
        ("alpha", f"{info['alpha']:g}" if info.get("alpha") is not None else "- (scale 1)"),
        ("parameters", _count(info["parameters"])),
        ("adapted tensors", f"{len(tensors)} ({', '.join(kinds)})"),
        ("GGUF version", info["gguf_version"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"{k:<{width}}  {v}" for k, v in rows] + ["    " + t for t in tensors])


def format_text(info: dict) -> str:
    if info.get("kind") == "adapter":
        return _adapter_text(info)
    rows = [
        ("file", info["path"]),
        ("size", format_bytes(info["file_size"])),
        ("name", info.get("name") or "-"),
        ("architecture", info["architecture"]),
        ("parameters", _count(info["parameters"])),
        ("quantization", f"{info['file_type']} ({info['bits_per_weight']:.2f} bits per weight)"),
        ("tensor types", ", ".join(f"{k} {v:.0%}" for k, v in info["tensor_types"].items())),
        ("context length", f"{info['context_length']:,}" if info["context_length"] else "-"),
        ("layers", info["layers"]),
        ("attention heads", f"{info['head_count']} (KV heads: {info['head_count_kv']})"),
        ("embedding size", info["embedding_length"]),
        ("vocabulary", f"{info['vocab_size']:,} tokens" if info["vocab_size"] else "-"),
        ("license", info.get("license") or "-"),
        ("GGUF version", info["gguf_version"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    template = info.get("chat_template")
    lines.append(
        f"{'chat template':<{width}}  " + ("(none: replies will use a plain transcript)" if not template else "")
    )
    if template:
        lines.extend("    " + line for line in template.splitlines())
    return "\n".join(lines)
