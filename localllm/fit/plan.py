"""Choose how to load a model on this hardware: GPU layers and context, with a reason.

Works from a GGUF header (local file, or a remote one fetched by ranges) and a
:class:`~localllm.hardware.Hardware`; the byte counts come from :mod:`localllm.estimate`.
A plan "fits" with 20% headroom left, is "tight" when it fits only without it, and "won't fit" when
it does not fit even at the smallest sensible context (:class:`Verdict`: one type, the same words
in every command and screen; JSON keeps the values ``fits``, ``tight``, ``no``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localllm.errors import DoesNotFitError, EstimateError
from localllm.format import format_bytes
from localllm.gguf import header as ggufmeta
from localllm.gguf import quants
from localllm.options import MAX_PARALLEL

from . import estimate
from .hardware import Hardware

if TYPE_CHECKING:
    from localllm.gguf.adapter import AdapterInfo

DEFAULT_CTX_CAP = 8192
MIN_CTX_PLANNED = 2048  # tokens: the planner shortens a context that does not fit down to this, no further
HEADROOM = 0.8  # use at most this share of a budget for a "fits" verdict


class Verdict(str, enum.Enum):
    """Whether a model fits a machine. The value is what JSON output carries; ``label`` is what
    people read."""

    FITS = "fits"
    TIGHT = "tight"
    NO = "no"
    UNKNOWN = "unknown"  # nothing to judge from yet (no header read)

    @property
    def label(self) -> str:
        return {"fits": "fits", "tight": "tight", "no": "won't fit", "unknown": "not judged"}[self.value]

    def __str__(self) -> str:
        return self.value


KV_QUANT = "q8_0"  # the KV cache type tried when an f16 one leaves the planned context out
# Architectures llama.cpp runs without flash attention whatever is asked, so a quantized V cache fails.
NO_FLASH_ATTN = frozenset({"grok"})


@dataclass(frozen=True)
class LoadPlan:
    n_ctx: int
    n_gpu_layers: int
    estimate: estimate.Estimate
    verdict: Verdict
    reason: str
    cpu_moe_layers: int = 0  # the routed experts of layers 0 .. N-1 stay on the CPU
    kv_type: str = "f16"  # K and V cache type
    cpu_expert_bytes: int = 0  # the bytes of those experts

    @property
    def flash_attn(self) -> bool | None:
        """A quantized V cache needs flash attention; otherwise llama.cpp decides."""
        return True if self.kv_type != "f16" else None

    def as_dict(self) -> dict[str, object]:
        return {
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "cpu_moe_layers": self.cpu_moe_layers,
            "cpu_expert_bytes": self.cpu_expert_bytes,
            "kv_type": self.kv_type,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "estimate": self.estimate.as_dict(),
        }


_RANK = {Verdict.FITS: 0, Verdict.TIGHT: 1, Verdict.NO: 2}


def _verdict(est: estimate.Estimate, hw: Hardware) -> Verdict:
    cpu, gpu = est.cpu.total, est.gpu.total
    ram, vram = hw.ram_budget, hw.gpu_budget
    if cpu <= ram * HEADROOM and gpu <= vram * HEADROOM:
        return Verdict.FITS
    if cpu <= ram and gpu <= vram:
        return Verdict.TIGHT
    return Verdict.NO


def _estimate(header: ggufmeta.GGUFHeader, hw: Hardware, settings: estimate.Settings) -> estimate.Estimate:
    """The estimate on ``hw``: its GPU backend's measured overheads (a GPU build keeps buffers on the
    GPU even with no layers there) and its CPU's weight repacking (off where llama.cpp uses AMX, as
    the runtime does)."""
    features = () if "AMX_INT8" in hw.simd else hw.simd
    backend = hw.gpu_backend
    # RPC workers alone hold nothing of a model with no layers offloaded (a local GPU build would).
    present = backend is not None and not (backend == "rpc" and settings.n_gpu_layers == 0)
    return estimate.estimate(header, settings, gpu_present=present, backend=backend,
                             cpu_features=features)  # fmt: skip


def _settings(n_ctx: int, layers: int, kv: str, moe: int = 0, n_seq: int = 1) -> estimate.Settings:
    return estimate.Settings(n_ctx=n_ctx, n_gpu_layers=layers, type_k=kv, type_v=kv, n_seq=n_seq,
                             flash_attn=True if kv != "f16" else None, cpu_moe_layers=moe)  # fmt: skip


@dataclass(frozen=True)
class _Placement:
    layers: int
    moe: int
    kv: str
    est: estimate.Estimate
    verdict: Verdict


def _best_layers(
    header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int, kv: str = "f16"
) -> tuple[int, estimate.Estimate]:
    """The most layers the GPU budget holds (all of them, output layer included, when it can)."""
    cpu_only = _estimate(header, hw, _settings(n_ctx, 0, kv))
    if hw.gpu_budget <= 0:
        return 0, cpu_only
    n_layer = header.block_count or 0
    for layers in [-1, *range(n_layer, 0, -1)]:
        est = _estimate(header, hw, _settings(n_ctx, layers, kv))
        if est.gpu.total <= hw.gpu_budget * HEADROOM:
            return layers, est
    return 0, cpu_only


def _experts_on_cpu(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int, kv: str) -> _Placement | None:
    """Every layer on the GPU but the routed experts of the fewest first layers, so that the GPU
    holds the rest with headroom; None when even every expert on the CPU leaves too much."""
    n_layer = header.block_count or 0
    fitting: dict[int, estimate.Estimate] = {}  # experts kept for n layers -> the estimate, if it fits

    def gpu_fits(moe: int) -> bool:
        est = _estimate(header, hw, _settings(n_ctx, -1, kv, moe))
        if est.gpu.total <= hw.gpu_budget * HEADROOM:
            fitting[moe] = est
        return moe in fitting

    if not gpu_fits(n_layer):
        return None
    low, high = 1, n_layer  # GPU bytes shrink as more layers' experts stay on the CPU
    while low < high:
        mid = (low + high) // 2
        if gpu_fits(mid):
            high = mid
        else:
            low = mid + 1
    return _Placement(-1, low, kv, fitting[low], _verdict(fitting[low], hw))


def _place(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int, kv: str) -> _Placement:
    """Where the model goes at this context and KV type: whole layers on the GPU, or, for a
    mixture of experts that does not fit whole, every layer there with some experts kept on the CPU
    (the attention and shared weights, used by every token, then all run on the GPU)."""
    layers, est = _best_layers(header, hw, n_ctx, kv)
    whole = _Placement(layers, 0, kv, est, _verdict(est, hw))
    if layers == -1 or hw.gpu_budget <= 0 or hw.unified_memory or not est.expert_bytes:
        return whole
    experts = _experts_on_cpu(header, hw, n_ctx, kv)
    if experts is not None and _RANK[experts.verdict] <= _RANK[whole.verdict]:
        return experts
    return whole


def _place_with_kv(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int) -> tuple[_Placement, _Placement | None]:
    """The placement at this context with an f16 KV cache, or with a q8_0 one where only that
    holds this context; the second value is the f16 placement it replaced (for the reason)."""
    f16 = _place(header, hw, n_ctx, "f16")
    if f16.verdict is not Verdict.NO or header.architecture in NO_FLASH_ATTN:
        return f16, None
    quant = _place(header, hw, n_ctx, KV_QUANT)
    if _RANK[quant.verdict] < _RANK[f16.verdict]:
        return quant, f16
    return f16, None


def plan_load(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int | None = None) -> LoadPlan:
    """The GPU layers, experts kept on the CPU, KV cache type and context to load ``header``'s
    model with on ``hw``, and why."""
    trained = header.context_length or DEFAULT_CTX_CAP
    asked = n_ctx is not None
    ctx = n_ctx if n_ctx is not None else min(trained, DEFAULT_CTX_CAP)
    while True:
        place, replaced = _place_with_kv(header, hw, ctx)
        if place.verdict is not Verdict.NO or asked or ctx <= MIN_CTX_PLANNED:
            break
        ctx = max(MIN_CTX_PLANNED, ctx // 2)  # a shorter context before giving up
    kept = estimate.cpu_expert_bytes(header, place.moe)
    reason = _reason(place, kept, replaced, hw, ctx, trained)
    return LoadPlan(ctx, place.layers, place.est, place.verdict, reason, place.moe, place.kv, kept)


def where_text(layers: int, moe: int = 0, kept: int = 0, device: str = "GPU") -> str:
    """``all layers on the GPU``, ``12 layers on the GPU``, ``on the CPU``, or with experts kept
    back: ``all layers on the GPU but the experts of layers 0-11 (3.1 GiB) on the CPU``. ``device``
    names where offloaded layers go (``Hardware.offload_name``: "RPC workers" with ``--rpc``)."""
    if moe:
        span = "layer 0" if moe == 1 else f"layers 0-{moe - 1}"
        return f"all layers on the {device} but the experts of {span} ({format_bytes(kept)}) on the CPU"
    if layers == -1:
        return f"all layers on the {device}"
    return f"{layers} layers on the {device}" if layers else "on the CPU"


def _offload_memory(hw: Hardware) -> str:
    """The memory offloaded layers use, in words: "GPU memory", "RPC workers' memory"."""
    name = hw.offload_name
    return f"{name}' memory" if name.endswith("s") else f"{name} memory"


def _reason(place: _Placement, kept: int, replaced: _Placement | None, hw: Hardware, ctx: int, trained: int) -> str:
    est, verdict = place.est, place.verdict
    where = where_text(place.layers, place.moe, kept, hw.offload_name)
    used = f"{format_bytes(est.cpu.total)} of {format_bytes(hw.ram_budget)} RAM"
    if est.gpu.total:
        used += f" and {format_bytes(est.gpu.total)} of {format_bytes(hw.gpu_budget)} {_offload_memory(hw)}"
    context = f"{ctx:,}-token context" + ("" if ctx >= trained else f" (trained on {trained:,})")
    if replaced is not None:
        context += f", {place.kv} KV cache ({format_bytes(est.cpu.kv + est.gpu.kv)}; an f16 one would not fit)"
    if verdict is Verdict.NO:
        return f"{verdict.label}: needs {used} even with a {context}, {where}"
    return f"{verdict.label}: {used}, {where}, {context}"


# --------------------------------------------------------------------------------------------
# Choosing among a model's quantizations

# Wider than these buys nothing a person can tell from Q8_0 at twice the memory and half the speed.
MIN_GPU_BITS = 4.0  # a full offload is worth a lower quant only down to about Q4


@dataclass(frozen=True)
class QuantChoice:
    quant: str
    size: int  # bytes of the file(s)
    plan: LoadPlan
    bits_per_weight: float

    @property
    def full_offload(self) -> bool:
        return self.plan.n_gpu_layers == -1 and not self.plan.cpu_moe_layers

    @property
    def layers_on_gpu(self) -> bool:
        """Every layer on the GPU, perhaps with some routed experts kept on the CPU."""
        return self.plan.n_gpu_layers == -1

    def as_dict(self) -> dict[str, object]:
        return {"quant": self.quant, "size": self.size, "bits_per_weight": round(self.bits_per_weight, 2),
                **self.plan.as_dict()}  # fmt: skip


@dataclass(frozen=True)
class ModelPlan:
    choices: tuple[QuantChoice, ...]  # every quantization judged, highest quality first
    chosen: QuantChoice | None  # None: nothing fits
    reason: str  # one sentence: the choice and the runner-up

    def as_dict(self) -> dict[str, object]:
        return {
            "chosen": self.chosen.quant if self.chosen else None,
            "reason": self.reason,
            "quants": [c.as_dict() for c in self.choices],
        }


def sized_header(header: ggufmeta.GGUFHeader, size: int) -> ggufmeta.GGUFHeader:
    """``header`` as if its tensors took ``size`` bytes of file: another quantization of the same model.

    Every tensor is scaled by the same ratio, so the total weight bytes are exact and their split
    across layers (hence across devices) is close; KV cache and compute buffers do not depend on
    the quantization. One header read then judges every quantization a repository offers.
    """
    from dataclasses import replace as _replace

    data = max(1, header.tensor_bytes)
    target = max(0, size - header.data_offset)
    ratio = target / data
    tensors = tuple(_replace(t, n_bytes=int(t.n_bytes * ratio)) for t in header.tensors)
    return _replace(header, tensors=tensors, file_size=size)


def with_adapters(header: ggufmeta.GGUFHeader, adapters: Sequence[AdapterInfo]) -> ggufmeta.GGUFHeader:
    """``header`` with the tensors of LoRA ``adapters`` added to its weights: llama.cpp puts each
    adapter tensor in the buffer of the weight it adapts, so they count with that weight's layer
    (their offsets follow the base's data, as a second mapped file)."""
    if not adapters:
        return header
    from dataclasses import replace as _replace

    extra, end = [], header.data_end
    for info in adapters:
        for a, b in info.pairs.values():
            for t in (a, b):
                extra.append(_replace(t, offset=end))
                end += t.n_bytes
    return _replace(header, tensors=header.tensors + tuple(extra))


def with_draft(header: ggufmeta.GGUFHeader, draft: ggufmeta.GGUFHeader) -> ggufmeta.GGUFHeader:
    """``header`` with a draft model's weights (speculative decoding) added to its own: the draft
    loads with the same GPU layers, so its layer N counts with the model's layer N (its KV cache,
    a few MiB for the small models that draft, is not counted)."""
    from dataclasses import replace as _replace

    end = header.data_end
    extra = []
    for t in draft.tensors:
        extra.append(_replace(t, offset=end))
        end += t.n_bytes
    return _replace(header, tensors=header.tensors + tuple(extra))


def adapter_bytes(adapters: Sequence[AdapterInfo]) -> int:
    """The memory LoRA ``adapters`` take: their tensor data (what llama.cpp's LoRA buffers hold)."""
    return sum(a.n_bytes + b.n_bytes for info in adapters for a, b in info.pairs.values())


def plan_quants(
    candidates: list[tuple[str, int, ggufmeta.GGUFHeader]], hw: Hardware, n_ctx: int | None = None
) -> ModelPlan:
    """Which of a model's quantizations to use on ``hw``, and why.

    ``candidates`` are (quant, file size, header) triples; the header may be the quant's own or
    :func:`sized_header` of a sibling's. The choice: the highest-quality quantization that fits
    with headroom, preferring one that lives entirely on the GPU (when there is one) down to about
    4 bits per weight; unquantized F16/BF16/F32 only when nothing else is offered.
    """
    if not candidates:
        raise ValueError("no quantizations to choose from")
    choices = []
    for quant, size, header in candidates:
        plan = plan_load(header, hw, n_ctx)
        n_params = header.n_params or 1
        choices.append(QuantChoice(quant, size, plan, header.tensor_bytes * 8 / n_params))
    choices.sort(key=lambda c: (-c.bits_per_weight, c.quant))
    quantized = [c for c in choices if c.quant.upper() not in quants.UNQUANTIZED] or choices

    def best(verdict: Verdict) -> QuantChoice | None:
        ok = [c for c in quantized if c.plan.verdict == verdict]
        if hw.gpu_budget > 0:
            for on_gpu in (lambda c: c.full_offload, lambda c: c.layers_on_gpu):
                wanted = [c for c in ok if on_gpu(c) and c.bits_per_weight >= MIN_GPU_BITS]
                if wanted:
                    return wanted[0]
        return ok[0] if ok else None

    chosen = best(Verdict.FITS) or best(Verdict.TIGHT)
    return ModelPlan(tuple(choices), chosen, _choice_reason(choices, quantized, chosen, hw))


def _used(c: QuantChoice, hw: Hardware) -> str:
    est = c.plan.estimate
    if est.gpu.total and hw.gpu_budget:
        return f"{format_bytes(est.gpu.total)} of {format_bytes(hw.gpu_budget)} {_offload_memory(hw)}"
    return f"{format_bytes(est.cpu.total)} of {format_bytes(hw.ram_budget)} RAM"


def _choice_reason(
    choices: list[QuantChoice], quantized: list[QuantChoice], chosen: QuantChoice | None, hw: Hardware
) -> str:
    if chosen is None:
        smallest = min(choices, key=lambda c: c.plan.estimate.total)
        return (f"no quantization fits: the smallest, {smallest.quant}, needs {_used(smallest, hw)} "
                f"at a {smallest.plan.n_ctx:,}-token context")  # fmt: skip
    where = "all on the GPU" if chosen.full_offload else _where(chosen)
    text = f"{chosen.quant}: {_used(chosen, hw)}, {where}, {chosen.plan.n_ctx:,}-token context"
    if chosen.plan.kv_type != "f16":
        text += f", {chosen.plan.kv_type} KV cache"
    if chosen.plan.verdict is Verdict.TIGHT:
        text += " (tight: less than 20% left over)"
    better = [c for c in quantized if c.bits_per_weight > chosen.bits_per_weight]
    if better:
        up = better[-1]  # the next step up in quality
        if up.plan.verdict is Verdict.NO:
            text += f"; {up.quant} would need {_used(up, hw)}"
        elif up.plan.verdict is Verdict.TIGHT:
            left = _left(up, hw)
            text += f"; {up.quant} would leave only {format_bytes(left)}"
        else:
            text += f"; {up.quant} fits only with {_where(up)}"
    elif len(quantized) < len(choices):
        text += "; it is the best quantization offered short of unquantized weights"
    else:
        text += "; it is the best quantization offered"
    return text


def _where(c: QuantChoice) -> str:
    p = c.plan
    return (
        where_text(p.n_gpu_layers, p.cpu_moe_layers, p.cpu_expert_bytes) if p.n_gpu_layers else "no layers on the GPU"
    )


def _left(c: QuantChoice, hw: Hardware) -> int:
    est = c.plan.estimate
    if est.gpu.total and hw.gpu_budget:
        return hw.gpu_budget - est.gpu.total
    return hw.ram_budget - est.cpu.total


# --------------------------------------------------------------------------------------------
# Loading with what the user left out


@dataclass(frozen=True)
class LoadChoice:
    """What to load a model with: the user's settings where given, the planner's for the rest."""

    n_ctx: int | None
    n_gpu_layers: int
    cpu_moe_layers: int = 0  # the routed experts of layers 0 .. N-1 stay on the CPU
    kv_type: str = "f16"

    @property
    def flash_attn(self) -> bool | None:
        return True if self.kv_type != "f16" else None


def load_settings(
    header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int | None, n_gpu_layers: int | None, *, label: str = ""
) -> LoadChoice:
    """The context and placement to load with: the user's where given, the planner's for the rest.
    The planner's experts on the CPU and KV cache type come with its GPU layers: a user who sets
    ``--gpu-layers`` gets whole layers and an f16 cache, as asked.

    Raises :class:`~localllm.errors.DoesNotFitError` when the model cannot fit and the user did not
    set the GPU layers (their explicit settings are tried as asked). A header too odd to estimate
    leaves llama.cpp's defaults, so the load itself reports the real problem.
    """

    if n_ctx is not None and n_gpu_layers is not None:
        return LoadChoice(n_ctx, n_gpu_layers)
    try:
        plan = plan_load(header, hw, n_ctx)
    except EstimateError:
        return LoadChoice(n_ctx, n_gpu_layers if n_gpu_layers is not None else 0)
    if n_gpu_layers is not None:
        return LoadChoice(n_ctx if n_ctx is not None else plan.n_ctx, n_gpu_layers)
    if plan.verdict is Verdict.NO:
        raise DoesNotFitError(
            f"{label or header.name or 'the model'} {plan.reason}",
            hint="pass --ctx and --gpu-layers to load it anyway, or pick a smaller quantization (localllm fit)",
        )
    return LoadChoice(plan.n_ctx, plan.n_gpu_layers, plan.cpu_moe_layers, plan.kv_type)


# --------------------------------------------------------------------------------------------
# Several sequences at once (batch)


@dataclass(frozen=True)
class ParallelPlan:
    n: int
    reason: str  # why that many: the memory, the input lines, or llama.cpp's limit


def plan_parallel(
    header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx_seq: int, placement: LoadChoice, lines: int | None = None
) -> ParallelPlan:
    """How many sequences of ``n_ctx_seq`` tokens to decode at once: the most whose KV cache,
    compute and output buffers (one context of ``N * n_ctx_seq`` cells, placed as ``placement``)
    the planner judges to fit with headroom, at most one per input line and llama.cpp's limit;
    at least 1 (the load itself reports a model that cannot fit)."""
    cap = MAX_PARALLEL if lines is None else max(1, min(lines, MAX_PARALLEL))
    gpu = hw.gpu_budget > 0 and placement.n_gpu_layers != 0
    layers = placement.n_gpu_layers if gpu else 0  # layers asked of a machine without a GPU stay on the CPU

    def need(n: int) -> estimate.Estimate | None:
        settings = _settings(n_ctx_seq * n, layers, placement.kv_type, placement.cpu_moe_layers, n)
        try:
            return _estimate(header, hw, settings)
        except EstimateError:
            return None

    def fits(n: int) -> bool:
        est = need(n)
        return est is not None and _verdict(est, hw) is Verdict.FITS

    low, high = 1, cap  # the most that fits, by bisection (memory grows with N)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return ParallelPlan(low, _parallel_reason(low, cap, lines, need(low + 1) if low < MAX_PARALLEL else None, hw,
                                              n_ctx_seq))  # fmt: skip


