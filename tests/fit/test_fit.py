"""Hardware detection, memory estimates against what llama.cpp allocates, the planner, hw and fit."""

from __future__ import annotations

import io
import json

import pytest
from support.hubfixtures import FILE, REPO, hub, online  # noqa: F401 - fixtures

from localllm import runtime
from localllm.fit import estimate, hardware
from localllm.fit.plan import plan_load
from localllm.gguf import header as ggufmeta

MiB = 1 << 20


@pytest.mark.parametrize("n_ctx", [2048, 8192])
def test_estimate_matches_llama_cpp_allocation(smollm2_path, n_ctx):
    header = ggufmeta.read_header(smollm2_path)
    est = estimate.estimate(header, estimate.Settings(n_ctx=n_ctx))
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=n_ctx)) as model:
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
    assert tiny.verdict == "no" and "won't fit: needs" in tiny.reason


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
    assert no.returncode == 0 and " won't fit " in no.stdout and "won't fit: needs" in no.stdout


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
    monkeypatch.setattr(hardware, "detect", lambda *_, **__: tiny)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["run", "-n", "5", "hello"]) == 1
    err = capsys.readouterr().err
    assert "won't fit: needs" in err and "--ctx" in err and err.count("\n") == 1


def test_run_uses_the_planned_context(installed_starter, cli):
    result = cli("run", "--json", "-n", "1", "--gpu-layers", "0", "hi")
    assert result.returncode == 0, result.stderr
    # Planned context: the model's own 8192 (under the default cap) fits this machine.
    long_prompt = "word " * 5000
    ok = cli("run", "--json", "-n", "1", "--gpu-layers", "0", long_prompt)
    assert ok.returncode == 0, ok.stderr


# -- choosing a quantization ---------------------------------------------------------------------


def _quants(header, sizes: dict[str, int]):
    from localllm.fit.plan import sized_header

    return [(q, size, sized_header(header, size)) for q, size in sizes.items()]


SIZES = {"F16": 280 * MiB, "Q8_0": 150 * MiB, "Q6_K": 120 * MiB, "Q4_K_M": 100 * MiB, "Q2_K": 60 * MiB}


