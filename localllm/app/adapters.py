"""LoRA adapters named on a command line: ``FILE_OR_NAME[:SCALE]`` to the runtime's AdapterSpec.

A reference is a path to a LoRA GGUF, or the name of an adapter in the store (``localllm import``
or ``pull`` of a file with ``general.type = adapter``). The scale defaults to 1; 0 loads the
adapter switched off (a request or ``/lora`` turns it on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from localllm.errors import ModelNotFoundError, UsageError
from localllm.gguf import adapter as ggufadapter
from localllm.gguf.header import check_model_path
from localllm.runtime.options import AdapterSpec

MAX_SCALE = 100.0


def parse_scale(text: str, what: str = "a LoRA scale") -> float:
    try:
        scale = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(scale) or abs(scale) > MAX_SCALE:
        raise UsageError(f"{what} must be between -{MAX_SCALE:g} and {MAX_SCALE:g}, not {text}")
    return scale


def parse_reference(text: str) -> tuple[str, float]:
    """``FILE_OR_NAME[:SCALE]`` -> (reference, scale). A colon followed by something that is not a
    number belongs to the reference (``C:\\x.gguf``, ``name:Q4``)."""
    text = text.strip()
    if not text:
        raise UsageError("--lora needs a file or an adapter name")
    ref, sep, tail = text.rpartition(":")
    if sep and ref:
        try:
            float(tail)
        except ValueError:
            return text, 1.0
        return ref, parse_scale(tail, f"the scale of --lora {ref}")
    return text, 1.0


def locate(reference: str) -> tuple[Path, str]:
    """The file of an adapter reference and the name requests use for it."""
    path = Path(reference).expanduser()
    if path.exists() or path.suffix.lower() == ".gguf" or "/" in reference:
        check_model_path(path, reference)
        return path, path.stem
    from localllm.models import store

    found = store.find_adapter(reference)
    if found is None:
        raise ModelNotFoundError(
            f"no LoRA adapter named {reference!r} is installed",
            hint="pass the adapter's .gguf file, or add it with localllm import FILE",
        )
    return found.path(), found.name


def adapter_specs(references: Sequence[str]) -> tuple[AdapterSpec, ...]:
    """The adapters ``--lora`` options name, each read and checked (a damaged or non-LoRA file
    fails here, before the base is planned or loaded)."""
    specs = []
    for text in references:
        ref, scale = parse_reference(text)
        path, name = locate(ref)
        ggufadapter.read_adapter(path)
        specs.append(AdapterSpec(path=path, scale=scale, name=name))
    return tuple(specs)


def adapter_infos(specs: Sequence[AdapterSpec]) -> list[ggufadapter.AdapterInfo]:
    return [ggufadapter.read_adapter(spec.path) for spec in specs]


def fitting(base: Path) -> list[str]:
    """The names of the installed LoRA adapters that fit the model file ``base`` (architecture and
    tensor shapes, from the headers): what a chat on that model can choose from; none when the
    base's header cannot be read."""
    from localllm.errors import LocalLLMError
    from localllm.gguf import cache as headercache
    from localllm.models import store

    try:
        header = headercache.read_header(base)
        adapters = [m for m in store.installed() if m.is_adapter]
    except (LocalLLMError, OSError):
        return []
    names = []
    for adapter in adapters:
        try:
            ggufadapter.check_fits(ggufadapter.read_adapter(adapter.path()), header, base.name)
        except (LocalLLMError, OSError):
            continue
        names.append(adapter.name)
    return names


def references(chosen: Sequence[tuple[str, float]]) -> tuple[str, ...]:
    """(name, scale) pairs as ``--lora`` takes them: ``NAME:SCALE``."""
    return tuple(f"{name}:{scale:g}" for name, scale in chosen)
