"""The options a user may set, declared once: type, default, limits, help, and the names each surface
spells them by (the CLI flag, the OpenAI field, the Ollama ``options`` field; ``/set``, batch lines
and the TUI's dialog use the name itself).

Every surface checks a value with :meth:`Option.check` (or :meth:`Option.parse` for typed text), so
the limits and the defaults are the same in ``run``, ``chat``, ``batch``, ``serve``, ``/set`` and the
TUI. A bad value is an :class:`OptionError` naming the option as the caller spelled it. This module
imports nothing but the errors, so ``localllm --help`` can build its flags from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from localllm.errors import UsageError

MIN_CTX_ASKED = 32  # tokens: the smallest context a user may ask for (a chat template and a short reply)
MAX_CTX = 1 << 24  # llama.cpp keeps n_ctx in 32 bits; nothing trains beyond this
MAX_THREADS = 512  # GGML_MAX_N_THREADS
# llama.cpp's LLAMA_MAX_SEQ (src/llama-cparams.h): a context holds at most this many sequences.
MAX_PARALLEL = 256


class OptionError(UsageError):
    """An option given a value of the wrong type or out of its range. ``option`` is the schema's
    name; ``spelled`` is the name as the caller wrote it (``--top-p``, ``top_p``, ``/set top_p``)."""

    def __init__(self, message: str, option: str, spelled: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.option = option
        self.spelled = spelled


def _show(value: object, typed: bool = False) -> str:
    """A value for an error message: text as typed (quoted when it came in JSON or is not printable)."""
    if isinstance(value, str):
        text = value if typed and value.isprintable() else repr(value)
    elif isinstance(value, int) and value.bit_length() > 256:
        text = "a number of more than 70 digits"  # str() of a huge int is slow, and refused past 4300 digits
    else:
        text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Option:
    """One option: ``kind`` is int or float, ``low``..``high`` its limits (inclusive). ``flag`` and
    ``short`` are its CLI flags; ``openai`` and ``ollama`` the request fields that carry it (empty:
    none); ``label`` its field in the TUI's settings dialog."""

    name: str
    kind: type
    default: Any
    low: float
    high: float
    help: str
    flag: str = ""
    short: str | None = None
    openai: tuple[str, ...] = ()
    ollama: str | None = None
    label: str = ""  # the TUI's field label

    def describe(self) -> str:
        """What a value must be, in words: "a number from 0 to 1"."""
        if self.kind is int:
            return f"a whole number from {self.low:,} to {self.high:,}"
        return f"a number from {self.low:g} to {self.high:g}"

    def help_text(self, default: object = None) -> str:
        """The CLI help: what the option does, and the command's default (a value, or words)."""
        if default is None:
            return self.help
        return self.help + (f" (default: {default})" if isinstance(default, str) else f" (default {default})")

    def check(self, value: object, spelled: str | None = None) -> Any:
        """``value`` as this option's type; :class:`OptionError` naming it as ``spelled`` (default:
        its CLI flag) when it is of the wrong type, not finite or out of range. None stays None."""
        if value is None:
            return None
        if self.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        numeric = (int,) if self.kind is int else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, numeric)
            or (isinstance(value, float) and not math.isfinite(value))
            or not self.low <= value <= self.high
        ):
            raise self.error(value, spelled)
        return self.kind(value)

    def parse(self, text: str, spelled: str | None = None) -> Any:
        """A typed value from text (a /set argument, a dialog field); "" is None (the default)."""
        text = text.strip()
        if not text:
            return None
        try:
            return self.check(int(text) if self.kind is int else float(text), spelled)
        except (ValueError, OptionError):
            raise self.error(text, spelled, typed=True) from None

    def error(self, value: object, spelled: str | None = None, *, typed: bool = False) -> OptionError:
        """The error for ``value`` (``typed``: the text as the user typed it, shown without quotes)."""
        spelled = spelled or self.flag
        what = self.describe()
        if isinstance(value, float) and not math.isfinite(value):
            what = what.replace("a number", "a finite number")
        return OptionError(f"{spelled} must be {what}, not {_show(value, typed)}", self.name, spelled)


