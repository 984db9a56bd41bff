"""The memory estimate on model shapes built by hand, where every byte can be counted on paper from
llama.cpp's rules (issue 16): which layers go to the GPU, KV cache types and their block sizes,
sliding-window layers, MLA, recurrent state, a tied output layer, MoE experts.

A small llama-style model: 4 layers, n_embd 64, 4 heads of 16, 2 KV heads, a vocabulary of 1000.
Per layer and per cell the KV cache holds 2 * 16 = 32 values for K and 32 for V."""

from __future__ import annotations

import pytest
from support.shapes import EMBD_BYTES, LAYER_BYTES, N_EMBD, N_LAYER, N_VOCAB, OUT_BYTES, OUT_NORM, header, t

from localllm.errors import EstimateError, UsageError
from localllm.fit import estimate as est
from localllm.fit.estimate import MiB, Settings
from localllm.gguf.header import GGUFHeader


def kv_layer(cells: int, type_k: str = "f16", type_v: str = "f16", values: int = 32) -> int:
    per = {
        "f32": 4.0,
        "f16": 2.0,
        "bf16": 2.0,
        "q8_0": 34 / 32,
        "q4_0": 18 / 32,
        "q4_1": 20 / 32,
        "q5_0": 22 / 32,
        "q5_1": 24 / 32,
    }
    return int(values * cells * per[type_k]) + int(values * cells * per[type_v])


# -- which layers go where -----------------------------------------------------------------------


def test_all_on_the_cpu():
    e = est.estimate(header(), Settings(n_ctx=256))
    assert e.cpu.weights == EMBD_BYTES + N_LAYER * LAYER_BYTES + OUT_NORM + OUT_BYTES
    assert e.cpu.kv == N_LAYER * kv_layer(256)
    assert e.gpu == est.DeviceBytes() and not e.all_on_gpu
    assert e.cpu.output == N_VOCAB * 4 and e.cpu.runtime == est.RUNTIME_RAM
    assert e.total == e.cpu.total


@pytest.mark.parametrize("ngl", [1, 2, 3, 4])
def test_a_partial_offload_puts_the_last_layers_and_the_output_layer_on_the_gpu(ngl):
    """With n_gpu_layers = k the output layer goes first, then blocks from the last one down."""
    e = est.estimate(header(), Settings(n_ctx=256, n_gpu_layers=ngl))
    blocks_on_gpu = ngl - 1
    assert e.gpu.weights == OUT_NORM + OUT_BYTES + blocks_on_gpu * LAYER_BYTES
    assert e.cpu.weights == EMBD_BYTES + (N_LAYER - blocks_on_gpu) * LAYER_BYTES
    assert e.gpu.kv == blocks_on_gpu * kv_layer(256)
    assert e.cpu.kv == (N_LAYER - blocks_on_gpu) * kv_layer(256)
    assert e.gpu.runtime == est.BACKENDS["gpu"].runtime and e.gpu.output == 0  # a GPU build of unknown kind
    assert not e.all_on_gpu


@pytest.mark.parametrize("ngl", [-1, 5, 6, 99])
def test_every_layer_on_the_gpu_keeps_only_the_embeddings_on_the_cpu(ngl):
    e = est.estimate(header(), Settings(n_ctx=256, n_gpu_layers=ngl))
    assert e.settings.n_gpu_layers == N_LAYER + 1 and e.all_on_gpu
    assert e.cpu.weights == EMBD_BYTES and e.cpu.kv == 0
    assert e.gpu.weights == N_LAYER * LAYER_BYTES + OUT_NORM + OUT_BYTES
    assert e.gpu.kv == N_LAYER * kv_layer(256)


def test_a_tied_output_layer_is_copied_to_the_gpu_with_it():
    on_cpu = est.estimate(header(tied=True), Settings(n_ctx=256))
    assert on_cpu.cpu.weights == EMBD_BYTES + N_LAYER * LAYER_BYTES + OUT_NORM
    offloaded = est.estimate(header(tied=True), Settings(n_ctx=256, n_gpu_layers=1))
    assert offloaded.cpu.weights == EMBD_BYTES + N_LAYER * LAYER_BYTES
    assert offloaded.gpu.weights == OUT_NORM + EMBD_BYTES


