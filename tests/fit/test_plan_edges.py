"""The planner at its edges, on a model built by hand and machines sized to the byte (issue 16):
where "fits" turns into "tight" and "won't fit", how many layers a GPU budget takes, how far the
context shrinks, which quantization is chosen and what the sentence says."""

from __future__ import annotations

import math

import pytest
from support.shapes import header, t

from localllm.errors import DoesNotFitError
from localllm.fit import estimate as est
from localllm.fit import plan
from localllm.fit.hardware import GPU, GPU_RESERVE, Hardware
from localllm.fit.plan import Verdict
from localllm.format import format_bytes

N_LAYER = 4


def machine(ram: int, gpu: int = 0) -> Hardware:
    """A machine whose RAM budget is ``ram`` and GPU budget ``gpu`` bytes."""
    gpus = (GPU("Test GPU", "nvidia", gpu + GPU_RESERVE, gpu + GPU_RESERVE),) if gpu else ()
    return Hardware(ram_total=ram, ram_available=ram, gpus=gpus, gpu_offload=bool(gpu))


def cpu_need(n_ctx: int, kv: str = "f16", h=None) -> int:
    """RAM the planner counts for the model on a CPU-only machine."""
    return plan._estimate(h or header(), machine(1), plan._settings(n_ctx, 0, kv)).cpu.total


def cpu_need_any_kv(n_ctx: int, h=None) -> int:
    """The least RAM at this context: with the q8_0 KV cache the planner falls back to."""
    return min(cpu_need(n_ctx, "f16", h), cpu_need(n_ctx, "q8_0", h))


def gpu_need(layers: int, n_ctx: int = 4096) -> est.Estimate:
    """The planner's estimate with ``layers`` on an NVIDIA GPU (CUDA's measured overheads)."""
    return plan._estimate(header(), machine(1, 1), plan._settings(n_ctx, layers, "f16"))


# -- the verdict -----------------------------------------------------------------------------------


def test_fits_with_a_fifth_left_over_tight_without_and_no_beyond():
    need = cpu_need(4096)
    assert plan.plan_load(header(), machine(math.ceil(need / 0.8))).verdict is Verdict.FITS
    assert plan.plan_load(header(), machine(math.ceil(need / 0.8) - 1), 4096).verdict is Verdict.TIGHT
    assert plan.plan_load(header(), machine(need), 4096).verdict is Verdict.TIGHT
    assert plan.plan_load(header(), machine(cpu_need_any_kv(4096) - 1), 4096).verdict is Verdict.NO


def test_the_gpu_share_is_judged_with_the_same_headroom():
    e = gpu_need(-1)
    ram = 10 * e.cpu.total
    hw = machine(ram, math.ceil(e.gpu.total / 0.8))
    p = plan.plan_load(header(), hw, 4096)
    assert p.n_gpu_layers == -1 and p.verdict is Verdict.FITS
    assert plan._verdict(e, machine(ram, e.gpu.total)) is Verdict.TIGHT
    assert plan._verdict(e, machine(ram, e.gpu.total - 1)) is Verdict.NO


def test_verdict_words():
    assert [v.label for v in Verdict] == ["fits", "tight", "won't fit", "not judged"]
    assert [str(v) for v in Verdict] == ["fits", "tight", "no", "unknown"]


# -- GPU layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("layers", "n_ctx"), [(1, 4096), (2, 4096), (3, 4096), (3, 1024)])
def test_the_gpu_takes_the_most_layers_its_budget_holds_with_headroom(layers, n_ctx):
    e = gpu_need(layers, n_ctx)
    hw = machine(1 << 34, math.ceil(e.gpu.total / 0.8))
    p = plan.plan_load(header(), hw, n_ctx)
    assert p.n_gpu_layers == layers
    assert p.estimate == e
    trained = "" if n_ctx == 4096 else " (trained on 4,096)"
    assert p.reason.endswith(f"{layers} layers on the GPU, {n_ctx:,}-token context{trained}")


