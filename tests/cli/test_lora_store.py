"""Issue 23: LoRA adapters in the store: import and pull accept them, list shows the base they fit,
inspect shows rank, alpha, tensors and base, rm removes them; with the real SmolLM2 base."""

from __future__ import annotations

import json
import os

from support.hubfixtures import hub, online  # noqa: F401

from localllm.models import store
from tests.support.lora import write_lora


def test_an_imported_adapter_is_listed_with_its_base_inspected_used_and_removed(
    cli, installed_starter, smollm2_path, tmp_path
):
    adapter = write_lora(tmp_path / "alpha.gguf", smollm2_path, seed=1, rank=4, alpha=8.0)
    other = write_lora(tmp_path / "qwen.gguf", smollm2_path, arch="qwen2", layers=[0])
    result = cli("import", str(adapter), "--name", "alpha")
    assert result.returncode == 0, result.stderr
    assert "imported LoRA adapter alpha" in result.stdout and "--lora alpha" in result.stdout
    assert cli("import", str(other), "--name", "qwen-lora").returncode == 0

    rows = {r["name"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert rows["alpha"]["kind"] == "adapter" and rows["alpha"]["base_architecture"] == "llama"
    assert rows["alpha"]["fits_models"] == [installed_starter.key]
    assert rows["qwen-lora"]["fits_models"] == [] and "kind" not in rows[installed_starter.name]
    table = cli("list").stdout
    assert f"alpha: LoRA adapter for llama, fits {installed_starter.key}" in table
    assert "qwen-lora: LoRA adapter for qwen2, fits no installed model" in table

    info = json.loads(cli("inspect", "alpha", "--json").stdout)
    assert (info["kind"], info["rank"], info["alpha"], info["architecture"]) == ("adapter", 4, 8.0, "llama")
    assert info["base_model"] == "SmolLM2-135M-Instruct" and len(info["tensors"]) == 90
    text = cli("inspect", "alpha").stdout
    assert "rank               4" in text and "adapted tensors    90 (attn_q, attn_v, ffn_down)" in text

    run = cli("run", "-m", installed_starter.key, "--lora", "alpha:0.5", "-t", "0", "-n", "4", "Hi")
    assert run.returncode == 0, run.stderr
    assert (
        cli("run", "-m", "smollm2-135m-instruct", "--lora", "qwen-lora", "-n", "2", "Hi").stderr.count(
            "adapter qwen.gguf does not fit"
        )
        == 1
    )
    nothing = cli("run", "--lora", "nope", "-n", "2", "Hi")
    assert nothing.returncode != 0 and "no LoRA adapter named 'nope' is installed" in nothing.stderr
    # An adapter is never the default model.
    assert store.most_recent().key == installed_starter.key

    removed = cli("rm", "alpha", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert store.find_adapter("alpha") is None and not (store.paths.models_dir() / "alpha").exists()


def test_a_pulled_adapter_is_recorded_as_one(cli, hub, smollm2_path, tmp_path):
    adapter = write_lora(tmp_path / "SmolLM2-alpha-LoRA.gguf", smollm2_path, seed=1)
    hub.add_repo("acme/SmolLM2-alpha-LoRA-GGUF", {"SmolLM2-alpha-LoRA.gguf": adapter})
    result = cli("pull", "acme/SmolLM2-alpha-LoRA-GGUF/SmolLM2-alpha-LoRA.gguf", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    [pulled] = [m for m in store.installed() if m.is_adapter]
    assert pulled.extra["base_architecture"] == "llama" and pulled.extra["rank"] == 8
