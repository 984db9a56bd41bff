"""The memory estimate against real CUDA loads (tests/fit/calibration/h100-cuda: what llama.cpp logged
per device, and what NVML saw the process take), for dense, sliding-window and MoE models, partial
GPU splits, flash attention on/off/auto and a q8_0 KV cache. No GPU is needed: the models' headers
are rebuilt from the arguments that made them (tests/support/calibration.py)."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
from support import calibration

from localllm.fit import estimate

MiB = 1 << 20
ROWS = calibration.all_loads()


def _settings(row: dict) -> estimate.Settings:
    return estimate.Settings(
        n_ctx=row["n_ctx"], n_gpu_layers=row["n_gpu_layers"], type_k=row["type_kv"], type_v=row["type_kv"],
        flash_attn={"auto": None, "on": True, "off": False}[row["flash_attn"]],
        n_batch=row.get("n_batch", 512), n_ubatch=row.get("n_ubatch", 512), n_seq=row.get("n_seq_max", 1),
    )  # fmt: skip


def _estimate(row: dict) -> estimate.Estimate:
    return estimate.estimate(calibration.header_for(row["file"]), _settings(row), backend="cuda")


def _label(row: dict) -> str:
    return f"{row['file']}-{row['n_ctx']}-ngl{row['n_gpu_layers']}-fa_{row['flash_attn']}-{row['type_kv']}-s{row.get('n_seq_max', 1)}-u{row.get('n_ubatch', 512)}"


def _logged(row: dict) -> dict[str, estimate.DeviceBytes]:
    return estimate.from_buffers(row["buffers_mib"])


def test_calibration_headers_match_the_measured_files():
    """The rebuilt headers hold exactly the bytes llama.cpp mapped for each file (n_gpu_layers 0)."""
    for name in calibration.MODELS:
        row = next(r for r in ROWS if r["file"] == name and r["n_gpu_layers"] == 0)
        header = calibration.header_for(name)
        assert header.tensor_bytes / MiB == pytest.approx(row["buffers_mib"]["CPU_Mapped model"], abs=0.01)


@pytest.mark.parametrize("row", ROWS, ids=_label)
def test_estimate_matches_each_cuda_load(row):
    est = _estimate(row)
    logged = _logged(row)
    gpu, cpu = logged.get("CUDA0", estimate.DeviceBytes()), logged["CPU"]
    # Weights and KV cache per device are exact arithmetic: which layers sit where, the KV types'
    # block sizes (q8_0: 34 bytes per 32 values).
    assert abs(est.gpu.weights - gpu.weights) <= MiB / 8 and abs(est.cpu.weights - cpu.weights) <= MiB / 8
    assert abs(est.gpu.kv - gpu.kv) <= MiB / 8 and abs(est.cpu.kv - cpu.kv) <= MiB / 8
    # llama.cpp's buffers per device within 5% (or 32 MiB: a GPU holding only a compute buffer of
    # ~250 MiB at n_gpu_layers 0 varies by 20 MiB with the context, unmodelled), and what the
    # process really took on the GPU within 5%.
    assert abs(est.gpu.llama_cpp - gpu.llama_cpp) <= max(0.05 * gpu.llama_cpp, 32 * MiB)
    assert abs(est.cpu.llama_cpp - cpu.llama_cpp) <= max(0.05 * cpu.llama_cpp, 32 * MiB)
    assert est.gpu.total == pytest.approx(row["nvml_delta_peak_mib"] * MiB, rel=0.05)


@pytest.mark.parametrize("row", ROWS, ids=_label)
def test_flash_attention_auto_resolves_as_llama_cpp_did(row):
    """CUDA has no flash-attention kernel for gemma3's head size 160: ``auto`` turns it off as soon as a
    layer's attention is on the GPU, and the compute buffer then grows with the context."""
    est = _estimate(row)
    if row["log_flash_attn"] in ("enabled", "disabled"):
        assert est.settings.flash_attn == (row["log_flash_attn"] == "enabled")
    else:  # auto: what the compute buffers show (gemma3 with layers on the GPU: off)
        expected = not (row["file"].startswith(("c-gemma3", "v-gemma3")) and row["n_gpu_layers"] != 0)
        assert est.settings.flash_attn == expected


def test_the_cuda_runtime_overhead_is_what_the_data_says():
    """BACKENDS["cuda"] refitted: NVML's peak minus the logged CUDA0 buffers, median per case."""
    groups: dict[str, list[float]] = {"offloaded": [], "no layers": [], "no fa kernel": []}
    for row in ROWS:
        over = row["nvml_delta_peak_mib"] - _logged(row).get("CUDA0", estimate.DeviceBytes()).llama_cpp / MiB
        est = _estimate(row)
        if row["n_gpu_layers"] == 0:
            groups["no layers"].append(over)
        elif not est.settings.flash_attn and row["file"].startswith(("c-gemma3", "v-gemma3")):
            groups["no fa kernel"].append(over)
        else:
            groups["offloaded"].append(over)
    cuda = estimate.BACKENDS["cuda"]
    assert statistics.median(groups["offloaded"]) == pytest.approx(cuda.runtime / MiB, abs=2)
    assert statistics.median(groups["no layers"]) == pytest.approx(cuda.runtime_no_layers / MiB, abs=2)
    extra = statistics.median(groups["no fa kernel"]) - statistics.median(groups["offloaded"])
    assert extra == pytest.approx(cuda.no_fa_extra / MiB, abs=2)


def test_a_cuda_build_uses_the_gpu_at_zero_layers_big_vocabulary():
    """n_gpu_layers 0 on a GPU build: the logits stage and a copy of the output weights on the GPU,
    about 1.5 GB for a 262k vocabulary, which a CPU-only plan must not put at zero."""
    row = next(r for r in ROWS if r["file"] == "v-llama-q4_k_m.gguf" and r["n_gpu_layers"] == 0)
    est = _estimate(row)
    assert est.gpu.weights == 0 and est.gpu.compute > 900 * MiB
    assert est.gpu.total == pytest.approx(row["nvml_delta_peak_mib"] * MiB, rel=0.05)
    cpu_build = estimate.estimate(calibration.header_for(row["file"]), _settings(row), gpu_present=False)
    assert cpu_build.gpu.total == 0 and cpu_build.backend is None


def test_the_backend_named_by_the_hardware():
    """Hardware.gpu_backend picks the figures of estimate.BACKENDS: the build's device names first,
    then the GPU's vendor; none without a GPU build."""
    from localllm.fit import hardware

    pc = hardware.profile("rtx-12gb-32gb-ram")
    assert pc.gpu_backend == "cuda" and pc.gpu_backend in estimate.BACKENDS
    vulkan = dataclasses.replace(pc, devices=(hardware.Device("Vulkan0", "AMD Radeon", "gpu", 8 << 30, 8 << 30),))
    assert vulkan.gpu_backend == "vulkan"
    assert hardware.with_overrides(pc, vram=0).gpu_backend is None
    est = estimate.estimate(calibration.header_for("c-llama-q4_k_m.gguf"), estimate.Settings(n_gpu_layers=-1),
                            backend=vulkan.gpu_backend)  # fmt: skip
    assert est.gpu.runtime == estimate.BACKENDS["vulkan"].runtime and est.backend == "vulkan"
