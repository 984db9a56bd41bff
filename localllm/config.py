"""Every environment variable localllm reads, in one place.

Nothing else calls ``os.environ``: modules ask this one for what they need, and each value is read
when it is asked for, never at import, so a test (or a long-running UI) that changes a variable
sees the change. :func:`as_dict` lists every variable with its value, for ``localllm hw`` and bug
reports.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("LOCALLLM_HOME", "the data directory (models, manifest, history, caches)"),
    Variable("LOCALLLM_LMSTUDIO_DIRS", "LM Studio model folders to look in, separated by the path separator"),
    Variable("LOCALLLM_DOWNLOAD_RETRIES", "download attempts in a row without progress before giving up (6)"),
    Variable("LOCALLLM_DOWNLOAD_BACKOFF", "first wait between download retries, in seconds (1.0)"),
    Variable("LOCALLLM_DOWNLOAD_STALL", "seconds without a byte before a download reconnects (30)"),
    Variable("LOCALLLM_CATALOG", "a models.toml to use instead of the bundled model catalog (same format)"),
    Variable("LOCALLLM_API_KEY", "the key `localllm serve` requires as 'Authorization: Bearer KEY' (--api-key)"),
    Variable(
        "LOCALLLM_ENDPOINT_API_KEY",
        "the key `batch --endpoint` sends as 'Authorization: Bearer KEY' (an endpoints file's key_env=NAME overrides it)",
    ),
    Variable("HF_HUB_OFFLINE", "1: make no network request at all"),
    Variable("HF_ENDPOINT", "the Hugging Face Hub or a mirror (default https://huggingface.co)"),
    Variable("HF_TOKEN", "token for gated and private repositories (else the one `hf auth login` stored)"),
    Variable("HF_HUB_CACHE", "the Hugging Face cache, searched for models other apps downloaded"),
    Variable("HF_HOME", "Hugging Face's home; its hub/ folder is the cache when HF_HUB_CACHE is unset"),
    Variable("OLLAMA_MODELS", "Ollama's model store, searched for models it downloaded"),
    Variable("HTTPS_PROXY", "proxy for Hub requests (also HTTP_PROXY, NO_PROXY; read by the HTTP clients)"),
)
_NAMES = frozenset(v.name for v in VARIABLES)


def get(name: str) -> str | None:
    """The value of one of :data:`VARIABLES`, or None when unset or empty."""
    if name not in _NAMES:
        raise KeyError(f"{name} is not one of localllm's environment variables")
    value = os.environ.get(name)
    return value if value else None


def _flag(name: str) -> bool:
    return (get(name) or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _path(name: str) -> Path | None:
    value = get(name)
    return Path(value).expanduser() if value else None


def _number(name: str, default: float) -> float:
    value = get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if not number >= 0:  # NaN and negatives
        raise UsageError(f"{name} must be 0 or more, not {value!r}")
    return number


# --- localllm's own --------------------------------------------------------------------------


def home() -> Path | None:
    """``LOCALLLM_HOME``: the data directory to use instead of the platform's."""
    return _path("LOCALLLM_HOME")


def catalog_file() -> Path | None:
    """``LOCALLLM_CATALOG``: a model catalog to read instead of the bundled ``models.toml``."""
    return _path("LOCALLLM_CATALOG")


def lmstudio_dirs() -> list[Path] | None:
    """``LOCALLLM_LMSTUDIO_DIRS`` split on the path separator; None when unset."""
    value = os.environ.get("LOCALLLM_LMSTUDIO_DIRS")
    if value is None:
        return None
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def download_retries(default: int) -> int:
    return int(_number("LOCALLLM_DOWNLOAD_RETRIES", default))


def download_backoff(default: float) -> float:
    return _number("LOCALLLM_DOWNLOAD_BACKOFF", default)


def download_stall(default: float) -> float:
    return _number("LOCALLLM_DOWNLOAD_STALL", default)


def api_key(flag: str | None = None) -> str | None:
    """``--api-key`` or ``LOCALLLM_API_KEY``: the Bearer token ``serve`` requires (None: none)."""
    return flag or get("LOCALLLM_API_KEY")


def endpoint_api_key(key_env: str | None = None) -> str | None:
    """The key for a server of ``batch --endpoint``: the variable an endpoints file names with
    ``key_env=NAME`` (UsageError when it is unset: a key the user asked for is missing), else
    ``LOCALLLM_ENDPOINT_API_KEY`` (None: send no key)."""
    if key_env is None:
        return get("LOCALLLM_ENDPOINT_API_KEY")
    value = os.environ.get(key_env)
    if not value:
        raise UsageError(
            f"key_env={key_env} names an environment variable that is not set",
            hint=f"export {key_env}=YOUR_KEY, or remove key_env= from the endpoints file",
        )
    return value


# --- the Hugging Face Hub (huggingface_hub reads these only at import: we read them live) -----


def offline(flag: bool = False) -> bool:
    """``--offline`` or ``HF_HUB_OFFLINE=1``."""
    return flag or _flag("HF_HUB_OFFLINE")


def hf_endpoint() -> str:
    return (get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")


def hf_token() -> str | None:
    """``HF_TOKEN``; None leaves huggingface_hub to find the token `hf auth login` stored."""
    return get("HF_TOKEN")


def hf_cache_dir() -> Path:
    cache = _path("HF_HUB_CACHE")
    if cache is not None:
        return cache
    hf_home = _path("HF_HOME")
    if hf_home is not None:
        return hf_home / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


# --- other apps --------------------------------------------------------------------------------


def ollama_dir() -> Path:
    return _path("OLLAMA_MODELS") or Path.home() / ".ollama" / "models"


def child_environment() -> dict[str, str] | None:
    """The environment for a program localllm starts (pip); None: this process's, unchanged.

    The standalone build's launcher points LD_LIBRARY_PATH at the bundle's libraries (keeping the
    old value in LD_LIBRARY_PATH_ORIG); another program must get the old value back, or it would
    load the bundle's libssl, libpython and the rest instead of its own."""
    if not getattr(sys, "frozen", False):
        return None
    env = dict(os.environ)
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        env.pop("LD_LIBRARY_PATH", None)
    else:
        env["LD_LIBRARY_PATH"] = original
    return env


def as_dict() -> dict[str, str | None]:
    """Every variable localllm reads, with its value (None: unset). Tokens are masked."""
    values = {}
    for var in VARIABLES:
        value = os.environ.get(var.name)
        if value and var.name in ("HF_TOKEN", "LOCALLLM_API_KEY", "LOCALLLM_ENDPOINT_API_KEY"):
            value = "(set)"
        values[var.name] = value
    return values
