"""The application layer: the use cases the CLI, the TUI (and a server) call.

Each shell parses what the user typed, makes one call here, and shows the result. Nothing in a
shell repeats a core sequence (resolve, plan, load, record); nothing here prints or draws.

- :mod:`.loading`: open a model from a reference (one load path for run, chat, batch, bench).
- :mod:`.fitting`: judge every quantization of a model on a machine (fit, list, the TUI's badges).
- :mod:`.library`: list, pull, import, remove, inspect.
- :mod:`.batching`: batch completion and benchmarks.
- :mod:`.conversation_state`: a conversation's KV cache kept on disk (reopening a long chat).
- :mod:`.machine`: the machine to plan for (detected, named or overridden).
- :mod:`.options`: the limits of every option, checked once for every command.
- :mod:`.preferences`: what the user chose that outlives a session (the theme).
"""

from __future__ import annotations

from . import batching, conversation_state, fitting, library, loading, machine, options, preferences
from .batching import bench, complete_jsonl, writer_for
from .fitting import FitReport, fit_model, quant_options
from .library import import_file, inspect_model, list_models, plan_pull, remove_model
from .loading import OpenedModel, find, open_for_batch, open_for_bench, open_model, sampling, show_llama_log

__all__ = [
    "FitReport", "OpenedModel", "batching", "bench", "complete_jsonl", "conversation_state", "find", "fit_model", "fitting",
    "import_file", "inspect_model", "library", "list_models", "loading", "machine", "open_for_batch",
    "open_for_bench", "open_model", "options", "plan_pull", "preferences", "quant_options", "remove_model",
    "sampling",
    "show_llama_log", "writer_for",
]
