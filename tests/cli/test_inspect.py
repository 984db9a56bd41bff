"""``localllm inspect`` on the real model and on damaged files."""

from __future__ import annotations

import json

from support.files import damaged_copy
from support.hubfixtures import hub, online  # noqa: F401 - fixtures


def test_inspect_file_text(cli, smollm2_path):
    result = cli("inspect", str(smollm2_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "llama" in out
    assert "Q4_1" in out and "bits per weight" in out
    assert "<|im_start|>" in out  # the chat template
    assert "8,192" in out  # context length


def test_inspect_json_fields(cli, smollm2_path):
    result = cli("inspect", "--json", str(smollm2_path))
    info = json.loads(result.stdout)
    assert info["architecture"] == "llama"
    assert info["file_type"] == "Q4_1"
    assert 134_000_000 < info["parameters"] < 135_000_000
    assert 5.0 < info["bits_per_weight"] < 6.5  # Q4_1 is 5 bits; a few tensors are wider
    assert info["layers"] == 30
    assert info["head_count"] == 9 and info["head_count_kv"] == 3
    assert info["vocab_size"] == 49152
    assert info["file_size"] == smollm2_path.stat().st_size
    assert "im_start" in info["chat_template"]


def test_inspect_installed_model_by_name(cli, installed_starter):
    result = cli("inspect", "--json", "smollm2-135m-instruct")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["catalog"] == "smollm2-135m-instruct"


def test_inspect_truncated(cli, tmp_path, smollm2_path):
    cut = damaged_copy(smollm2_path, tmp_path / "cut.gguf", truncate_to=50_000_000)
    result = cli("inspect", str(cut))
    assert result.returncode == 1
    assert "truncated" in result.stderr and result.stderr.count("\n") == 1


def test_inspect_not_gguf(cli, tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 zip, not gguf")
    result = cli("inspect", str(tmp_path / "x.gguf"))
    assert result.returncode == 1
    assert "not a GGUF file" in result.stderr


def test_a_catalog_model_that_is_not_installed_is_inspected_on_the_hub(cli, hub, smollm2_path):
    """`inspect qwen3-8b` reads the header of the catalog's file on the Hub (range requests), as
    `fit` does, instead of answering 'not installed'."""
    from localllm.models.catalog import load_catalog

    entry = load_catalog().get("qwen3-8b")
    name = entry.filename("Q4_K_M") or "Qwen_Qwen3-8B-Q4_K_M.gguf"
    hub.add_repo(entry.repo, {name: smollm2_path})
    result = cli("inspect", "qwen3-8b")
    assert result.returncode == 0, result.stderr
    assert f"{entry.repo}/{name} (on the Hub; not installed)" in result.stdout
    assert "llama" in result.stdout and "8,192" in result.stdout  # what the (stand-in) header says
    assert hub.body_bytes < 10 << 20  # the header, not the file
    offline = cli("inspect", "qwen3-8b", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and "on the Hub" in offline.stdout  # the header is cached now


def test_inspecting_the_starter_on_an_empty_store_installs_nothing(cli, isolated_home):
    """`inspect` reads; it used to fetch the 98 MB starter model through pip without a word."""
    from localllm.models.catalog import load_catalog

    starter = load_catalog().starter().name
    result = cli("inspect", starter, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "not installed" in result.stderr and f"localllm pull {starter}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    listed = cli("list", "--json")
    assert listed.returncode == 0 and starter not in listed.stdout
    assert not any((isolated_home / "models").rglob("*.gguf"))


def test_reading_a_header_from_the_hub_says_so(cli, hub, smollm2_path):
    from localllm.models.catalog import load_catalog

    entry = load_catalog().get("qwen3-8b")
    name = entry.filename("Q4_K_M") or "Qwen_Qwen3-8B-Q4_K_M.gguf"
    hub.add_repo(entry.repo, {name: smollm2_path})
    result = cli("inspect", "qwen3-8b")
    assert result.returncode == 0, result.stderr
    assert "not installed: reading its header from" in result.stderr
