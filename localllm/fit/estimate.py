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
  activations around them. Calibrated on this build's logged ``compute buffer size`` (see
  docs/benchmarks.md).
- Output buffer: ``n_vocab`` floats per sequence (llama.cpp's ``CPU output buffer``).
- Runtime: what the process holds besides llama.cpp's buffers (Python, libraries): counted for
  the RAM budget, shown apart.

Everything is in bytes. :func:`estimate` takes a :class:`~localllm.ggufmeta.GGUFHeader` (local or
fetched with :func:`read_remote_header`) and :class:`Settings`.
"""

from __future__ import annotations

import re
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
                raise UsageError(f"unknown KV cache type '{getattr(self, name)}'", hint=f"use one of {', '.join(KV_TYPES)}")
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
            "expert_bytes": self.expert_bytes, "notes": list(self.notes),
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
    ``n_gpu_layers`` within 0..n_layer+1, flash attention decided."""
    settings.check()
    n_layer = _int(header.block_count)
    n_ctx = _pad(settings.n_ctx, 256)
    n_batch = min(settings.n_batch, settings.n_ctx)
    ngl = settings.n_gpu_layers
    ngl = n_layer + 1 if ngl < 0 or ngl > n_layer + 1 else ngl
    fa = True if settings.flash_attn is None else settings.flash_attn
    return replace(
        settings, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(settings.n_ubatch, n_batch), n_gpu_layers=ngl,
        flash_attn=fa,
    )


def estimate(header: ggufmeta.GGUFHeader, settings: Settings | None = None, *, gpu_present: bool | None = None) -> Estimate:
    """Bytes per device to load ``header``'s model with ``settings``.

    ``gpu_present`` says whether a GPU backend would be in use (default: when layers are
    offloaded); with a GPU backend llama.cpp also keeps a GPU compute buffer at 0 layers.
    """
    settings = resolve_settings(header, settings or Settings())
    shape = model_shape(header)
    s = settings
    n_layer = shape.n_layer
    i_gpu_start = n_layer + 1 - s.n_gpu_layers  # layers il >= i_gpu_start are on the GPU
    on_gpu = [il >= i_gpu_start for il in range(n_layer + 1)]
    gpu_used = s.n_gpu_layers > 0 if gpu_present is None else gpu_present
    notes: list[str] = []

    cpu_w, gpu_w, expert = _weights(header, n_layer, on_gpu, s.cpu_moe_layers)
    cpu_kv, gpu_kv = _kv_cache(shape, s, on_gpu)

    # Compute buffers.
    cpu_c, gpu_c = _compute(shape, s, on_gpu, gpu_used)
    output = shape.n_vocab * 4 * s.n_seq

    if s.type_v not in ("f32", "f16", "bf16") and not s.flash_attn:
        notes.append(f"a {s.type_v} V cache needs flash attention")
    gpu_runtime = 0
    if gpu_used:
        # Driver context and BLAS workspaces, outside llama.cpp's logged buffers; not calibrated
        # on this machine (no GPU), taken from peers' and llama.cpp's fit margins.
        gpu_runtime = 256 * MiB
    return Estimate(
        settings=s,
        n_layer=n_layer,
        cpu=DeviceBytes(cpu_w, cpu_kv, cpu_c, output, RUNTIME_RAM),
        gpu=DeviceBytes(gpu_w, gpu_kv, gpu_c, 0, gpu_runtime),
        expert_bytes=expert,
        notes=tuple(notes),
    )


def _weights(header: ggufmeta.GGUFHeader, n_layer: int, on_gpu: list[bool], cpu_moe_layers: int = 0
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
        kept = il is not None and il < cpu_moe_layers and _CPU_EXPERTS_RE.search(t.name) is not None
        if il is not None and on_gpu[min(il, n_layer)] and not kept:
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


def _compute(shape: ModelShape, s: Settings, on_gpu: list[bool], gpu_used: bool) -> tuple[int, int]:
    """Compute buffer bytes on the CPU and on the GPU."""
    ub = s.n_ubatch
    f = 4  # activations are f32
    n_head = max(shape.n_head) if shape.n_head else 0
    n_ff = shape.n_ff or 4 * shape.n_embd
    around = ub * f * (3 * shape.n_embd + n_ff)  # residual, norm, q/k/v, ffn input around a stage
    logits = shape.n_vocab * ub * f + 3 * shape.n_embd * ub * f

    masks = 2 if shape.swa_layers else 1  # models with sliding-window layers keep two masks

    def attention(cells: int) -> int:
        if s.flash_attn:
            return masks * cells * ub * 2 + around  # the f16 masks
        return cells * ub * f * (n_head + masks) + around  # scores and the f32 masks

    kv_cells = s.n_ctx
    attn = attention(kv_cells) if any(h for h in shape.n_head_kv) or shape.mla_kv else around
    if shape.n_expert:
        moe = ub * f * (3 * shape.n_expert_used * max(shape.n_ff_exp, 1) + 2 * shape.n_expert + 2 * shape.n_embd)
    else:
        moe = ub * f * (2 * n_ff + 2 * shape.n_embd)
    layer_stage = max(attn, moe)

    n_layer = shape.n_layer
    any_cpu_layer = not all(on_gpu[:n_layer])
    any_gpu_layer = any(on_gpu[:n_layer])
    cpu = gpu = 0
    if on_gpu[n_layer]:
        gpu = max(gpu, logits)
        cpu = max(cpu, shape.n_embd * ub * f * 2)  # the input embeddings, on the host
    else:
        cpu = max(cpu, logits)
    if any_cpu_layer:
        cpu = max(cpu, layer_stage)
    if any_gpu_layer:
        gpu = max(gpu, layer_stage)
    if gpu_used and not any_gpu_layer and not on_gpu[n_layer]:
        # Big batches of CPU layers still run their matrix products on the GPU, which needs room
        # for the activations of a layer.
        gpu = max(gpu, layer_stage)
    return cpu + COMPUTE_SLACK, (gpu + COMPUTE_SLACK if gpu else 0)


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
