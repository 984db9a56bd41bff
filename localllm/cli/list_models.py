"""``localllm list``: installed models from the manifest alone (no GGUF is opened); ``--catalog``: every
catalog model and quantization with the planner's verdict for this machine (offline)."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.add_argument(
        "--all", action="store_true", help="also show GGUFs found in the Hugging Face cache, LM Studio and Ollama"
    )
    parser.add_argument(
        "--catalog",
        action="store_true",
        help="list the catalog's models and quantizations, with whether each fits this machine",
    )


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    delta = max(0, time.time() - ts)
    for unit, secs in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= secs:
            return f"{int(delta // secs)}{unit} ago"
    return "just now"


# How each kind of KLD value is marked in the table (fit and the README say what they are).
_KLD_TAGS = {"measured": "measured", "published": "llama.cpp table", "interpolated": "estimate", "unquantized": ""}


def _kld(cost: dict | None) -> str:
    """``0.0123 measured``, ``0.0313 llama.cpp table``, ``0.0270 estimate``: the quality cost."""
    if cost is None:
        return "-"
    return f"{cost['kld']:.4f} {_KLD_TAGS.get(cost['source'], '')}".strip()


def run(args: argparse.Namespace) -> int:
    from localllm import app
    from localllm.format import format_bytes, terminal_safe

    if args.catalog:
        return _catalog(args.json)
    listed = app.list_models(found_elsewhere=args.all)
    if args.json:
        print(json.dumps([m.as_dict() for m in listed], indent=1))
        return 0
    if not listed:
        print("no models installed (localllm pull MODEL downloads one)")
        return 0
    show_fit = any(m.verdict is not None for m in listed)
    header = ["NAME", "QUANT", "SIZE"] + (["FITS"] if show_fit else []) + ["KLD", "LAST USED"]
    if args.all:
        header.append("WHERE")
    table = [header]
    damaged, adapters = [], []
    for m in listed:
        if m.error is not None:
            damaged.append(m)
            continue
        if m.adapter_for is not None:
            adapters.append(m)
        line = [m.name, "LoRA" if m.adapter_for is not None else m.quant or "-", format_bytes(m.size)]
        if show_fit:
            line.append(m.verdict.label if m.verdict is not None else "-")
        line.append(_kld(app.fitting.quality_of(m.path, m.quant, m.model.sha256 if m.model else None)))
        line.append(_ago(m.last_used) if m.installed else "-")
        if args.all:
            line.append("installed" if m.installed else f"{m.source}: {m.path}")
        table.append(line)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    if len(table) > 1 or not damaged:
        for row in table:
            print("  ".join(terminal_safe(str(c)).ljust(w) for c, w in zip(row, widths)).rstrip())
    for m in adapters:
        arch = m.model.extra.get("base_architecture") if m.model else None
        bases = ", ".join(m.adapter_for or []) or "no installed model"
        print(terminal_safe(f"{m.name}: LoRA adapter for {arch or '?'}, fits {bases}"))
    for m in damaged:  # listed, never hidden: the rest of the store still works
        print(f"! {terminal_safe(m.key)}  {terminal_safe(m.problem)}")
    return 0


def _catalog(as_json: bool) -> int:
    """Each catalog quantization with its size and verdict (installed ones marked), judged offline."""
    from localllm import app
    from localllm.format import format_bytes, format_count, terminal_safe

    rows = app.library.catalog_quants(app.machine.detect(ask_llama_cpp=False))
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    table = [["NAME", "PARAMS", "QUANT", "SIZE", "FITS", ""]]
    adapters = [r for r in rows if r.get("kind") == "adapter"]
    for r in rows:
        if r.get("kind") == "adapter":
            continue
        table.append(
            [
                r["name"],
                format_count(r["params"]),
                r["quant"],
                ("" if r["exact_size"] else "~") + format_bytes(r["size"]),
                r["fits"] + ("?" if r["estimated"] else ""),  # ?: from the size alone, no header read
                "installed" if r["installed"] else "",
            ]
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    if adapters:
        print("\nLoRA adapters (localllm pull BASE --adapter NAME, then --lora NAME):")
        for r in adapters:
            mark = " (installed)" if r["installed"] else ""
            print(terminal_safe(f"  {r['name']}: for {r['base']}, {r['repo']}/{r['file']}{mark}: {r['description']}"))
    return 0