def test_a_tied_output_layer_is_copied_whatever_the_tensor_order():
    h = header(tied=True)
    embd, *rest = h.tensors
    reordered = GGUFHeader(h.version, h.metadata, (*rest, embd), h.alignment, h.data_offset, h.header_size, None)
    e = est.estimate(reordered, Settings(n_ctx=256, n_gpu_layers=3))
    assert e.gpu.weights == 2 * LAYER_BYTES + OUT_NORM + EMBD_BYTES


def test_layers_of_tensors():
    assert est.layer_of("blk.12.attn_q.weight", 30) == 12
    assert est.layer_of("output.weight", 30) == 30 and est.layer_of("output_norm.weight", 30) == 30
    assert est.layer_of("token_embd.weight", 30) is None and est.layer_of("rope_freqs.weight", 30) is None
    assert est.layer_of("outputx.weight", 30) is None


# -- the KV cache ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_k", "type_v"),
    [
        ("f16", "f16"),
        ("f32", "f32"),
        ("bf16", "f16"),
        ("q8_0", "q8_0"),
        ("q4_0", "q4_0"),
        ("q8_0", "f16"),
        ("q4_1", "q5_0"),
        ("q5_1", "q4_0"),
    ],
)
def test_kv_cache_types_use_llama_cpp_block_sizes(type_k, type_v):
    """q8_0 is 34 bytes per 32 values, q4_0 18, q4_1 20, q5_0 22, q5_1 24."""
    e = est.estimate(header(), Settings(n_ctx=256, type_k=type_k, type_v=type_v, flash_attn=True))
    assert e.cpu.kv == N_LAYER * kv_layer(256, type_k, type_v)
    assert e.notes == ()


def test_a_kv_block_is_counted_whole():
    assert est._kv_bytes(33, "q8_0") == 68 and est._kv_bytes(32, "q8_0") == 34 and est._kv_bytes(1, "q4_0") == 18
    assert est._kv_bytes(0, "q4_0") == 0 and est._kv_bytes(3, "f16") == 6


def test_the_context_is_padded_to_256_cells():
    e = est.estimate(header(), Settings(n_ctx=300))
    assert e.settings.n_ctx == 512 and e.cpu.kv == N_LAYER * kv_layer(512)
    assert est.estimate(header(), Settings(n_ctx=256)).settings.n_ctx == 256
    assert est.estimate(header(), Settings(n_ctx=1)).settings.n_ctx == 256


def test_sequences_share_one_unified_cache_but_each_has_its_output_rows():
    one = est.estimate(header(), Settings(n_ctx=512))
    four = est.estimate(header(), Settings(n_ctx=512, n_seq=4))
    assert four.cpu.kv == one.cpu.kv
    assert four.cpu.output == 4 * one.cpu.output == 4 * N_VOCAB * 4


def test_layers_without_attention_hold_no_kv():
    h = header(extra={"ARCH.attention.head_count_kv": [2, 0, 2, 0]})
    assert est.estimate(h, Settings(n_ctx=256)).cpu.kv == 2 * kv_layer(256)


def test_per_layer_kv_heads_are_counted_per_layer():
    h = header(extra={"ARCH.attention.head_count_kv": [1, 2, 4, 2]})
    e = est.estimate(h, Settings(n_ctx=256))
    assert e.cpu.kv == sum(kv_layer(256, values=n * 16) for n in (1, 2, 4, 2))


def test_without_head_count_kv_every_head_has_its_kv():
    h = header(extra={"ARCH.attention.head_count_kv": None})
    assert est.estimate(h, Settings(n_ctx=256)).cpu.kv == N_LAYER * kv_layer(256, values=64)


