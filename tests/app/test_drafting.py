"""Speculative decoding measured and proposed (issue 28): ``bench --draft`` keeps what a draft
gained on this machine, and ``fit`` proposes the catalog's draft only when it fits and helps.
Real SmolLM2 model, real llama.cpp."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from localllm.app import drafting
from localllm.eval import store
from localllm.fit.hardware import Hardware
from localllm.gguf import cache as headercache
from localllm.models import catalog

GiB = 1 << 30
ROOMY = Hardware(ram_total=16 * GiB, ram_available=16 * GiB, gpus=(), gpu_offload=False)


def test_helps_needs_a_gain_on_repeats_and_no_loss_elsewhere():
    assert drafting.helps({"repeat": 1.4, "free": 0.97})
    assert not drafting.helps({"repeat": 1.05, "free": 1.0})  # too little to be worth a second model
    assert not drafting.helps({"repeat": 2.0, "free": 0.8})  # costs every reply that repeats nothing


def test_bench_draft_measures_both_tasks_and_fit_reads_it(isolated_home: Path, smollm2_path: Path):
    header = headercache.read_header(smollm2_path)
    assert drafting.propose(None, header, smollm2_path, None, ROOMY, None) is None  # nothing measured yet
    rows = []
    result = drafting.bench_draft(str(smollm2_path), "ngram", reps=1, n_gen=48, n_threads=1, emit=rows.append)
    assert [(r["task"], r["mode"]) for r in rows] == [("repeat", "plain"), ("repeat", "draft"),
                                                      ("free", "plain"), ("free", "draft")]  # fmt: skip
    drafted = {r["task"]: r for r in rows if r["mode"] == "draft"}
    assert all(r["tokens_per_s"] > 0 for r in rows)
    # Repeating the prompt back, n-gram drafts are mostly right; a story has little to look up.
    assert drafted["repeat"]["acceptance"] > 0.5 > drafted["free"]["acceptance"]
    assert drafted["repeat"]["agreement"] > 0.5  # greedy: the same reply, up to llama.cpp's batch numerics
    found = drafting.measured(None, smollm2_path, "ngram")
    assert found is not None and found["speedup"] == result["speedup"]
    spec = drafting.propose(None, header, smollm2_path, None, ROOMY, None)
    assert spec["ngram"]["status"] == ("proposed" if drafting.helps(result["speedup"]) else "slower")
    # A later measurement replaces the earlier one, and a damaged results file is no measurement.
    drafting.bench_draft(str(smollm2_path), "ngram", reps=1, n_gen=8, n_threads=1)
    assert len(store.all_results()[0]["runs"]) == 1
    for path in (store.eval_dir() / "results").glob("*.json"):
        path.write_text('{"runs": [{"kind": "speculative", "draft": {"sha256": "ngram"}, "speedup": "fast"}, '
                        '"a run", {"kind": "speculative", "draft": "ngram", "speedup": {"repeat": 2, "free": 1}}, '
                        '{"kind": "speculative", "draft": {"sha256": "ngram"}, "time": "now", '
                        '"speedup": {"repeat": 2, "free": 1}}]}')  # fmt: skip
    assert drafting.measured(None, smollm2_path, "ngram") is None
    drafting.bench_draft(str(smollm2_path), "ngram", reps=1, n_gen=8, n_threads=1)  # records over the damage
    assert drafting.measured(None, smollm2_path, "ngram") is not None


def test_the_catalog_draft_is_proposed_only_when_installed_fitting_and_measured(
    isolated_home: Path, smollm2_path: Path
):
    from support.models import install_starter

    # A model whose catalog draft is the starter (SmolLM2 135M), judged from the starter's own file.
    entry = replace(catalog.load_catalog().get("smollm2-360m-instruct"), draft="smollm2-135m-instruct")
    header = headercache.read_header(smollm2_path)

    def status(hw: Hardware = ROOMY) -> str:
        return drafting.propose(entry, header, smollm2_path, None, hw, None)["model"]["status"]

    assert status() == "not installed"
    install_starter(isolated_home, smollm2_path)
    assert status() == "not measured"
    tiny = Hardware(ram_total=300 << 20, ram_available=300 << 20, gpus=(), gpu_offload=False)
    assert status(tiny) == "does not fit"  # with the draft's weights beside it
    result = drafting.bench_draft(str(smollm2_path), "smollm2-135m-instruct", reps=1, n_gen=24, n_threads=1)
    # The draft is the model itself: every draft accepted, and a whole second model's cost.
    spec = drafting.propose(entry, header, smollm2_path, None, ROOMY, None)["model"]
    assert spec["name"] == "smollm2-135m-instruct:Q4_1"
    assert spec["speedup"] == result["speedup"]
    assert spec["status"] == ("proposed" if drafting.helps(result["speedup"]) else "slower")


def test_bench_draft_refuses_bad_counts(isolated_home: Path, smollm2_path: Path):
    from localllm.errors import UsageError

    with pytest.raises(UsageError):
        drafting.bench_draft(str(smollm2_path), "ngram", reps=0)
