"""``localllm run`` end to end, as a user runs it: a real process, the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support.files import damaged_copy
from support.signals import default_sigint

QUESTION = "What is the capital city of France? Answer in one sentence."


def test_answers_a_question_from_the_installed_model(cli, installed_starter):
    result = cli("run", "--temperature", "0", "--max-tokens", "40", QUESTION)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    # llama.cpp's log never reaches the user's terminal unless asked.
    assert "llama_model_loader" not in result.stdout + result.stderr
    assert result.stderr == ""


def test_verbose_shows_llama_log_on_stderr_only(cli, installed_starter):
    result = cli("run", "--verbose", "-t", "0", "-n", "8", QUESTION)
    assert result.returncode == 0, result.stderr
    assert "llama_model_loader" in result.stderr
    assert "llama_model_loader" not in result.stdout


def test_json_reports_reply_and_stats(cli, installed_starter):
    result = cli("run", "--json", "-t", "0", "-n", "5", QUESTION)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "smollm2-135m-instruct:Q4_1"
    assert data["finish_reason"] == "length"
    stats = data["stats"]
    assert stats["generated_tokens"] == 5
    assert stats["prompt_tokens"] > 10
    assert stats["ttft_s"] > 0
    assert stats["tokens_per_s"] > 0
    assert data["reply"].strip()


def test_stdin_is_part_of_the_prompt(cli, installed_starter):
    base = json.loads(cli("run", "--json", "-n", "1", "Summarize:").stdout)
    notes = "Meeting notes: the launch moves to Tuesday. Alice owns the release checklist.\n"
    piped = cli("run", "--json", "-n", "1", "Summarize:", input=notes)
    assert piped.returncode == 0, piped.stderr
    with_stdin = json.loads(piped.stdout)
    assert with_stdin["stats"]["prompt_tokens"] >= base["stats"]["prompt_tokens"] + 15


def test_stdin_alone_is_a_prompt(cli, installed_starter):
    result = cli("run", "-t", "0", "-n", "20", input=QUESTION)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_same_seed_same_output(cli, installed_starter):
    args = ("run", "--seed", "42", "--temperature", "0.9", "-n", "30", "Tell me about cats.")
    first, second = cli(*args), cli(*args)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    other = cli("run", "--seed", "7", "--temperature", "0.9", "-n", "30", "Tell me about cats.")
    assert other.stdout != first.stdout


def test_stats_go_to_stderr(cli, installed_starter):
    result = cli("run", "--stats", "-t", "0", "-n", "10", QUESTION)
    assert result.returncode == 0
    assert "tok/s" in result.stderr
    assert "tok/s" not in result.stdout


def test_threads_forces_the_count_the_stats_show(cli, installed_starter):
    result = cli("run", "--stats", "--threads", "1", "-t", "0", "-n", "10", QUESTION)
    assert result.returncode == 0
    assert result.stderr.rstrip().endswith(", threads 1")
    stats = json.loads(cli("run", "--json", "--threads", "1", "-t", "0", "-n", "5", QUESTION).stdout)["stats"]
    assert (stats["threads"], stats["threads_batch"]) == (1, 1)


def test_system_prompt_changes_the_prompt(cli, installed_starter):
    plain = json.loads(cli("run", "--json", "-n", "1", "Hi").stdout)
    system = json.loads(cli("run", "--json", "-n", "1", "--system", "You are a pirate. Answer like one.", "Hi").stdout)
    assert system["stats"]["prompt_tokens"] != plain["stats"]["prompt_tokens"]


def test_ctrl_c_keeps_partial_reply_and_exits_130(installed_starter):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localllm",
            "run",
            "--seed",
            "1",
            "-n",
            "2000",
            "--ctx",
            "4096",
            "Write a very long story about a lighthouse keeper.",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite ignores SIGINT
    )
    received = b""
    deadline = time.monotonic() + 120
    while len(received) < 40 and time.monotonic() < deadline:
        received += os.read(proc.stdout.fileno(), 64)
    assert len(received) >= 40, "no reply streamed"
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert (received + rest).decode().startswith(received.decode())
    assert "interrupted" in err.decode()
    assert "Traceback" not in err.decode()


def test_no_prompt_is_a_usage_error(cli, installed_starter):
    result = cli("run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no prompt" in result.stderr


def test_unknown_model_suggests_close_names(cli):
    result = cli("run", "-m", "smollm2-135m-instruc", "hello")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "smollm2-135m-instruct" in result.stderr
    assert "Traceback" not in result.stderr


def test_catalog_model_not_installed_says_how_to_get_it(cli):
    result = cli("run", "-m", "qwen3-8b", "hello")
    assert result.returncode == 1
    assert "not installed" in result.stderr and "localllm pull qwen3-8b" in result.stderr


def test_missing_file(cli, tmp_path):
    result = cli("run", "-m", str(tmp_path / "nope.gguf"), "hello")
    assert result.returncode == 1
    assert "no such file" in result.stderr
    assert result.stderr.count("\n") == 1


def test_not_a_gguf(cli, tmp_path):
    fake = tmp_path / "notes.gguf"
    fake.write_text("these are my notes, not a model\n")
    result = cli("run", "-m", str(fake), "hello")
    assert result.returncode == 1
    assert "not a GGUF file" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.999])
def test_truncated_model(cli, tmp_path, smollm2_path, fraction):
    size = smollm2_path.stat().st_size
    cut = damaged_copy(smollm2_path, tmp_path / "cut.gguf", truncate_to=int(size * fraction))
    result = cli("run", "-m", str(cut), "hello")
    assert result.returncode == 1
    assert "truncated" in result.stderr or "damaged" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_corrupted_header(cli, tmp_path, smollm2_path):
    # Bytes 24.. hold the first metadata key's length: make it absurd.
    bad = damaged_copy(smollm2_path, tmp_path / "bad.gguf", patch=(24, b"\xff" * 8))
    result = cli("run", "-m", str(bad), "hello")
    assert result.returncode == 1
    assert "damaged" in result.stderr
    assert result.stderr.count("\n") == 1


def test_unsupported_architecture(cli, tmp_path, smollm2_path):
    data = smollm2_path.read_bytes()
    key = data.index(b"general.architecture")
    value = data.index(b"llama", key + len("general.architecture"))
    odd = damaged_copy(smollm2_path, tmp_path / "odd.gguf", patch=(value, b"llamx"))
    result = cli("run", "-m", str(odd), "hello")
    assert result.returncode == 1
    assert "architecture 'llamx' is not supported" in result.stderr
    assert result.stderr.count("\n") == 1


def test_prompt_longer_than_context(cli, installed_starter):
    result = cli("run", "--ctx", "64", "word " * 600)
    assert result.returncode == 1
    assert "context" in result.stderr and "--ctx" in result.stderr
    assert result.stderr.count("\n") == 1


def test_debug_shows_the_traceback(cli, tmp_path):
    result = cli("run", "--debug", "-m", str(tmp_path / "nope.gguf"), "hello")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_bad_option_values(cli):
    result = cli("run", "--max-tokens", "0", "hello")
    assert result.returncode == 2
    assert "--max-tokens" in result.stderr


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("run", "--temperature", "500"),  # was accepted up to a million: HTTP and /set stop at 100
        ("run", "--min-p", "2"),
        ("run", "--repeat-penalty", "-1"),
        ("run", "--top-k", "-100"),
        ("batch", "--temperature", "500"),
        ("chat", "--temperature", "500"),
    ],
)
def test_flags_have_the_limits_of_every_other_surface(cli, command, flag, value):
    """One schema: a value /set, a batch line or a request would refuse is refused here too, by
    its flag, before any model is looked for (issue 20)."""
    result = cli(command, flag, value, "-" if command == "batch" else "hello")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"localllm: error: {flag} must be a "), result.stderr


def test_flag_help_comes_from_the_schema(cli):
    from localllm.options import SAMPLING

    result = cli("run", "--help")
    text = " ".join(result.stdout.split())
    for option in SAMPLING.values():
        assert option.flag in text and " ".join(option.help.split()) in text, option.name


def test_top_k_and_top_p_reach_the_sampler(cli, installed_starter):
    """README (run): --top-k 1 or a tiny --top-p leave one candidate, so temperature 1 gives the
    greedy reply whatever the seed; without them, seeds differ (issue 16)."""
    n = ("-n", "24")
    greedy = cli("run", "-t", "0", *n, "Tell me about cats.")
    assert greedy.returncode == 0, greedy.stderr
    for seed in ("1", "2", "3"):
        top_k = cli("run", "-t", "1", "--top-k", "1", "--seed", seed, *n, "Tell me about cats.")
        assert top_k.returncode == 0, top_k.stderr
        assert top_k.stdout == greedy.stdout
    for seed in ("1", "2"):
        top_p = cli("run", "-t", "1", "--top-k", "0", "--top-p", "0.0001", "--seed", seed, *n, "Tell me about cats.")
        assert top_p.returncode == 0, top_p.stderr
        assert top_p.stdout == greedy.stdout
    free = {
        cli("run", "-t", "1", "--top-k", "0", "--top-p", "1", "--seed", seed, *n, "Tell me about cats.").stdout
        for seed in ("1", "2", "3")
    }
    assert len(free) > 1  # without them sampling is live: the seeds give different replies


def test_without_m_the_last_model_used_answers(cli, installed_starter, smollm2_path):
    """README (run): `-m` defaults to the last model used (issue 16)."""
    imported = cli("import", str(smollm2_path), "--link", "--name", "my-copy")
    assert imported.returncode == 0, imported.stderr

    def model_of(*args: str) -> str:
        result = cli("run", *args, "--json", "-t", "0", "-n", "4", "Hi")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["model"].split(":")[0]

    for name in (installed_starter.name, "my-copy", installed_starter.name):
        assert model_of("-m", name) == name
        assert model_of() == name  # no -m: the one just used