def test_explicit_key_and_value_lengths_are_used():
    h = header(extra={"ARCH.attention.key_length": 24, "ARCH.attention.value_length": 8})
    e = est.estimate(h, Settings(n_ctx=256))
    assert e.cpu.kv == N_LAYER * (2 * 24 * 256 * 2 + 2 * 8 * 256 * 2)
    only_k = header(extra={"ARCH.attention.key_length": 24})
    assert est.estimate(only_k, Settings(n_ctx=256)).cpu.kv == N_LAYER * kv_layer(256, values=48)


def test_mla_caches_the_compressed_kv_for_k_and_nothing_for_v():
    h = header("deepseek2", extra={"ARCH.attention.kv_lora_rank": 32, "ARCH.rope.dimension_count": 8})
    e = est.estimate(h, Settings(n_ctx=256))
    assert e.cpu.kv == N_LAYER * (32 + 8) * 256 * 2
    q8 = est.estimate(h, Settings(n_ctx=256, type_k="q8_0", type_v="q8_0", flash_attn=True))
    assert q8.cpu.kv == N_LAYER * (40 * 256 // 32) * 34


def test_mla_without_a_rope_dimension_assumes_64():
    h = header("deepseek2", extra={"ARCH.attention.kv_lora_rank": 32})
    assert est.estimate(h, Settings(n_ctx=256)).cpu.kv == N_LAYER * (32 + 64) * 256 * 2


# -- sliding-window layers -------------------------------------------------------------------------


def swa_header(arch: str = "gemma2", **extra) -> GGUFHeader:
    return header(arch, extra={"ARCH.attention.sliding_window": 128, **extra})


def test_sliding_window_layers_hold_the_window_when_not_full():
    """gemma2 alternates: layers 0 and 2 slide, 1 and 3 are dense. A window of 128 with one
    sequence and a 512-token batch needs PAD(128 + 512, 256) = 768 cells."""
    e = est.estimate(swa_header(), Settings(n_ctx=2048, swa_full=False))
    assert e.cpu.kv == 2 * kv_layer(2048) + 2 * kv_layer(768)
    full = est.estimate(swa_header(), Settings(n_ctx=2048))
    assert full.cpu.kv == N_LAYER * kv_layer(2048)


def test_a_window_larger_than_the_context_holds_the_context():
    e = est.estimate(swa_header(), Settings(n_ctx=512, swa_full=False))
    assert e.cpu.kv == N_LAYER * kv_layer(512)


def test_the_window_grows_with_sequences_and_batch():
    e = est.estimate(swa_header(), Settings(n_ctx=4096, swa_full=False, n_seq=4, n_ubatch=256, n_batch=256))
    assert e.cpu.kv == 2 * kv_layer(4096) + 2 * kv_layer(768)  # PAD(4 * 128 + 256, 256)


@pytest.mark.parametrize(
    ("arch", "extra", "sliding"),
    [
        ("gemma2", {}, {0, 2}),
        ("gemma3", {}, {0, 1, 2, 3}),  # pattern 6: layers 0-4 of every 6 slide
        ("cohere2", {}, {0, 1, 2}),
        ("smallthinker", {}, {1, 2, 3}),  # dense first
        ("phi3", {}, set()),  # pattern 1: llama.cpp marks no layer (il % 1 < 0 never holds)
        ("llama", {}, set()),  # no pattern known: no sliding layer
        ("llama", {"ARCH.attention.sliding_window_pattern": [True, False, False, True]}, {0, 3}),
        ("llama", {"ARCH.attention.sliding_window_pattern": 2}, {0, 2}),
        ("gemma2", {"ARCH.attention.sliding_window_pattern": 0}, {0, 1, 2, 3}),
    ],
)
def test_which_layers_slide(arch, extra, sliding):
    e = est.estimate(swa_header(arch, **extra), Settings(n_ctx=2048, swa_full=False))
    assert e.cpu.kv == (N_LAYER - len(sliding)) * kv_layer(2048) + len(sliding) * kv_layer(768)


# -- recurrent state -------------------------------------------------------------------------------


def test_mamba_state_is_per_sequence_on_the_layers_without_attention():
    ssm = {
        "ARCH.ssm.conv_kernel": 4,
        "ARCH.ssm.inner_size": 128,
        "ARCH.ssm.state_size": 16,
        "ARCH.attention.head_count_kv": [0, 2, 0, 2],
    }
    state = 4 * ((4 - 1) * (128 + 2 * 16) + 16 * 128)
    e = est.estimate(header(extra=ssm), Settings(n_ctx=256, n_seq=3))
    assert e.cpu.kv == 2 * kv_layer(256) + 2 * 3 * state
    groups = est.estimate(header(extra={**ssm, "ARCH.ssm.group_count": 2}), Settings(n_ctx=256))
    assert groups.cpu.kv == 2 * kv_layer(256) + 2 * 4 * ((4 - 1) * (128 + 2 * 2 * 16) + 16 * 128)


def test_a_pure_recurrent_model_has_state_on_every_layer():
    rwkv = {"ARCH.wkv.head_size": 16, "ARCH.attention.head_count_kv": None}
    e = est.estimate(header(extra=rwkv), Settings(n_ctx=256))
    state = 4 * (2 * N_EMBD + N_EMBD * 16)
    assert e.cpu.kv == N_LAYER * kv_layer(256, values=64) + N_LAYER * state


def test_recurrent_state_goes_with_its_layer_to_the_gpu():
    ssm = {
        "ARCH.ssm.conv_kernel": 4,
        "ARCH.ssm.inner_size": 128,
        "ARCH.ssm.state_size": 16,
        "ARCH.attention.head_count_kv": [0, 2, 0, 2],
    }
    state = 4 * ((4 - 1) * (128 + 2 * 16) + 16 * 128)
    e = est.estimate(header(extra=ssm), Settings(n_ctx=256, n_gpu_layers=2))
    assert e.gpu.kv == kv_layer(256) and e.cpu.kv == kv_layer(256) + 2 * state


# -- experts and the compute buffer ----------------------------------------------------------------


def moe_header() -> GGUFHeader:
    experts = [t(f"blk.{i}.ffn_up_exps.weight", (N_EMBD, 32, 8)) for i in range(N_LAYER)]
    shared = [t(f"blk.{i}.ffn_up_shexp.weight", (N_EMBD, 32)) for i in range(N_LAYER)]
    return header(
        extra={"ARCH.expert_count": 8, "ARCH.expert_used_count": 2, "ARCH.expert_feed_forward_length": 32},
        tensors=experts + shared,
    )


def test_expert_tensors_are_counted_apart():
    e = est.estimate(moe_header(), Settings(n_ctx=256))
    assert e.expert_bytes == N_LAYER * (N_EMBD * 32 * 8 * 4 + N_EMBD * 32 * 4)
    assert est.estimate(header(), Settings(n_ctx=256)).expert_bytes == 0


def test_the_compute_buffer_grows_with_the_context_without_flash_attention():
    small = est.estimate(header(), Settings(n_ctx=1024, flash_attn=False))
    big = est.estimate(header(), Settings(n_ctx=4096, flash_attn=False))
    fa = est.estimate(header(), Settings(n_ctx=4096, flash_attn=True))
    assert big.cpu.compute - small.cpu.compute == 3072 * 512 * 4 * (4 + 1)  # scores of 4 heads, one mask
    assert fa.cpu.compute < big.cpu.compute


def test_a_gpu_backend_keeps_a_compute_buffer_even_with_no_layer_offloaded():
    without = est.estimate(header(), Settings(n_ctx=256))
    with_gpu = est.estimate(header(), Settings(n_ctx=256), gpu_present=True)
    assert without.gpu.compute == 0 and with_gpu.gpu.compute > est.COMPUTE_SLACK
    assert with_gpu.gpu.runtime == est.BACKENDS["gpu"].runtime_no_layers and without.gpu.runtime == 0
    assert est.estimate(header(), Settings(n_ctx=256, n_gpu_layers=2), gpu_present=False).gpu.runtime == 0


# -- settings ----------------------------------------------------------------------------------------


def test_settings_are_resolved_as_llama_cpp_applies_them():
    s = est.resolve_settings(header(), Settings(n_ctx=100, n_batch=512, n_ubatch=512))
    assert (s.n_ctx, s.n_batch, s.n_ubatch, s.flash_attn) == (256, 100, 100, None)  # "auto": decided per device
    assert est.estimate(header(), Settings(n_ctx=100)).settings.flash_attn is True  # on, on a CPU build
    s = est.resolve_settings(header(), Settings(n_ctx=4096, n_batch=2048, n_ubatch=256, flash_attn=False))
    assert (s.n_ctx, s.n_batch, s.n_ubatch, s.flash_attn) == (4096, 2048, 256, False)
    assert est.resolve_settings(header(), Settings(n_gpu_layers=0)).n_gpu_layers == 0
    assert est.resolve_settings(header(), Settings(n_gpu_layers=5)).n_gpu_layers == 5


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (Settings(type_k="q3_k"), "unknown KV cache type 'q3_k'"),
        (Settings(type_v="int8"), "unknown KV cache type 'int8'"),
        (Settings(n_ctx=0), "the context must hold at least 1 token"),
        (Settings(type_v="q8_0", flash_attn=False), "a q8_0 V cache needs flash attention"),
    ],
)
def test_impossible_settings_are_one_usage_error(settings, message):
    with pytest.raises(UsageError) as err:
        est.estimate(header(), settings)
    assert str(err.value) == message


