"""Model references: every form a user may type parses to the right kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm.errors import ModelFileError, ModelNotFoundError
from localllm.models.refs import ModelRef, parse_ref, require_file


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty directory so no stray file decides a reference's kind."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_reference(text: str):
    with pytest.raises(ModelNotFoundError, match="empty model reference") as info:
        parse_ref(text)
    assert info.value.hint


@pytest.mark.parametrize(
    ("text", "name", "quant", "canonical"),
    [
        ("qwen3-8b", "qwen3-8b", None, "qwen3-8b"),
        ("Qwen3-8B", "qwen3-8b", None, "qwen3-8b"),
        ("qwen3-8b:q5_k_m", "qwen3-8b", "Q5_K_M", "qwen3-8b:Q5_K_M"),
        ("  SmolLM2-135M-Instruct:Q4_1 ", "smollm2-135m-instruct", "Q4_1", "smollm2-135m-instruct:Q4_1"),
        ("qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct", None, "qwen2.5-0.5b-instruct"),
        ("gpt-oss-20b:mxfp4", "gpt-oss-20b", "MXFP4", "gpt-oss-20b:MXFP4"),
    ],
)
def test_catalog_names(text: str, name: str, quant: str | None, canonical: str):
    ref = parse_ref(text)
    assert (ref.kind, ref.name, ref.quant, ref.repo, ref.path) == ("catalog", name, quant, None, None)
    assert ref.raw == text
    assert str(ref) == canonical


@pytest.mark.parametrize(
    ("text", "repo", "quant", "canonical"),
    [
        ("bartowski/Qwen_Qwen3-8B-GGUF", "bartowski/Qwen_Qwen3-8B-GGUF", None, "bartowski/Qwen_Qwen3-8B-GGUF"),
        ("unsloth/Qwen3-8B-GGUF:q4_k_m", "unsloth/Qwen3-8B-GGUF", "Q4_K_M", "unsloth/Qwen3-8B-GGUF:Q4_K_M"),
        ("unsloth/Qwen3-8B-GGUF:UD-Q4_K_XL", "unsloth/Qwen3-8B-GGUF", "UD-Q4_K_XL", "unsloth/Qwen3-8B-GGUF:UD-Q4_K_XL"),
        ("hf.co/bartowski/Foo-GGUF:Q8_0", "bartowski/Foo-GGUF", "Q8_0", "bartowski/Foo-GGUF:Q8_0"),
        (
            "https://huggingface.co/ggml-org/gpt-oss-20b-GGUF",
            "ggml-org/gpt-oss-20b-GGUF",
            None,
            "ggml-org/gpt-oss-20b-GGUF",
        ),
    ],
)
def test_hub_repositories(text: str, repo: str, quant: str | None, canonical: str):
    ref = parse_ref(text)
    assert (ref.kind, ref.repo, ref.quant, ref.name, ref.filename) == ("hf", repo, quant, None, None)
    assert str(ref) == canonical


@pytest.mark.parametrize(
    ("text", "repo", "filename"),
    [
        ("bartowski/Foo-GGUF/Foo-Q4_K_M.gguf", "bartowski/Foo-GGUF", "Foo-Q4_K_M.gguf"),
        (
            "bartowski/Foo-GGUF/Q6_K/Foo-Q6_K-00001-of-00002.gguf",
            "bartowski/Foo-GGUF",
            "Q6_K/Foo-Q6_K-00001-of-00002.gguf",
        ),
        ("https://huggingface.co/o/r/resolve/main/x.GGUF", "o/r", "x.GGUF"),
    ],
)
def test_hub_files(text: str, repo: str, filename: str):
    ref = parse_ref(text)
    assert (ref.kind, ref.repo, ref.filename, ref.quant) == ("hf_file", repo, filename, None)
    assert str(ref) == f"{repo}/{filename}"


@pytest.mark.parametrize(
    "text",
    [
        "/models/qwen.gguf",
        "./qwen.gguf",
        "../models/qwen.gguf",
        "~/models/qwen.gguf",
        "qwen.gguf",
        "models/qwen.gguf",
        "/models/no-extension",
        "C:\\models\\qwen.gguf",
        "c:/models/qwen.gguf",
        "D:\\qwen",
        ".\\qwen.gguf",
        "\\\\server\\share\\qwen.gguf",
        "models\\qwen.GGUF",
    ],
)
def test_path_like_references_are_files_even_when_missing(text: str):
    ref = parse_ref(text)
    assert ref.kind == "file"
    assert ref.path == Path(text).expanduser()
    assert str(ref) == str(Path(text).expanduser())
    with pytest.raises(ModelFileError, match="no such file: "):
        require_file(ref)


def test_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))
    ref = parse_ref("~/m.gguf")
    assert ref.path == tmp_path / "m.gguf"


def test_existing_relative_file(empty_cwd: Path):
    (empty_cwd / "model.gguf").write_bytes(b"GGUF")
    ref = parse_ref("model.gguf")
    assert ref.kind == "file" and ref.path == Path("model.gguf")
    assert require_file(ref) == Path("model.gguf")


def test_existing_file_wins_over_a_catalog_name(empty_cwd: Path):
    (empty_cwd / "qwen3-8b").write_bytes(b"GGUF")
    assert parse_ref("qwen3-8b").kind == "file"


def test_existing_file_wins_over_a_repository(empty_cwd: Path):
    (empty_cwd / "owner").mkdir()
    (empty_cwd / "owner" / "repo").write_bytes(b"GGUF")
    ref = parse_ref("owner/repo")
    assert ref.kind == "file" and require_file(ref) == Path("owner/repo")


@pytest.mark.parametrize("text", ["./models", "models.gguf", "./models/"])
def test_a_directory_meant_as_a_path_is_an_error(empty_cwd: Path, text: str):
    (empty_cwd / "models").mkdir()
    (empty_cwd / "models.gguf").mkdir()
    with pytest.raises(ModelFileError, match="is a directory, not a .gguf file"):
        parse_ref(text)


def test_absolute_directory_is_an_error(tmp_path: Path):
    with pytest.raises(ModelFileError, match="is a directory, not a .gguf file"):
        parse_ref(str(tmp_path))


def test_a_folder_named_like_a_model_does_not_shadow_the_catalog(empty_cwd: Path):
    # e.g. running inside the models store, which has one folder per catalog name
    (empty_cwd / "smollm2-135m-instruct").mkdir()
    (empty_cwd / "bartowski" / "Foo-GGUF").mkdir(parents=True)
    assert parse_ref("smollm2-135m-instruct").kind == "catalog"
    assert parse_ref("bartowski/Foo-GGUF").kind == "hf"


def test_require_file_on_a_directory(empty_cwd: Path):
    ref = ModelRef(kind="file", raw="d", path=empty_cwd)
    with pytest.raises(ModelFileError, match="is a directory"):
        require_file(ref)


def test_require_file_rejects_other_kinds():
    with pytest.raises(ValueError):
        require_file(parse_ref("qwen3-8b"))


@pytest.mark.parametrize(
    "text",
    [
        "qwen3-8b:",
        ":Q4_K_M",
        "qwen3-8b:Q4 K M",
        "owner/repo:",
        "owner/:Q4_K_M",
        "/repo",
        "owner/repo/subdir",
        "owner//file.gguf",
        "owner/repo//file.gguf",
        "-owner/repo",
    ],
)
def test_malformed_references(text: str):
    with pytest.raises((ModelNotFoundError, ModelFileError)) as info:
        ref = parse_ref(text)
        if ref.kind == "file":  # "/repo" is a (missing) absolute path: reported by require_file
            require_file(ref)
    assert info.value.hint


def test_refs_are_frozen_and_comparable():
    assert parse_ref("qwen3-8b:q4_k_m") == parse_ref("qwen3-8b:q4_k_m")
    with pytest.raises(AttributeError):
        parse_ref("qwen3-8b").name = "x"  # type: ignore[misc]
