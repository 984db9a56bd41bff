"""llama.cpp RPC workers as the planner and `hw` see them (issue 26): each device a worker reports
(ggml-rpc names them RPC0, RPC1, ... and describes them by their endpoint) is an offload target with
the memory it reports, beside or instead of a local GPU. The workers are simulated as the suite
simulates hardware (a BuildInfo of llama.cpp devices); tests/cli/test_rpc.py and
benchmarks/bench_rpc.py run the real ones."""

from __future__ import annotations

import json
import math

import pytest
from support.shapes import header

from localllm.app import machine
from localllm.cli import main
from localllm.fit import hardware, plan
from localllm.fit.hardware import GPU, GPU_RESERVE, BuildInfo, Device, Hardware
from localllm.fit.plan import Verdict
from localllm.format import format_bytes
from localllm.runtime.devices import RPCWorker

GiB = 1 << 30
CPU = Device("CPU", "test CPU", "cpu", 8 * GiB, 16 * GiB)


def rpc_device(i: int, free: int, total: int = 16 * GiB) -> Device:
    return Device(f"RPC{i}", f"127.0.0.1:{50052 + i}", "gpu", free, total)


@pytest.fixture
def no_local_gpus(monkeypatch):
    """This machine's own GPUs out of the way, so the answers are the same on a GPU machine."""
    monkeypatch.setattr(hardware, "_nvidia_gpus", lambda: [])
    monkeypatch.setattr(hardware, "_amd_gpus", lambda: [])
    monkeypatch.setattr(hardware, "_apple_gpu", lambda total: None)


def workers(*budgets: int) -> tuple[GPU, ...]:
    """RPC workers whose budgets are ``budgets`` bytes."""
    devices = tuple(rpc_device(i, b + GPU_RESERVE) for i, b in enumerate(budgets))
    return hardware.rpc_workers(devices)


def test_detect_counts_each_rpc_device_as_an_offload_device_not_as_a_local_gpu(no_local_gpus):
    build = BuildInfo(devices=(CPU, rpc_device(0, 6 * GiB), rpc_device(1, 4 * GiB)), gpu_offload=False)
    hw = hardware.detect(build)
    assert hw.gpus == () and hw.notes == ()  # no "GPU beside a CPU-only build" note for a worker
    assert [w.name for w in hw.rpc_workers] == ["RPC0 127.0.0.1:50052", "RPC1 127.0.0.1:50053"]
    assert [w.vendor for w in hw.rpc_workers] == ["rpc", "rpc"]
    assert hw.offload_gpus == hw.rpc_workers  # layers may go there although the local build is CPU-only
    assert hw.gpu_budget == 10 * GiB - 2 * GPU_RESERVE
    assert hw.gpu_backend == "rpc" and hw.offload_name == "RPC workers"


def test_a_local_gpu_and_workers_together():
    gpu = GPU("Test GPU", "nvidia", 8 * GiB, 8 * GiB)
    hw = Hardware(ram_total=GiB, ram_available=GiB, gpus=(gpu,), gpu_offload=True, rpc_workers=workers(GiB))
    assert hw.offload_gpus == (gpu, *hw.rpc_workers)
    assert hw.gpu_budget == gpu.budget + GiB
    assert hw.gpu_backend == "cuda"  # the local GPU's overheads are the ones this process pays
    assert hw.offload_name == "GPU and RPC workers"


def test_the_rpc_backend_costs_this_process_nothing_beyond_its_buffers():
    hw = Hardware(ram_total=64 * GiB, ram_available=64 * GiB, rpc_workers=workers(64 * GiB))
    est = plan._estimate(header(), hw, plan._settings(4096, -1, "f16"))
    assert est.backend == "rpc" and est.gpu.runtime == 0
    assert est.gpu.weights > 0 and est.gpu.kv > 0


def test_a_model_too_big_for_the_ram_fits_split_over_two_workers():
    h = header()
    on_workers = plan._estimate(h, Hardware(1, 1, rpc_workers=workers(1)), plan._settings(4096, -1, "f16"))
    ram = math.ceil(on_workers.cpu.total / 0.8)
    alone = Hardware(ram_total=ram, ram_available=ram)
    assert plan.plan_load(h, alone, 4096).verdict is not Verdict.FITS  # this machine alone: no
    half = math.ceil(on_workers.gpu.total / 0.8 / 2)
    split = Hardware(ram_total=ram, ram_available=ram, rpc_workers=workers(half, half))
    p = plan.plan_load(h, split, 4096)
    assert p.n_gpu_layers == -1 and p.verdict is Verdict.FITS
    assert (
        f"{format_bytes(on_workers.gpu.total)} of {format_bytes(split.gpu_budget)} RPC workers' memory, "
        "all layers on the RPC workers" in p.reason
    )
    # A worker too small for a layer: the model stays on this machine, which alone holds it.
    ram = 64 * GiB
    cpu = plan.plan_load(h, Hardware(ram_total=ram, ram_available=ram, rpc_workers=workers(1 << 20)), 4096)
    assert cpu.n_gpu_layers == 0 and cpu.verdict is Verdict.FITS and "on the CPU" in cpu.reason
    assert cpu.estimate.gpu.total == 0


def test_hw_lists_the_workers_and_their_memory(monkeypatch, capsys, no_local_gpus):
    devices = (CPU, rpc_device(0, 6 * GiB, 8 * GiB), rpc_device(1, 3 * GiB, 4 * GiB))
    monkeypatch.setattr(machine, "build_info", lambda: BuildInfo(devices=devices))
    asked = []

    def connect(rpc):
        asked.append(rpc)
        return [RPCWorker(d.description, d.name, d.free_bytes, d.total_bytes) for d in devices[1:]]

    monkeypatch.setattr(machine, "connect_rpc", connect)
    assert main(["hw", "--rpc", "127.0.0.1:50052,127.0.0.1:50053"]) == 0
    out = capsys.readouterr().out
    assert asked == ["127.0.0.1:50052,127.0.0.1:50053"]
    assert "RPC worker        RPC0 127.0.0.1:50052: 6.0 GiB free of 8.0 GiB" in out
    assert "RPC worker        RPC1 127.0.0.1:50053: 3.0 GiB free of 4.0 GiB" in out
    budget = format_bytes(9 * GiB - 2 * GPU_RESERVE)
    assert f", {budget} RPC workers\n" in out

    assert main(["hw", "--json", "--rpc", "127.0.0.1:50052,127.0.0.1:50053"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(w["name"], w["free"], w["total"]) for w in data["rpc_workers"]] == [
        ("RPC0 127.0.0.1:50052", 6 * GiB, 8 * GiB),
        ("RPC1 127.0.0.1:50053", 3 * GiB, 4 * GiB),
    ]
    assert data["gpu_budget"] == 9 * GiB - 2 * GPU_RESERVE

    # A named machine planned with the same workers beside it.
    assert main(["hw", "--profile", "laptop-8gb", "--rpc", "127.0.0.1:50052,127.0.0.1:50053"]) == 0
    out = capsys.readouterr().out
    assert "machine        laptop-8gb" in out and "RPC worker     RPC1 127.0.0.1:50053" in out
