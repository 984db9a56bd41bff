"""How many bytes a model needs on each device, from its GGUF header alone.

Follows what llama.cpp (the build bundled with llama-cpp-python 0.3.36) does when it loads a model
and creates a context with localllm's engine settings:

- Weights: the exact tensor sizes from the header. ``token_embd`` stays on the CPU; with
  ``n_gpu_layers = k`` the last ``k`` "layers" go to the GPU, where the output layer (``output``,
  ``output_norm``) counts as layer ``n_layer`` and is therefore the first one offloaded; tensors
  ``blk.N.*`` go with layer N. A model without ``output.weight`` reuses ``token_embd``; when the
  output layer is offloaded, llama.cpp puts a copy of it on the GPU. ``cpu_moe_layers = n`` keeps
  the routed experts of layers 0 .. n-1 on the CPU wherever their layer is (tensor overrides,
  :func:`cpu_expert_patterns`).
- KV cache: ``n_ctx`` rounded up to 256 cells; per layer ``n_head_kv(il) * head_dim`` values for K
  and for V (``head_count_kv`` may be a per-layer list; 0 means a layer without attention).
  Sliding-window layers hold ``PAD(min(n_ctx, n_swa * n_seq + n_ubatch), 256)`` cells unless
  ``swa_full`` (llama.cpp's default context parameters, which the engine keeps, use a full-size
  cache). MLA (deepseek2 and kin) caches ``kv_lora_rank + n_rot`` values per token for K and
  nothing for V. Quantized KV: q8_0 is 34 bytes per 32 values, q4_0 18 per 32; a quantized V cache
  needs flash attention. Recurrent layers (Mamba/RWKV-style state) hold a fixed state per sequence.
- Compute buffer: the largest set of tensors alive at once in the graph llama.cpp reserves for one
  ``n_ubatch`` batch with every token an output: the logits stage
  (``n_vocab * n_ubatch`` floats) or the attention stage (without flash attention the
  ``n_kv * n_ubatch * n_head`` score matrix plus the mask), whichever is bigger, plus the
  activations around them. On a GPU build llama.cpp also runs the big matrix products of layers
  kept on the CPU on the GPU ("op offload", batches of 32 tokens or more): the weights and KV
  views they read are copied into the GPU's compute buffer, so a GPU build uses the GPU even at
  ``n_gpu_layers = 0`` (the logits stage plus a copy of the output weights), and its host
  compute buffer only holds the inputs (masks, token embeddings). Calibrated on logged
  ``compute buffer size`` lines: CPU build here, CUDA build in tests/fit/calibration/.
- Flash attention ``auto`` (llama.cpp's default): on, unless a layer's attention sits on a GPU
  whose backend has no kernel for the head size (:data:`BACKENDS`); a quantized V cache turns
  it on.
- CPU weight repacking (llama.cpp's ``CPU_REPACK`` buffer): on CPUs with the features of
  :func:`repack_types`, matrix weights of those types that stay on the CPU are copied into an
  interleaved layout beside the mapped file: their bytes count twice.
- Output buffer: ``n_vocab`` floats per sequence (llama.cpp's ``CPU output buffer``).
- Runtime: what the process holds besides llama.cpp's buffers: on the CPU (Python, libraries),
  counted for the RAM budget, and on a GPU the driver context, BLAS workspaces and kernels
  (:data:`BACKENDS`), shown apart.

Everything is in bytes. :func:`estimate` takes a :class:`~localllm.ggufmeta.GGUFHeader` (local or
fetched with :func:`read_remote_header`) and :class:`Settings`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace

from localllm.errors import EstimateError, UsageError
from localllm.gguf import header as ggufmeta
from localllm.gguf import validate

MiB = 1 << 20

# Bytes of a ggml type per element, for the KV cache types llama.cpp accepts.
KV_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q5_1": (32, 24),
    "q5_0": (32, 22), "q4_1": (32, 20), "q4_0": (32, 18),
}  # fmt: skip

# Sliding-window layer patterns llama.cpp applies when the file does not give one:
# (n_pattern, dense_first) as in llama_hparams::set_swa_pattern.
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False), "gemma3": (6, False), "gemma3n": (5, False), "gemma-embedding": (6, False),
    "cohere2": (4, False), "llama4": (4, False), "gpt-oss": (2, False), "exaone4": (4, False),
    "olmo2": (4, False), "afmoe": (4, False), "smallthinker": (4, True), "plamo3": (8, False),
    "modern-bert": (3, True), "phi3": (1, False),
}  # fmt: skip

# Process memory besides llama.cpp's buffers: CPython, numpy-free localllm, llama.cpp's code and
# thread stacks. Measured as the RSS of a fresh process that imported the engine and initialised
# the backend (docs/benchmarks.md); rounded up.
RUNTIME_RAM = 96 * MiB
# Extra compute-buffer bytes beyond the stages modelled below (graph bookkeeping, alignment).
COMPUTE_SLACK = 4 * MiB

# Flash-attention kernels of ggml-cuda (also built for ROCm/HIP): (K head size, V head size) pairs
# that ggml_cuda_get_best_fattn_kernel accepts (vendor/llama.cpp/ggml/src/ggml-cuda/fattn.cu;
# 192, 320, 512 and 576 only with grouped-query attention, which the models using them have).
_CUDA_FA_HEADS = frozenset(
    {(d, d) for d in (40, 64, 72, 80, 96, 112, 128, 256, 512)} | {(192, 128), (320, 256), (576, 512)}
)
# ggml-metal: K head sizes its FLASH_ATTN_EXT supports, with V no larger than K (ggml-metal-device.m).
_METAL_FA_K = frozenset({32, 40, 48, 64, 72, 80, 96, 112, 128, 192, 256, 320, 512, 576})


@dataclass(frozen=True)
class Backend:
    """What a GPU backend costs beside llama.cpp's logged buffers, and where it runs flash attention."""

    name: str
    runtime: int  # GPU bytes the process holds beyond its buffers when layers are offloaded
    runtime_no_layers: int  # ... with n_gpu_layers 0 (a GPU build still keeps a compute buffer there)
    no_fa_extra: int  # more, when attention runs without flash attention for want of a kernel
    source: str

    def flash_attn_kernel(self, head_k: int, head_v: int) -> bool:
        if self.name in ("cuda", "rocm"):
            return (head_k, head_v) in _CUDA_FA_HEADS
        if self.name == "metal":
            return head_k in _METAL_FA_K and head_v <= head_k
        if self.name == "vulkan":
            return head_k % 8 == 0 and head_v % 8 == 0  # ggml-vulkan.cpp supports_op
        return True


