"""The one table of llama.cpp quantizations (file types): name, ``general.file_type`` value,
typical bits per weight, and what localllm does with each.

Every other view is derived from :data:`QUANTS`: the names a GGUF header's file type is shown as,
the quantizations a catalog entry or a Hub repository may offer, the ones ``quantize_model`` can
write, and the size a quantization of N parameters takes before its header has been read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Quant:
    name: str  # as llama-quantize and GGUF repositories spell it
    ftype: int | None  # llama_ftype (include/llama.h); None: not a file type of its own
    bits: float | None  # typical whole-file bits per weight; None: obsolete or unmeasured
    offered: bool = True  # found in GGUF repositories today (catalog entries and pulls may name it)
    writable: bool = False  # localllm can quantize to it (synthetic models, conversions)


# fmt: off
QUANTS: tuple[Quant, ...] = (
    Quant("F32", 0, 32.0, writable=True),
    Quant("F16", 1, 16.0, writable=True),
    Quant("Q4_0", 2, 4.5, writable=True),
    Quant("Q4_1", 3, 5.0, writable=True),
    Quant("Q4_1_SOME_F16", 4, None, offered=False),
    Quant("Q4_2", 5, None, offered=False),
    Quant("Q4_3", 6, None, offered=False),
    Quant("Q8_0", 7, 8.5, writable=True),
    Quant("Q5_0", 8, 5.5, writable=True),
    Quant("Q5_1", 9, 6.0, writable=True),
    Quant("Q2_K", 10, 3.0, writable=True),
    Quant("Q3_K_S", 11, 3.5),
    Quant("Q3_K_M", 12, 3.91, writable=True),
    Quant("Q3_K_L", 13, 4.27),
    Quant("Q4_K_S", 14, 4.58, writable=True),
    Quant("Q4_K_M", 15, 4.89, writable=True),
    Quant("Q5_K_S", 16, 5.54, writable=True),
    Quant("Q5_K_M", 17, 5.69, writable=True),
    Quant("Q6_K", 18, 6.56, writable=True),
    Quant("IQ2_XXS", 19, 2.06),
    Quant("IQ2_XS", 20, 2.31),
    Quant("Q2_K_S", 21, 2.9),
    Quant("IQ3_XS", 22, 3.3),
    Quant("IQ3_XXS", 23, 3.06),
    Quant("IQ1_S", 24, 1.56),
    Quant("IQ4_NL", 25, 4.5, writable=True),
    Quant("IQ3_S", 26, 3.44),
    Quant("IQ3_M", 27, 3.66),
    Quant("IQ2_S", 28, 2.5),
    Quant("IQ2_M", 29, 2.7),
    Quant("IQ4_XS", 30, 4.25, writable=True),
    Quant("IQ1_M", 31, 1.75),
    Quant("BF16", 32, 16.0, writable=True),
    Quant("Q4_0_4_4", 33, None, offered=False),
    Quant("Q4_0_4_8", 34, None, offered=False),
    Quant("Q4_0_8_8", 35, None, offered=False),
    Quant("TQ1_0", 36, 1.69),
    Quant("TQ2_0", 37, 2.06),
    Quant("MXFP4_MOE", 38, 4.25),
    Quant("NVFP4", 39, None, offered=False),
    Quant("Q1_0", 40, None, offered=False),
    Quant("Q2_0", 41, None, offered=False),
    Quant("GUESSED", 1024, None, offered=False),
    Quant("MXFP4", None, 4.25),  # how GGUF repositories name gpt-oss files
)
# fmt: on

_BY_NAME = {q.name: q for q in QUANTS}

FTYPE_NAMES: dict[int, str] = {q.ftype: q.name for q in QUANTS if q.ftype is not None}
OFFERED: frozenset[str] = frozenset(q.name for q in QUANTS if q.offered)
WRITABLE_FTYPES: dict[str, int] = {q.name: q.ftype for q in QUANTS if q.writable and q.ftype is not None}
UNQUANTIZED: frozenset[str] = frozenset({"F32", "F16", "BF16"})


def get(name: str) -> Quant | None:
    return _BY_NAME.get(name.upper())


def ftype_name(ftype: int) -> str:
    """``"Q4_K_M"`` for 15; ``"unknown (99)"`` for a value this table does not know."""
    return FTYPE_NAMES.get(ftype, f"unknown ({ftype})")


def typical_size(name: str, n_params: int) -> int | None:
    """Bytes a ``name`` file of ``n_params`` parameters typically takes; None when unknown."""
    quant = get(name)
    if quant is None or quant.bits is None:
        return None
    return int(n_params * quant.bits / 8)


# --- What a quantization costs in quality ---------------------------------------------------------

# Mean KL divergence of each quantization's next-token distributions from FP16's, as llama.cpp
# published it for Llama-3-8B (llama-perplexity --kl-divergence; tools/perplexity/README.md). These
# are the measured points; other quantizations are interpolated from them by bits per weight.
KLD_SOURCE = "llama.cpp's published Llama-3-8B table"
PUBLISHED_KLD: dict[str, float] = {"Q8_0": 0.0014, "Q6_K": 0.0055, "Q5_K_M": 0.0108, "Q4_K_M": 0.0313}


@dataclass(frozen=True)
class KLDPrior:
    quant: str
    kld: float
    source: str  # "published", "interpolated" (by bits per weight) or "unquantized"

    @property
    def label(self) -> str:
        if self.source == "unquantized":
            return "unquantized: no loss"
        how = "" if self.source == "published" else ", interpolated by bits per weight"
        return f"prior from {KLD_SOURCE}{how}"


def kld_prior(name: str) -> KLDPrior | None:
    """The expected mean KLD of quantization ``name`` against FP16, from llama.cpp's published
    table: the table's value, or log-linear in bits per weight between (and beyond) its points;
    None for a quantization of unknown bits."""
    quant = get(name)
    if quant is None:
        return None
    if quant.name in UNQUANTIZED:
        return KLDPrior(quant.name, 0.0, "unquantized")
    if quant.name in PUBLISHED_KLD:
        return KLDPrior(quant.name, PUBLISHED_KLD[quant.name], "published")
    if quant.bits is None:
        return None
    points = sorted((_BY_NAME[q].bits or 0.0, math.log(k)) for q, k in PUBLISHED_KLD.items())
    bits = quant.bits
    # The segment around ``bits``, or the nearest end segment to extrapolate along.
    i = next((i for i in range(len(points) - 1) if bits <= points[i + 1][0]), len(points) - 2)
    (b0, k0), (b1, k1) = points[i], points[i + 1]
    kld = math.exp(k0 + (k1 - k0) * (bits - b0) / (b1 - b0))
    return KLDPrior(quant.name, round(kld, 4 if kld < 0.1 else 3), "interpolated")
