"""Experts kept on the CPU through llama.cpp's tensor buffer-type overrides, and the planner's
placement reaching llama.cpp (issue 13, item 2), with a real synthetic qwen3moe GGUF.

On this CPU build every buffer is a CPU buffer anyway, and llama.cpp logs nothing about layers
offloaded to a GPU it does not have: what can be checked here is that the overrides are accepted,
that they name exactly the tensors the estimate keeps on the CPU, and that the model generates.
"""

from __future__ import annotations

import re

import pytest

from localllm import runtime
from localllm.fit import estimate, hardware
from localllm.fit.plan import HEADROOM
from localllm.gguf import header as ggufmeta
from localllm.runtime import llama, synthetic

MiB = 1 << 20
_OVERRIDDEN_RE = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to (\S+)")


@pytest.fixture(scope="module")
def moe_path(tmp_path_factory, smollm2_path):
    path = tmp_path_factory.mktemp("moe") / "plan-qwen3moe-F16.gguf"
    return synthetic.write_model(path, synthetic.SHAPES["plan-qwen3moe"], smollm2_path, quant="F16")


def overridden(lines: list[str]) -> dict[str, str]:
    """Tensor name -> buffer type, from llama.cpp's log of a load."""
    return {m.group(1): m.group(2) for m in map(_OVERRIDDEN_RE.search, lines) if m}


def greedy(model, n: int = 6) -> str:
    generation = model.complete("The capital of France is", runtime.SamplingOptions(temperature=0, max_tokens=n))
    text = generation.read()
    assert generation.stats.generated_tokens == n
    return text


def test_overrides_keep_the_estimated_experts_on_the_cpu_and_generate(moe_path):
    header = ggufmeta.read_header(moe_path)
    options = runtime.LoadOptions(n_ctx=256, n_gpu_layers=-1, cpu_moe_layers=2, n_threads=1)
    with runtime.Model(moe_path, options) as model:
        moved = overridden(llama.LOG.buffers_since(model.llama.log_marker))
        assert greedy(model)
        assert model.load_report.settings["cpu_moe_layers"] == 2
    # llama.cpp moved the routed experts of layers 0 and 1, and nothing else, into a CPU buffer ...
    assert set(moved.values()) == {"CPU"}
    assert sorted(moved) == sorted(
        f"blk.{il}.ffn_{kind}_exps.weight" for il in (0, 1) for kind in ("gate", "up", "down")
    )
    # ... which are the bytes the estimate moves from the GPU to the CPU.
    sizes = {t.name: t.n_bytes for t in header.tensors}
    assert estimate.cpu_expert_bytes(header, 2) == sum(sizes[name] for name in moved)

    def split(moe: int) -> estimate.Estimate:
        settings = estimate.Settings(n_ctx=256, n_gpu_layers=-1, cpu_moe_layers=moe)
        return estimate.estimate(header, settings, gpu_present=True)

    moved_bytes = sum(sizes[name] for name in moved)
    assert split(0).gpu.weights - split(2).gpu.weights == moved_bytes
    # The CPU holds them (and llama.cpp's one mapped range for the CPU now spans the GPU tensors
    # between token_embd and them, which the estimate counts too).
    assert split(2).cpu.weights - split(0).cpu.weights >= moved_bytes


def test_the_same_text_with_and_without_the_overrides(moe_path):
    """Where the experts live changes no result."""
    texts = []
    for moe in (0, 6):
        options = runtime.LoadOptions(n_ctx=256, n_gpu_layers=-1, cpu_moe_layers=moe, n_threads=1)
        with runtime.Model(moe_path, options) as model:
            assert len(overridden(llama.LOG.buffers_since(model.llama.log_marker))) == 3 * moe
            texts.append(greedy(model))
    assert texts[0] == texts[1]


def test_a_q8_0_kv_cache_loads_as_estimated_and_generates(moe_path):
    header = ggufmeta.read_header(moe_path)
    options = runtime.LoadOptions(n_ctx=1024, type_k="q8_0", type_v="q8_0", flash_attn=True, n_threads=1)
    with runtime.Model(moe_path, options) as model:
        assert greedy(model)
        logged = model.load_report.buffers_mib["CPU KV"]
    est = estimate.estimate(header, estimate.Settings(n_ctx=1024, type_k="q8_0", type_v="q8_0", flash_attn=True))
    assert abs(est.cpu.kv - logged * MiB) <= 0.01 * MiB  # exact arithmetic, as llama.cpp rounds its log


def test_open_model_loads_with_the_planners_experts_on_the_cpu(moe_path):
    """The planner's placement reaches llama.cpp: a simulated GPU that holds all but some experts."""
    from localllm import app

    header = ggufmeta.read_header(moe_path)

    def gpu_need(moe: int) -> int:
        settings = estimate.Settings(n_ctx=8192, n_gpu_layers=-1, cpu_moe_layers=moe)
        return estimate.estimate(header, settings, gpu_present=True).gpu.total

    budget = int((gpu_need(0) + gpu_need(header.block_count)) / 2 / HEADROOM)
    hw = hardware.with_overrides(hardware.profile("rtx-24gb-64gb-ram"), vram=budget + hardware.GPU_RESERVE)
    with app.open_model(str(moe_path), n_threads=1, hardware=hw) as opened:
        settings = opened.load_report.settings
        moved = overridden(llama.LOG.buffers_since(opened.model.llama.log_marker))
        assert greedy(opened.model)
    assert settings["n_gpu_layers"] == -1 and 0 < settings["cpu_moe_layers"] < header.block_count
    assert len(moved) == 3 * settings["cpu_moe_layers"]