# Per backend. CUDA is fitted on 156 real loads on an H100 (tests/fit/calibration/h100-cuda: NVML's
# peak minus the logged CUDA0 buffers; medians 596.7 MiB with layers offloaded, 529.1 MiB at
# n_gpu_layers 0, 694.8 MiB for the gemma3 models (head size 160) when flash attention is off;
# tests/fit/test_calibration.py refits them). The others are not measured: ROCm runs the same
# ggml-cuda code through HIP and takes CUDA's figures; Vulkan and Metal (unified memory: these bytes
# are RAM) keep the 256 MiB that peers allow for a driver context (unslothai/unsloth#6718 reserves
# 320 MiB for a CUDA context). "gpu" is a GPU build of unknown backend: CUDA's measured figures.
BACKENDS: dict[str, Backend] = {
    "cuda": Backend("cuda", 597 * MiB, 529 * MiB, 98 * MiB, "measured: H100, CUDA 13, driver 580"),
    "rocm": Backend("rocm", 597 * MiB, 529 * MiB, 98 * MiB, "unmeasured: CUDA's figures (ggml-cuda via HIP)"),
    "vulkan": Backend("vulkan", 256 * MiB, 256 * MiB, 0, "unmeasured default"),
    "metal": Backend("metal", 256 * MiB, 256 * MiB, 0, "unmeasured default"),
    "gpu": Backend("gpu", 597 * MiB, 529 * MiB, 98 * MiB, "unknown backend: CUDA's measured figures"),
    # llama.cpp RPC workers: a worker's backend context lives in the worker's own process, outside
    # the memory it reports free; this process holds only the buffers it allocates there.
    "rpc": Backend("rpc", 0, 0, 0, "ggml-rpc workers: their backends' own memory is the workers'"),
}

# llama.cpp offloads an op of a CPU-resident weight to the GPU for batches of this many tokens or
# more (ggml-cuda's offload_op: min_batch_size 32).
OP_OFFLOAD_MIN_BATCH = 32