def test_planner_picks_the_best_quant_that_fits_and_names_the_runner_up(smollm2_path):
    from localllm.fit.plan import plan_quants

    header = ggufmeta.read_header(smollm2_path)
    cpu = hardware.with_overrides(hardware.profile("laptop-8gb"), vram=0)
    roomy = plan_quants(_quants(header, SIZES), cpu)
    assert roomy.chosen.quant == "Q8_0"  # F16 fits too, but buys nothing over Q8_0
    assert "short of unquantized" in roomy.reason
    # A budget that holds Q4_K_M with headroom but not Q6_K: the runner-up says what it would need.
    q4 = next(c for c in roomy.choices if c.quant == "Q4_K_M").plan.estimate.cpu.total
    q6 = next(c for c in roomy.choices if c.quant == "Q6_K").plan.estimate.cpu.total
    budget = int(q4 / 0.8) + (q6 - q4) // 4
    small = hardware.with_overrides(cpu, ram=budget * 4 // 3)  # a quarter goes to the OS
    assert abs(small.ram_budget - budget) < MiB
    chosen = plan_quants(_quants(header, SIZES), small, 8192)
    assert chosen.chosen.quant == "Q4_K_M", chosen.reason
    assert chosen.reason.startswith("Q4_K_M: ") and "Q6_K would" in chosen.reason
    nothing = plan_quants(_quants(header, SIZES), hardware.with_overrides(cpu, ram=300 * MiB))
    assert nothing.chosen is None and "no quantization fits" in nothing.reason and "Q2_K" in nothing.reason


def test_planner_prefers_a_full_gpu_offload(smollm2_path):
    from localllm.fit.plan import plan_quants

    header = ggufmeta.read_header(smollm2_path)
    # 2.5 GB: room for Q4_K_M, the ~600 MiB CUDA context (measured, estimate.BACKENDS) and headroom.
    hw = hardware.with_overrides(hardware.profile("rtx-8gb-16gb-ram"), vram=5 << 29)
    result = plan_quants(_quants(header, {"Q8_0": 1400 * MiB, "Q4_K_M": 700 * MiB}), hw, 2048)
    # Q8_0 only fits with some layers left on the CPU; Q4_K_M runs wholly on the GPU, much faster.
    assert result.chosen.quant == "Q4_K_M" and result.chosen.full_offload
    assert "GPU memory" in result.reason and "Q8_0 fits only with" in result.reason


def test_pull_without_a_quant_asks_the_planner(cli, hub, isolated_home, smollm2_path, tmp_path):
    bigger = tmp_path / "SmolLM2-135M-Instruct-Q8_0.gguf"
    bigger.write_bytes(smollm2_path.read_bytes() + bytes(60 * MiB))  # a bigger quant, as far as sizes go
    hub.add_repo("someone/Pair-GGUF", {"Pair-Q4_K_M.gguf": smollm2_path, "Pair-Q8_0.gguf": bigger})
    roomy = cli("pull", "someone/Pair-GGUF", "--dry-run")
    assert roomy.returncode == 0, roomy.stderr
    assert "chose Q8_0: " in roomy.stderr and "best quantization offered" in roomy.stderr
    # Judged before downloading: one header crossed the wire, not the files.
    assert hub.body_bytes < 10 * MiB


def test_pull_refuses_when_no_quant_fits(hub, monkeypatch, capsys):
    from localllm.cli import main

    tiny = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=200 * MiB, vram=0)
    monkeypatch.setattr(hardware, "detect", lambda *_, **__: tiny)
    assert main(["pull", f"{REPO}", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "no quantization fits" in err and "MODEL:QUANT" in err


def test_fit_shows_the_estimate_error_of_the_last_real_load(cli, installed_starter):
    before = cli("fit", "smollm2-135m-instruct", "--json")
    assert "last_load" not in json.loads(before.stdout)["models"][0]
    ran = cli("run", "-n", "2", "--ctx", "2048", "hi")
    assert ran.returncode == 0, ran.stderr
    result = cli("fit", "smollm2-135m-instruct", "--json")
    [row] = json.loads(result.stdout)["models"]
    last = row["last_load"]
    assert last["n_ctx"] == 2048 and last["allocated"] > 90 * MiB
    assert abs(last["error"]) < 0.05  # the estimate against what llama.cpp said it allocated
    # The peak RSS is recorded beside the estimate; how close they are is benchmarks/bench_estimate.py's
    # business (a process's peak depends on the machine), not a unit test's.
    assert last["peak_rss"] > 0 and last["estimated_rss"] > 0
    text = cli("fit", "smollm2-135m-instruct").stdout
    assert "last load (ctx 2048, gpu layers 0): llama.cpp allocated" in text


def test_tui_badges_come_from_the_planner(installed_starter, hub, smollm2_path):
    from localllm.fit.plan import Verdict
    from localllm.hub.headers import read_remote_header
    from localllm.tui.services import Services

    services = Services()
    laptop = hardware.with_overrides(hardware.profile("laptop-8gb"), vram=0)
    items = {i.name: i for i in services.model_items()}
    [installed] = [o for o in services.quant_options(items["smollm2-135m-instruct"], laptop) if o.installed]
    assert installed.fit.verdict is Verdict.FITS and "context" in installed.fit.reason
    big = items["llama-3.3-70b-instruct"]
    # No header of it read yet: judged from the catalog's size of each file, said to be an estimate
    # (issue 22: every quant showed "? not judged", even ~30 GiB on 8 GiB of RAM).
    guessed = services.quant_options(big, laptop)
    assert guessed and all(o.fit.estimated and o.fit.verdict is Verdict.NO for o in guessed)
    assert all("estimated from its size" in o.fit.reason and "localllm fit" not in o.fit.reason for o in guessed)
    small = items["qwen3-0.6b"]
    assert all(o.fit.verdict is Verdict.FITS and o.fit.estimated for o in services.quant_options(small, laptop))
    # Once one quantization's header is read (as `localllm fit` does), every one is judged from it.
    name = big.entry.filename("Q4_K_M") or "Llama-3.3-70B-Instruct-Q4_K_M.gguf"
    hub.add_repo(big.entry.repo, {name: smollm2_path})
    read_remote_header(big.entry.repo, name)
    judged = services.quant_options(big, laptop)
    assert judged and all(o.fit.verdict is Verdict.NO and not o.fit.estimated for o in judged)
    assert all(o.fit.reason.startswith("won't fit: needs") for o in judged)


def test_list_says_whether_each_installed_model_fits(installed_starter, monkeypatch, capsys):
    from localllm.cli import main

    assert main(["list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["fits"] == "fits"
    tiny = hardware.with_overrides(hardware.profile("laptop-8gb"), ram=200 * MiB, vram=0)
    monkeypatch.setattr(hardware, "detect", lambda *_, **__: tiny)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["NAME", "QUANT", "SIZE", "FITS"]
    assert out.splitlines()[1].split()[4:6] == ["won't", "fit"]  # SIZE is "94 MiB"


def test_cached_headers_follow_the_file(tmp_path, smollm2_path):
    import shutil

    from support.hubfixtures import write_tiny_gguf

    from localllm.gguf import cache as headercache

    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, path)
    assert headercache.read_header(path).architecture == "llama"
    assert headercache.read_header(path).block_count == 30  # from the cache, the same answer
    write_tiny_gguf(tmp_path / "other.gguf").replace(path)  # replaced by another model
    assert headercache.read_header(path).block_count is None


def test_the_load_record_is_written_before_the_model_is_freed(installed_starter, monkeypatch):
    """The record asks NVML what the process holds on the GPU: it must see the model still loaded."""
    from localllm import app
    from localllm.fit import loadlog

    seen = []
    monkeypatch.setattr(loadlog, "record", lambda *args: seen.append(opened.model is None and closed))
    closed = False
    opened = app.open_model(n_ctx=256, n_gpu_layers=0, n_threads=1)
    real_close = opened.model.close

    def close() -> None:
        nonlocal closed
        closed = True
        real_close()

    opened.model.close = close
    opened.close()
    assert seen == [False] and closed


# README (hw): every profile it names plans for that machine (issue 16). Names copied from the README.
README_PROFILES = {
    "laptop-8gb": (8, None, False),
    "laptop-16gb": (16, None, False),
    "desktop-32gb": (32, None, False),
    "mac-m-8gb": (8, 8, True),
    "mac-m-16gb": (16, 16, True),
    "mac-m-32gb": (32, 32, True),
    "mac-m-64gb": (64, 64, True),
    "rtx-8gb-16gb-ram": (16, 8, False),
    "rtx-12gb-32gb-ram": (32, 12, False),
    "rtx-16gb-32gb-ram": (32, 16, False),
    "rtx-24gb-64gb-ram": (64, 24, False),
}


@pytest.mark.parametrize("name", README_PROFILES)
def test_hw_profile_prints_that_machine(name, capsys, monkeypatch):
    from localllm.cli import main

    ram_gb, vram_gb, unified = README_PROFILES[name]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["hw", "--profile", name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"] == name and data["ram_total"] == ram_gb << 30
    if vram_gb is None:
        assert data["gpus"] == [] and data["gpu_offload"] is False and data["gpu_budget"] == 0
    else:
        [gpu] = data["gpus"]
        assert gpu["total"] == vram_gb << 30 and gpu["unified"] is unified and data["gpu_offload"] is True
        assert 0 < data["gpu_budget"] <= gpu["total"]
    assert main(["hw", "--profile", name.upper()]) == 0  # as text, and the name is not case-sensitive
    text = capsys.readouterr().out
    assert text.splitlines()[0].split() == ["machine", name]
    assert f"{ram_gb:.1f} GiB total" in text


def test_fit_of_a_catalog_model_judges_every_quant_and_caches_the_headers(cli, hub, smollm2_path, isolated_home):
    """README (fit): every quantization a catalog model offers on the Hub, headers only, cached (issue 16)."""

    quants = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]  # what models.toml offers for smollm2-135m-instruct
    files = {f"SmolLM2-135M-Instruct-{q}.gguf": smollm2_path for q in quants}
    hub.add_repo(REPO, files)
    args = ("fit", "smollm2-135m-instruct", "--json", "--profile", "laptop-16gb")  # a fixed machine
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    rows = json.loads(first.stdout)["models"]
    assert sorted(r["model"] for r in rows) == sorted(f"smollm2-135m-instruct:{q}" for q in quants)
    assert all(r["where"] == "on the Hub" and r["verdict"] in ("fits", "tight", "no") for r in rows)
    header_reads = [r for r in hub.requests if "/resolve/" in r.path]
    assert {r.path.rsplit("/", 1)[1] for r in header_reads} == set(files)
    assert all(r.range for r in header_reads if r.method == "GET")  # headers only, by range
    assert hub.body_bytes < 4 * 10 * MiB
    hub.reset_counts()
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    # The headers came from the cache: no file byte was asked for again. (The repo listing is
    # fetched again, two small /api/ requests, to see whether the repo changed.)
    assert [r.path for r in hub.requests if "/resolve/" in r.path] == []
    assert all(r.path.startswith("/api/") for r in hub.requests) and hub.body_bytes == 0
    assert json.loads(second.stdout)["models"] == rows
