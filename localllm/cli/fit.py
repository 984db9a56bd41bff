"""``localllm fit``: will this model fit, how much memory on each device, and how to load it."""

from __future__ import annotations

import argparse
import json
import sys

from localllm.format import format_breakdown, format_bytes, json_terminal_safe, terminal_safe

from . import add_rpc_option, lora
from .hw import add_hardware_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an installed model, a catalog name, owner/repo[:QUANT] or a local .gguf")
    parser.add_argument("-c", "--ctx", type=int, help="plan for this context size (default: up to 8192)")
    lora.add_argument(parser)
    add_hardware_options(parser)
    parser.add_argument(
        "--docs", metavar="NAME", help="with the embedding model of the collection NAME loaded beside it (chat --docs)"
    )
    add_rpc_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from localllm import app

    app.options.check(ctx=args.ctx)
    hw = app.machine.machine(args.profile, args.ram, args.vram, rpc=args.rpc)
    report = app.fit_model(args.model, hw, args.ctx, args.lora, args.docs)
    if report.not_judged:
        print(
            terminal_safe(f"localllm: not judged: {', '.join(report.not_judged)} ({report.why_not_judged})"),
            file=sys.stderr,
        )
    if args.json:
        out = {"hardware": hw.as_dict(), "models": report.results}
        if report.choice is not None:
            chosen = report.choice.chosen
            out["choice"] = {"quant": chosen.quant if chosen else None, "reason": report.choice.reason}
        print(json_terminal_safe(json.dumps(out, indent=2, default=str)))
        return 0
    _print_table(report.results)
    if report.choice is not None:
        print(f"choice: {report.choice.reason}")
    return 0


def _print_table(results: list[dict]) -> None:
    """One row per file: the verdict, then each device's total and what it is made of (the parts
    add up to the total shown), then the plan; then each file's reason and its last real load."""
    from localllm.app.types import Verdict

    print(f"{'MODEL':<34} {'FIT':<10} {'RAM = weights + KV + compute + output + runtime':<52} {'GPU':>9}  PLAN")
    for r in results:
        est = r["estimate"]
        layers = "all" if r["n_gpu_layers"] == -1 else r["n_gpu_layers"]
        label = Verdict(r["verdict"]).label
        print(
            f"{terminal_safe(str(r['model'])):<34} {label:<10} {_breakdown(est['cpu']):<52} {format_bytes(est['gpu']['total']):>9}  "
            f"ctx {r['n_ctx']}, gpu layers {layers}{_placement(r)}"
        )
        if est["gpu"]["total"]:
            print(f"{'':<34} {'':<10} GPU = {_breakdown(est['gpu'])}")
    for r in results:
        print(terminal_safe(f"{r['model']}: {r['reason']}"))  # names come from files
        print(terminal_safe(f"  quality: {_quality(r.get('quality'))}"))
        if r.get("adapters"):
            names = ", ".join(r["adapters"]["names"])
            print(
                terminal_safe(
                    f"  LoRA adapters ({names}): {format_bytes(r['adapters']['bytes'])} counted with the weights"
                )
            )
        if r.get("docs"):
            d = r["docs"]
            print(
                terminal_safe(
                    f"  documents {d['name']}: its embedding model takes {format_bytes(d['embedder_bytes'])} "
                    "of RAM beside it (left out of the RAM planned here)"
                )
            )
        for line in _speculative(r.get("speculative"), str(r["model"])):
            print(terminal_safe(f"  {line}"))
        m = r.get("last_load")
        if m and m["error"] is not None:
            rss = (
                f"; peak RSS {format_bytes(m['peak_rss'])} (estimated {format_bytes(m['estimated_rss'])})"
                if m["peak_rss"]
                else ""
            )
            print(
                f"  last load (ctx {m['n_ctx']}, gpu layers {m['n_gpu_layers']}): llama.cpp allocated "
                f"{format_bytes(m['allocated'])}, estimate {format_bytes(m['estimated'])} ({m['error']:+.1%}){rss}"
            )


def _speculative(spec: dict | None, model: str) -> list[str]:
    """What the planner says of speculative decoding for one file: the catalog's draft, n-gram drafts."""
    if not spec:
        return []

    def gain(found: dict) -> str:
        s = found["speedup"]
        return f"bench measured {s['repeat']:.2f}x on a repeating reply, {s['free']:.2f}x on free text"

    lines = []
    d = spec.get("model")
    if d is not None:
        name, status = d["name"], d["status"]
        text = {
            "proposed": lambda: f"proposed: --draft {name} ({gain(d)})",
            "slower": lambda: f"not proposed: {name} does not help here ({gain(d)})",
            "not measured": lambda: (
                f"{name} fits beside it ({format_bytes(d.get('bytes', 0))} more); "
                f"`localllm bench {model} --draft {name}` measures whether it helps here"
            ),
            "does not fit": lambda: f"{name} does not fit beside it",
            "not installed": lambda: (
                f"{name} drafts for it (`localllm pull {name}`, then `localllm bench {model} --draft {name}`)"
            ),
        }[status]()
        lines.append(f"draft model: {text}")
    n = spec.get("ngram")
    if n is not None:
        verdict = "proposed: --draft ngram" if n["status"] == "proposed" else "not proposed"
        lines.append(f"n-gram drafts: {verdict} ({gain(n)})")
    return lines


def _quality(cost: dict | None) -> str:
    """``KLD 0.0313 (prior from llama.cpp's published Llama-3-8B table)``: the quality cost."""
    if cost is None:
        return "KL divergence unknown (localllm eval MODEL --ref REFERENCE measures it)"
    return f"KLD {cost['kld']:.4f} ({cost['label']})"


PARTS = ("weights", "kv", "compute", "output", "runtime")


def _placement(row: dict) -> str:
    """``, experts of layers 0-11 on CPU, KV q8_0``: what the plan changes beyond whole layers."""
    text = ""
    moe = row.get("cpu_moe_layers") or 0
    if moe:
        text += f", experts of layer{'s 0-' + str(moe - 1) if moe > 1 else ' 0'} on CPU"
    if row.get("kv_type", "f16") != "f16":
        text += f", KV {row['kv_type']}"
    return text


def _breakdown(device: dict) -> str:
    """``472 MiB = 92 MiB + 180 MiB + 103 MiB + 1 MiB + 96 MiB``."""
    total, parts = format_breakdown([device[k] for k in PARTS])
    return f"{total} = {' + '.join(parts)}"
