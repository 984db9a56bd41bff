"""Issue 23: ``--lora FILE_OR_NAME[:SCALE]`` on the commands that load a model, ``/lora`` in the
terminal chat, and ``fit`` counting the adapters; with the real SmolLM2 base and suite-made adapters."""

from __future__ import annotations

import json

import pytest

from localllm.chat import commands
from localllm.cli import run as run_cli
from tests.cli.test_terminal_chat import args_for
from tests.support.lora import write_lora

PROMPT = "What is the capital of France?"


@pytest.fixture
def adapter(smollm2_path, tmp_path):
    return write_lora(tmp_path / "alpha.gguf", smollm2_path, seed=1)


def reply(cli, base, *extra):
    result = cli("run", "-m", str(base), "-t", "0", "-n", "16", "--json", *extra, PROMPT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["reply"]


def test_run_with_lora_scale_zero_is_the_base_and_scale_one_is_not(cli, smollm2_path, adapter):
    base = reply(cli, smollm2_path)
    assert reply(cli, smollm2_path, "--lora", f"{adapter}:0") == base
    assert reply(cli, smollm2_path, "--lora", str(adapter)) != base


def test_a_lora_that_is_not_an_adapter_is_one_line(cli, smollm2_path, adapter):
    result = cli("run", "-m", str(smollm2_path), "--lora", str(smollm2_path), "-n", "2", "hi")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "is not a LoRA adapter" in result.stderr
    result = cli("run", "-m", str(adapter), "-n", "2", "hi")
    assert result.returncode != 0 and "is a LoRA adapter, not a model" in result.stderr


def test_the_tui_chat_checks_its_lora_before_the_screen_opens(cli, smollm2_path):
    """``localllm chat --lora``: a wrong adapter is one line before the terminal UI starts (which
    then applies the adapters to the chat's model, tests/tui/test_chat_lora.py)."""
    result = cli("chat", str(smollm2_path), "--lora", "nope")
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert "no LoRA adapter named 'nope' is installed" in result.stderr
    damaged = cli("chat", str(smollm2_path), "--lora", str(smollm2_path))
    assert damaged.returncode != 0 and "is not a LoRA adapter" in damaged.stderr


def test_fit_counts_the_adapter(cli, smollm2_path, adapter):
    plain = json.loads(cli("fit", str(smollm2_path), "--json").stdout)["models"][0]
    result = cli("fit", str(smollm2_path), "--lora", str(adapter), "--json")
    assert result.returncode == 0, result.stderr
    with_lora = json.loads(result.stdout)["models"][0]
    size = with_lora["adapters"]["bytes"]
    assert with_lora["adapters"]["names"] == ["alpha"] and 0.9 * adapter.stat().st_size < size <= adapter.stat().st_size
    assert with_lora["estimate"]["cpu"]["weights"] - plain["estimate"]["cpu"]["weights"] == size
    table = cli("fit", str(smollm2_path), "--lora", str(adapter)).stdout
    assert "LoRA adapters (alpha): 3.7 MiB counted with the weights" in table


def test_lora_command_in_the_terminal_chat_switches_the_adapter(smollm2_path, adapter, capsys):
    lines = iter(["/set temperature 0", "/lora", PROMPT, "/lora alpha 0", "/clear", PROMPT, "/lora beta 1", "/bye"])
    argv = ("-m", str(smollm2_path), "-n", "16", "--lora", f"{adapter}:1")
    assert run_cli.interactive(args_for(*argv), read=lambda _: next(lines)) == 0
    out, err = capsys.readouterr()
    assert "LoRA adapters: alpha 1" in err and "LoRA adapters: alpha off" in err
    assert "no LoRA adapter named 'beta'" in err
    first, second = [line for line in out.splitlines() if line.strip()][:2]
    assert first != second


def test_lora_command_parses_names_scales_and_off():
    assert commands.parse("/lora").adapter is None
    assert commands.parse("/lora alpha 0.5").adapter == ("alpha", 0.5)
    assert commands.parse("/lora off").adapter == ("off", 0.0)
    with pytest.raises(commands.CommandError, match="a LoRA scale is a number"):
        commands.parse("/lora alpha much")
