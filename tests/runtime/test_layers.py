"""How the runtime is layered: plain options, no side effects at import, owners that free once."""

from __future__ import annotations

import subprocess
import sys

from localllm.runtime import llama


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_options_import_without_llama_cpp():
    code = (
        "import sys\n"
        "from localllm.runtime.options import LoadOptions, SamplingOptions, GenerationStats, LoadReport\n"
        "from localllm.runtime import DEFAULT_CTX, default_threads, LoadOptions as facade\n"
        "assert facade is LoadOptions and DEFAULT_CTX and default_threads() >= 1\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llama_cpp'))"
    )
    assert _run(code) == "[]"


def test_importing_the_runtime_installs_no_log_callback():
    # Count llama_log_set calls made while importing every runtime module.
    code = (
        "import llama_cpp\n"
        "calls = []\n"
        "real = llama_cpp.llama_log_set\n"
        "llama_cpp.llama_log_set = lambda *a: calls.append(a) or real(*a)\n"
        "import localllm.runtime.model, localllm.runtime.batching, localllm.runtime.bench\n"
        "import localllm.runtime.devices, localllm.runtime.quantize, localllm.runtime.synthetic\n"
        "from localllm.runtime import llama\n"
        "print(len(calls), llama.LOG.installed)\n"
        "llama.init_backend(); llama.init_backend()\n"
        "print(len(calls), llama.LOG.installed)"
    )
    assert _run(code).splitlines() == ["0 False", "1 True"]


def test_set_verbose_reaches_the_sink():
    from localllm import runtime

    try:
        runtime.set_verbose(True)
        assert llama.LOG.verbose
    finally:
        runtime.set_verbose(False)
    assert not llama.LOG.verbose


def test_owners_free_their_object_once(smollm2_path, monkeypatch):
    freed: list[str] = []
    for name in ("llama_model_free", "llama_free", "llama_batch_free", "llama_sampler_free"):
        real = getattr(llama.L, name)
        monkeypatch.setattr(llama.L, name, lambda obj, _real=real, _name=name: (freed.append(_name), _real(obj))[1])
    model = llama.LlamaModel(smollm2_path)
    ctx = llama.LlamaContext(model, n_ctx=64, n_batch=64, n_ubatch=64, n_seq_max=1, n_threads=1, n_threads_batch=1)
    batch = llama.LlamaBatch(8)
    sampler = llama.LlamaSampler()
    sampler.add_greedy()
    assert ctx.decode_tokens(model.tokenize("Hello", add_special=True, parse_special=False)) == 0
    assert 0 <= sampler.sample(ctx, -1) < model.n_vocab()
    for owner in (sampler, batch, ctx, model):
        owner.close()
        owner.close()
        assert owner.closed
    with llama.LlamaBatch(4) as scoped:
        pass
    scoped.close()
    assert freed == ["llama_sampler_free", "llama_batch_free", "llama_free", "llama_model_free", "llama_batch_free"]


def test_load_report_carries_what_the_application_records(smollm2_path, isolated_home):
    from localllm import runtime

    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256, n_threads=1)) as model:
        report = model.load_report
    assert report.path == smollm2_path
    assert report.file_size == smollm2_path.stat().st_size
    settings = dict(report.settings)
    assert isinstance(settings.pop("repack"), bool)  # whether llama.cpp repacked weights (not where it uses AMX)
    assert settings == {
        "n_ctx": 256,
        "n_gpu_layers": 0,
        "type_k": "f16",
        "type_v": "f16",
        "flash_attn": None,
        "n_batch": 512,
        "n_ubatch": 512,
        "cpu_moe_layers": 0,
    }
    # Recording the load is the caller's job: the runtime writes no load log.
    assert not list(isolated_home.rglob("loads.jsonl"))
