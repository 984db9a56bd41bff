"""The quality cost shown wherever a quantization is chosen or listed: the KL divergence ``eval``
measured for that file when there is one, else the prior for its quantization type (llama.cpp's
published table, interpolated by bits per weight), each labelled with where it comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localllm.gguf import quants

from . import store


def quality_cost(
    quant: str | None, path: Path | None = None, size: int | None = None, sha: str | None = None
) -> dict[str, Any] | None:
    """``{"kld", "source", "label"}`` (``source``: measured, published, interpolated, unquantized),
    with ``reference`` and ``p99`` when measured; None when nothing is known."""
    measured = store.measured_kld(path, size, sha) if path is not None or sha else None
    if measured is not None:
        ref = (measured.get("reference") or {}).get("model", "a reference")
        return {"kld": measured["kld"], "source": "measured", "label": f"measured by localllm eval against {ref}",
                "reference": measured.get("reference"), "p99": measured.get("p99")}  # fmt: skip
    prior = quants.kld_prior(quant) if quant else None
    if prior is None:
        return None
    return {"kld": prior.kld, "source": prior.source, "label": prior.label}
