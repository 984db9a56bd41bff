"""Model references: what a user may type wherever a model is asked for.

    qwen3-8b              a catalog name            (kind "catalog")
    qwen3-8b:Q5_K_M       ... with a quantization
    owner/repo            a Hugging Face repository (kind "hf")
    owner/repo:Q4_K_M     ... with a quantization
    owner/repo/dir/x.gguf one file in a repository  (kind "hf_file")
    ./model.gguf, ~/m.gguf, C:\\m.gguf, model.gguf, dir/model.gguf
                          a local file              (kind "file")

A path that exists always wins (a folder is an error only when the text was plainly meant as a
path, so a catalog name that matches a folder in the working directory is still a name).

Parsing is pure apart from asking whether the text names an existing path; whether a catalog name
or repository exists is for the caller to find out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localllm.errors import ModelFileError, ModelNotFoundError

RefKind = Literal["catalog", "hf", "hf_file", "file"]

_HINT = "use a catalog name[:QUANT], owner/repo[:QUANT], owner/repo/file.gguf or a path to a .gguf file"
_PATHLIKE_RE = re.compile(r"^(?:/|\./|\.\./|~|\.\\|\.\.\\|\\|[A-Za-z]:[\\/])")
_HUB_PREFIX_RE = re.compile(r"^(?:https?://)?(?:www\.)?(?:hf\.co|huggingface\.co)/", re.IGNORECASE)
_REVISION_RE = re.compile(r"^(?:resolve|blob)/main/")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_QUANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelRef:
    """One parsed reference; which fields are set depends on ``kind``."""

    kind: RefKind
    raw: str
    name: str | None = None  # catalog: the lowercased catalog name
    quant: str | None = None  # catalog, hf: the uppercased quantization, if one was given
    repo: str | None = None  # hf, hf_file: "owner/repo"
    filename: str | None = None  # hf_file: the path inside the repository
    path: Path | None = None  # file: the local path, "~" expanded

    def __str__(self) -> str:
        if self.kind == "file":
            return str(self.path)
        if self.kind == "hf_file":
            return f"{self.repo}/{self.filename}"
        base = self.name if self.kind == "catalog" else self.repo
        return f"{base}:{self.quant}" if self.quant else str(base)


# What parse_ref returns: one class per kind, whose own fields are always set, so a check of
# ``ref.kind`` tells the type checker which fields hold a value (the others stay None).
@dataclass(frozen=True, kw_only=True)
class CatalogRef(ModelRef):
    kind: Literal["catalog"] = "catalog"
    name: str


@dataclass(frozen=True, kw_only=True)
class HubRef(ModelRef):
    kind: Literal["hf"] = "hf"
    repo: str


@dataclass(frozen=True, kw_only=True)
class HubFileRef(ModelRef):
    kind: Literal["hf_file"] = "hf_file"
    repo: str
    filename: str


@dataclass(frozen=True, kw_only=True)
class FileRef(ModelRef):
    kind: Literal["file"] = "file"
    path: Path


ParsedRef = CatalogRef | HubRef | HubFileRef | FileRef


def _invalid(text: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"not a valid model reference: '{text}' ({why})", hint=_HINT)


def _directory(path: Path) -> ModelFileError:
    return ModelFileError(f"{path} is a directory, not a .gguf file", hint="pass the .gguf file inside it")


def _expand(text: str) -> Path:
    try:
        return Path(text).expanduser()
    except RuntimeError:  # no home directory to expand "~" against
        return Path(text)


def _existing(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # names the OS cannot hold (":" on Windows, NUL bytes)
        return False


def _split_quant(text: str, raw: str) -> tuple[str, str | None]:
    base, colon, quant = text.partition(":")
    if not colon:
        return text, None
    if not quant or not _QUANT_RE.match(quant):
        raise _invalid(raw, f"expected a quantization like Q4_K_M after ':', got '{quant}'")
    return base, quant.upper()


def parse_ref(text: str) -> ParsedRef:
    """Classify ``text`` (see the module docstring); raises ModelNotFoundError when malformed."""
    raw = text
    text = text.strip()
    if not text:
        raise ModelNotFoundError("empty model reference", hint=_HINT)

    # 1. A path that exists is a file, whatever it looks like.
    path = _expand(text)
    hub = _HUB_PREFIX_RE.sub("", text, count=1)
    is_gguf = text.lower().endswith(".gguf")
    # "dir/model.gguf" cannot be a repository (owner/repo) and is one slash short of a file in
    # one (owner/repo/file.gguf): it is a relative path.
    pathlike = bool(_PATHLIKE_RE.match(text)) or (is_gguf and hub == text and text.count("/") <= 1)
    if _existing(path):
        if not path.is_dir():
            return FileRef(raw=raw, path=path)
        # A directory is only an error when the user plainly meant a path; a catalog name or
        # owner/repo that happens to match a folder in the working directory is still a name.
        if pathlike:
            raise _directory(path)

    # 2. Something that looks like a path is one, existing or not (the caller checks).
    if pathlike:
        return FileRef(raw=raw, path=path)

    # 3. Hugging Face references, with or without a hub URL prefix.
    if "/" in hub:
        parts = hub.split("/")
        owner, repo_name = parts[0], parts[1]
        if len(parts) >= 3:
            rest = _REVISION_RE.sub("", "/".join(parts[2:]), count=1)
            if not rest.lower().endswith(".gguf"):
                raise _invalid(raw, "a file in a repository must be a .gguf file")
            if not (_PART_RE.match(owner) and _PART_RE.match(repo_name)) or "" in rest.split("/"):
                raise _invalid(raw, "expected owner/repo/path/to/file.gguf")
            return HubFileRef(raw=raw, repo=f"{owner}/{repo_name}", filename=rest)
        repo_name, quant = _split_quant(repo_name, raw)
        if not (_PART_RE.match(owner) and _PART_RE.match(repo_name)):
            raise _invalid(raw, "expected a Hugging Face repository as owner/repo")
        return HubRef(raw=raw, repo=f"{owner}/{repo_name}", quant=quant)

    # 4. A catalog name.
    name, quant = _split_quant(text, raw)
    if not name:
        raise _invalid(raw, "no model name before ':'")
    return CatalogRef(raw=raw, name=name.lower(), quant=quant)


def require_file(ref: ModelRef) -> Path:
    """The local file a ``file`` reference names; raises ModelFileError when it is not there."""
    if ref.kind != "file" or ref.path is None:
        raise ValueError(f"{ref} is not a local file reference")
    path = ref.path
    if path.is_dir():
        raise _directory(path)
    from localllm.gguf.header import check_model_path

    check_model_path(path)  # one specific line: missing, broken link, loop, FIFO, device, unreadable
    return path