# CPU weight repacking (vendor/llama.cpp/ggml/src/ggml-cpu/repack.cpp,
# ggml_repack_get_optimal_repack_type): ggml type -> rows multiple, per CPU feature set.
_Q4_0, _Q2_K, _Q4_K, _Q5_K, _Q6_K, _Q8_0, _IQ4_NL, _MXFP4, _Q1_0 = 2, 10, 12, 13, 14, 8, 20, 39, 41
_REPACK_AVX2 = {_Q4_0: 8, _Q4_K: 8, _IQ4_NL: 8, _MXFP4: 8}
_REPACK_AVX512 = {_Q2_K: 8}
_REPACK_NEON_DOTPROD = {_Q4_0: 4, _Q4_K: 8, _Q5_K: 8, _Q6_K: 8, _IQ4_NL: 4, _MXFP4: 4, _Q8_0: 4, _Q1_0: 4}


def repack_types(cpu_features: Collection[str]) -> dict[int, int]:
    """The weight types llama.cpp's CPU backend repacks on a CPU with ``cpu_features`` (llama.cpp's
    system_info names: AVX2, AVX512, NEON, DOTPROD, MATMUL_INT8), each with the multiple of rows it
    needs."""
    features = set(cpu_features)
    types: dict[int, int] = {}
    if "NEON" in features and features & {"DOTPROD", "MATMUL_INT8"}:
        types.update(_REPACK_NEON_DOTPROD)
    if "AVX2" in features:
        types.update(_REPACK_AVX2)
    if "AVX512" in features:
        types.update(_REPACK_AVX512)
    return types


_BLK_RE = re.compile(r"^blk\.(\d+)\.")
_EXPERT_RE = re.compile(r"_(?:ch_)?exps\b|_shexp\b")
# The routed experts' weights that llama.cpp's ``--n-cpu-moe N`` keeps on the CPU (its
# LLM_FFN_EXPS_REGEX, after ``blk\.N``); shared experts (``_shexp``) run for every token and stay.
CPU_EXPERTS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
_CPU_EXPERTS_RE = re.compile(CPU_EXPERTS)


def cpu_expert_patterns(n_layers: int) -> list[str]:
    """The tensor buffer-type override patterns (regexes on tensor names) that keep the routed
    experts of layers ``0 .. n_layers-1`` on the CPU, as llama.cpp's ``--n-cpu-moe`` writes them."""
    return [f"blk\\.{il}{CPU_EXPERTS}" for il in range(n_layers)]


def cpu_expert_bytes(header: ggufmeta.GGUFHeader, n_layers: int) -> int:
    """Bytes of the tensors :func:`cpu_expert_patterns` keeps on the CPU."""
    total = 0
    for t in header.tensors:
        match = _BLK_RE.match(t.name)
        if match and int(match.group(1)) < n_layers and _CPU_EXPERTS_RE.search(t.name):
            total += t.n_bytes
    return total


@dataclass(frozen=True)
class Settings:
    """How the model would be loaded; the defaults are the engine's."""

    n_ctx: int = 4096
    n_gpu_layers: int = 0  # -1: all layers and the output layer
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool | None = None  # None: llama.cpp decides (on, where the device supports it)
    n_batch: int = 512
    n_ubatch: int = 512
    n_seq: int = 1
    swa_full: bool = True  # llama.cpp's default context parameters; the engine keeps it
    cpu_moe_layers: int = 0  # the routed experts of layers 0 .. N-1 stay on the CPU (--n-cpu-moe N)

    def check(self) -> None:
        for name in ("type_k", "type_v"):
            if getattr(self, name) not in KV_TYPES:
                raise UsageError(
                    f"unknown KV cache type '{getattr(self, name)}'", hint=f"use one of {', '.join(KV_TYPES)}"
                )
        if self.n_ctx < 1:
            raise UsageError("the context must hold at least 1 token")
        if self.cpu_moe_layers < 0:
            raise UsageError("the layers whose experts stay on the CPU cannot be fewer than 0")
        if self.type_v not in ("f32", "f16", "bf16") and self.flash_attn is False:
            raise UsageError(
                f"a {self.type_v} V cache needs flash attention", hint="turn flash attention on or use an f16 V cache"
            )