def test_a_gpu_too_small_for_one_layer_leaves_everything_on_the_cpu():
    e = gpu_need(1)
    hw = machine(1 << 34, math.ceil(e.gpu.total / 0.8) - 1)
    p = plan.plan_load(header(), hw, 4096)
    assert p.n_gpu_layers == 0 and p.estimate.gpu.weights == 0 and p.estimate.gpu.kv == 0
    assert p.reason == (
        f"fits: {format_bytes(p.estimate.cpu.total)} of {format_bytes(hw.ram_budget)} RAM and "
        f"{format_bytes(p.estimate.gpu.total)} of {format_bytes(hw.gpu_budget)} GPU memory, "
        "on the CPU, 4,096-token context"
    )  # a GPU build keeps buffers on the GPU anyway


def test_a_whole_model_on_the_gpu_is_said_so():
    e = gpu_need(-1)
    hw = machine(1 << 34, 10 * e.gpu.total)
    p = plan.plan_load(header(), hw, 4096)
    assert p.n_gpu_layers == -1
    assert p.reason == (
        f"fits: {format_bytes(e.cpu.total)} of {format_bytes(hw.ram_budget)} RAM and "
        f"{format_bytes(e.gpu.total)} of {format_bytes(hw.gpu_budget)} GPU memory, "
        "all layers on the GPU, 4,096-token context"
    )


def test_a_build_that_cannot_offload_plans_for_the_cpu():
    hw = Hardware(
        ram_total=1 << 34, ram_available=1 << 34, gpus=(GPU("g", "nvidia", 1 << 34, 1 << 34),), gpu_offload=False
    )
    p = plan.plan_load(header(), hw, 4096)
    assert p.n_gpu_layers == 0 and p.estimate.gpu.total == 0


# -- the context -----------------------------------------------------------------------------------


def test_the_default_context_is_the_trained_one_up_to_8192():
    big = machine(1 << 34)
    assert plan.plan_load(header(), big).n_ctx == 4096
    long = header(extra={"ARCH.context_length": 131072})
    assert plan.plan_load(long, big).n_ctx == plan.DEFAULT_CTX_CAP
    short = header(extra={"ARCH.context_length": 1000})
    assert plan.plan_load(short, big).n_ctx == 1000
    untold = header(extra={"ARCH.context_length": None})
    assert plan.plan_load(untold, big).n_ctx == plan.DEFAULT_CTX_CAP


def test_the_context_is_halved_until_it_fits_but_not_below_2048():
    long = header(extra={"ARCH.context_length": 8192})
    hw = machine(cpu_need(4096))  # 8192 tokens won't fit, not even with a q8_0 cache; 4096 fit, tightly
    assert cpu_need_any_kv(8192, long) > hw.ram_budget
    p = plan.plan_load(long, hw)
    assert p.n_ctx == 4096 and p.verdict is Verdict.TIGHT
    assert p.reason.endswith("4,096-token context (trained on 8,192)")
    tiny = machine(cpu_need_any_kv(2048) - 1)
    p = plan.plan_load(long, tiny)
    assert p.n_ctx == 2048 and p.verdict is Verdict.NO
    assert p.reason == (
        f"won't fit: needs {format_bytes(p.estimate.cpu.total)} of {format_bytes(tiny.ram_budget)} "
        "RAM even with a 2,048-token context (trained on 8,192), on the CPU"
    )


def test_a_context_the_user_asked_for_is_never_shrunk():
    hw = machine(cpu_need_any_kv(4096) - 1)
    p = plan.plan_load(header(), hw, 4096)
    assert p.n_ctx == 4096 and p.verdict is Verdict.NO
    assert p.as_dict()["n_ctx"] == 4096 and p.as_dict()["verdict"] == "no"


def test_a_trained_context_below_the_minimum_is_not_shrunk_further():
    short = header(extra={"ARCH.context_length": 1024})
    p = plan.plan_load(short, machine(1024))
    assert p.n_ctx == 1024 and p.verdict is Verdict.NO


# -- loading with the user's settings --------------------------------------------------------------


def ctx_layers(choice) -> tuple:
    return choice.n_ctx, choice.n_gpu_layers


