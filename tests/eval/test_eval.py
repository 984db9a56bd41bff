"""``localllm eval`` on the real SmolLM2 and a re-quantized copy of it (issue 24): perplexity by
llama-perplexity's method, KL divergence against a saved reference, Ctrl-C partial results."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.signals import default_sigint

from localllm import app
from localllm.eval import metrics, perplexity, store

CTX, CHUNKS = 128, 3


@pytest.fixture(scope="module")
def requantized(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 Q4_1 re-quantized to Q4_0: the same vocabulary, slightly different weights."""
    from localllm.runtime import quantize_model

    dest = tmp_path_factory.mktemp("requant") / "SmolLM2-135M-Instruct.Q4_0.gguf"
    quantize_model(smollm2_path, dest, "Q4_0", allow_requantize=True)
    return dest


def test_perplexity_is_finite_deterministic_and_stored(smollm2_path: Path, isolated_home: Path):
    first = app.evaluate(str(smollm2_path), n_ctx=CTX, n_chunks=CHUNKS)
    again = app.evaluate(str(smollm2_path), n_ctx=CTX, n_chunks=CHUNKS)
    assert math.isfinite(first["perplexity"]) and 1 < first["perplexity"] < 1000
    assert again["perplexity"] == first["perplexity"]
    # The second half of each chunk is scored: positions 64..126 predict tokens 65..127.
    assert first["tokens_scored"] == CHUNKS * (CTX - CTX // 2 - 1)
    assert first["chunks"] == CHUNKS and first["chunks_total"] == CHUNKS and not first["interrupted"]
    assert first["text"]["name"].startswith("King James Bible") and first["quant"] == "Q4_1"
    saved = json.loads(store.results_path(first["sha256"]).read_text())
    assert saved["path"] == str(smollm2_path.resolve())
    assert len(saved["runs"]) == 1  # the same text, context and reference: replaced, not appended
    assert saved["runs"][0]["perplexity"] == first["perplexity"]


def test_perplexity_is_exp_of_the_mean_nll_of_the_second_halves(smollm2_path: Path):
    """The method checked against a direct computation: each chunk decoded whole, every position's
    log-softmax taken in float64, only the second half's next tokens counted."""
    from localllm.runtime import Model, Scorer

    with Model(smollm2_path) as model, Scorer(model, 64) as scorer:
        text = "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog number {i * 7}." for i in range(40))
        tokens = model.tokenize(text, add_special=True, parse_special=False)
        chunks = perplexity.make_chunks(tokens, 64, 2, None)
        run = perplexity.run(scorer.logits, chunks)
        nll = []
        for c in range(2):
            logits = np.array(scorer.logits(chunks.tokens[c].tolist(), 0), dtype=np.float64)
            logp = (
                logits
                - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
                - logits.max(1, keepdims=True)
            )
            nll += [-logp[j, chunks.tokens[c, j + 1]] for j in range(32, 63)]
    assert run.summary()["perplexity"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)


