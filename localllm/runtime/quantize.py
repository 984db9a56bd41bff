"""Quantizing a GGUF (synthetic models for tests and benchmarks; users' own conversions)."""

from __future__ import annotations

from pathlib import Path

from localllm.errors import ModelLoadError
from localllm.gguf import quants

from . import llama
from .options import default_threads


def quantize_model(
    src: str | Path, dest: str | Path, quant: str, *, threads: int | None = None, allow_requantize: bool = False
) -> None:
    """Write ``dest``: ``src`` quantized to ``quant`` (a llama.cpp file type name, e.g. Q4_K_M);
    ``allow_requantize``: ``src`` may be quantized already (a lossy copy of a lossy file)."""
    ftype = quants.WRITABLE_FTYPES.get(quant.upper())
    if ftype is None:
        raise ModelLoadError(
            f"cannot quantize to {quant}", hint=f"pick one of {', '.join(sorted(quants.WRITABLE_FTYPES))}"
        )
    llama.quantize(Path(src), Path(dest), ftype, threads or default_threads(), quant, allow_requantize)
