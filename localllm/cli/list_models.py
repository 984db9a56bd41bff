"""``localllm list``: installed models from the manifest alone (no GGUF is opened)."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.add_argument("--all", action="store_true",
                        help="also show GGUFs found in the Hugging Face cache, LM Studio and Ollama")


def fit_label(model, hw) -> str | None:
    """The planner's verdict for ``model`` on ``hw`` (fits / tight / no), None when it cannot say."""
    from localllm.errors import LocalLLMError
    from localllm.fit.plan import plan_load
    from localllm.gguf import cache as headercache

    try:
        return plan_load(headercache.read_header(model.path()), hw).verdict
    except (LocalLLMError, OSError):
        return None  # a missing or odd file: `localllm fit` says why


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    delta = max(0, time.time() - ts)
    for unit, secs in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= secs:
            return f"{int(delta // secs)}{unit} ago"
    return "just now"


def run(args: argparse.Namespace) -> int:
    from localllm import paths
    from localllm.models import store

    from .progress import human_bytes

    models = sorted(store.installed(), key=lambda m: m.key)
    hw = None
    if models:
        from localllm.fit.hardware import detect

        hw = detect(llama_cpp=False)  # RAM and GPUs; loading llama.cpp would cost more than the list
    rows = []
    for m in models:
        row = {"name": m.name, "quant": m.quant, "size": m.size, "last_used": m.last_used,
               "path": str(m.path()), "source": m.source, "installed": True}
        fits = fit_label(m, hw)
        if fits is not None:
            row["fits"] = fits
        rows.append(row)
    if args.all:
        from localllm.models.discover import scan_all

        known = {str((paths.models_dir() / f).resolve()) for m in models for f in m.files}
        for found in scan_all():
            if str(found.path.resolve()) in known:
                continue
            rows.append({"name": found.name, "quant": found.quant, "size": found.size, "last_used": None,
                         "path": str(found.path), "source": found.source, "installed": False})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no models installed (localllm pull MODEL downloads one)")
        return 0
    show_fit = any("fits" in r for r in rows)
    header = ["NAME", "QUANT", "SIZE"] + (["FITS"] if show_fit else []) + ["LAST USED"]
    if args.all:
        header.append("WHERE")
    table = [header]
    for r in rows:
        line = [r["name"], r["quant"] or "-", human_bytes(r["size"])]
        if show_fit:
            line.append(r.get("fits", "-"))
        line.append(_ago(r["last_used"]) if r["installed"] else "-")
        if args.all:
            line.append("installed" if r["installed"] else f"{r['source']}: {r['path']}")
        table.append(line)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0
