"""The planner judges a model on the machine it will run on: the weight copies that machine's CPU
repacks (none where llama.cpp multiplies with AMX and so does not repack) and its GPU backend's
measured overhead (issue 13). Headers rebuilt from the calibration models; simulated hardware."""

from __future__ import annotations

from dataclasses import replace

from support.calibration import header_for

from localllm.fit import estimate
from localllm.fit.hardware import profile
from localllm.fit.plan import plan_load

Q4_K_M = header_for("c-llama-q4_k_m.gguf")  # Q4_K matrices: repacked on AVX2 CPUs


def _repacked_on(features: tuple[str, ...], n_ctx: int) -> int:
    settings = estimate.Settings(n_ctx=n_ctx, n_gpu_layers=0)
    return estimate.estimate(Q4_K_M, settings, cpu_features=features).repack_bytes


def test_a_plan_on_an_avx2_cpu_counts_the_repacked_copies():
    hw = profile("desktop-32gb")  # AVX2, no GPU
    plan = plan_load(Q4_K_M, hw, 4096)
    assert plan.n_gpu_layers == 0
    assert plan.estimate.repack_bytes == _repacked_on(("AVX2",), 4096) > 100 * estimate.MiB
    assert plan.estimate.cpu.weights > Q4_K_M.tensor_bytes  # the mapped file and the copies


def test_no_repacked_copies_where_llama_cpp_uses_amx_or_the_cpu_has_no_avx2():
    avx2 = plan_load(Q4_K_M, profile("desktop-32gb"), 4096)
    amx = plan_load(Q4_K_M, replace(profile("desktop-32gb"), simd=("AVX", "AVX2", "AVX512", "AMX_INT8")), 4096)
    plain = plan_load(Q4_K_M, replace(profile("desktop-32gb"), simd=("SSE3",)), 4096)
    assert amx.estimate.repack_bytes == 0 and plain.estimate.repack_bytes == 0
    assert amx.estimate.cpu.total == plain.estimate.cpu.total == avx2.estimate.cpu.total - avx2.estimate.repack_bytes


def test_the_gpu_overhead_is_the_backend_s_own():
    mac = plan_load(Q4_K_M, profile("mac-m-16gb"), 4096)  # Metal
    nvidia = plan_load(Q4_K_M, profile("rtx-12gb-32gb-ram"), 4096)  # CUDA
    assert mac.n_gpu_layers == nvidia.n_gpu_layers == -1
    assert mac.estimate.gpu.runtime == estimate.BACKENDS["metal"].runtime
    assert nvidia.estimate.gpu.runtime == estimate.BACKENDS["cuda"].runtime
    assert mac.estimate.gpu.runtime < nvidia.estimate.gpu.runtime
