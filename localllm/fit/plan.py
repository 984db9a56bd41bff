"""Choose how to load a model on this hardware: GPU layers and context, with a reason.

Works from a GGUF header (local file, or a remote one fetched by ranges) and a
:class:`~localllm.hardware.Hardware`; the byte counts come from :mod:`localllm.estimate`.
A plan "fits" with 20% headroom left, is "tight" when it fits only without it, and "won't fit" when
it does not fit even at the smallest sensible context (:class:`Verdict`: one type, the same words
in every command and screen; JSON keeps the values ``fits``, ``tight``, ``no``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from localllm.errors import DoesNotFitError, EstimateError
from localllm.format import format_bytes
from localllm.gguf import header as ggufmeta
from localllm.gguf import quants

from . import estimate
from .hardware import Hardware

DEFAULT_CTX_CAP = 8192
MIN_CTX = 2048
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


@dataclass(frozen=True)
class LoadPlan:
    n_ctx: int
    n_gpu_layers: int
    estimate: estimate.Estimate
    verdict: Verdict
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "estimate": self.estimate.as_dict(),
        }


def _verdict(est: estimate.Estimate, hw: Hardware) -> Verdict:
    cpu, gpu = est.cpu.total, est.gpu.total
    ram, vram = hw.ram_budget, hw.gpu_budget
    if cpu <= ram * HEADROOM and gpu <= vram * HEADROOM:
        return Verdict.FITS
    if cpu <= ram and gpu <= vram:
        return Verdict.TIGHT
    return Verdict.NO


def _best_layers(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int) -> tuple[int, estimate.Estimate]:
    """The most layers the GPU budget holds (all of them, output layer included, when it can)."""
    cpu_only = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx, n_gpu_layers=0), gpu_present=False)
    if hw.gpu_budget <= 0:
        return 0, cpu_only
    n_layer = header.block_count or 0
    for layers in [-1, *range(n_layer, 0, -1)]:
        est = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx, n_gpu_layers=layers), gpu_present=True)
        if est.gpu.total <= hw.gpu_budget * HEADROOM:
            return layers, est
    return 0, cpu_only


def plan_load(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int | None = None) -> LoadPlan:
    """The GPU layers and context to load ``header``'s model with on ``hw``, and why."""
    trained = header.context_length or DEFAULT_CTX_CAP
    asked = n_ctx is not None
    ctx = n_ctx if asked else min(trained, DEFAULT_CTX_CAP)
    while True:
        layers, est = _best_layers(header, hw, ctx)
        verdict = _verdict(est, hw)
        if verdict is not Verdict.NO or asked or ctx <= MIN_CTX:
            break
        ctx = max(MIN_CTX, ctx // 2)  # a shorter context before giving up
    return LoadPlan(ctx, layers, est, verdict, _reason(est, hw, layers, ctx, verdict, trained))


def _reason(est: estimate.Estimate, hw: Hardware, layers: int, ctx: int, verdict: Verdict, trained: int) -> str:
    where = "all layers on the GPU" if layers == -1 else (f"{layers} layers on the GPU" if layers else "on the CPU")
    used = f"{format_bytes(est.cpu.total)} of {format_bytes(hw.ram_budget)} RAM"
    if est.gpu.total:
        used += f" and {format_bytes(est.gpu.total)} of {format_bytes(hw.gpu_budget)} GPU memory"
    context = f"{ctx:,}-token context" + ("" if ctx >= trained else f" (trained on {trained:,})")
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
            on_gpu = [c for c in ok if c.full_offload and c.bits_per_weight >= MIN_GPU_BITS]
            if on_gpu:
                return on_gpu[0]
        return ok[0] if ok else None

    chosen = best(Verdict.FITS) or best(Verdict.TIGHT)
    return ModelPlan(tuple(choices), chosen, _choice_reason(choices, quantized, chosen, hw))


def _used(c: QuantChoice, hw: Hardware) -> str:
    est = c.plan.estimate
    if est.gpu.total and hw.gpu_budget:
        return f"{format_bytes(est.gpu.total)} of {format_bytes(hw.gpu_budget)} GPU memory"
    return f"{format_bytes(est.cpu.total)} of {format_bytes(hw.ram_budget)} RAM"


def _choice_reason(
    choices: list[QuantChoice], quantized: list[QuantChoice], chosen: QuantChoice | None, hw: Hardware
) -> str:
    if chosen is None:
        smallest = min(choices, key=lambda c: c.plan.estimate.total)
        return (f"no quantization fits: the smallest, {smallest.quant}, needs {_used(smallest, hw)} "
                f"at a {smallest.plan.n_ctx:,}-token context")  # fmt: skip
    where = "all on the GPU" if chosen.full_offload else (
        f"{chosen.plan.n_gpu_layers} layers on the GPU" if chosen.plan.n_gpu_layers else "on the CPU")
    text = f"{chosen.quant}: {_used(chosen, hw)}, {where}, {chosen.plan.n_ctx:,}-token context"
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
    moe = chosen.plan.estimate.expert_bytes
    if moe and not chosen.full_offload and hw.gpu_budget > 0:
        text += (f". Mixture of experts: {format_bytes(moe)} of expert weights could stay on the CPU to put "
                 "every other tensor on the GPU, but llama-cpp-python cannot express tensor overrides, "
                 "so whole layers are split instead")  # fmt: skip
    return text


def _where(c: QuantChoice) -> str:
    return f"{c.plan.n_gpu_layers} layers on the GPU" if c.plan.n_gpu_layers else "no layers on the GPU"


def _left(c: QuantChoice, hw: Hardware) -> int:
    est = c.plan.estimate
    if est.gpu.total and hw.gpu_budget:
        return hw.gpu_budget - est.gpu.total
    return hw.ram_budget - est.cpu.total


# --------------------------------------------------------------------------------------------
# Loading with what the user left out


def load_settings(
    header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx: int | None, n_gpu_layers: int | None, *, label: str = ""
) -> tuple[int | None, int]:
    """The context and GPU layers to load with: the user's where given, the planner's for the rest.

    Raises :class:`~localllm.errors.DoesNotFitError` when the model cannot fit and the user did not
    set the GPU layers (their explicit settings are tried as asked). A header too odd to estimate
    leaves llama.cpp's defaults, so the load itself reports the real problem.
    """

    if n_ctx is not None and n_gpu_layers is not None:
        return n_ctx, n_gpu_layers
    try:
        plan = plan_load(header, hw, n_ctx)
    except EstimateError:
        return n_ctx, n_gpu_layers if n_gpu_layers is not None else 0
    if plan.verdict is Verdict.NO and n_gpu_layers is None:
        raise DoesNotFitError(
            f"{label or header.name or 'the model'} {plan.reason}",
            hint="pass --ctx and --gpu-layers to load it anyway, or pick a smaller quantization (localllm fit)",
        )
    return (n_ctx if n_ctx is not None else plan.n_ctx, n_gpu_layers if n_gpu_layers is not None else plan.n_gpu_layers)


# --------------------------------------------------------------------------------------------
# Several sequences at once (batch)

MAX_DEFAULT_PARALLEL = 8  # on CPUs, throughput stops growing well before this


def max_parallel(header: ggufmeta.GGUFHeader, hw: Hardware, n_ctx_seq: int, n_gpu_layers: int,
                 cap: int = MAX_DEFAULT_PARALLEL) -> int:
    """How many sequences of ``n_ctx_seq`` tokens to decode at once: the most, up to ``cap``, whose
    KV cache, compute and output buffers (one context of ``N * n_ctx_seq`` cells) the planner
    judges to fit with headroom; at least 1 (the load itself reports a model that cannot fit)."""
    best = 1
    for n in range(2, cap + 1):
        settings = estimate.Settings(n_ctx=n_ctx_seq * n, n_gpu_layers=n_gpu_layers, n_seq=n)
        try:
            est = estimate.estimate(header, settings, gpu_present=hw.gpu_budget > 0 and n_gpu_layers != 0)
        except EstimateError:
            return best
        if _verdict(est, hw) is not Verdict.FITS:
            break
        best = n
    return best
