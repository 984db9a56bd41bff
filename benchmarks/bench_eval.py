"""`localllm eval` against llama.cpp's own llama-perplexity, on the same model, text, ctx and chunks.

    .venv/bin/python benchmarks/bench_eval.py [--model FILE] [--ctx 512] [--chunks 20] [--threads N]

Builds llama-perplexity from the vendored llama.cpp of the installed llama-cpp-python when missing
(benchmarks/build_llama_bench.sh), writes the default eval text out, re-quantizes the model to
Q4_0 (the copy the test suite compares too), then prints, for both tools: perplexity, the KL
divergence of the copy from the model (mean, p99), same-top share and mean Δp, and wall times.
llama-perplexity runs with -b ctx (one chunk per batch, as localllm decodes), so both do the same
work. KLD differs by construction: llama-perplexity keeps every logit of the reference (quantized to
16 bits), localllm the top 64 and the rest's mass (a lower bound of the full KLD).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / ".bench" / "bin" / "llama-perplexity"
LOCALLLM = [sys.executable, "-m", "localllm"]


def ensure_tool() -> None:
    if not TOOL.exists():
        print("building llama-perplexity (once, several minutes)...", file=sys.stderr)
        subprocess.run(["bash", str(ROOT / "benchmarks" / "build_llama_bench.sh")], check=True, env={
            **__import__("os").environ, "TOOLS": "llama-perplexity"})  # fmt: skip


def default_model() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model, imported once the path is set

    return smollm2_path.__wrapped__()


def timed(cmd: list[str]) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr, wall


def number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    ensure_tool()
    model = args.model or default_model()
    work = ROOT / ".bench" / "eval"
    work.mkdir(parents=True, exist_ok=True)
    from localllm.eval.text import default_text
    from localllm.runtime import quantize_model

    text = work / "default.txt"
    text.write_text(default_text().text, encoding="utf-8")
    copy = work / (model.stem + ".requant-Q4_0.gguf")
    if not copy.exists():
        quantize_model(model, copy, "Q4_0", allow_requantize=True)
    common = ["-f", str(text), "-c", str(args.ctx), "-b", str(args.ctx), "--chunks", str(args.chunks),
              "-t", str(args.threads)]  # fmt: skip
    base = work / "kld-base.bin"
    out_ref, lp_ref_s = timed([str(TOOL), "-m", str(model), *common, "--kl-divergence-base", str(base)])
    out_cmp, lp_cmp_s = timed(
        [str(TOOL), "-m", str(copy), *common, "--kl-divergence-base", str(base), "--kl-divergence"]
    )
    ours = [*LOCALLLM, "eval", "--text", str(text), "--ctx", str(args.ctx), "--chunks", str(args.chunks),
            "--threads", str(args.threads), "--gpu-layers", "0", "--json", "-q"]  # fmt: skip
    home = {"LOCALLLM_HOME": str(work / "home")}
    import os

    env = {**os.environ, **home}
    subprocess.run(["rm", "-rf", str(work / "home")], check=True)
    started = time.perf_counter()
    mine_ref = json.loads(
        subprocess.run([*ours, str(model)], capture_output=True, text=True, env=env, check=True).stdout
    )
    ll_ref_s = time.perf_counter() - started
    started = time.perf_counter()
    mine_cmp = json.loads(
        subprocess.run(
            [*ours, str(copy), "--ref", str(model)], capture_output=True, text=True, env=env, check=True
        ).stdout
    )
    ll_cmp_s = time.perf_counter() - started  # the copy's pass plus the reference pass (its logits saved)

    lp = {
        "perplexity": number(r"Final estimate: PPL = ([0-9.]+)", out_ref),
        "perplexity_copy": number(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", out_cmp),
        "kld_mean": number(r"Mean\s+KLD:\s*([0-9.]+)", out_cmp),
        "kld_p99": number(r"99\.0%\s+KLD:\s*([0-9.]+)", out_cmp),
        "same_top": number(r"Same top p:\s*([0-9.]+)", out_cmp),
        "delta_p": number(r"Mean\s+Δp:\s*([-0-9.]+)", out_cmp),
    }
    rows = [
        ("perplexity (model)", lp["perplexity"], mine_ref["perplexity"]),
        ("perplexity (Q4_0 copy)", lp["perplexity_copy"], mine_cmp["perplexity"]),
        ("KLD mean", lp["kld_mean"], mine_cmp["kl_divergence"]["mean"]),
        ("KLD p99", lp["kld_p99"], mine_cmp["kl_divergence"]["p99"]),
        ("same top (%)", lp["same_top"], 100 * mine_cmp["same_top"]),
        ("mean Δp (%)", lp["delta_p"], 100 * mine_cmp["delta_p"]),
        ("time: model alone (s)", lp_ref_s, ll_ref_s),
        ("time: copy vs reference (s)", lp_ref_s + lp_cmp_s, ll_cmp_s),
    ]
    print(f"{model.name}, ctx {args.ctx}, {args.chunks} chunks, {args.threads} threads")
    print(f"{'':<30} {'llama-perplexity':>18} {'localllm eval':>15} {'diff':>9}")
    for name, theirs, mine in rows:
        diff = f"{(mine - theirs) / theirs:+.2%}" if theirs else "-"
        print(f"{name:<30} {theirs if theirs is not None else float('nan'):>18.6g} {mine:>15.6g} {diff:>9}")


if __name__ == "__main__":
    main()
