"""What this llama.cpp build can do: its version, CPU features, GPU offload and devices."""

from __future__ import annotations

from dataclasses import dataclass

from . import llama


def llama_cpp_version() -> str:
    return llama.version()


def supports_gpu_offload() -> bool:
    return llama.supports_gpu_offload()


def system_info() -> str:
    """llama.cpp's own summary of the CPU features this build uses ("AVX2 = 1 | ...")."""
    return llama.system_info()


def build_has_amx() -> bool:
    return "AMX_INT8 = 1" in system_info()


@dataclass(frozen=True)
class BackendDevice:
    name: str  # "CPU", "CUDA0", "Metal", "Vulkan0"
    description: str
    kind: str  # cpu, gpu, igpu, accel, meta
    free_bytes: int
    total_bytes: int


def backend_devices() -> list[BackendDevice]:
    """Every device this llama.cpp build can use, with its free and total memory in bytes."""
    return [BackendDevice(*fields) for fields in llama.device_list()]


@dataclass(frozen=True)
class Build:
    """The llama.cpp build under the bindings ("" for what an older build cannot say)."""

    bindings: str  # llama-cpp-python's version
    llama: str  # libllama's version
    ggml: str  # ggml's version
    commit: str  # ggml's git commit
    backends: tuple[str, ...]  # compiled in: "CPU", "CUDA", "Metal", "Vulkan", ...


def build() -> Build:
    info = llama.build_info()
    return Build(llama.version(), info["llama"], info["ggml"], info["commit"], tuple(info["backends"]))
