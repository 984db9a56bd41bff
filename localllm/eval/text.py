"""The text perplexity is measured on: the user's ``--text``, or the one shipped with localllm."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from localllm.errors import UsageError

DEFAULT_NAME = "default.txt.gz"


@dataclass(frozen=True)
class EvalText:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def read_text(path: str | Path | None) -> EvalText:
    """``path``'s text (UTF-8; a ``.gz`` file is decompressed), or the default text."""
    if path is None:
        return default_text()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UsageError(f"cannot decompress {path}: {exc}") from None
    return EvalText(path.name, raw.decode("utf-8", errors="replace"))


def default_text() -> EvalText:
    """The public-domain text shipped in the package (see the README for its source and license)."""
    source = resources.files("localllm.eval") / "data" / DEFAULT_NAME
    try:
        raw = gzip.decompress(source.read_bytes())
    except (OSError, EOFError):
        raise UsageError(
            "no default text ships with this installation", hint="give a text to measure on with --text FILE"
        ) from None
    first = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    return EvalText(first or "default text", raw.decode("utf-8", errors="replace"))