def _options(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


# What a conversation, a batch line and a request may set: sampling and the length of the reply.
SAMPLING: dict[str, Option] = _options(
    Option(
        "temperature",
        kind=float,
        default=0.8,
        low=0.0,
        high=100.0,
        help="sampling temperature, 0 = greedy",
        flag="--temperature",
        short="-t",
        openai=("temperature",),
        ollama="temperature",
        label="Temperature (0 = greedy)",
    ),
    Option(
        "top_p",
        kind=float,
        default=0.95,
        low=0.0,
        high=1.0,
        help="nucleus sampling",
        flag="--top-p",
        openai=("top_p",),
        ollama="top_p",
        label="Top-p",
    ),
    Option(
        "top_k",
        kind=int,
        default=40,
        low=-1,
        high=1 << 20,
        help="top-k sampling, 0 = off",
        flag="--top-k",
        openai=("top_k",),
        ollama="top_k",
        label="Top-k (0 = off)",
    ),
    Option(
        "min_p",
        kind=float,
        default=0.05,
        low=0.0,
        high=1.0,
        help="min-p sampling, 0 = off",
        flag="--min-p",
        openai=("min_p",),
        ollama="min_p",
        label="Min-p",
    ),
    Option(
        "repeat_penalty",
        kind=float,
        default=1.0,
        low=0.0,
        high=10.0,
        help="penalty on repeating the last 64 tokens, 1 = off",
        flag="--repeat-penalty",
        openai=("repeat_penalty",),
        ollama="repeat_penalty",
        label="Repeat penalty (1 = off)",
    ),
    Option(
        "seed",
        kind=int,
        default=None,
        low=-(1 << 63),
        high=(1 << 64) - 1,
        help="sampling seed, for repeatable output",
        flag="--seed",
        openai=("seed",),
        ollama="seed",
        label="Seed (empty = random)",
    ),
    Option(
        "max_tokens",
        kind=int,
        default=None,
        low=1,
        high=MAX_CTX,
        help="stop after this many tokens",
        flag="--max-tokens",
        short="-n",
        openai=("max_completion_tokens", "max_tokens"),
        ollama="num_predict",
        label="Max reply tokens (empty = no limit)",
    ),
)
# How a model is loaded: set per command (and for the server when it starts), not per request.
LOADING: dict[str, Option] = _options(
    Option("ctx", int, None, MIN_CTX_ASKED, MAX_CTX, "context size in tokens", flag="--ctx", short="-c"),
    Option("threads", int, None, 1, MAX_THREADS, "CPU threads", flag="--threads"),
    Option(
        "gpu_layers",
        kind=int,
        default=None,
        low=-1,
        high=1 << 16,
        help="layers to offload to the GPU, -1 = all",
        flag="--gpu-layers",
    ),
    Option("parallel", int, None, 1, MAX_PARALLEL, "sequences decoded at once", flag="--parallel", short="-p"),
)
OPTIONS: dict[str, Option] = {**SAMPLING, **LOADING}

# llama.cpp's RPC workers (``--rpc HOST:PORT[,HOST:PORT]``): ggml-rpc takes at most this many
# (GGML_RPC_MAX_SERVERS) and splits an endpoint at its first colon, so a host is a name or an IPv4
# address.
MAX_RPC_WORKERS = 16
RPC_PORT = 50052  # llama.cpp's rpc-server default


def parse_endpoint(text: str, spelled: str = "--rpc") -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); :class:`OptionError` naming ``spelled`` when it is not one."""
    if not text.strip():
        raise OptionError(f"{spelled} has an empty address (a comma too many?)", "rpc", spelled)
    host, sep, port = text.strip().rpartition(":")
    ok = bool(sep and host and port.isdigit() and port.isascii()) and ":" not in host
    ok = ok and all(c.isalnum() or c in ".-_" for c in host) and host.isascii()
    if not ok or not 1 <= int(port) <= 65535:
        raise OptionError(
            f"{spelled} must be HOST:PORT (e.g. 127.0.0.1:{RPC_PORT}), not {_show(text, typed=True)}",
            "rpc",
            spelled,
            hint="a host name or IPv4 address, and a port from 1 to 65535",
        )
    return host, int(port)


def parse_endpoints(text: str, spelled: str = "--rpc") -> tuple[str, ...]:
    """``HOST:PORT[,HOST:PORT...]`` as normalised ``host:port`` strings, each once, at most
    :data:`MAX_RPC_WORKERS`."""
    endpoints: list[str] = []
    for part in text.split(","):
        host, port = parse_endpoint(part, spelled)
        endpoint = f"{host}:{port}"
        if endpoint in endpoints:
            raise OptionError(f"{spelled} names {endpoint} twice", "rpc", spelled)
        endpoints.append(endpoint)
    if len(endpoints) > MAX_RPC_WORKERS:
        raise OptionError(
            f"{spelled} names {len(endpoints)} workers; ggml-rpc takes at most {MAX_RPC_WORKERS}", "rpc", spelled
        )
    return tuple(endpoints)
