"""The memory estimate against what llama.cpp logs allocating, on real CPU loads of synthetic models
of each kind of shape the estimate handles: sliding-window layers (gemma3), mixture of experts
(qwen3moe), MLA (deepseek2), quantized KV caches, and weight repacking on this CPU. The GPU side
(partial offloads, flash attention per backend) is checked against real CUDA loads in
test_calibration.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm import runtime
from localllm.fit import estimate, hardware, plan
from localllm.gguf import header as ggufmeta
from localllm.runtime import devices, synthetic

MiB = 1 << 20


@pytest.fixture(scope="module")
def models(smollm2_path, tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight models (seconds to write), quantized by llama.cpp."""
    root = tmp_path_factory.mktemp("estimate-models")
    wanted = {
        "gemma3": ("tiny-gemma3", "Q8_0"), "qwen3moe": ("tiny-qwen3moe", "Q8_0"),
        "deepseek2": ("tiny-deepseek2", "Q8_0"), "llama-q4_0": ("tiny-llama", "Q4_0"),
        "qwen3moe-q4_k_m": ("tiny-qwen3moe", "Q4_K_M"),
    }  # fmt: skip
    return {
        name: synthetic.write_model(root / f"{name}.gguf", synthetic.SHAPES[shape], smollm2_path, quant=quant)
        for name, (shape, quant) in wanted.items()
    }


def _load(path: Path, **options) -> dict[str, float]:
    """What llama.cpp logged allocating for one load (MiB per buffer), after a short generation."""
    with runtime.Model(path, runtime.LoadOptions(**options)) as model:
        model.complete("one two three", runtime.SamplingOptions(temperature=0, max_tokens=2, ignore_eos=True)).read()
        return model.load_report.buffers_mib


def _check(est: estimate.Estimate, logged: dict[str, float]) -> None:
    cpu = estimate.from_buffers(logged)["CPU"]
    assert abs(est.cpu.kv - cpu.kv) <= MiB / 64, (est.cpu.kv / MiB, logged)  # exact arithmetic
    assert abs(est.cpu.weights - cpu.weights) <= max(0.02 * cpu.weights, MiB / 8), (est.cpu.weights / MiB, logged)
    assert abs(est.cpu.llama_cpp - cpu.llama_cpp) <= max(0.05 * cpu.llama_cpp, 8 * MiB), (est.cpu.as_dict(), logged)


@pytest.mark.parametrize("n_ctx", [1024, 4096])
def test_sliding_window_model(models, n_ctx):
    """gemma3: every sixth layer global, the rest sliding-window (full-size cache: swa_full)."""
    header = ggufmeta.read_header(models["gemma3"])
    est = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx))
    _check(est, _load(models["gemma3"], n_ctx=n_ctx, repack=False))


def test_mixture_of_experts_model(models):
    header = ggufmeta.read_header(models["qwen3moe"])
    est = estimate.estimate(header, estimate.Settings(n_ctx=4096))
    assert est.expert_bytes > 0
    _check(est, _load(models["qwen3moe"], n_ctx=4096, repack=False))


def test_mla_caches_the_latent_kv_once(models):
    """deepseek2 caches kv_lora_rank + n_rot values per token and layer as K and no V at all."""
    header = ggufmeta.read_header(models["deepseek2"])
    est = estimate.estimate(header, estimate.Settings(n_ctx=4096))
    s = synthetic.SHAPES["tiny-deepseek2"]
    assert est.cpu.kv == s.n_layer * 4096 * (s.kv_lora_rank + s.n_rot) * 2
    _check(est, _load(models["deepseek2"], n_ctx=4096, repack=False))


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0"])
def test_quantized_kv_cache(smollm2_path, kv_type):
    """q8_0 keeps 34 bytes per 32 values, q4_0 18: SmolLM2's cache at 4096 tokens, to the byte."""
    header = ggufmeta.read_header(smollm2_path)
    settings = estimate.Settings(n_ctx=4096, type_k=kv_type, type_v=kv_type, flash_attn=True)
    est = estimate.estimate(header, settings)
    per_32 = {"q8_0": 34, "q4_0": 18}[kv_type]
    assert est.cpu.kv == 30 * 2 * 3 * 64 * 4096 // 32 * per_32  # layers x (K+V) x kv heads x dims
    _check(est, _load(smollm2_path, n_ctx=4096, type_k=kv_type, type_v=kv_type, flash_attn=True))


@pytest.mark.parametrize("name", ["llama-q4_0", "qwen3moe-q4_k_m"])
def test_weight_repacking_counts_the_copy(models, name):
    """On AVX2/AVX-512/NEON CPUs llama.cpp copies Q4_0/Q4_K matrices (experts included) into its
    CPU_REPACK buffer beside the mapped file; the estimate, told this CPU's features, counts it."""
    hw = hardware.detect(hardware.BuildInfo(system_info=devices.system_info()))
    header = ggufmeta.read_header(models[name])
    if runtime.build_has_amx():
        # AMX builds load without extra buffer types (llama.cpp #20824: AMX's matmul segfaults on
        # some CPUs, and a forced repack crashed this test on one): no copy is made, none planned.
        logged = _load(models[name], n_ctx=2048)
        est = plan.plan_load(header, hw, 2048).estimate
        assert est.repack_bytes == 0 and "CPU_REPACK model" not in logged and "AMX model" not in logged
        _check(est, logged)
        return
    est = estimate.estimate(header, estimate.Settings(n_ctx=2048), cpu_features=hw.simd)
    logged = _load(models[name], n_ctx=2048, repack=True)
    assert est.repack_bytes / MiB == pytest.approx(logged.get("CPU_REPACK model", 0.0), abs=0.01)
    _check(est, logged)
    plain = estimate.estimate(header, estimate.Settings(n_ctx=2048))
    assert plain.repack_bytes == 0 and est.cpu.weights == plain.cpu.weights + est.repack_bytes


def test_repack_types_follow_the_cpu_features():
    q4_0, q4_k, q6_k, q8_0 = 2, 12, 14, 8
    assert {q4_0, q4_k} <= set(estimate.repack_types(["AVX", "AVX2", "FMA"]))
    assert q6_k not in estimate.repack_types(["AVX2", "AVX512"])  # x86 has no Q6_K kernel
    assert {q4_0, q4_k, q6_k, q8_0} <= set(estimate.repack_types(["NEON", "DOTPROD"]))
    assert estimate.repack_types(["SSE3", "AVX"]) == {} and estimate.repack_types([]) == {}