def test_kld_is_zero_against_itself_and_positive_for_a_requantized_copy(
    smollm2_path: Path, requantized: Path, isolated_home: Path, cli
):
    same = app.evaluate(str(smollm2_path), ref=str(smollm2_path), n_ctx=CTX, n_chunks=CHUNKS)
    assert same["kl_divergence"]["mean"] == 0.0 and same["kl_divergence"]["p99"] == 0.0
    assert same["same_top"] == 1.0 and same["delta_p"] == 0.0
    assert same["reference"]["perplexity"] == same["perplexity"]
    saved = list((isolated_home / "eval" / "references").glob("*.npz"))
    assert len(saved) == 1
    with np.load(saved[0], allow_pickle=False) as data:
        rows = CHUNKS * (CTX - CTX // 2 - 1)
        assert data["ids"].shape == (rows, metrics.TOP_K) and data["tokens"].shape == (CHUNKS, CTX)
    stamp = saved[0].stat().st_mtime_ns

    passes: list[str] = []
    other = app.evaluate(
        str(requantized), ref=str(smollm2_path), n_ctx=CTX, n_chunks=CHUNKS, progress=lambda p: passes.append(p.label)
    )
    assert not any(label.startswith("reference") for label in passes)  # the saved reference was used
    assert saved[0].stat().st_mtime_ns == stamp
    kld = other["kl_divergence"]
    assert 0 < kld["mean"] < 1 and kld["p99"] >= kld["mean"] and kld["max"] >= kld["p99"]
    assert 0.5 < other["same_top"] < 1.0
    assert other["quant"] == "Q4_0" and other["perplexity"] != same["perplexity"]
    assert store.measured_kld(requantized, requantized.stat().st_size)["kld"] == kld["mean"]
    assert store.measured_kld(smollm2_path, smollm2_path.stat().st_size) is None  # against itself: not a cost

    # fit shows the measured cost of the copy, and the prior for the quant type of the original.
    shown = cli("fit", str(requantized))
    assert shown.returncode == 0, shown.stderr
    assert f"quality: KLD {kld['mean']:.4f} (measured by localllm eval against {smollm2_path.name})" in shown.stdout
    fit_json = json.loads(cli("fit", str(requantized), "--json").stdout)
    assert fit_json["models"][0]["quality"]["source"] == "measured"
    original = cli("fit", str(smollm2_path))
    assert "quality: KLD 0.0270 (prior from llama.cpp's published Llama-3-8B table, interpolated" in original.stdout


def test_kld_over_all_tokens_equals_the_textbook_formula():
    rng = np.random.default_rng(0)
    p_logits, q_logits = rng.normal(size=(5, 20)).astype(np.float32), rng.normal(size=(5, 20)).astype(np.float32)
    targets = np.arange(5)
    ref = metrics.reference(p_logits, targets, k=20)  # every token kept: exact
    p = np.exp(p_logits - np.log(np.exp(p_logits.astype(np.float64)).sum(1, keepdims=True)))
    q = np.exp(q_logits - np.log(np.exp(q_logits.astype(np.float64)).sum(1, keepdims=True)))
    expected = (p * np.log(p / q)).sum(1)
    got = metrics.compare(q_logits, targets, ref)
    assert got.kld == pytest.approx(expected, abs=1e-5)
    assert (got.same_top == (p.argmax(1) == q.argmax(1))).all()
    assert got.delta_p == pytest.approx(q[np.arange(5), targets] - p[np.arange(5), targets], abs=1e-6)
    # With the top 5 only, the rest lumped together: a lower bound.
    assert (metrics.compare(q_logits, targets, metrics.reference(p_logits, targets, k=5)).kld <= expected + 1e-6).all()


def test_a_damaged_reference_file_is_measured_again(smollm2_path: Path, isolated_home: Path):
    app.evaluate(str(smollm2_path), ref=str(smollm2_path), n_ctx=64, n_chunks=2)
    (saved,) = (isolated_home / "eval" / "references").glob("*.npz")
    saved.write_bytes(b"not a zip")
    assert store.load_reference(saved) is None
    again = app.evaluate(str(smollm2_path), ref=str(smollm2_path), n_ctx=64, n_chunks=2)
    assert again["kl_divergence"]["mean"] == 0.0 and store.load_reference(saved) is not None


def test_ctrl_c_keeps_the_chunks_done(smollm2_path: Path, isolated_home: Path):
    def interrupt(p: perplexity.Progress) -> None:
        if p.done == 2:
            raise KeyboardInterrupt

    result = app.evaluate(str(smollm2_path), n_ctx=64, n_chunks=5, progress=interrupt)
    assert result["interrupted"] and result["chunks"] == 2 and result["chunks_total"] == 5
    assert math.isfinite(result["perplexity"])
    assert not (isolated_home / "eval" / "results").exists()  # a partial result is not kept


def test_cli_json_and_sigint(smollm2_path: Path, cli, isolated_home: Path):
    done = cli("eval", str(smollm2_path), "--ref", str(smollm2_path), "--ctx", "64", "--chunks", "2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) >= {"perplexity", "kl_divergence", "same_top", "delta_p"}
    assert set(out["kl_divergence"]) >= {"mean", "p99"} and out["kl_divergence"]["mean"] == 0.0

    # All of the text in chunks of 64 tokens takes minutes: Ctrl-C once scoring has begun.
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", "eval", str(smollm2_path), "--ctx", "64", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite ignores SIGINT
    )  # fmt: skip
    try:
        # Away from a terminal, progress is a line when the pass starts and then every 10 s.
        done_so_far = 0
        while not done_so_far:
            line = proc.stderr.readline()
            match = re.search(r": (\d+)/\d+ done", line)
            assert match, line
            done_so_far = int(match.group(1))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    partial = json.loads(stdout)
    assert partial["interrupted"] and 1 <= partial["chunks"] < partial["chunks_total"]
    assert "interrupted" in stderr


def test_usage_errors(smollm2_path: Path, cli, tmp_path: Path):
    short = tmp_path / "short.txt"
    short.write_text("Too short to measure.")
    done = cli("eval", str(smollm2_path), "--text", str(short))
    assert done.returncode != 0 and "at least 2 x ctx" in done.stderr and "Traceback" not in done.stderr
    done = cli("eval", str(smollm2_path), "--text", str(tmp_path / "missing.txt"))
    assert done.returncode != 0 and "cannot read" in done.stderr


def test_list_shows_the_quality_cost(installed_starter, cli):
    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert "KLD" in header.split() and "0.0270 estimate" in row  # Q4_1: interpolated by bits per weight