def test_load_settings_keeps_what_the_user_gave_and_fills_in_the_rest():
    big = machine(1 << 34)
    assert ctx_layers(plan.load_settings(header(), big, 1000, 3)) == (1000, 3)
    assert ctx_layers(plan.load_settings(header(), big, None, 2)) == (4096, 2)
    assert ctx_layers(plan.load_settings(header(), big, 2048, None)) == (2048, 0)
    assert ctx_layers(plan.load_settings(header(), big, None, None)) == (4096, 0)


def test_load_settings_refuses_a_model_that_cannot_fit_with_the_reason():
    small = machine(1 << 20)
    with pytest.raises(DoesNotFitError) as err:
        plan.load_settings(header(), small, None, None, label="tiny.gguf")
    assert str(err.value).startswith("tiny.gguf won't fit: needs ")
    assert err.value.hint == (
        "pass --ctx and --gpu-layers to load it anyway, or pick a smaller quantization (localllm fit)"
    )
    with pytest.raises(DoesNotFitError, match="^tiny won't fit"):
        plan.load_settings(header(), small, 4096, None)
    assert ctx_layers(plan.load_settings(header(), small, None, 0)) == (2048, 0)  # the user's layers: tried as asked


def test_load_settings_judges_the_context_the_user_asked_for():
    long = header(extra={"ARCH.context_length": 8192})
    hw = machine(cpu_need(4096))  # the planner's own choice (4096) fits; 8192 does not
    assert ctx_layers(plan.load_settings(long, hw, None, None)) == (4096, 0)
    with pytest.raises(DoesNotFitError, match="8,192-token context"):
        plan.load_settings(long, hw, 8192, None)


def test_a_model_without_a_name_is_called_the_model():
    nameless = header(extra={"general.name": None})
    with pytest.raises(DoesNotFitError, match="^the model won't fit: needs "):
        plan.load_settings(nameless, machine(1 << 20), None, None)


def test_load_settings_leaves_a_header_it_cannot_estimate_to_llama_cpp():
    odd = header(extra={"ARCH.block_count": None})
    assert ctx_layers(plan.load_settings(odd, machine(1 << 34), None, None)) == (None, 0)
    assert ctx_layers(plan.load_settings(odd, machine(1 << 34), 512, None)) == (512, 0)
    assert ctx_layers(plan.load_settings(odd, machine(1 << 34), None, 7)) == (None, 7)


# -- several sequences -----------------------------------------------------------------------------


def parallel_need(n: int, n_ctx_seq: int = 512) -> int:
    return plan._estimate(header(), machine(1), plan._settings(n * n_ctx_seq, 0, "f16", n_seq=n)).cpu.total


@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_max_parallel_is_the_most_sequences_that_fit_with_headroom(n):
    hw = machine(math.ceil(parallel_need(n) / 0.8))
    assert plan.max_parallel(header(), hw, 512, 0) == n
    assert plan.max_parallel(header(), machine(1 << 40), 512, 0, lines=3) == 3  # no more than the input has


def test_max_parallel_is_one_when_a_header_cannot_be_estimated():
    odd = header(extra={"ARCH.block_count": None})
    assert plan.max_parallel(odd, machine(1 << 40), 512, 0) == 1


# -- quantizations ---------------------------------------------------------------------------------


