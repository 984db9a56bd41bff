"""Issue 23: LoRA adapters in the store: import and pull accept them, list shows the base they fit,
inspect shows rank, alpha, tensors and base, rm removes them; with the real SmolLM2 base."""

from __future__ import annotations

import json
import os

from support.hubfixtures import hub, online, resolve_gets  # noqa: F401

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


def _catalog_with_adapters(tmp_path, adapters: str):
    """The bundled catalog with ``adapters`` ([[model.adapters]] tables) under its first entry, the
    starter model (LOCALLLM_CATALOG points at it)."""
    from localllm.models.catalog import default_catalog_source

    text = default_catalog_source().read_text(encoding="utf-8")
    first = text.index("\n[[model]]\n")
    second = text.index("\n[[model]]\n", first + 1)
    path = tmp_path / "my-models.toml"
    path.write_text(text[:second] + adapters + "\n" + text[second:], encoding="utf-8")
    return path


CATALOG_ADAPTERS = """
[[model.adapters]]
name = "smollm2-pirate"
repo = "acme/SmolLM2-pirate-LoRA-GGUF"
file = "lora/SmolLM2-pirate-LoRA.gguf"
description = "Pirate talk, a rank-8 LoRA for SmolLM2 135M Instruct."
"""


def test_a_catalog_adapter_is_listed_and_pulled_with_its_base_or_by_name(cli, hub, smollm2_path, tmp_path):
    adapter = write_lora(tmp_path / "SmolLM2-pirate-LoRA.gguf", smollm2_path, seed=2)
    hub.add_repo("acme/SmolLM2-pirate-LoRA-GGUF", {"lora/SmolLM2-pirate-LoRA.gguf": adapter})
    env = {**os.environ, "LOCALLLM_CATALOG": str(_catalog_with_adapters(tmp_path, CATALOG_ADAPTERS))}

    listed = cli("list", "--catalog", env=env)
    assert listed.returncode == 0, listed.stderr
    assert (
        "  smollm2-pirate: for smollm2-135m-instruct, acme/SmolLM2-pirate-LoRA-GGUF/lora/SmolLM2-pirate-LoRA.gguf: "
        "Pirate talk" in listed.stdout
    )
    [row] = [r for r in json.loads(cli("list", "--catalog", "--json", env=env).stdout) if r.get("kind") == "adapter"]
    assert (row["name"], row["base"], row["installed"]) == ("smollm2-pirate", "smollm2-135m-instruct", False)

    # An adapter the catalog names for another model (or none) is refused before any download.
    wrong = cli("pull", "smollm2-360m-instruct", "--adapter", "smollm2-pirate", env=env)
    assert wrong.returncode != 0 and resolve_gets(hub) == []
    assert "the catalog names no adapter 'smollm2-pirate' for smollm2-360m-instruct" in wrong.stderr
    assert "(it is an adapter for smollm2-135m-instruct)" in wrong.stderr

    both = cli("pull", "smollm2-135m-instruct:Q4_K_M", "--adapter", "smollm2-pirate", env=env)
    assert both.returncode == 0, both.stderr
    assert "installed LoRA adapter smollm2-pirate" in both.stdout and "--lora smollm2-pirate" in both.stdout
    pulled = store.find_adapter("smollm2-pirate")
    assert pulled is not None and pulled.extra["rank"] == 8 and pulled.repo == "acme/SmolLM2-pirate-LoRA-GGUF"
    assert store.find_installed("smollm2-135m-instruct", "Q4_K_M") is not None
    assert json.loads(cli("list", "--catalog", "--json", env=env).stdout)[-1]["installed"] is True

    # Pulled by its name alone; installed: no request.
    hub.reset_counts()
    again = cli("pull", "smollm2-pirate", env=env)
    assert again.returncode == 0 and "smollm2-pirate is already installed" in again.stdout
    assert [r for r in hub.requests if "/agent-harnesses" not in r.path] == []
    cli("rm", "smollm2-pirate", "--yes", env=env)
    by_name = cli("pull", "smollm2-pirate", env=env)
    assert by_name.returncode == 0, by_name.stderr
    used = cli("run", "-m", "smollm2-135m-instruct:Q4_K_M", "--lora", "smollm2-pirate", "-t", "0", "-n", "2", "Hi",
               env=env)  # fmt: skip
    assert used.returncode == 0, used.stderr


def test_a_malformed_catalog_adapter_is_one_line(cli, tmp_path):
    bad = _catalog_with_adapters(tmp_path, '[[model.adapters]]\nname = "smollm2-pirate"\nrepo = "acme"\n')
    result = cli("list", "--catalog", env={**os.environ, "LOCALLLM_CATALOG": str(bad)})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "localllm: error: my-models.toml: model 'smollm2-135m-instruct' (entry 1): field 'adapters[1].file': "
        "required but missing (fix my-models.toml; each [[model]] table is described at the top of the file)"
    ], result.stderr