@dataclass(frozen=True)
class DeviceBytes:
    weights: int = 0
    kv: int = 0
    compute: int = 0
    output: int = 0  # logits buffer (host)
    runtime: int = 0  # process / driver overhead

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.output + self.runtime

    @property
    def llama_cpp(self) -> int:
        """What llama.cpp itself logs as buffers (everything but the runtime)."""
        return self.weights + self.kv + self.compute + self.output

    def __add__(self, other: DeviceBytes) -> DeviceBytes:
        return DeviceBytes(
            self.weights + other.weights, self.kv + other.kv, self.compute + other.compute,
            self.output + other.output, self.runtime + other.runtime,
        )  # fmt: skip

    def as_dict(self) -> dict[str, int]:
        return {"weights": self.weights, "kv": self.kv, "compute": self.compute, "output": self.output,
                "runtime": self.runtime, "total": self.total}  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    settings: Settings  # as resolved: n_ctx padded, n_gpu_layers in 0..n_layer+1, flash_attn decided
    n_layer: int
    cpu: DeviceBytes
    gpu: DeviceBytes
    expert_bytes: int = 0  # MoE expert tensors (could stay on the CPU with tensor overrides)
    repack_bytes: int = 0  # of cpu.weights: the repacked copies (llama.cpp's CPU_REPACK buffer)
    backend: str | None = None  # the GPU backend counted (a key of BACKENDS); None: CPU build
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.cpu.total + self.gpu.total

    @property
    def all_on_gpu(self) -> bool:
        return self.settings.n_gpu_layers >= self.n_layer + 1

    def as_dict(self) -> dict[str, object]:
        s = self.settings
        return {
            "n_ctx": s.n_ctx, "n_gpu_layers": s.n_gpu_layers, "n_layer": self.n_layer,
            "type_k": s.type_k, "type_v": s.type_v, "flash_attn": s.flash_attn, "cpu_moe_layers": s.cpu_moe_layers,
            "cpu": self.cpu.as_dict(), "gpu": self.gpu.as_dict(), "total": self.total,
            "expert_bytes": self.expert_bytes, "repack_bytes": self.repack_bytes, "backend": self.backend,
            "notes": list(self.notes),
        }  # fmt: skip


# --------------------------------------------------------------------------------------------
# The model's shape, from the header


@dataclass(frozen=True)
class ModelShape:
    arch: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: tuple[int, ...]  # per layer
    n_head_kv: tuple[int, ...]  # per layer; 0: no attention in this layer
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    swa_layers: frozenset[int]
    n_swa: int
    mla_kv: int  # values cached per token and layer with MLA; 0 without MLA
    recurrent_bytes_per_layer: int  # f32 state per sequence and recurrent layer
    recurrent_layers: frozenset[int]
    kv_lora_rank: int = 0  # MLA: the latent part of mla_kv (what flash attention reads as V)