def test_a_sized_header_scales_every_tensor_to_the_file_size():
    h = header()
    half = plan.sized_header(h, h.data_offset + h.tensor_bytes // 2)
    assert half.file_size == h.data_offset + h.tensor_bytes // 2
    assert [t.n_bytes for t in half.tensors] == [t.n_bytes // 2 for t in h.tensors]
    assert plan.sized_header(h, 0).tensor_bytes == 0


BIG = header(tensors=[t("blk.0.ffn_up.weight", (4096, 4096))])  # 16.9 M parameters


def quant(name: str, bits: float) -> tuple[str, int, object]:
    """``name`` of the model above at ``bits`` per weight."""
    size = int(BIG.n_params * bits / 8)
    return name, size, plan.sized_header(BIG, size)


def test_the_best_quant_that_fits_is_chosen_and_the_next_one_up_is_named():
    cands = [quant("Q8_0", 8.5), quant("Q4_K_M", 4.5), quant("Q2_K", 2.6)]
    need = {q: plan.plan_load(h, machine(1 << 40), 4096).estimate.cpu.total for q, _, h in cands}
    hw = machine(math.ceil(need["Q4_K_M"] / 0.8))
    result = plan.plan_quants(cands, hw, 4096)
    assert result.chosen.quant == "Q4_K_M"
    assert [c.quant for c in result.choices] == ["Q8_0", "Q4_K_M", "Q2_K"]
    assert result.reason.startswith(
        f"Q4_K_M: {format_bytes(need['Q4_K_M'])} of {format_bytes(hw.ram_budget)} RAM, "
        "no layers on the GPU, 4,096-token context; Q8_0 "
    )
    assert result.as_dict()["chosen"] == "Q4_K_M" and len(result.as_dict()["quants"]) == 3


def test_a_tight_fit_is_taken_when_nothing_fits_with_headroom_and_says_so():
    cands = [quant("Q8_0", 8.5), quant("Q4_K_M", 4.5)]
    small = plan.plan_load(cands[1][2], machine(1 << 40), 4096).estimate.cpu.total
    result = plan.plan_quants(cands, machine(small), 4096)
    assert result.chosen.quant == "Q4_K_M" and result.chosen.plan.verdict is Verdict.TIGHT
    assert "(tight: less than 20% left over)" in result.reason


def test_when_nothing_fits_the_smallest_is_named():
    cands = [quant("Q8_0", 8.5), quant("Q4_K_M", 4.5)]
    result = plan.plan_quants(cands, machine(1 << 20), 4096)
    assert result.chosen is None and result.as_dict()["chosen"] is None
    assert result.reason.startswith("no quantization fits: the smallest, Q4_K_M, needs ")
    assert result.reason.endswith("at a 4,096-token context")


def test_the_best_quant_offered_says_so():
    result = plan.plan_quants([quant("Q8_0", 8.5), quant("F16", 16.0)], machine(1 << 40), 4096)
    assert result.chosen.quant == "Q8_0"  # unquantized only when nothing else is offered
    assert result.reason.endswith("; it is the best quantization offered short of unquantized weights")
    only = plan.plan_quants([quant("Q8_0", 8.5)], machine(1 << 40), 4096)
    assert only.reason.endswith("; it is the best quantization offered")
    f16 = plan.plan_quants([quant("F16", 16.0)], machine(1 << 40), 4096)
    assert f16.chosen.quant == "F16"


def test_a_full_offload_is_preferred_down_to_about_4_bits():
    q8, q4, q2 = quant("Q8_0", 8.5), quant("Q4_K_M", 4.5), quant("Q2_K", 2.6)
    gpu_machine = machine(1, 1)
    all_q4 = plan._estimate(q4[2], gpu_machine, plan._settings(4096, -1, "f16")).gpu.total
    hw = machine(1 << 34, math.ceil(all_q4 / 0.8))
    result = plan.plan_quants([q8, q4, q2], hw, 4096)
    assert result.chosen.quant == "Q4_K_M" and result.chosen.full_offload
    assert "all on the GPU" in result.reason
    assert "; Q8_0 fits only with " in result.reason and "layers on the GPU" in result.reason
    all_q2 = plan._estimate(q2[2], gpu_machine, plan._settings(4096, -1, "f16")).gpu.total
    hw = machine(1 << 34, math.ceil(all_q2 / 0.8))
    result = plan.plan_quants([q8, q4, q2], hw, 4096)
    assert result.chosen.quant == "Q8_0" and not result.chosen.full_offload  # not down to 2 bits for it


def test_an_empty_list_of_quants_is_a_programming_error():
    with pytest.raises(ValueError):
        plan.plan_quants([], machine(1 << 30))


def test_a_draft_model_s_weights_count_with_the_model_s():
    """Speculative decoding (issue 28): the draft loads beside the model, so a machine that holds
    the model alone may not hold both."""
    h = header()
    both = plan.with_draft(h, h)
    weights = sum(x.n_bytes for x in h.tensors)
    assert cpu_need(4096, h=both) - cpu_need(4096, h=h) >= weights
