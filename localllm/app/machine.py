"""The machine models are planned for: detected (with what the llama.cpp build sees), or a named or
overridden one for what-if planning."""

from __future__ import annotations

from localllm.fit import hardware
from localllm.fit.hardware import BuildInfo, Device, Hardware


def build_info() -> BuildInfo:
    """What the installed llama.cpp build can use (loads llama.cpp: tens of milliseconds)."""
    from localllm import runtime

    devices = tuple(
        Device(d.name, d.description, d.kind, d.free_bytes, d.total_bytes) for d in runtime.backend_devices()
    )
    return BuildInfo(devices=devices, gpu_offload=runtime.supports_gpu_offload(), system_info=runtime.system_info())


def llama_cpp_build():
    """(the llama.cpp build's versions, its backend devices, llama.cpp's system info), for
    ``--version``; loads llama.cpp (ImportError, OSError or RuntimeError when it does not load)."""
    from localllm.runtime import devices

    return devices.build(), devices.backend_devices(), devices.system_info()


def detect(*, ask_llama_cpp: bool = True) -> Hardware:
    """This machine now. ``ask_llama_cpp=False`` leaves llama.cpp unloaded (for quick listings)."""
    return hardware.detect(build_info() if ask_llama_cpp else None)


def machine(
    profile: str | None = None, ram: str | None = None, vram: str | None = None, *, ask_llama_cpp: bool = True
) -> Hardware:
    """The machine to plan for: a named profile or this one, with RAM and GPU memory overridden
    (sizes as people write them: ``16G``, ``512M``)."""
    hw = hardware.profile(profile) if profile else detect(ask_llama_cpp=ask_llama_cpp)
    return hardware.with_overrides(
        hw,
        ram=hardware.parse_bytes(ram) if ram else None,
        vram=hardware.parse_bytes(vram) if vram is not None else None,
    )
