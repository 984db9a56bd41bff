"""The planner on a mixture of experts bigger than the GPU: experts kept on the CPU, a q8_0 KV cache
when that buys the context, each choice in the reason (issue 13, item 2).

The model is a real synthetic qwen3moe GGUF (localllm.runtime.synthetic); the machines are simulated
(hardware.with_overrides), with budgets computed from the estimate itself, so the tests follow the
memory model rather than fixed byte counts.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from localllm.fit import estimate, hardware
from localllm.fit.plan import HEADROOM, Verdict, plan_load, plan_quants, sized_header
from localllm.gguf import header as ggufmeta
from localllm.runtime import synthetic

MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture(scope="module")
def moe_path(tmp_path_factory, smollm2_path):
    path = tmp_path_factory.mktemp("moe") / "plan-qwen3moe-F16.gguf"
    return synthetic.write_model(path, synthetic.SHAPES["plan-qwen3moe"], smollm2_path, quant="F16")


@pytest.fixture(scope="module")
def moe(moe_path):
    return ggufmeta.read_header(moe_path)


def big_experts(header, factor: int):
    """``header`` with its routed experts ``factor`` times bigger: a 30B-A3B-like share of expert
    weights (the rest of the model, KV cache and buffers unchanged)."""
    tensors = tuple(replace(t, n_bytes=t.n_bytes * factor) if re.search(estimate.CPU_EXPERTS, t.name) else t
                    for t in header.tensors)  # fmt: skip
    return replace(header, tensors=tensors, file_size=header.data_offset + sum(t.n_bytes for t in tensors))


def gpu_need(header, *, moe: int = 0, n_ctx: int = 8192, kv: str = "f16") -> int:
    settings = estimate.Settings(n_ctx=n_ctx, n_gpu_layers=-1, cpu_moe_layers=moe, type_k=kv, type_v=kv,
                                 flash_attn=True if kv != "f16" else None)  # fmt: skip
    return estimate.estimate(header, settings, gpu_present=True).gpu.total


def machine_with_gpu_budget(budget: int, ram: int = 64 * GiB):
    """A simulated PC whose GPU budget (free VRAM less the driver reserve) is ``budget``."""
    hw = hardware.with_overrides(hardware.profile("rtx-24gb-64gb-ram"), ram=ram, vram=budget + hardware.GPU_RESERVE)
    assert hw.gpu_budget == budget
    return hw


def test_experts_stay_on_the_cpu_when_the_whole_model_does_not_fit_the_gpu(moe):
    header = big_experts(moe, 200)  # about 4 GiB of experts, 40 MiB of the rest
    n_layer = header.block_count
    experts = estimate.cpu_expert_bytes(header, n_layer)
    assert experts > 3 * GiB
    # A GPU that holds everything but about half the experts, with the planner's headroom.
    hw = machine_with_gpu_budget(int((gpu_need(header) - experts // 2) / HEADROOM))
    plan = plan_load(header, hw)
    assert plan.verdict is Verdict.FITS and plan.n_gpu_layers == -1
    assert 0 < plan.cpu_moe_layers < n_layer
    # The fewest layers whose experts must stay on the CPU: one fewer would not fit the GPU.
    assert plan.estimate.gpu.total <= hw.gpu_budget * HEADROOM
    assert gpu_need(header, moe=plan.cpu_moe_layers - 1) > hw.gpu_budget * HEADROOM
    kept = estimate.cpu_expert_bytes(header, plan.cpu_moe_layers)
    assert plan.cpu_expert_bytes == kept
    assert plan.estimate.cpu.weights >= kept and plan.estimate.gpu.weights < gpu_need(header)
    span = f"layers 0-{plan.cpu_moe_layers - 1}"
    assert f"all layers on the GPU but the experts of {span} (" in plan.reason
    assert plan.as_dict()["cpu_moe_layers"] == plan.cpu_moe_layers
    assert plan.as_dict()["estimate"]["cpu_moe_layers"] == plan.cpu_moe_layers


def test_a_model_that_fits_the_gpu_keeps_its_experts_there(moe):
    header = big_experts(moe, 200)
    plan = plan_load(header, machine_with_gpu_budget(int(gpu_need(header) / HEADROOM) + MiB))
    assert plan.n_gpu_layers == -1 and plan.cpu_moe_layers == 0 and "experts" not in plan.reason


def test_a_gpu_too_small_even_without_experts_gets_whole_layers(moe):
    header = big_experts(moe, 200)
    rest = gpu_need(header, moe=header.block_count)  # every expert on the CPU: what is left
    plan = plan_load(header, machine_with_gpu_budget(int(rest * 0.9)))
    assert plan.cpu_moe_layers == 0 and plan.n_gpu_layers != -1 and "experts" not in plan.reason


def test_unified_memory_gains_nothing_from_experts_on_the_cpu(moe):
    header = big_experts(moe, 200)
    mac = hardware.profile("mac-m-8gb")
    assert plan_load(header, mac).cpu_moe_layers == 0


def test_the_quant_choice_names_the_experts_kept_on_the_cpu(moe):
    header = big_experts(moe, 200)
    experts = estimate.cpu_expert_bytes(header, header.block_count)
    q8 = header.file_size
    q4 = q8 * 9 // 16
    hw = machine_with_gpu_budget(int((gpu_need(header) - experts // 2) / HEADROOM))
    choice = plan_quants([("Q8_0", q8, sized_header(header, q8)), ("Q4_K_M", q4, sized_header(header, q4))], hw)
    # Neither fits wholly on the GPU; every layer of the best quant does, its first experts in RAM.
    assert choice.chosen.quant == "Q8_0" and choice.chosen.plan.cpu_moe_layers > 0
    assert choice.reason.startswith("Q8_0: ") and "but the experts of layers 0-" in choice.reason


def test_a_q8_0_kv_cache_when_an_f16_one_leaves_the_context_out(moe):
    def cpu_need(kv: str) -> int:
        settings = estimate.Settings(n_ctx=8192, type_k=kv, type_v=kv, flash_attn=True if kv != "f16" else None)
        return estimate.estimate(header, settings).cpu.total

    header = moe
    f16, q8 = cpu_need("f16"), cpu_need("q8_0")
    assert q8 < f16 - 40 * MiB  # the KV cache is a good part of this model at 8k
    ram_budget = (f16 + q8) // 2  # holds q8_0 (without the headroom), not f16
    hw = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=ram_budget * 4 // 3, vram=0)
    assert abs(hw.ram_budget - ram_budget) < 4
    plan = plan_load(header, hw)
    # Rather than halving the context, a q8_0 KV cache holds it.
    assert plan.n_ctx == 8192 and plan.kv_type == "q8_0" and plan.flash_attn is True
    assert plan.verdict is Verdict.TIGHT
    assert "8,192-token context (trained on 32,768), q8_0 KV cache (" in plan.reason
    assert "an f16 one would not fit" in plan.reason
    # Asked for that context, the same; with room for f16 (tight or not) it stays f16.
    assert plan_load(header, hw, 8192).kv_type == "q8_0"
    tight = hardware.with_overrides(hw, ram=(f16 + MiB) * 4 // 3)
    assert plan_load(header, tight).kv_type == "f16" and plan_load(header, tight).verdict is Verdict.TIGHT
    assert plan_load(header, hardware.with_overrides(hw, ram=8 * GiB)).kv_type == "f16"


def test_fit_json_and_table_show_the_experts_on_the_cpu(moe_path, moe, capsys):
    from localllm.cli import main

    experts = estimate.cpu_expert_bytes(moe, moe.block_count)
    budget = int((gpu_need(moe) - experts // 2) / HEADROOM)
    vram = f"{(budget + hardware.GPU_RESERVE) // 1024}K"
    assert main(["fit", str(moe_path), "--json", "--profile", "rtx-24gb-64gb-ram", "--vram", vram]) == 0
    [row] = json.loads(capsys.readouterr().out)["models"]
    assert row["n_gpu_layers"] == -1 and row["cpu_moe_layers"] > 0 and row["kv_type"] == "f16"
    n = row["cpu_moe_layers"]
    assert row["cpu_expert_bytes"] == estimate.cpu_expert_bytes(moe, n)
    assert row["estimate"]["gpu"]["weights"] < gpu_need(moe) and row["estimate"]["cpu_moe_layers"] == n
    assert main(["fit", str(moe_path), "--profile", "rtx-24gb-64gb-ram", "--vram", vram]) == 0
    text = capsys.readouterr().out
    assert f"gpu layers all, experts of layers 0-{n - 1} on CPU" in text
    assert f"all layers on the GPU but the experts of layers 0-{n - 1} (" in text