def _parallel_reason(
    n: int, cap: int, lines: int | None, more: estimate.Estimate | None, hw: Hardware, n_ctx_seq: int
) -> str:
    if n >= MAX_PARALLEL:
        return f"llama.cpp's limit of {MAX_PARALLEL} sequences per context"
    if n == cap and lines is not None and _fits_more(more, hw):
        return "one per input line"
    if more is None:
        return "as many as the planner can estimate"
    if hw.gpu_budget > 0 and more.gpu.total > hw.gpu_budget * HEADROOM:
        need = f"{format_bytes(more.gpu.total)} of {format_bytes(hw.gpu_budget)} {_offload_memory(hw)}"
    else:
        need = f"{format_bytes(more.cpu.total)} of {format_bytes(hw.ram_budget)} RAM"
    return (
        f"the memory holds {n}: {n + 1} sequences of {n_ctx_seq:,} tokens would need {need} "
        "(the planner keeps 20% free)"
    )


def _fits_more(more: estimate.Estimate | None, hw: Hardware) -> bool:
    return more is not None and _verdict(more, hw) is Verdict.FITS


def max_parallel(
    header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx_seq: int, n_gpu_layers: int, lines: int | None = None
) -> int:
    """:func:`plan_parallel`'s number for whole layers on the GPU and an f16 KV cache."""
    return plan_parallel(header, hw, n_ctx_seq, LoadChoice(n_ctx_seq, n_gpu_layers), lines).n