def _int(value: object, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return max(value)
    return default


def _per_layer(value: object, n_layer: int, default: int) -> tuple[int, ...]:
    if isinstance(value, list) and len(value) >= n_layer:
        return tuple(int(v) for v in value[:n_layer])
    return (_int(value, default),) * n_layer


def model_shape(header: ggufmeta.GGUFHeader) -> ModelShape:
    validate.check(header, header.name or "the model")  # headers read from a file are checked already
    arch = header.architecture or "unknown"
    n_layer = _int(header.block_count)
    if n_layer <= 0:
        raise EstimateError(f"{header.name or 'the model'}: the header gives no block_count; cannot estimate memory")
    n_embd = _int(header.embedding_length)
    n_head = _per_layer(header.head_count, n_layer, 0)
    n_head_kv = _per_layer(header.head_count_kv, n_layer, max(n_head) if n_head else 0)
    if header.head_count_kv is None:
        n_head_kv = n_head
    max_head = max(n_head) if n_head else 0
    head_k = _int(header.arch_key("attention.key_length"), n_embd // max_head if max_head else 0)
    head_v = _int(header.arch_key("attention.value_length"), head_k)
    n_vocab = header.vocab_size or _int(header.arch_key("vocab_size"))
    if not n_vocab:
        embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
        n_vocab = embd.shape[1] if embd is not None and len(embd.shape) > 1 else 0

    n_swa = _int(header.arch_key("attention.sliding_window"))
    swa_layers = _swa_layers(header, arch, n_layer) if n_swa > 0 else frozenset()

    kv_lora = _int(header.arch_key("attention.kv_lora_rank"))
    mla_kv = 0
    if kv_lora:
        n_rot = _int(header.arch_key("rope.dimension_count"), 64)
        mla_kv = kv_lora + n_rot

    rec_bytes = _recurrent_bytes(header, n_embd)
    recurrent_layers: frozenset[int] = frozenset()
    if rec_bytes:
        recurrent_layers = frozenset(i for i in range(n_layer) if n_head_kv[i] == 0) or frozenset(range(n_layer))

    return ModelShape(
        arch=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab, n_head=n_head, n_head_kv=n_head_kv,
        head_dim_k=head_k, head_dim_v=head_v, n_ff=_int(header.arch_key("feed_forward_length")),
        n_expert=_int(header.arch_key("expert_count")), n_expert_used=_int(header.arch_key("expert_used_count")),
        n_ff_exp=_int(header.arch_key("expert_feed_forward_length")), swa_layers=swa_layers, n_swa=n_swa,
        mla_kv=mla_kv, recurrent_bytes_per_layer=rec_bytes, recurrent_layers=recurrent_layers,
        kv_lora_rank=kv_lora,
    )  # fmt: skip


def _swa_layers(header: ggufmeta.GGUFHeader, arch: str, n_layer: int) -> frozenset[int]:
    """The sliding-window layers: the file's own per-layer pattern, or the architecture's."""
    pattern = header.arch_key("attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) >= n_layer:
        return frozenset(i for i in range(n_layer) if pattern[i])
    n_pat, dense_first = SWA_PATTERNS.get(arch, (0, False)) if arch in SWA_PATTERNS else (-1, False)
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        n_pat = pattern
    if n_pat == 0:
        return frozenset(range(n_layer))
    if n_pat < 0:
        return frozenset()
    return frozenset(i for i in range(n_layer) if (i % n_pat != 0 if dense_first else i % n_pat < n_pat - 1))


def _recurrent_bytes(header: ggufmeta.GGUFHeader, n_embd: int) -> int:
    """Recurrent state (Mamba-style SSM; RWKV) per layer and sequence, kept in f32; 0 for none."""
    wkv_head = _int(header.arch_key("wkv.head_size"))
    if wkv_head:
        return 4 * (2 * n_embd + n_embd * wkv_head)
    d_conv = _int(header.arch_key("ssm.conv_kernel"))
    d_inner = _int(header.arch_key("ssm.inner_size"))
    d_state = _int(header.arch_key("ssm.state_size"))
    n_group = max(1, _int(header.arch_key("ssm.group_count"), 1))
    if d_inner and d_state:
        return 4 * ((max(d_conv, 1) - 1) * (d_inner + 2 * n_group * d_state) + d_state * d_inner)
    return 0


# --------------------------------------------------------------------------------------------
# The estimate


def _pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _kv_bytes(n_values: int, kv_type: str) -> int:
    block, size = KV_TYPES[kv_type]
    return (n_values + block - 1) // block * size


def layer_of(tensor_name: str, n_layer: int) -> int | None:
    """The layer a tensor belongs to: N for ``blk.N.*``, ``n_layer`` for the output layer,
    None for the input layer (token embedding and the rest that llama.cpp keeps on the CPU)."""
    match = _BLK_RE.match(tensor_name)
    if match:
        return int(match.group(1))
    if tensor_name.startswith(("output.", "output_norm.")):
        return n_layer
    return None


def resolve_settings(header: ggufmeta.GGUFHeader, settings: Settings) -> Settings:
    """Settings as llama.cpp will apply them: n_ctx padded to 256, batch clipped to n_ctx,
    ``n_gpu_layers`` within 0..n_layer+1 (flash attention is decided in :func:`estimate`)."""
    settings.check()
    n_layer = _int(header.block_count)
    n_ctx = _pad(settings.n_ctx, 256)
    n_batch = min(settings.n_batch, settings.n_ctx)
    ngl = settings.n_gpu_layers
    ngl = n_layer + 1 if ngl < 0 or ngl > n_layer + 1 else ngl
    return replace(settings, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(settings.n_ubatch, n_batch), n_gpu_layers=ngl)


def estimate(
    header: ggufmeta.GGUFHeader,
    settings: Settings | None = None,
    *,
    gpu_present: bool | None = None,
    backend: str | None = None,
    cpu_features: Collection[str] = (),
) -> Estimate:
    """Bytes per device to load ``header``'s model with ``settings``.

    ``gpu_present`` says whether a GPU build would run it (default: when layers are offloaded or
    ``backend`` is given); a GPU build keeps a GPU compute buffer even at 0 layers. ``backend`` is
    that build's GPU backend (a key of :data:`BACKENDS`; default "gpu"). ``cpu_features`` are the
    CPU's llama.cpp feature names (``Hardware.simd``), for weight repacking; none: no repacking.
    """
    settings = resolve_settings(header, settings or Settings())
    shape = model_shape(header)
    n_layer = shape.n_layer
    i_gpu_start = n_layer + 1 - settings.n_gpu_layers  # layers il >= i_gpu_start are on the GPU
    on_gpu = [il >= i_gpu_start for il in range(n_layer + 1)]
    if gpu_present is None:
        gpu_present = settings.n_gpu_layers > 0 or backend is not None
    gpu = BACKENDS.get(backend or "gpu", BACKENDS["gpu"]) if gpu_present else None
    fa_kernel = _fa_kernel(shape, gpu, on_gpu)
    s = replace(settings, flash_attn=_resolve_flash_attn(settings, fa_kernel))
    notes: list[str] = []

    moe = s.cpu_moe_layers
    cpu_w, gpu_w, expert = _weights(header, n_layer, on_gpu, moe)
    cpu_w += _mapped_gaps(header, n_layer, on_gpu, moe)
    repack = _repack(header, n_layer, on_gpu, repack_types(cpu_features), moe)
    cpu_kv, gpu_kv = _kv_cache(shape, s, on_gpu)
    if gpu is None:
        cpu_c, gpu_c = _compute(shape, s), 0
    else:
        cpu_c, gpu_c = _host_compute(shape, s), _gpu_compute(header, shape, s, on_gpu)
        if s.flash_attn and not fa_kernel:
            cpu_c += _kv_view_bytes(shape, s)  # attention runs on the CPU, reading a copy of K and V
    output = shape.n_vocab * 4 * s.n_seq

    if s.type_v not in ("f32", "f16", "bf16") and not s.flash_attn:
        notes.append(f"a {s.type_v} V cache needs flash attention")
    if gpu is not None and settings.flash_attn is None and not s.flash_attn:
        notes.append(f"flash attention off: {gpu.name} has no kernel for head size {shape.head_dim_k}")
    gpu_runtime = _gpu_runtime(gpu, any(on_gpu), s.flash_attn or fa_kernel)
    return Estimate(
        settings=s,
        n_layer=n_layer,
        cpu=DeviceBytes(cpu_w + repack, cpu_kv, cpu_c, output, RUNTIME_RAM),
        gpu=DeviceBytes(gpu_w, gpu_kv, gpu_c, 0, gpu_runtime),
        expert_bytes=expert,
        repack_bytes=repack,
        backend=gpu.name if gpu else None,
        notes=tuple(notes),
    )


def _gpu_runtime(gpu: Backend | None, layers_on_gpu: bool, fa_or_kernel: bool) -> int:
    """The backend's bytes beside llama.cpp's buffers (0 for a CPU build)."""
    if gpu is None:
        return 0
    if not layers_on_gpu:
        return gpu.runtime_no_layers
    return gpu.runtime + (0 if fa_or_kernel else gpu.no_fa_extra)


def _head_sizes(shape: ModelShape) -> tuple[int, int]:
    """The K and V head sizes flash attention sees (MLA: the latent cache and its rope part)."""
    if shape.mla_kv:
        return shape.mla_kv, shape.kv_lora_rank
    return shape.head_dim_k, shape.head_dim_v


def _fa_kernel(shape: ModelShape, gpu: Backend | None, on_gpu: list[bool]) -> bool:
    """Whether every layer's attention can run flash attention where it sits (the CPU always can)."""
    attends_on_gpu = any(on_gpu[il] and (shape.n_head_kv[il] or shape.mla_kv) for il in range(shape.n_layer))
    if gpu is None or not attends_on_gpu:
        return True
    return gpu.flash_attn_kernel(*_head_sizes(shape))


def _resolve_flash_attn(s: Settings, fa_kernel: bool) -> bool:
    """llama.cpp's choice for flash attention ``auto`` (llama_context: a quantized V cache turns it on;
    otherwise off when a layer's flash-attention op would land on another device than its KV cache)."""
    if s.flash_attn is not None:
        return s.flash_attn
    if s.type_v not in ("f32", "f16", "bf16"):
        return True
    return fa_kernel


def _on_gpu(name: str, il: int | None, n_layer: int, on_gpu: list[bool], cpu_moe_layers: int) -> bool:
    """Whether tensor ``name`` of layer ``il`` lives on the GPU: its layer is there, and it is not
    a routed expert of the first ``cpu_moe_layers`` layers (kept on the CPU by tensor overrides)."""
    if il is None or not on_gpu[min(il, n_layer)]:
        return False
    return not (il < cpu_moe_layers and _CPU_EXPERTS_RE.search(name))


def _weights(
    header: ggufmeta.GGUFHeader, n_layer: int, on_gpu: list[bool], cpu_moe_layers: int = 0
) -> tuple[int, int, int]:
    """Weight bytes on the CPU and on the GPU, and the MoE expert tensors' bytes among them.
    The routed experts of the first ``cpu_moe_layers`` layers stay on the CPU wherever their
    layer is."""
    cpu = gpu = expert = 0
    has_output = any(t.name == "output.weight" for t in header.tensors)
    for t in header.tensors:
        il = layer_of(t.name, n_layer)
        if _EXPERT_RE.search(t.name):
            expert += t.n_bytes
        if _on_gpu(t.name, il, n_layer, on_gpu, cpu_moe_layers):
            gpu += t.n_bytes
        else:
            cpu += t.n_bytes
        if t.name == "token_embd.weight" and not has_output and on_gpu[n_layer]:
            gpu += t.n_bytes  # the tied output layer: a copy goes with the output layer
    return cpu, gpu, expert


def _kv_cache(shape: ModelShape, s: Settings, on_gpu: list[bool]) -> tuple[int, int]:
    """KV cache (and recurrent state) bytes on the CPU and on the GPU, each layer on its device."""
    cpu = gpu = 0
    kv_size = s.n_ctx  # unified cache: n_ctx cells shared by the sequences
    swa_size = kv_size if s.swa_full else min(kv_size, _pad(shape.n_swa * s.n_seq + s.n_ubatch, 256))
    for il in range(shape.n_layer):
        cells = swa_size if il in shape.swa_layers else kv_size
        if shape.mla_kv:
            k_values, v_values = shape.mla_kv * cells, 0
        else:
            k_values = shape.n_head_kv[il] * shape.head_dim_k * cells
            v_values = shape.n_head_kv[il] * shape.head_dim_v * cells
        layer = _kv_bytes(k_values, s.type_k) + _kv_bytes(v_values, s.type_v)
        if il in shape.recurrent_layers:
            layer += shape.recurrent_bytes_per_layer * s.n_seq
        if on_gpu[il]:
            gpu += layer
        else:
            cpu += layer
    return cpu, gpu


def _stages(shape: ModelShape, s: Settings) -> tuple[int, int]:
    """The biggest set of activations of one layer (attention or feed-forward), and the
    activations around the output layer besides the logits."""
    ub = s.n_ubatch
    f = 4  # activations are f32
    n_head = max(shape.n_head) if shape.n_head else 0
    n_ff = shape.n_ff or 4 * shape.n_embd
    around = ub * f * (3 * shape.n_embd + n_ff)  # residual, norm, q/k/v, ffn input around a stage
    masks = _masks(shape)
    cells = _cells_per_stream(s)
    if not (any(shape.n_head_kv) or shape.mla_kv):
        attn = around
    elif s.flash_attn:
        attn = masks * cells * ub * 2 + around  # the f16 masks
    else:
        attn = cells * ub * f * (n_head + masks) + around  # scores and the f32 masks
    if shape.n_expert:
        ffn = ub * f * (3 * shape.n_expert_used * max(shape.n_ff_exp, 1) + 2 * shape.n_expert + 2 * shape.n_embd)
    else:
        ffn = ub * f * (2 * n_ff + 2 * shape.n_embd)
    return max(attn, ffn), shape.n_embd * ub * f


def _cells_per_stream(s: Settings) -> int:
    """KV cells one batch attends to: each sequence has its own stream of the cache (llama.cpp's
    and the engine's ``kv_unified`` off)."""
    return _pad(s.n_ctx // max(1, s.n_seq), 256)


def _masks(shape: ModelShape) -> int:
    return 2 if shape.swa_layers else 1  # models with sliding-window layers keep two masks


def _compute(shape: ModelShape, s: Settings) -> int:
    """The compute buffer of a CPU build: every stage on the CPU."""
    layer_stage, embd = _stages(shape, s)
    logits = shape.n_vocab * s.n_ubatch * 4 + 3 * embd
    return max(logits, layer_stage) + COMPUTE_SLACK


def _host_compute(shape: ModelShape, s: Settings) -> int:
    """The host compute buffer of a GPU build (``CUDA_Host compute``): the graph's inputs, the
    masks and the token embeddings; the big stages run on the GPU even for CPU layers."""
    mask = _masks(shape) * _cells_per_stream(s) * s.n_ubatch * (2 if s.flash_attn else 4)
    return mask + 2 * shape.n_embd * s.n_ubatch * 4


def _gpu_compute(header: ggufmeta.GGUFHeader, shape: ModelShape, s: Settings, on_gpu: list[bool]) -> int:
    """The GPU compute buffer of a GPU build: the stages of the layers on the GPU and, for big
    batches, those of CPU layers too, with copies of the weights and KV they read."""
    n_layer = shape.n_layer
    layer_stage, embd = _stages(shape, s)
    logits = shape.n_vocab * s.n_ubatch * 4 + embd
    gpu = 0
    if on_gpu[n_layer]:
        gpu = logits
    if any(on_gpu[:n_layer]):
        gpu = max(gpu, layer_stage)
    if s.n_ubatch >= OP_OFFLOAD_MIN_BATCH:
        if not on_gpu[n_layer]:
            gpu = max(gpu, logits + _output_weight_bytes(header))
        if not all(on_gpu[:n_layer]):
            gpu = max(gpu, layer_stage + _kv_view_bytes(shape, s) + _largest_layer_weight(header))
    return gpu + COMPUTE_SLACK


def _output_weight_bytes(header: ggufmeta.GGUFHeader) -> int:
    by_name = {t.name: t.n_bytes for t in header.tensors}
    return by_name.get("output.weight", by_name.get("token_embd.weight", 0))


def _largest_layer_weight(header: ggufmeta.GGUFHeader) -> int:
    """The biggest matrix of a layer that the GPU copies whole (expert tensors are not: measured)."""
    return max(
        (
            t.n_bytes
            for t in header.tensors
            if t.name.startswith("blk.") and len(t.shape) > 1 and not _EXPERT_RE.search(t.name)
        ),
        default=0,
    )


def _kv_view_bytes(shape: ModelShape, s: Settings) -> int:
    """One layer's K and V cache, as the GPU copies it to run a CPU layer's attention."""
    cells = _cells_per_stream(s)
    if shape.mla_kv:
        return _kv_bytes(shape.mla_kv * cells, s.type_k)
    n_kv = max(shape.n_head_kv) if shape.n_head_kv else 0
    return _kv_bytes(n_kv * shape.head_dim_k * cells, s.type_k) + _kv_bytes(n_kv * shape.head_dim_v * cells, s.type_v)


def _mapped_gaps(header: ggufmeta.GGUFHeader, n_layer: int, on_gpu: list[bool], cpu_moe_layers: int = 0) -> int:
    """Bytes of GPU tensors lying between the first and the last CPU tensor in the file: llama.cpp maps
    one contiguous range for the CPU (``CPU_Mapped``), so they count there too. Quantized files hold
    the output layer before the blocks (llama.cpp's loader order); converted ones often after
    ``token_embd``, inside the range of a partial offload."""
    ordered = sorted(header.tensors, key=lambda t: t.offset)
    on_cpu = [not _on_gpu(t.name, layer_of(t.name, n_layer), n_layer, on_gpu, cpu_moe_layers) for t in ordered]
    if True not in on_cpu:
        return 0
    first, last = on_cpu.index(True), len(on_cpu) - 1 - on_cpu[::-1].index(True)
    return sum(t.n_bytes for t, cpu in zip(ordered[first:last], on_cpu[first:last]) if not cpu)


def _repack(
    header: ggufmeta.GGUFHeader, n_layer: int, on_gpu: list[bool], types: dict[int, int], cpu_moe_layers: int = 0
) -> int:
    """Bytes of CPU-resident matrix weights llama.cpp repacks (a copy beside the mapped file); experts
    kept on the CPU by overrides are repacked too (llama.cpp offers them the CPU's extra buffer types)."""
    if not types:
        return 0
    total = 0
    for t in header.tensors:
        il = layer_of(t.name, n_layer)
        if il is None or _on_gpu(t.name, il, n_layer, on_gpu, cpu_moe_layers) or len(t.shape) < 2:
            continue  # the token embedding is read by row, not multiplied: never repacked
        rows = types.get(t.ggml_type)
        if rows and t.shape[1] % rows == 0:
            total += t.n_bytes
    return total


def from_buffers(buffers_mib: dict[str, float]) -> dict[str, DeviceBytes]:
    """llama.cpp's logged buffers (``LoadReport.buffers_mib``) as DeviceBytes per device name.

    ``CPU_Mapped``, ``CPU_REPACK``, ``CUDA_Host`` ... count for the CPU; ``CUDA0``, ``Metal`` ...
    for that GPU.
    """
    devices: dict[str, DeviceBytes] = {}
    for key, mib in buffers_mib.items():
        buffer, _, kind = key.rpartition(" ")
        device = "CPU" if buffer.startswith("CPU") or buffer.endswith("_Host") else buffer
        n = int(mib * MiB)
        part = {
            "model": DeviceBytes(weights=n), "KV": DeviceBytes(kv=n), "RS": DeviceBytes(kv=n),
            "compute": DeviceBytes(compute=n), "output": DeviceBytes(output=n),
        }.get(kind, DeviceBytes())  # fmt: skip
        devices[device] = devices.get(device, DeviceBytes()) + part
    return devices
