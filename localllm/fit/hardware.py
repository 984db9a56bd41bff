"""What this machine has to run a model with: RAM, CPU, GPUs, and what the llama.cpp build sees.

:func:`detect` reads the machine (psutil, /proc, NVML, sysfs, llama.cpp's device registry);
:func:`profile` and :func:`with_overrides` give a hypothetical machine for what-if planning
(``--profile mac-m-16gb``, ``--ram 16G --vram 8G``). Both return a :class:`Hardware`, the only thing
the estimator's planner (:mod:`localllm.plan`) looks at, so tests build one by hand.

Memory budget rules (what the planner may fill):

- RAM: what is available now (psutil's ``available``: free plus reclaimable cache), or, for a
  hypothetical machine, its total minus :func:`os_reserve` (2 GiB, or a quarter of a smaller RAM)
  for the operating system and the apps people keep open.
- Dedicated GPU memory (NVIDIA, AMD, ...): what is free now, minus :data:`GPU_RESERVE` of headroom
  (other processes, fragmentation). The driver context and cuBLAS/hipBLAS workspaces, which are
  not in llama.cpp's logged buffers, are the estimate's GPU runtime (``estimate.BACKENDS``).
- Apple Silicon: GPU and CPU share RAM. Metal lets one process keep at most its
  "recommended max working set" resident on the GPU; macOS sets it to about two thirds of RAM on
  machines with up to 36 GiB and about three quarters above (:func:`metal_working_set`). Model,
  KV cache and compute buffers on the GPU count against both that limit and the RAM budget.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from localllm.errors import UsageError

GiB = 1 << 30
MiB = 1 << 20
GPU_RESERVE = 256 * MiB  # headroom; the CUDA context itself (~600 MiB) is in the estimate

__all__ = [
    "GPU",
    "Hardware",
    "PROFILES",
    "detect",
    "BuildInfo",
    "GPU_BUILDS",
    "gpu_build_command",
    "metal_working_set",
    "parse_bytes",
    "profile",
    "with_overrides",
]


@dataclass(frozen=True)
class GPU:
    name: str
    vendor: str  # nvidia, amd, apple, intel, other
    total_bytes: int
    free_bytes: int
    unified: bool = False  # shares system RAM (Apple Silicon, integrated GPUs)
    source: str = "detected"  # nvml, sysfs, metal, llama.cpp, profile, override, rpc

    @property
    def budget(self) -> int:
        """Bytes a model may use on this GPU."""
        if self.vendor == "apple":
            return self.free_bytes  # already the Metal working-set limit
        return max(0, self.free_bytes - GPU_RESERVE)


@dataclass(frozen=True)
class Device:
    """A device the installed llama.cpp build can use (its backend registry)."""

    name: str
    description: str
    kind: str  # cpu, gpu, igpu, accel
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class BuildInfo:
    """What the installed llama.cpp build can use, as the runtime reports it (plain values, so
    detection and planning never load llama.cpp themselves)."""

    devices: tuple[Device, ...] = ()
    gpu_offload: bool = False
    system_info: str = ""  # llama.cpp's "AVX2 = 1 | ..." line


@dataclass(frozen=True)
class Hardware:
    ram_total: int
    ram_available: int
    swap_total: int = 0
    swap_free: int = 0
    cpu_model: str = "unknown CPU"
    cores_physical: int = 1
    cores_logical: int = 1
    simd: tuple[str, ...] = ()
    gpus: tuple[GPU, ...] = ()
    devices: tuple[Device, ...] = ()  # what llama.cpp sees; empty for a hypothetical machine
    # llama.cpp RPC workers (``--rpc``) this process uses: each device a worker reports, with its
    # memory as reported (vendor "rpc"); layers go to them as to GPUs, whatever the local build.
    rpc_workers: tuple[GPU, ...] = ()
    gpu_offload: bool = False  # the llama.cpp build can offload to a GPU
    profile: str | None = None  # a named or overridden machine, None when detected
    notes: tuple[str, ...] = field(default=())

    @property
    def hypothetical(self) -> bool:
        return self.profile is not None

    @property
    def gpu_backend(self) -> str | None:
        """The llama.cpp GPU backend that would run the model (a key of ``estimate.BACKENDS``):
        from the build's device names (CUDA0, ROCm0, Metal, Vulkan0), else the GPU's vendor; None
        when nothing can be offloaded."""
        if not self.offload_gpus:
            return None
        if not self.local_offload_gpus:
            return "rpc"
        names = " ".join(d.name.lower() for d in self.devices if d.kind in ("gpu", "igpu") and not is_rpc_device(d))
        for prefix, backend in (
            ("cuda", "cuda"),
            ("rocm", "rocm"),
            ("hip", "rocm"),
            ("metal", "metal"),
            ("mtl", "metal"),
            ("vulkan", "vulkan"),
        ):
            if prefix in names:
                return backend
        return {"nvidia": "cuda", "amd": "rocm", "apple": "metal"}.get(self.local_offload_gpus[0].vendor, "gpu")

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.gpus)

    @property
    def ram_budget(self) -> int:
        """Bytes of RAM a model may use (see the module's rules)."""
        if self.hypothetical:
            return max(0, self.ram_total - os_reserve(self.ram_total))
        return self.ram_available

    @property
    def local_offload_gpus(self) -> tuple[GPU, ...]:
        """This machine's GPUs llama.cpp can put layers on (none if the build cannot offload)."""
        return self.gpus if self.gpu_offload else ()

    @property
    def offload_gpus(self) -> tuple[GPU, ...]:
        """Every device llama.cpp can put layers on: the local GPUs, then the RPC workers."""
        return self.local_offload_gpus + self.rpc_workers

    @property
    def offload_name(self) -> str:
        """What offloaded layers go to, in words: "GPU", "RPC workers" or "GPU and RPC workers"."""
        if not self.rpc_workers:
            return "GPU"
        return "GPU and RPC workers" if self.local_offload_gpus else "RPC workers"

    @property
    def gpu_budget(self) -> int:
        """Bytes of GPU memory a model may use, over all GPUs llama.cpp can offload to.

        llama.cpp spreads layers over several GPUs in proportion to their free memory, so the
        sum is what a model can occupy.
        """
        return sum(g.budget for g in self.offload_gpus)

    def as_dict(self) -> dict[str, object]:
        return {
            "profile": self.profile,
            "ram_total": self.ram_total,
            "ram_available": self.ram_available,
            "ram_budget": self.ram_budget,
            "swap_total": self.swap_total,
            "swap_free": self.swap_free,
            "cpu": {
                "model": self.cpu_model,
                "cores_physical": self.cores_physical,
                "cores_logical": self.cores_logical,
                "simd": list(self.simd),
            },
            "gpus": [
                {
                    "name": g.name,
                    "vendor": g.vendor,
                    "total": g.total_bytes,
                    "free": g.free_bytes,
                    "budget": g.budget,
                    "unified": g.unified,
                    "source": g.source,
                }
                for g in self.gpus
            ],
            "llama_cpp_devices": [
                {
                    "name": d.name,
                    "description": d.description,
                    "kind": d.kind,
                    "free": d.free_bytes,
                    "total": d.total_bytes,
                }
                for d in self.devices
            ],
            "rpc_workers": [
                {"name": w.name, "total": w.total_bytes, "free": w.free_bytes, "budget": w.budget}
                for w in self.rpc_workers
            ],
            "gpu_offload": self.gpu_offload,
            "gpu_budget": self.gpu_budget,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Sizes


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": GiB, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"16G"``, ``"16GB"``, ``"16GiB"``, ``"512M"`` -> bytes (binary units; a bare number is GiB)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise UsageError(f"not a memory size: '{text}'", hint="write it like 16G, 8GB or 512M")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def os_reserve(ram_total: int) -> int:
    """RAM left to the OS and other apps on a hypothetical machine."""
    return min(2 * GiB, ram_total // 4)


def metal_working_set(ram_total: int) -> int:
    """Metal's recommended max working set: ~2/3 of RAM up to 36 GiB, ~3/4 above."""
    return ram_total * 2 // 3 if ram_total <= 36 * GiB else ram_total * 3 // 4


# --------------------------------------------------------------------------------------------
# Named machines for what-if planning


def _mac(gb: int) -> Hardware:
    ram = gb * GiB
    return Hardware(
        ram_total=ram, ram_available=ram - os_reserve(ram), cpu_model="Apple M-series",
        cores_physical=8, cores_logical=8, simd=("NEON", "ARM_FMA", "DOTPROD"),
        gpus=(GPU("Apple M-series GPU", "apple", ram, metal_working_set(ram), unified=True, source="profile"),),
        gpu_offload=True,
    )  # fmt: skip


def _pc(ram_gb: int, vram_gb: int = 0, gpu: str = "NVIDIA GeForce RTX") -> Hardware:
    ram = ram_gb * GiB
    gpus: tuple[GPU, ...] = ()
    if vram_gb:
        # A desktop driver keeps a few hundred MB of VRAM for the display.
        gpus = (GPU(f"{gpu} ({vram_gb} GB)", "nvidia", vram_gb * GiB, vram_gb * GiB - 300 * MiB, source="profile"),)
    return Hardware(
        ram_total=ram, ram_available=ram - os_reserve(ram), cpu_model="x86-64 desktop CPU",
        cores_physical=8 if ram_gb >= 16 else 4, cores_logical=16 if ram_gb >= 16 else 8,
        simd=("AVX", "AVX2", "FMA", "F16C"), gpus=gpus, gpu_offload=bool(vram_gb),
    )  # fmt: skip


PROFILES: dict[str, tuple[str, Callable[[], Hardware]]] = {
    "laptop-8gb": ("laptop, 8 GB RAM, no usable GPU", lambda: _pc(8)),
    "laptop-16gb": ("laptop, 16 GB RAM, no usable GPU", lambda: _pc(16)),
    "desktop-32gb": ("desktop, 32 GB RAM, no GPU", lambda: _pc(32)),
    "mac-m-8gb": ("Apple M-series, 8 GB unified memory", lambda: _mac(8)),
    "mac-m-16gb": ("Apple M-series, 16 GB unified memory", lambda: _mac(16)),
    "mac-m-32gb": ("Apple M-series, 32 GB unified memory", lambda: _mac(32)),
    "mac-m-64gb": ("Apple M-series, 64 GB unified memory", lambda: _mac(64)),
    "rtx-8gb-16gb-ram": ("NVIDIA 8 GB GPU, 16 GB RAM", lambda: _pc(16, 8)),
    "rtx-12gb-32gb-ram": ("NVIDIA 12 GB GPU, 32 GB RAM", lambda: _pc(32, 12)),
    "rtx-16gb-32gb-ram": ("NVIDIA 16 GB GPU, 32 GB RAM", lambda: _pc(32, 16)),
    "rtx-24gb-64gb-ram": ("NVIDIA 24 GB GPU, 64 GB RAM", lambda: _pc(64, 24)),
}


def profile(name: str) -> Hardware:
    """A named hypothetical machine (see :data:`PROFILES`)."""
    key = name.strip().lower()
    if key not in PROFILES:
        raise UsageError(f"unknown hardware profile '{name}'", hint=f"pick one of: {', '.join(PROFILES)}")
    return replace(PROFILES[key][1](), profile=key)


def with_overrides(hw: Hardware, *, ram: int | None = None, vram: int | None = None) -> Hardware:
    """``hw`` with its RAM and/or GPU memory replaced (what-if planning; assumes a GPU build).

    ``vram=0`` removes the GPUs. On unified memory, ``ram`` also resizes the GPU's share.
    """
    if ram is None and vram is None:
        return hw
    # dataclasses.replace takes its fields as keywords: their types are Hardware's.
    changes: dict[str, Any] = {"profile": hw.profile or "custom", "devices": ()}
    if ram is not None:
        if ram <= 0:
            raise UsageError("--ram must be more than 0")
        changes["ram_total"] = ram
        changes["ram_available"] = ram - os_reserve(ram)
        changes["gpus"] = tuple(
            replace(g, total_bytes=ram, free_bytes=metal_working_set(ram), source="override") if g.unified else g
            for g in hw.gpus
        )
    if vram is not None:
        if vram < 0:
            raise UsageError("--vram must be 0 or more")
        if vram == 0:
            changes["gpus"] = ()
        else:
            base = next((g for g in hw.gpus if not g.unified), None)
            name = base.name if base else "GPU"
            vendor = base.vendor if base else "nvidia"
            changes["gpus"] = (GPU(name, vendor, vram, vram, source="override"),)
        changes["gpu_offload"] = vram > 0
    changes["notes"] = ()
    return replace(hw, **changes)


# --------------------------------------------------------------------------------------------
# Detection


def detect(build: BuildInfo | None = None) -> Hardware:
    """This machine as it is now. ``build`` is what the llama.cpp build sees (the application asks
    the runtime); without it, GPUs come from NVML, sysfs and Metal alone and offload is assumed off."""
    import psutil

    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    cpu_model, cpu_flags = _cpu_info()
    gpus: list[GPU] = []
    gpus += _nvidia_gpus()
    gpus += _amd_gpus()
    apple = _apple_gpu(vm.total)
    if apple:
        gpus.append(apple)

    devices: tuple[Device, ...] = ()
    workers: tuple[GPU, ...] = ()
    offload = False
    simd = _simd_from_flags(cpu_flags)
    if build is not None:
        devices = build.devices
        offload = build.gpu_offload
        simd = _simd_from_system_info(build.system_info) or simd
        workers = rpc_workers(devices)
        if not gpus:
            # A GPU that only the build knows (Vulkan, SYCL, ...): take its figures.
            gpus = [
                GPU(d.description or d.name, "other", d.total_bytes, d.free_bytes, d.kind == "igpu", "llama.cpp")
                for d in devices
                if d.kind in ("gpu", "igpu") and not is_rpc_device(d)
            ]
    notes = _notes(gpus, devices, offload, build is not None)
    return Hardware(
        ram_total=vm.total,
        ram_available=vm.available,
        swap_total=sw.total,
        swap_free=sw.free,
        cpu_model=cpu_model,
        cores_physical=psutil.cpu_count(logical=False) or 1,
        cores_logical=psutil.cpu_count(logical=True) or 1,
        simd=simd,
        gpus=tuple(gpus),
        devices=devices,
        rpc_workers=workers,
        gpu_offload=offload,
        notes=notes,
    )


def is_rpc_device(device: Device) -> bool:
    """A device of a llama.cpp RPC worker (ggml-rpc names them RPC0, RPC1, ...)."""
    return re.fullmatch(r"RPC\d+", device.name) is not None


def rpc_workers(devices: tuple[Device, ...]) -> tuple[GPU, ...]:
    """The RPC workers among llama.cpp's devices, as offload targets (ggml-rpc describes each by
    its endpoint, host:port)."""
    return tuple(
        GPU(f"{d.name} {d.description}".strip(), "rpc", d.total_bytes, d.free_bytes, source="rpc")
        for d in devices
        if is_rpc_device(d)
    )


# How to rebuild llama-cpp-python with each backend: the `hw` note below names this command, and
# packaging/gpu/install.sh runs the same one (tests/packaging/test_gpu_build.py holds them together).
GPU_BUILDS = {
    "cuda": "-DGGML_CUDA=on",
    "metal": "-DGGML_METAL=on",
    "rocm": "-DGGML_HIP=on",
    "vulkan": "-DGGML_VULKAN=on",
    "cpu": "-DGGML_NATIVE=on",
    # llama.cpp's RPC backend (--rpc, rpc-server); the script combines it with a GPU backend.
    "rpc": "-DGGML_RPC=on",
}
VENDOR_BACKENDS = {"nvidia": "cuda", "amd": "rocm", "apple": "metal"}  # any other GPU: vulkan


def pinned_bindings_version() -> str:
    """The llama-cpp-python version localllm requires (its pin), else the one installed."""
    from importlib import metadata

    try:
        for requirement in metadata.requires("localllm") or []:
            match = re.fullmatch(r"llama-cpp-python\s*==\s*([\w.]+)", requirement.split(";")[0].strip())
            if match:
                return match.group(1)
    except metadata.PackageNotFoundError:
        pass  # not installed as a package (a frozen build): ask the bindings' own metadata
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "VERSION"


def gpu_build_command(backend: str, python: str = "python3", version: str | None = None) -> str:
    """The command that rebuilds llama-cpp-python for ``backend`` in ``python``'s environment."""
    return (
        f'CMAKE_ARGS="{GPU_BUILDS[backend]}" {python} -m pip install --force-reinstall --no-cache-dir '
        f'--no-binary llama-cpp-python "llama-cpp-python=={version or pinned_bindings_version()}"'
    )


def _this_python() -> str:
    import sys

    return "python3" if getattr(sys, "frozen", False) or not sys.executable else sys.executable


def _notes(gpus: list[GPU], devices: tuple[Device, ...], offload: bool, asked: bool) -> tuple[str, ...]:
    if not asked or not gpus:
        return ()
    build_gpus = [d for d in devices if d.kind in ("gpu", "igpu") and not is_rpc_device(d)]
    if offload and build_gpus:
        return ()
    backend = VENDOR_BACKENDS.get(gpus[0].vendor, "vulkan")
    return (
        f"{gpus[0].name} is present but this llama.cpp build is CPU-only: models run on the CPU. "
        f"To use the GPU: {gpu_build_command(backend, _this_python())} "
        f"(or packaging/gpu/install.sh {backend} in a source checkout)",
    )


def _cpu_info() -> tuple[str, set[str]]:
    model, flags = "", set[str]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            text = cpuinfo.read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
            if model and flags:
                break
    if not model and platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def _sysctl(name: str) -> str:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


_SIMD_ORDER = ("SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "AVX_VNNI", "AVX512", "AVX512_VBMI",
               "AVX512_VNNI", "AVX512_BF16", "AMX_INT8", "NEON", "ARM_FMA", "FP16_VA", "DOTPROD",
               "MATMUL_INT8", "SVE", "SME")  # fmt: skip


def _simd_from_system_info(info: str) -> tuple[str, ...]:
    """The features llama.cpp reports as used (``AVX2 = 1``)."""
    on = {m.group(1) for m in re.finditer(r"([A-Z0-9_]+) = 1", info)}
    return tuple(f for f in _SIMD_ORDER if f in on)


def _simd_from_flags(flags: set[str]) -> tuple[str, ...]:
    table = {"sse3": "SSE3", "ssse3": "SSSE3", "avx": "AVX", "avx2": "AVX2", "f16c": "F16C", "fma": "FMA",
             "avx_vnni": "AVX_VNNI", "avx512f": "AVX512", "avx512_vnni": "AVX512_VNNI",
             "avx512_bf16": "AVX512_BF16", "amx_int8": "AMX_INT8", "asimd": "NEON", "asimddp": "DOTPROD", "i8mm": "MATMUL_INT8",
             "sve": "SVE"}  # fmt: skip
    found = {name for flag, name in table.items() if flag in flags}
    return tuple(f for f in _SIMD_ORDER if f in found)


def _nvidia_gpus() -> list[GPU]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []  # no driver, no GPU: not an error
    gpus: list[GPU] = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode("utf-8", errors="replace")
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GPU(str(name), "nvidia", int(mem.total), int(mem.free), source="nvml"))
    except pynvml.NVMLError:
        pass  # a GPU that NVML cannot describe is left out; the others stay
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    return gpus


def _amd_gpus(root: Path = Path("/sys/class/drm")) -> list[GPU]:
    """AMD GPUs through amdgpu's sysfs files (also what ROCm reads)."""
    gpus: list[GPU] = []
    if not root.is_dir():
        return gpus
    for card in sorted(root.glob("card[0-9]*")):
        device = card / "device"
        total_file = device / "mem_info_vram_total"
        if "-" in card.name or not total_file.is_file():
            continue
        try:
            vendor = (device / "vendor").read_text().strip()
            total = int(total_file.read_text().strip())
            used = int((device / "mem_info_vram_used").read_text().strip())
        except (OSError, ValueError):
            continue
        if vendor != "0x1002" or total <= 0:
            continue
        name = "AMD GPU"
        product = device / "product_name"
        if product.is_file():
            try:
                name = product.read_text().strip() or name
            except OSError:
                pass
        # An APU's small VRAM carve-out is unified with RAM; a discrete card has >= 2 GiB.
        gpus.append(GPU(name, "amd", total, max(0, total - used), unified=total < 2 * GiB, source="sysfs"))
    return gpus


def _apple_gpu(ram_total: int) -> GPU | None:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return None
    name = _sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    return GPU(f"{name} GPU", "apple", ram_total, metal_working_set(ram_total), unified=True, source="metal")
