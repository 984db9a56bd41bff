"""``localllm run --draft`` end to end: a real process, the real SmolLM2 model (issue 28)."""

from __future__ import annotations

import json

PROMPT = (
    "Repeat the following text exactly: Local models run on your own machine, keep your data private, "
    "and work without a network connection."
)


def test_ngram_draft_gives_the_plain_reply_and_reports_acceptance(cli, installed_starter):
    plain = cli("run", "-t", "0", "-n", "40", PROMPT)
    drafted = cli("run", "-t", "0", "-n", "40", "--draft", "ngram", "--stats", PROMPT)
    assert plain.returncode == drafted.returncode == 0, drafted.stderr
    assert drafted.stdout == plain.stdout
    assert "draft ngram:" in drafted.stderr and "drafted tokens accepted" in drafted.stderr
    data = json.loads(cli("run", "--json", "-t", "0", "-n", "40", "--draft", "NGRAM", PROMPT).stdout)
    assert data["stats"]["draft"] == "ngram"
    assert 0 < data["stats"]["accepted_tokens"] <= data["stats"]["drafted_tokens"]


def test_a_draft_model_gives_the_plain_reply(cli, installed_starter, smollm2_path):
    plain = cli("run", "-t", "0", "-n", "24", "Name three colours.")
    drafted = cli("run", "-t", "0", "-n", "24", "--draft", str(smollm2_path), "--stats", "Name three colours.")
    assert drafted.returncode == 0, drafted.stderr
    assert drafted.stdout == plain.stdout
    assert f"draft {smollm2_path.name}:" in drafted.stderr


def test_an_unknown_draft_model_is_one_line(cli, installed_starter):
    result = cli("run", "-n", "4", "--draft", "no-such-draft-model", "Hi")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "no-such-draft-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_draft_prints_the_speed_up_and_fit_proposes_from_it(cli, smollm2_path):
    bench = cli("bench", str(smollm2_path), "--draft", "ngram", "-r", "1", "-n", "32", "--threads", "1")
    assert bench.returncode == 0, bench.stderr
    lines = bench.stdout.splitlines()
    assert lines[0].split() == ["test", "tokens/s", "speed-up", "accepted", "same", "reply"]
    assert [line.split()[:3] for line in lines[1:5]] == [
        ["repeat", "plain", lines[1].split()[2]], ["repeat", "draft", "ngram"],
        ["free", "plain", lines[3].split()[2]], ["free", "draft", "ngram"],
    ]  # fmt: skip
    assert "`localllm fit` shows it" in lines[-1]
    fit = cli("fit", str(smollm2_path))
    assert fit.returncode == 0, fit.stderr
    assert "n-gram drafts: " in fit.stdout and "on a repeating reply" in fit.stdout
    refused = cli("bench", str(smollm2_path), "--draft", "ngram", "--lora", "x.gguf")
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
