"""Choose how to load a model on this hardware: GPU layers and context, with a reason.

Works from a GGUF header (local file, or a remote one fetched by ranges) and a
:class:`~localllm.hardware.Hardware`; the byte counts come from :mod:`localllm.estimate`.
A plan "fits" with 20% headroom left, is "tight" when it fits only without it, and is "no" when it
does not fit even at the smallest sensible context.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import estimate, ggufmeta
from .hardware import Hardware, format_bytes

DEFAULT_CTX_CAP = 8192
MIN_CTX = 2048
HEADROOM = 0.8  # use at most this share of a budget for a "fits" verdict


@dataclass(frozen=True)
class LoadPlan:
    n_ctx: int
    n_gpu_layers: int
    estimate: estimate.Estimate
    verdict: str  # "fits", "tight", "no"
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "verdict": self.verdict,
            "reason": self.reason,
            "estimate": self.estimate.as_dict(),
        }


def _verdict(est: estimate.Estimate, hw: Hardware) -> str:
    cpu, gpu = est.cpu.total, est.gpu.total
    ram, vram = hw.ram_budget, hw.gpu_budget
    if cpu <= ram * HEADROOM and gpu <= vram * HEADROOM:
        return "fits"
    if cpu <= ram and gpu <= vram:
        return "tight"
    return "no"


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
        if verdict != "no" or asked or ctx <= MIN_CTX:
            break
        ctx = max(MIN_CTX, ctx // 2)  # a shorter context before giving up
    return LoadPlan(ctx, layers, est, verdict, _reason(est, hw, layers, ctx, verdict, trained))


def _reason(est: estimate.Estimate, hw: Hardware, layers: int, ctx: int, verdict: str, trained: int) -> str:
    where = "all layers on the GPU" if layers == -1 else (f"{layers} layers on the GPU" if layers else "on the CPU")
    used = f"{format_bytes(est.cpu.total)} of {format_bytes(hw.ram_budget)} RAM"
    if est.gpu.total:
        used += f" and {format_bytes(est.gpu.total)} of {format_bytes(hw.gpu_budget)} GPU memory"
    context = f"{ctx:,}-token context" + ("" if ctx >= trained else f" (trained on {trained:,})")
    if verdict == "no":
        return f"does not fit: needs {used} even with a {context}, {where}"
    return f"{verdict}: {used}, {where}, {context}"
