"""What llama.cpp really allocated when a model was loaded, kept so ``localllm fit`` can show the
estimate's error for models already used.

Each load appends one JSON line to ``<data dir>/loads.jsonl``: the file (path, size), the settings
(context, GPU layers, KV types), the buffers llama.cpp logged (MiB per buffer, as
:class:`localllm.engine.LoadReport` has them), the process's peak RSS and, where NVML can say, the
GPU memory the process held. The log keeps the newest :data:`KEEP` records.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TypeGuard

from localllm import fs, paths

KEEP = 200


def log_path() -> Path:
    return paths.data_dir() / "loads.jsonl"


def peak_rss() -> int | None:
    """The process's peak resident set in bytes (None where the platform cannot say).

    On Linux this is VmHWM: ``ru_maxrss`` survives ``exec``, so a process started by a big parent
    would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # not Linux: getrusage below
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def gpu_memory_of_this_process() -> int | None:
    """Bytes of NVIDIA GPU memory this process holds (None without NVML or an NVIDIA GPU)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        used = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory:
                    used += proc.usedGpuMemory
        return used
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def record(path: Path, size: int, settings: dict[str, object], buffers_mib: dict[str, float]) -> None:
    """Append one load; failures to write (read-only or full disk) only cost the record."""
    entry = {
        "path": str(Path(path).resolve()),
        "size": size,
        "time": time.time(),
        "settings": settings,
        "buffers_mib": buffers_mib,
        "peak_rss": peak_rss(),
        # Asked whatever the layers: a GPU build holds VRAM (context, compute buffers) even at 0.
        "gpu_bytes": gpu_memory_of_this_process(),
    }
    target = log_path()
    try:
        paths.ensure_dir(target.parent)
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if target.stat().st_size > KEEP * 2 * 1024:  # about 2 KiB a record: trim now and then
            _trim(target)
    except OSError:
        return  # a record is a nicety; loading the model already worked


def _trim(target: Path) -> None:
    lines = target.read_bytes().decode("utf-8", "replace").splitlines()[-KEEP:]
    fs.atomic_write(target, "".join(line + "\n" for line in lines))


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[float]:
    return (_is_int(v) or isinstance(v, float)) and v == v and abs(v) != float("inf")


_INT_SETTINGS = ("n_ctx", "n_gpu_layers", "n_batch", "n_ubatch")


def _setting_ok(key: object, value: object) -> bool:
    if key in _INT_SETTINGS:
        return value is None or (_is_int(value) and -1 <= value < 1 << 31)
    if key in ("type_k", "type_v"):
        return value is None or isinstance(value, str)
    return True


def _well_formed(entry: object) -> bool:
    """A record as :func:`record` writes it; anything else (a hand edit, another version, a damaged
    disk) is skipped."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and (entry.get("size") is None or _is_int(entry.get("size")))
        and _is_number(entry.get("time", 0))
        and isinstance(entry.get("settings", {}), dict)
        and all(_setting_ok(k, v) for k, v in entry.get("settings", {}).items())
        and isinstance(entry.get("buffers_mib"), dict)
        and all(isinstance(k, str) and _is_number(v) for k, v in entry["buffers_mib"].items())
        and all(entry.get(k) is None or _is_int(entry.get(k)) for k in ("peak_rss", "gpu_bytes"))
    )


def last_load(path: Path, size: int | None = None) -> dict | None:
    """The newest record for ``path`` (and ``size``, so a replaced file does not count), or None."""
    key = str(Path(path).resolve())
    try:
        lines = log_path().read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut short by a crash, or damaged
        if _well_formed(entry) and entry["path"] == key and (size is None or entry.get("size") == size):
            return entry
    return None
