"""The runtime: llama.cpp driven through llama-cpp-python's low-level bindings.

This package is the only place that talks to llama.cpp. Its public names are listed in
:data:`_EXPORTS` and imported on first use (PEP 562), so importing ``localllm.runtime`` (or its
llama.cpp-free ``options``) costs nothing until a model is really loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "LoadOptions",
            "AdapterSpec",
            "AdapterSet",
            "SamplingOptions",
            "ThinkBudget",
            "GenerationStats",
            "LoadReport",
            "DEFAULT_CTX",
            "default_threads",
        ),
        "options",
    ),
    **dict.fromkeys(("Model", "Generation"), "model"),
    "set_verbose": "llama",
    **dict.fromkeys(
        (
            "BackendDevice",
            "backend_devices",
            "supports_gpu_offload",
            "system_info",
            "build_has_amx",
            "llama_cpp_version",
            "RPCWorker",
            "supports_rpc",
            "connect_rpc",
            "serve_rpc",
            "check_rpc_listen",
        ),
        "devices",
    ),
    **dict.fromkeys(("BatchRequest", "BatchResult", "BatchSession", "json_schema_grammar"), "batching"),
    **dict.fromkeys(("BatchEngine", "SequenceStream"), "serving"),
    **dict.fromkeys(("bench_pp_tg", "bench_batched", "BatchedBench"), "bench"),
    **dict.fromkeys(("ThreadPolicy", "ThreadTuner", "busy_cores"), "threads"),
    "quantize_model": "quantize",
    "Scorer": "scoring",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'localllm.runtime' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
