"""``localllm fit``: will this model fit, how much memory on each device, and how to load it."""

from __future__ import annotations

import argparse
import json
import sys

from .hw import add_hardware_options, hardware_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an installed model, a catalog name, owner/repo[:QUANT] or a local .gguf")
    parser.add_argument("-c", "--ctx", type=int, help="plan for this context size (default: up to 8192)")
    add_hardware_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _headers(reference: str) -> list[tuple[str, str, object]]:
    """(label, where, header) for the file a reference names, or every quant of a catalog model."""
    from .. import catalog, ggufmeta, refs, store

    ref = refs.parse_ref(reference)
    if ref.kind == "file":
        path = refs.require_file(ref)
        return [(path.name, "local file", ggufmeta.read_header(path))]
    name = ref.repo if ref.kind != "catalog" else catalog.load_catalog().get(ref.name).name
    installed = {m.quant: m for m in store.installed() if m.name.lower() == name.lower()}
    rows = [
        (m.key, "installed", ggufmeta.read_header(m.path()))
        for quant, m in installed.items() if ref.quant in (None, quant)
    ]
    if ref.kind == "catalog" and (ref.quant is None or ref.quant not in installed):
        rows += _remote_rows(catalog.load_catalog().get(ref.name), ref.quant, set(installed))
    if not rows:
        from ..errors import ModelNotFoundError

        raise ModelNotFoundError(f"{reference} is not installed", hint=f"download it with: localllm pull {reference}")
    return rows


def _remote_rows(entry, quant: str | None, skip: set) -> list[tuple[str, str, object]]:
    """Headers of the catalog's quants, fetched from the Hub by range requests (cached)."""
    from .. import remoteheader
    from ..errors import LocalLLMError
    from ..hub import Hub
    from ..pull import plan

    hub = Hub()
    rows, skipped = [], []
    for q in [quant] if quant else entry.quants:
        if q in skip:
            continue
        try:
            planned = plan(f"{entry.name}:{q}", hub, look_for_copies=False)
            first = planned.files[0]
            header = remoteheader.read_remote_header(planned.repo, first.repo_path, revision=planned.revision or "main")
        except LocalLLMError as exc:
            if quant:  # the one asked for: say why
                raise
            skipped.append((q, exc))
            continue
        rows.append((f"{entry.name}:{q}", "on the Hub", header))
    if skipped:
        quants = ", ".join(q for q, _ in skipped)
        print(f"localllm: not judged: {quants} ({skipped[0][1]})", file=sys.stderr)
    return rows


def run(args: argparse.Namespace) -> int:
    from ..hardware import format_bytes
    from ..plan import plan_load

    hw = hardware_from(args)
    results = []
    for label, where, header in _headers(args.model):
        plan = plan_load(header, hw, args.ctx)
        results.append({"model": label, "where": where, "file_size": header.file_size, **plan.as_dict()})
    if args.json:
        print(json.dumps({"hardware": hw.as_dict(), "models": results}, indent=2, default=str))
        return 0
    print(f"{'MODEL':<34} {'FIT':<6} {'CPU (weights + KV + compute)':<34} {'GPU':>9}  PLAN")
    for r in results:
        cpu, gpu = r["estimate"]["cpu"], r["estimate"]["gpu"]
        split = f"{format_bytes(cpu['total'])} ({format_bytes(cpu['weights'])} + {format_bytes(cpu['kv'])} + {format_bytes(cpu['compute'])})"
        layers = "all" if r["n_gpu_layers"] == -1 else r["n_gpu_layers"]
        print(f"{r['model']:<34} {r['verdict']:<6} {split:<34} {format_bytes(gpu['total']):>9}  ctx {r['n_ctx']}, gpu layers {layers}")
    for r in results:
        print(f"{r['model']}: {r['reason']}")
    return 0
