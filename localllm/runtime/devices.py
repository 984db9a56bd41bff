"""What this llama.cpp build can do: its version, CPU features, GPU offload and devices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from localllm.errors import RPCUnavailableError, RPCWorkerError

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


# --------------------------------------------------------------------------------------------
# llama.cpp RPC workers


@dataclass(frozen=True)
class RPCWorker:
    """A device of a ggml-rpc worker this process uses, with its memory as the worker reports it."""

    endpoint: str  # host:port
    name: str  # llama.cpp's device name: RPC0, RPC1, ...
    free_bytes: int
    total_bytes: int


def supports_rpc() -> bool:
    return llama.supports_rpc()


def _no_rpc() -> RPCUnavailableError:
    return RPCUnavailableError(
        "this llama.cpp build has no RPC backend", hint="install with packaging/gpu/install.sh rpc"
    )


def connect_rpc(endpoints: Sequence[str], timeout: float = 5.0) -> list[RPCWorker]:
    """Use the ggml-rpc workers at ``endpoints`` (``host:port``) as devices of this process: every
    model loaded afterwards may put layers on them (llama.cpp splits them in proportion to free
    memory). Each worker is greeted first, so one that is down or busy is an error, not an abort.

    Raises :class:`RPCUnavailableError` on a build without RPC, :class:`RPCWorkerError` for a
    worker that cannot be used."""
    if not llama.supports_rpc():
        raise _no_rpc()
    new = [e for e in endpoints if e not in _greeted]
    for endpoint in new:
        host, _, port = endpoint.rpartition(":")
        try:
            major, minor, patch = llama.rpc_hello(host, int(port), timeout)
        except TimeoutError:
            raise RPCWorkerError(
                f"the RPC worker at {endpoint} did not answer within {timeout:g} s",
                hint="a worker serves one client at a time: is another localllm using it?",
            ) from None
        except ValueError as exc:
            raise RPCWorkerError(
                f"{endpoint} is not an RPC worker: {exc}", hint="is that the port of a llama.cpp rpc-server?"
            ) from None
        except OSError as exc:
            raise RPCWorkerError(
                f"cannot reach an RPC worker at {endpoint}: {exc.strerror or exc}",
                hint="start one there with: localllm rpc-server --host HOST --port PORT",
            ) from None
        if (major, minor) > llama.RPC_PROTO or major != llama.RPC_PROTO[0]:
            raise RPCWorkerError(
                f"the RPC worker at {endpoint} speaks ggml-rpc {major}.{minor}.{patch}; this build speaks "
                f"{llama.RPC_PROTO[0]}.{llama.RPC_PROTO[1]}",
                hint="run workers built from the same llama.cpp version",
            )
    try:
        found = llama.rpc_add_servers(endpoints)
    except OSError as exc:
        raise RPCWorkerError(str(exc)) from None
    _greeted.update(new)
    return [RPCWorker(endpoint, name, free, total) for endpoint, name, _kind, free, total in found]


_greeted: set[str] = set()  # endpoints handed to ggml-rpc: greeting them again would wait on their one client


def check_rpc_listen(host: str, port: int) -> None:
    """Whether this process can be a ggml-rpc worker at ``host:port``: :class:`RPCUnavailableError`
    on a build without RPC, :class:`RPCWorkerError` when the address cannot be listened on."""
    import socket

    if not llama.supports_rpc():
        raise _no_rpc()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise RPCWorkerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve_rpc(host: str, port: int, threads: int) -> None:
    """Be a ggml-rpc worker at ``host:port`` (blocks while serving), checked first with
    :func:`check_rpc_listen`."""
    check_rpc_listen(host, port)
    try:
        llama.rpc_serve(f"{host}:{port}", threads)
    except OSError as exc:
        raise RPCWorkerError(str(exc)) from None
    raise RPCWorkerError(f"the RPC worker at {host}:{port} stopped: ggml-rpc could not listen there")
