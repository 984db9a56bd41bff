"""Hardware detection, memory estimates against what llama.cpp allocates, the planner, hw and fit."""

from __future__ import annotations

import io
import json

import pytest

from hubfixtures import FILE, REPO, hub, online  # noqa: F401 - fixtures
from localllm import engine, estimate, ggufmeta, hardware
from localllm.plan import plan_load

MiB = 1 << 20


@pytest.mark.parametrize("n_ctx", [2048, 8192])
def test_estimate_matches_llama_cpp_allocation(smollm2_path, n_ctx):
    header = ggufmeta.read_header(smollm2_path)
    est = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx))
    with engine.Model(smollm2_path, engine.LoadOptions(n_ctx=n_ctx)) as model:
        logged = model.load_report.buffers_mib
    actual = sum(logged.values()) * MiB
    predicted = est.cpu.weights + est.cpu.kv + est.cpu.compute + est.cpu.output
    assert abs(predicted - actual) <= max(0.05 * actual, 64 * MiB), (predicted / MiB, logged)
    assert abs(est.cpu.kv - logged["CPU KV"] * MiB) <= MiB  # the KV cache is exact arithmetic


def test_plan_offloads_everything_to_a_big_gpu(smollm2_path):
    header = ggufmeta.read_header(smollm2_path)
    plan = plan_load(header, hardware.profile("rtx-12gb-32gb-ram"))
    assert plan.n_gpu_layers == -1 and plan.verdict == "fits"
    assert plan.n_ctx == 8192  # the model's own context, within the default cap


def test_plan_on_a_cpu_build_keeps_layers_on_the_cpu(smollm2_path):
    header = ggufmeta.read_header(smollm2_path)
    hw = hardware.with_overrides(hardware.profile("laptop-8gb"), vram=0)
    plan = plan_load(header, hw)
    assert plan.n_gpu_layers == 0 and plan.verdict == "fits"
    assert "on the CPU" in plan.reason


def test_plan_shrinks_the_context_before_giving_up(smollm2_path):
    header = ggufmeta.read_header(smollm2_path)
    small = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=1 << 30, vram=0)
    big = plan_load(header, hardware.profile("laptop-8gb"))
    tight = plan_load(header, small)
    assert tight.n_ctx <= big.n_ctx
    tiny = plan_load(header, hardware.with_overrides(small, ram=300 * MiB))
    assert tiny.verdict == "no" and "does not fit" in tiny.reason


def test_hw_reports_this_machine(cli):
    result = cli("hw", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ram_total"] > 0 and data["cpu"]["cores_logical"] >= 1
    assert any(d["name"] == "CPU" for d in data["llama_cpp_devices"])  # what llama.cpp itself sees


def test_hw_what_if(cli):
    result = cli("hw", "--json", "--ram", "16G", "--vram", "8G")
    data = json.loads(result.stdout)
    assert data["ram_total"] == 16 << 30 and data["gpu_budget"] > 0
    bad = cli("hw", "--profile", "toaster")
    assert bad.returncode == 2 and "unknown hardware profile" in bad.stderr


def test_fit_a_local_file(cli, smollm2_path):
    result = cli("fit", str(smollm2_path), "--json", "--ctx", "4096")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["models"]
    assert row["verdict"] == "fits" and row["n_ctx"] == 4096
    assert row["estimate"]["cpu"]["kv"] == 4096 * 30 * 2 * 3 * 64 * 2  # layers x (K+V) x kv heads x dims x f16
    no = cli("fit", str(smollm2_path), "--ram", "300M")
    assert no.returncode == 0 and " no " in no.stdout and "does not fit" in no.stdout


def test_fit_judges_a_quant_on_the_hub_before_downloading(cli, hub, isolated_home):
    result = cli("fit", "smollm2-135m-instruct:Q4_K_M", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)["models"]
    assert row["where"] == "on the Hub" and row["verdict"] == "fits"
    # Only the header crossed the wire, not the 98 MB file.
    assert hub.body_bytes < 10 * MiB
    assert not (isolated_home / "models").exists() or not list((isolated_home / "models").rglob("*.gguf"))


def test_fit_unknown_model(cli):
    result = cli("fit", "qwen3-8")
    assert result.returncode == 1 and "qwen3-8b" in result.stderr


def test_run_refuses_a_model_that_cannot_fit_instead_of_crashing(installed_starter, monkeypatch, capsys):
    from localllm.cli import main

    tiny = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=200 * MiB, vram=0)
    monkeypatch.setattr(hardware, "detect", lambda **_: tiny)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["run", "-n", "5", "hello"]) == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "--ctx" in err and err.count("\n") == 1


def test_run_uses_the_planned_context(installed_starter, cli):
    result = cli("run", "--json", "-n", "1", "--gpu-layers", "0", "hi")
    assert result.returncode == 0, result.stderr
    # Planned context: the model's own 8192 (under the default cap) fits this machine.
    long_prompt = "word " * 5000
    ok = cli("run", "--json", "-n", "1", "--gpu-layers", "0", long_prompt)
    assert ok.returncode == 0, ok.stderr
