"""`localllm bench` and `localllm batch` against llama.cpp's llama-bench and llama-batched-bench.

    .venv/bin/python benchmarks/bench_batch.py [--model FILE | --synthetic-1b] [--threads N] [--reps N]
                                               [--npp 128] [--ntg 128] [--parallel 1,8,32]
                                               [--greedy] [--determinism 32]

Side by side in one run (the two tools alternate over --rounds), same model, same threads, weight repacking set as localllm sets it
(off on builds with AMX, see runtime.build_has_amx), KV cache per sequence (no unified KV):

1. pp512 / tg128: `llama-bench` vs `localllm bench` (mean ± sd over --reps).
2. Batched: `llama-batched-bench -npp NPP -ntg NTG -npl N` vs `localllm batch` doing the same work
   (N requests whose templated prompt is NPP tokens, NTG tokens each, ignore_eos, --parallel N):
   aggregate throughput = N * (NPP + NTG) / wall time of the batch (llama-batched-bench's S), and
   generated tokens per second of that wall time. `localllm bench`'s own batched loop is listed too.
   Replies are sampled (temperature 0.8, a seed each), or greedy with --greedy (issue 13: N = 1, 8, 32).
3. N=8 vs sequential: 2 * 8 requests through `localllm batch` at --parallel 8 and at --parallel 1.
4. Determinism: --determinism prompts at temperature 0 through `localllm batch` at N=1, N=8 and N=8
   again; how many replies differ.

--synthetic-1b writes a ~1.1B-parameter llama model with random weights (SmolLM2's tokenizer) into
.cache/bench-models/ and quantizes it to Q4_K_M with runtime.quantize_model (once; reused afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("LLAMA_BENCH_BIN", ROOT / ".bench" / "bin"))
if not (BIN / "llama-bench").exists() and Path("/work/main/.bench/bin/llama-bench").exists():
    BIN = Path("/work/main/.bench/bin")
LOCALLLM = [sys.executable, "-m", "localllm"]
sys.path.insert(0, str(ROOT))


# -- models ------------------------------------------------------------------------------------


def smollm2() -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import smollm2_path  # the suite's cached real model

    return smollm2_path.__wrapped__()


def synthetic_1b(tokenizer_from: Path) -> Path:
    """A llama model shaped like Llama-3.2-1B (16 layers, 2048 wide, GQA 32/8, 8192 FFN, tied
    embeddings) with SmolLM2's 49k vocabulary and random weights, quantized to Q4_K_M."""
    out_dir = ROOT / ".cache" / "bench-models"
    dst = out_dir / "synthetic-llama-1.1b-Q4_K_M.gguf"
    if dst.exists():
        return dst
    import gguf
    import numpy as np

    from localllm import runtime

    out_dir.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(str(tokenizer_from))
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    n_embd, n_layer, n_head, n_head_kv, n_ff = 2048, 16, 32, 8, 8192
    head_dim = n_embd // n_head
    src = out_dir / "synthetic-llama-1.1b-F16.gguf"
    writer = gguf.GGUFWriter(str(src), "llama")
    writer.add_name("synthetic llama 1.1B (random weights)")
    writer.add_block_count(n_layer)
    writer.add_context_length(8192)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[1]) if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    rng = np.random.default_rng(0)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(p + "attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(p + "attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(p + "attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(p + "ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"quantizing {src.name} to Q4_K_M ...", file=sys.stderr, flush=True)
    tmp = dst.with_suffix(".part")
    runtime.quantize_model(src, tmp, "Q4_K_M")
    tmp.rename(dst)
    src.unlink()
    return dst


# -- llama.cpp's tools -----------------------------------------------------------------------------


def llama_bench(model: Path, threads: int, reps: int, repack: bool) -> dict[str, list[float]]:
    out = subprocess.run(
        [
            str(BIN / "llama-bench"),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-p",
            "512",
            "-n",
            "128",
            "-r",
            str(reps),
            "--repack",
            "1" if repack else "0",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    results = {}
    for row in json.loads(out):
        name = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        results[name] = list(row["samples_ts"])
    return results


def llama_batched_bench(model: Path, threads: int, npp: int, ntg: int, npl: list[int], repack: bool) -> dict[int, dict]:
    n_ctx = max(npl) * (npp + ntg)
    out = subprocess.run(
        [
            str(BIN / "llama-batched-bench"),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-c",
            str(n_ctx),
            "-b",
            "512",
            "-ub",
            "512",
            "-npp",
            str(npp),
            "-ntg",
            str(ntg),
            "-npl",
            ",".join(map(str, npl)),
            "-no-kvu",
            "--output-format",
            "jsonl",
        ]
        + ([] if repack else ["--no-repack"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["pl"]] = row
    return rows


# -- localllm ----------------------------------------------------------------------------------


def localllm_bench(model: Path, threads: int, reps: int, npp: int, ntg: int, npl: list[int]) -> dict:
    # `localllm bench`'s batched rows are pp128+tg128; only listed when that is the shape compared.
    same_shape = npp == ntg == 128
    main = json.loads(
        subprocess.run(
            [
                *LOCALLLM,
                "bench",
                str(model),
                "--json",
                "-r",
                str(reps),
                "--threads",
                str(threads),
                "--parallel",
                ",".join(map(str, npl)) if same_shape else "1",
            ],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
        ).stdout
    )
    return {row["test"]: row for row in main["results"]}


def calibrated_messages(model: Path, n_tokens: int, salt: int) -> list[dict]:
    """A user message whose chat-templated prompt is exactly ``n_tokens`` tokens."""
    from localllm import runtime

    global _TOKENIZER
    if "_TOKENIZER" not in globals():
        _TOKENIZER = runtime.Model(model, runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64))
    m = _TOKENIZER

    def count(text: str) -> int:
        return len(m.chat_tokens([{"role": "user", "content": text}]))

    words = [f"w{(salt * 31 + i) % 89}" for i in range(n_tokens)]
    while words and count(" ".join(words)) > n_tokens:
        words.pop()
    text = " ".join(words)
    while count(text) < n_tokens:  # pad one token at a time
        text += " a"
    if count(text) != n_tokens:
        raise RuntimeError(f"could not make a prompt of exactly {n_tokens} tokens")
    return [{"role": "user", "content": text}]


_SUMMARY = re.compile(r"(\d+) prompt \+ (\d+) generated tokens in ([0-9.]+) s")


def localllm_batch(model: Path, threads: int, records: list[dict], parallel: int, ctx: int) -> tuple[dict, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
        proc = subprocess.run(
            [
                *LOCALLLM,
                "batch",
                "-m",
                str(model),
                str(src),
                "-o",
                str(out),
                "--threads",
                str(threads),
                "--parallel",
                str(parallel),
                "--ctx",
                str(ctx),
            ],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        match = _SUMMARY.search(proc.stderr)
        prompt, gen = int(match.group(1)), int(match.group(2))
        results = [json.loads(line) for line in out.read_text().splitlines()]
        # From the start of the batch (after loading) to the last reply, to the 0.1 ms.
        wall = max(r["timing"]["wait_s"] + r["timing"]["prompt_s"] + r["timing"]["generation_s"] for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": gen, "wall_s": wall}, results


# -- the run ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF file (default: the suite's SmolLM2-135M Q4_1)")
    parser.add_argument("--synthetic-1b", action="store_true", help="the random-weight 1.1B Q4_K_M model")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two tools (default 3)")
    parser.add_argument("--npp", type=int, default=128)
    parser.add_argument("--ntg", type=int, default=128)
    parser.add_argument("--parallel", default="1,8,32")
    parser.add_argument("--greedy", action="store_true", help="batched replies at temperature 0 (default 0.8)")
    parser.add_argument("--determinism", type=int, default=32, help="prompts for the N=1 vs N=8 check (0: skip)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: pptg,batched,seq")
    args = parser.parse_args()
    npl = [int(v) for v in args.parallel.split(",")]
    skip = set(args.skip.split(","))
    model = args.model or (synthetic_1b(smollm2()) if args.synthetic_1b else smollm2())
    from localllm import runtime

    repack = not runtime.build_has_amx()
    t = args.threads
    print(
        f"model: {model.name}, threads: {t}, repack: {int(repack)}, reps: {args.reps}, rounds: {args.rounds}, "
        f"batched: npp {args.npp}, ntg {args.ntg}",
        flush=True,
    )

    # The machine is shared: each comparison alternates the two tools over --rounds rounds, so a
    # burst of load elsewhere hits both alike, and pools the samples.
    bench_rows: dict[int, list[float]] = {}
    if "pptg" not in skip:
        ref: dict[str, list[float]] = {"pp512": [], "tg128": []}
        ours: dict[str, list[float]] = {"pp512": [], "tg128": []}
        for _ in range(args.rounds):
            for test, samples in llama_bench(model, t, args.reps, repack).items():
                ref[test] += samples
            for test, row in localllm_bench(model, t, args.reps, args.npp, args.ntg, npl).items():
                if test in ours:
                    ours[test] += row["samples"]
                elif "n_parallel" in row and args.npp == args.ntg == 128:
                    bench_rows.setdefault(row["n_parallel"], []).append(row["tokens_per_s"])
        print(
            f"\n{'test':<8} {'llama-bench t/s':>18} {'localllm bench t/s':>20} {'ratio':>7}   "
            f"({args.rounds} rounds x {args.reps} reps)"
        )
        for test in ("pp512", "tg128"):
            r, o = ref[test], ours[test]
            print(
                f"{test:<8} {statistics.mean(r):>10.2f} ± {statistics.stdev(r):<5.2f} "
                f"{statistics.mean(o):>12.2f} ± {statistics.stdev(o):<5.2f} "
                f"{statistics.mean(o) / statistics.mean(r):>6.1%}",
                flush=True,
            )

    if "batched" not in skip:
        temperature = 0.0 if args.greedy else 0.8
        print(
            f"\nbatched: N prompts of {args.npp} tokens, {args.ntg} generated each (ignore EOS, "
            f"temperature {temperature:g}), mean of {args.rounds} rounds"
        )
        print(
            f"{'N':>2} {'batched-bench S':>16} {'localllm batch S':>17} {'ratio':>7} "
            f"{'b-bench gen t/s':>16} {'batch gen t/s':>14} {'b-bench S_TG':>13} {'bench S_TG':>11}"
        )
        for n in npl:
            records = [
                {
                    "id": i,
                    "messages": calibrated_messages(model, args.npp, i),
                    "max_tokens": args.ntg,
                    "ignore_eos": True,
                    "temperature": temperature,
                    "seed": i,
                }
                for i in range(n)
            ]
            ref_t, ref_tg, our_t = [], [], []
            for _ in range(args.rounds):
                row = llama_batched_bench(model, t, args.npp, args.ntg, [n], repack)[n]
                ref_t.append(row["t"])
                ref_tg.append(row["speed_tg"])
                stats, _ = localllm_batch(model, t, records, n, args.npp + args.ntg + 8)
                assert stats["prompt_tokens"] == n * args.npp and stats["completion_tokens"] == n * args.ntg, stats
                our_t.append(stats["wall_s"])
            work = n * (args.npp + args.ntg)
            ref_s, our_s = work / statistics.mean(ref_t), work / statistics.mean(our_t)
            ref_gen, our_gen = n * args.ntg / statistics.mean(ref_t), n * args.ntg / statistics.mean(our_t)
            bench_tg = statistics.mean(bench_rows[n]) if n in bench_rows else float("nan")
            print(
                f"{n:>2} {ref_s:>16.2f} {our_s:>17.2f} {our_s / ref_s:>6.1%} {ref_gen:>16.2f} "
                f"{our_gen:>14.2f} {statistics.mean(ref_tg):>13.2f} {bench_tg:>11.2f}",
                flush=True,
            )

    if "seq" not in skip:
        records = [
            {
                "id": i,
                "messages": calibrated_messages(model, 48, 100 + i),
                "max_tokens": 64,
                "ignore_eos": True,
                "seed": i,
            }
            for i in range(16)
        ]
        rates = {}
        for n in (1, 8):
            stats, _ = localllm_batch(model, t, records, n, 256)
            rates[n] = stats["completion_tokens"] / stats["wall_s"]
        print(
            f"\n16 requests (48-token prompts, 64 tokens each): --parallel 1 {rates[1]:.2f} tok/s, "
            f"--parallel 8 {rates[8]:.2f} tok/s, {rates[8] / rates[1]:.2f}x",
            flush=True,
        )

    if args.determinism:
        topics = [
            "the sea",
            "a city at night",
            "bread",
            "a thunderstorm",
            "chess",
            "a library",
            "autumn",
            "the moon",
            "bicycles",
            "coffee",
            "a river",
            "volcanoes",
            "music",
            "snow",
            "trains",
            "bees",
        ]
        records = [
            {
                "id": i,
                "prompt": f"Write two sentences about {topics[i % len(topics)]}"
                f"{' for a child' if i >= len(topics) else ''}.",
                "max_tokens": 48,
                "temperature": 0,
            }
            for i in range(args.determinism)
        ]
        texts = {}
        for label, n in (("N=1", 1), ("N=8", 8), ("N=8 again", 8)):
            _, results = localllm_batch(model, t, records, n, 512)
            texts[label] = {r["id"]: r["text"] for r in results}
        differ = sum(texts["N=1"][i] != texts["N=8"][i] for i in texts["N=1"])
        repeat = sum(texts["N=8"][i] != texts["N=8 again"][i] for i in texts["N=8"])
        firsts = [
            next(
                (k for k, (a, b) in enumerate(zip(texts["N=1"][i], texts["N=8"][i])) if a != b),
                min(len(texts["N=1"][i]), len(texts["N=8"][i])),
            )
            for i in texts["N=1"]
            if texts["N=1"][i] != texts["N=8"][i]
        ]
        where = f", first difference at character {statistics.median(firsts):.0f} (median)" if firsts else ""
        print(
            f"\ndeterminism ({args.determinism} prompts, greedy, 48 tokens): N=1 vs N=8 differ in {differ}"
            f"{where}; N=8 vs N=8 again differ in {repeat}",
            flush=True,
        )


if __name__ == "__main__":
    main()