@pytest.mark.parametrize("type_v", ["f32", "f16", "bf16"])
def test_a_quantized_k_cache_or_a_float_v_cache_without_flash_attention_is_fine(type_v):
    e = est.estimate(header(), Settings(n_ctx=256, type_k="q8_0", type_v=type_v, flash_attn=False))
    assert e.cpu.kv == N_LAYER * kv_layer(256, "q8_0", type_v) and e.notes == ()


def test_a_header_without_layers_cannot_be_estimated():
    h = header(extra={"ARCH.block_count": None})
    with pytest.raises(EstimateError, match="tiny: the header gives no block_count"):
        est.estimate(h)


def test_the_estimate_as_json():
    d = est.estimate(header(), Settings(n_ctx=256, n_gpu_layers=2)).as_dict()
    assert (d["n_ctx"], d["n_gpu_layers"], d["n_layer"], d["type_k"], d["type_v"], d["flash_attn"]) == (
        256,
        2,
        4,
        "f16",
        "f16",
        True,
    )
    assert d["total"] == d["cpu"]["total"] + d["gpu"]["total"]
    assert d["cpu"]["total"] == sum(d["cpu"][k] for k in ("weights", "kv", "compute", "output", "runtime"))
    assert d["expert_bytes"] == 0 and d["notes"] == []


def test_llama_cpp_buffers_are_summed_per_device():
    got = est.from_buffers(
        {
            "CPU_Mapped model": 10.0,
            "CPU_REPACK model": 2.0,
            "CUDA0 model": 100.0,
            "CUDA0 KV": 8.0,
            "CPU KV": 1.0,
            "CUDA0 RS": 0.5,
            "CUDA0 compute": 20.0,
            "CUDA_Host compute": 3.0,
            "CPU output": 0.25,
            "Metal weird": 9.0,
        }
    )
    assert got["CPU"] == est.DeviceBytes(weights=12 * MiB, kv=1 * MiB, compute=3 * MiB, output=MiB // 4)
    assert got["CUDA0"] == est.DeviceBytes(weights=100 * MiB, kv=int(8.5 * MiB), compute=20 * MiB)
    assert got["Metal"] == est.DeviceBytes()
    assert got["CPU"].llama_cpp == got["CPU"].total == (12 + 1 + 3 + 0.25) * MiB
