"""``localllm hw``: what this machine has, and the memory a model may use."""

from __future__ import annotations

import argparse
import json


def add_hardware_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ram", help="plan for this much RAM instead (e.g. 16G)")
    parser.add_argument("--vram", help="plan for this much GPU memory instead (e.g. 8G; 0 = no GPU)")
    parser.add_argument("--profile", help="plan for a named machine (e.g. laptop-8gb, mac-m-16gb, rtx-12gb-32gb-ram)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from . import add_rpc_option

    add_hardware_options(parser)
    add_rpc_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from localllm import app
    from localllm.format import format_bytes

    hw = app.machine.machine(args.profile, args.ram, args.vram, rpc=args.rpc)
    if args.json:
        print(json.dumps(hw.as_dict(), indent=2, default=str))
        return 0
    rows = [
        ("machine", hw.profile or "this machine (detected)"),
        ("CPU", f"{hw.cpu_model}, {hw.cores_physical} cores ({hw.cores_logical} threads)"),
        ("SIMD", " ".join(hw.simd) or "-"),
        ("RAM", f"{format_bytes(hw.ram_total)} total, {format_bytes(hw.ram_available)} available"),
        ("swap", f"{format_bytes(hw.swap_total)} total" if hw.swap_total else "none"),
    ]
    for gpu in hw.gpus:
        rows.append(("GPU", f"{gpu.name}: {format_bytes(gpu.free_bytes)} free of {format_bytes(gpu.total_bytes)}"))
    if not hw.gpus:
        rows.append(("GPU", "none detected"))
    for device in hw.devices:
        rows.append(("llama.cpp device", f"{device.name} ({device.kind}): {device.description}"))
    for worker in hw.rpc_workers:
        rows.append(
            (
                "RPC worker",
                f"{worker.name}: {format_bytes(worker.free_bytes)} free of {format_bytes(worker.total_bytes)}",
            )
        )
    rows.append(("GPU offload", "yes" if hw.gpu_offload else "no (CPU-only llama.cpp build or no GPU)"))
    offload = f", {format_bytes(hw.gpu_budget)} {hw.offload_name}" if hw.gpu_budget else ""
    rows.append(("memory budget", f"{format_bytes(hw.ram_budget)} RAM{offload}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for note in hw.notes:
        print(f"note: {note}")
    return 0
