"""The application layer: the use cases the CLI, the TUI (and a server) call.

Each shell parses what the user typed, makes one call here, and shows the result. Nothing in a
shell repeats a core sequence (resolve, plan, load, record); nothing here prints or draws.

- :mod:`.loading`: open a model from a reference (one load path for run, chat, batch, bench).
- :mod:`.fitting`: judge every quantization of a model on a machine (fit, list, the TUI's badges).
- :mod:`.library`: list, pull, import, remove, inspect.
- :mod:`.browsing`: the TUI's model browser (one row per model, the chat a row opens).
- :mod:`.batching`: batch completion and benchmarks.
- :mod:`.evaluating`: perplexity, KL divergence and task accuracy of a model file (``eval``).
- :mod:`.serving`: models served to many clients at once (``serve``): loaded on demand, unloaded when idle.
- :mod:`.conversation_state`: a conversation's KV cache kept on disk (reopening a long chat).
- :mod:`.machine`: the machine to plan for (detected, named or overridden).
- :mod:`.options`: the limits of every option, checked once for every command.
- :mod:`.preferences`: what the user chose that outlives a session (the theme).
- :mod:`.types`: the core's types the shells name, so that shells import only this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULES = frozenset(
    {
        "adapters",
        "batching",
        "browsing",
        "conversation_state",
        "evaluating",
        "documents",
        "drafting",
        "fitting",
        "library",
        "loading",
        "machine",
        "options",
        "preferences",
        "serving",
        "types",
    }
)
# public name -> the submodule that defines it. Imported on first use (PEP 562): a command pays only
# for the use cases it calls (`localllm list` never loads the batch or loading code).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("bench", "complete_jsonl", "complete_on_endpoints", "endpoint_specs", "writer_for"), "batching"),
    **dict.fromkeys(("evaluate", "evaluate_tasks"), "evaluating"),
    **dict.fromkeys(("FitReport", "fit_model", "quant_options"), "fitting"),
    **dict.fromkeys(("import_file", "inspect_model", "list_models", "plan_pull", "remove_model"), "library"),
    **dict.fromkeys(
        (
            "OpenedModel",
            "find",
            "lora_specs",
            "open_for_batch",
            "open_for_bench",
            "open_model",
            "sampling",
            "show_llama_log",
        ),
        "loading",
    ),
}

__all__ = sorted(_SUBMODULES | set(_EXPORTS))


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        raise AttributeError(f"module 'localllm.app' has no attribute '{name}'")
    globals()[name] = value
    return value
