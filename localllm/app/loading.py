"""Opening a model from what the user typed: the one load path.

resolve the reference (installing the starter model when nothing is installed) -> read the GGUF
header (cached) -> detect the machine -> plan the context and GPU layers the user left out ->
load in the runtime -> note the model as used. Closing records what llama.cpp really allocated in
``loads.jsonl``, so ``localllm fit`` can show the estimate's error. ``run``, ``chat``, the TUI,
``batch`` and ``bench`` all open models here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from localllm.fit import loadlog
from localllm.fit.hardware import Hardware
from localllm.fit.plan import LoadChoice, load_settings, plan_parallel, with_adapters, with_draft
from localllm.gguf import cache as headercache
from localllm.models import store
from localllm.models.resolve import ResolvedModel, resolve
from localllm.options import SAMPLING, OptionError
from localllm.runtime.options import AdapterSpec, LoadOptions, SamplingOptions, default_ctx

from . import machine
from .adapters import adapter_infos, adapter_specs

Notice = Callable[[str], None]


class OpenedModel:
    """A loaded model and what it was opened as. It behaves as the runtime model it holds
    (``chat``, ``render_chat``, ``tokenize``, ``n_ctx`` ...); ``close()`` frees it and records the
    load."""

    def __init__(self, model: Any, resolved: ResolvedModel) -> None:
        self.model = model
        self.resolved = resolved
        self._closing = threading.Lock()

    @property
    def label(self) -> str:
        return self.resolved.label

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def close(self) -> None:
        with self._closing:
            model, self.model = self.model, None
        if model is None:
            return
        report = model.load_report
        try:
            # Before freeing: the record asks NVML what this process holds on the GPU now.
            loadlog.record(report.path, report.file_size, {**report.settings, **report.threads}, report.buffers_mib)
        finally:
            model.close()

    def __enter__(self) -> OpenedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load(resolved: ResolvedModel, options: LoadOptions, adapters: Sequence[AdapterSpec] = ()) -> OpenedModel:
    from dataclasses import replace

    from localllm import runtime

    if adapters:
        options = replace(options, adapters=tuple(adapters))

    opened = OpenedModel(runtime.Model(resolved.path, options), resolved)
    if resolved.installed is not None:
        try:
            store.touch(resolved.installed)
        except BaseException:
            opened.close()
            raise
    return opened


def _planned_header(resolved: ResolvedModel, adapters: Sequence[AdapterSpec]):
    """The base's header as the planner sees it: with the adapters' tensors among its weights."""
    return with_adapters(headercache.read_header(resolved.path), adapter_infos(adapters))


def leaving(hw: Hardware, used: int) -> Hardware:
    """``hw`` with ``used`` bytes of RAM already taken (an embedding model loaded beside the one
    being planned): what the planner has left."""
    if used <= 0:
        return hw
    from dataclasses import replace

    return replace(hw, ram_available=max(0, hw.ram_available - used), ram_total=max(0, hw.ram_total - used))


def lora_specs(references: Sequence[str] | None) -> tuple[AdapterSpec, ...]:
    """The adapters ``--lora FILE_OR_NAME[:SCALE]`` options name (read and checked)."""
    return adapter_specs(references or ())


def find(reference: str | None, notice: Notice | None = None) -> ResolvedModel:
    """The model file a reference names (the last used model, or the starter model, for None)."""
    return resolve(reference, notice=notice)


def open_model(
    reference: str | None = None,
    *,
    resolved: ResolvedModel | None = None,
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
    n_threads: int | None = None,
    hardware: Hardware | None = None,
    notice: Notice | None = None,
    adapters: Sequence[AdapterSpec] = (),
    beside: int = 0,
    draft: str | None = None,
) -> OpenedModel:
    """Load a model for chatting or completing, with the planner's settings for what is not given.
    ``adapters``: LoRA adapters loaded with it (see :func:`lora_specs`), counted by the planner;
    ``beside``: bytes of RAM another model loaded with it takes (a collection's embedding model).
    ``draft``: speculative decoding (``--draft``): "ngram", or a reference to a draft model.

    Raises :class:`~localllm.errors.DoesNotFitError` when the model cannot fit and the user did not
    set both the context and the GPU layers."""
    resolved = resolved or find(reference, notice)
    drafter = draft_path(draft, notice) if draft is not None else None
    if n_ctx is None or n_gpu_layers is None:
        header = _planned_header(resolved, adapters)
        if drafter is not None and drafter != "ngram":  # the planner counts the draft model's weights
            header = with_draft(header, headercache.read_header(drafter))
        hw = leaving(hardware or machine.detect(), beside)
        choice = load_settings(header, hw, n_ctx, n_gpu_layers, label=resolved.label)
    else:
        choice = LoadChoice(n_ctx, n_gpu_layers)
    options = _options(choice, n_ctx=choice.n_ctx, n_threads=n_threads)
    if drafter is not None:
        from dataclasses import replace

        options = replace(options, draft=drafter)
    return _load(resolved, options, adapters)


def draft_path(reference: str, notice: Notice | None = None) -> str:
    """What ``--draft`` names, for :class:`LoadOptions`: "ngram", or the draft model's file."""
    from localllm.runtime.speculative import NGRAM

    if reference.strip().lower() == NGRAM:
        return NGRAM
    return str(find(reference, notice).path)


def _options(choice: LoadChoice, *, n_ctx: int | None, n_threads: int | None, n_batch: int = 512) -> LoadOptions:
    """LoadOptions with the planner's placement: GPU layers, experts kept on the CPU, KV cache type."""
    return LoadOptions(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_gpu_layers=choice.n_gpu_layers,
                       n_threads=n_threads, cpu_moe_layers=choice.cpu_moe_layers, type_k=choice.kv_type,
                       type_v=choice.kv_type, flash_attn=choice.flash_attn)  # fmt: skip


@dataclass
class BatchModel:
    """A model opened for batch decoding: ``n_parallel`` sequences of ``n_ctx_seq`` tokens each."""

    opened: OpenedModel
    n_parallel: int
    n_ctx_seq: int
    parallel_reason: str = ""  # why that many at once, when the planner chose it

    def close(self) -> None:
        self.opened.close()

    def __enter__(self) -> BatchModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_for_batch(
    reference: str | None = None,
    *,
    resolved: ResolvedModel | None = None,
    n_ctx_seq: int | None = None,
    n_parallel: int | None = None,
    n_gpu_layers: int | None = None,
    n_threads: int | None = None,
    lines: int | None = None,
    hardware: Hardware | None = None,
    notice: Notice | None = None,
    adapters: Sequence[AdapterSpec] = (),
    beside: int = 0,
) -> BatchModel:
    """Load a model for ``batch``: the sequences' context (default the smaller of 4096 and the
    model's), the placement (GPU layers, experts on the CPU, KV cache type) and how many sequences
    run at once (what the memory holds, at most one per input line of ``lines``) come from the
    planner when not given. The model's own context is only used to tokenize, so it is kept tiny.
    ``resolved``: the model already resolved (the server resolves each request's name once);
    ``beside``: bytes of RAM the embedding models loaded beside it take."""
    resolved = resolved or find(reference, notice)
    header = _planned_header(resolved, adapters)
    n_ctx_seq = default_ctx(n_ctx_seq, header.context_length)
    hw = leaving(hardware or machine.detect(), beside)
    choice = load_settings(header, hw, n_ctx_seq, n_gpu_layers, label=resolved.label)
    if n_parallel:
        parallel, why = n_parallel, ""
    else:
        planned = plan_parallel(header, hw, n_ctx_seq, choice, lines)
        parallel, why = planned.n, planned.reason
    return BatchModel(
        _load(resolved, _options(choice, n_ctx=64, n_batch=64, n_threads=n_threads), adapters),
        parallel,
        n_ctx_seq,
        why,
    )


def open_for_bench(
    reference: str | None = None,
    *,
    n_ctx: int = 4096,
    n_gpu_layers: int | None = None,
    n_threads: int | None = None,
    hardware: Hardware | None = None,
    notice: Notice | None = None,
    adapters: Sequence[AdapterSpec] = (),
) -> OpenedModel:
    """Load a model for ``bench``: the benchmarks make contexts of their own (the largest holds
    ``n_ctx`` tokens), so the model's is tiny. The GPU layers are the planner's for that context,
    as ``run`` plans them, unless given (``0`` forces the CPU)."""
    resolved = find(reference, notice)
    choice = LoadChoice(n_ctx, n_gpu_layers or 0)
    if n_gpu_layers is None:
        header = _planned_header(resolved, adapters)
        choice = load_settings(header, hardware or machine.detect(), n_ctx, None, label=resolved.label)
    return _load(resolved, _options(choice, n_ctx=64, n_batch=64, n_threads=n_threads), adapters)


def sampling(**settings: Any) -> SamplingOptions:
    """Sampling options (``runtime.SamplingOptions``) from the settings given; unknown keys are
    ignored, and a value the option schema refuses (saved by a version with other limits, or
    edited by hand) is left at its default, so a conversation's saved settings always load."""
    known: dict[str, Any] = {}
    for name, value in settings.items():
        option = SAMPLING.get(name)
        if option is not None:
            try:
                value = option.check(value)
            except OptionError:
                continue  # the default
            if value is not None:
                known[name] = value
        elif name in SamplingOptions.__dataclass_fields__:
            known[name] = value
    return SamplingOptions(**known)


def show_llama_log(verbose: bool) -> None:
    """Echo llama.cpp's own log on stderr (``--verbose``)."""
    from localllm import runtime

    runtime.set_verbose(verbose)
