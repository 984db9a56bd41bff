"""The machine models are planned for: detected (with what the llama.cpp build sees), or a named or
overridden one for what-if planning."""

from __future__ import annotations

from dataclasses import replace

from localllm.fit import hardware
from localllm.fit.hardware import BuildInfo, Device, Hardware
from localllm.options import parse_endpoint, parse_endpoints


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
    profile: str | None = None,
    ram: str | None = None,
    vram: str | None = None,
    *,
    ask_llama_cpp: bool = True,
    rpc: str | None = None,
) -> Hardware:
    """The machine to plan for: a named profile or this one, with RAM and GPU memory overridden
    (sizes as people write them: ``16G``, ``512M``), and the RPC workers of ``rpc``
    (``HOST:PORT[,HOST:PORT]``, see :func:`connect_rpc`) as devices."""
    workers = connect_rpc(rpc)
    hw = hardware.profile(profile) if profile else detect(ask_llama_cpp=ask_llama_cpp or bool(workers))
    hw = hardware.with_overrides(
        hw,
        ram=hardware.parse_bytes(ram) if ram else None,
        vram=hardware.parse_bytes(vram) if vram is not None else None,
    )
    if workers and not hw.rpc_workers:  # a named or overridden machine, with these workers
        devices = tuple(Device(w.name, w.endpoint, "gpu", w.free_bytes, w.total_bytes) for w in workers)
        hw = replace(hw, rpc_workers=hardware.rpc_workers(devices))
    return hw


def connect_rpc(rpc: str | None) -> list:
    """Use the llama.cpp RPC workers ``rpc`` names (``HOST:PORT[,HOST:PORT]``; None or "": none)
    in this process: the planner counts each as a device with the memory it reports, and every model
    loaded afterwards puts layers on them. The workers (``runtime.RPCWorker``), one per device.

    Raises :class:`~localllm.options.OptionError` for a malformed list,
    :class:`~localllm.errors.RPCUnavailableError` on a build without RPC and
    :class:`~localllm.errors.RPCWorkerError` for a worker that cannot be used."""
    if not rpc:
        return []
    endpoints = parse_endpoints(rpc)
    from localllm import runtime

    return runtime.connect_rpc(endpoints)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rpc_endpoint(host: str, port: int) -> tuple[str, int]:
    """``--host`` and ``--port`` of ``rpc-server``, checked as ``--rpc`` checks an endpoint."""
    return parse_endpoint(f"{host}:{port}", "--host/--port")


def check_rpc_listen(host: str, port: int) -> None:
    """Raise what :func:`serve_rpc` would before serving: no RPC in this build, an address in use."""
    from localllm import runtime

    runtime.check_rpc_listen(host, port)


def serve_rpc(host: str, port: int, threads: int | None = None) -> None:
    """Be a llama.cpp RPC worker at ``host:port`` with this machine's first GPU, else its CPU
    (``threads`` CPU threads, default the physical cores); blocks while serving."""
    from localllm import runtime

    runtime.serve_rpc(host, port, threads or runtime.default_threads())
