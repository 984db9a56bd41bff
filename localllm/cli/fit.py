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


def _headers(reference: str) -> list[tuple[str, str, object, object]]:
    """(label, where, header, local path or None) for the file a reference names, or every quant of
    a catalog model."""
    from localllm.gguf.cache import read_header
    from localllm.models import catalog, refs, store

    ref = refs.parse_ref(reference)
    if ref.kind == "file":
        path = refs.require_file(ref)
        return [(path.name, "local file", read_header(path), path)]
    name = ref.repo if ref.kind != "catalog" else catalog.load_catalog().get(ref.name).name
    installed = {m.quant: m for m in store.installed() if m.name.lower() == name.lower()}
    rows = [
        (m.key, "installed", read_header(m.path()), m.path())
        for quant, m in installed.items() if ref.quant in (None, quant)
    ]
    if ref.kind == "catalog" and (ref.quant is None or ref.quant not in installed):
        rows += _remote_rows(catalog.load_catalog().get(ref.name), ref.quant, set(installed))
    if not rows:
        from localllm.errors import ModelNotFoundError

        raise ModelNotFoundError(f"{reference} is not installed", hint=f"download it with: localllm pull {reference}")
    return rows


def _remote_rows(entry, quant: str | None, skip: set) -> list[tuple[str, str, object, object]]:
    """Headers of the catalog's quants, fetched from the Hub by range requests (cached)."""
    from localllm.errors import LocalLLMError, NetworkError
    from localllm.hub import headers as remoteheader
    from localllm.hub.client import Hub
    from localllm.hub.errors import offline_error
    from localllm.hub.pull import files_by_quant

    hub = Hub()
    if hub.offline:  # judge from cached headers only
        listing = None
    else:
        try:
            listing = hub.list_files(entry.repo)
        except NetworkError:
            listing = None  # cached headers may still do
    rows, skipped = [], []
    if listing is not None:
        files = files_by_quant(listing, entry)
        revision = listing.revision or "main"
    else:
        files = {q: [(entry.filename(q), 0)] for q in entry.quants if entry.filename(q)}
        revision = "main"
    wanted = [quant] if quant else list(files)
    if quant and quant not in files:
        if listing is None:
            raise offline_error(f"{entry.name}:{quant}")
        from localllm.hub.errors import HubFileNotFoundError

        raise HubFileNotFoundError(f"{entry.repo} has no {quant} file", hint=f"quantizations there: {', '.join(files)}")
    first_error = None
    for q in wanted:
        if q in skip:
            continue
        if first_error is not None and isinstance(first_error, NetworkError):
            skipped.append(q)  # the Hub is unreachable: do not wait for it once per quant
            continue
        try:
            header = remoteheader.read_remote_header(entry.repo, files[q][0][0], revision=revision)
        except LocalLLMError as exc:
            if quant:  # the one asked for: say why
                raise
            first_error = first_error or exc
            skipped.append(q)
            continue
        rows.append((f"{entry.name}:{q}", "on the Hub", header, None))
    if skipped:
        if not rows and not skip and first_error is not None:
            raise first_error
        print(f"localllm: not judged: {', '.join(skipped)} ({first_error})", file=sys.stderr)
    return rows


def _measured(header, path) -> dict | None:
    """The last real load of ``path``: what llama.cpp allocated against the estimate for the same
    settings, and the process's peak RSS."""
    from localllm.fit import estimate, loadlog

    last = loadlog.last_load(path, header.file_size) if path is not None else None
    if last is None:
        return None
    s = last.get("settings", {})
    settings = estimate.Settings(
        n_ctx=int(s.get("n_ctx") or 4096), n_gpu_layers=int(s.get("n_gpu_layers") or 0),
        type_k=str(s.get("type_k") or "f16"), type_v=str(s.get("type_v") or "f16"),
        flash_attn=s.get("flash_attn"), n_batch=int(s.get("n_batch") or 512), n_ubatch=int(s.get("n_ubatch") or 512),
    )  # fmt: skip
    est = estimate.estimate(header, settings)
    allocated = int(sum(last.get("buffers_mib", {}).values()) * estimate.MiB)
    predicted = est.cpu.llama_cpp + est.gpu.llama_cpp
    return {
        "time": last.get("time"), "n_ctx": settings.n_ctx, "n_gpu_layers": settings.n_gpu_layers,
        "allocated": allocated, "estimated": predicted,
        "error": (predicted - allocated) / allocated if allocated else None,
        "peak_rss": last.get("peak_rss"), "estimated_rss": est.cpu.total, "gpu_bytes": last.get("gpu_bytes"),
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from localllm.fit.hardware import format_bytes
    from localllm.fit.plan import plan_load, plan_quants

    hw = hardware_from(args)
    rows = _headers(args.model)
    results = []
    for label, where, header, path in rows:
        plan = plan_load(header, hw, args.ctx)
        result = {"model": label, "where": where, "file_size": header.file_size, **plan.as_dict()}
        measured = _measured(header, path)
        if measured is not None:
            result["last_load"] = measured
        results.append(result)
    choice = None
    if len(rows) > 1:
        choice = plan_quants([(label.rsplit(":", 1)[-1], h.file_size or h.data_end, h) for label, _, h, _ in rows],
                             hw, args.ctx)  # fmt: skip
    if args.json:
        out = {"hardware": hw.as_dict(), "models": results}
        if choice is not None:
            out["choice"] = {"quant": choice.chosen.quant if choice.chosen else None, "reason": choice.reason}
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"{'MODEL':<34} {'FIT':<6} {'CPU (weights + KV + compute)':<34} {'GPU':>9}  PLAN")
    for r in results:
        cpu, gpu = r["estimate"]["cpu"], r["estimate"]["gpu"]
        split = f"{format_bytes(cpu['total'])} ({format_bytes(cpu['weights'])} + {format_bytes(cpu['kv'])} + {format_bytes(cpu['compute'])})"
        layers = "all" if r["n_gpu_layers"] == -1 else r["n_gpu_layers"]
        print(f"{r['model']:<34} {r['verdict']:<6} {split:<34} {format_bytes(gpu['total']):>9}  ctx {r['n_ctx']}, gpu layers {layers}")
    for r in results:
        print(f"{r['model']}: {r['reason']}")
        m = r.get("last_load")
        if m and m["error"] is not None:
            rss = f"; peak RSS {format_bytes(m['peak_rss'])} (estimated {format_bytes(m['estimated_rss'])})" if m["peak_rss"] else ""
            print(f"  last load (ctx {m['n_ctx']}, gpu layers {m['n_gpu_layers']}): llama.cpp allocated "
                  f"{format_bytes(m['allocated'])}, estimate {format_bytes(m['estimated'])} ({m['error']:+.1%}){rss}")
    if choice is not None:
        print(f"choice: {choice.reason}")
    return 0
