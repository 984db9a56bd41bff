"""The limits of what a user may set, checked in one place for every command and screen.

The options themselves (types, defaults, limits, help, the names each API gives them) are declared
once in :mod:`localllm.options`; this module is how the shells reach that schema. Each check
raises :class:`OptionError` (a :class:`~localllm.errors.UsageError`) naming the option as the caller
spells it, before anything is loaded: the smallest context is the same for ``run``, ``chat``,
``batch`` and the server, NaN and infinity are refused, and nothing reaches llama.cpp that it would
assert on.
"""

from __future__ import annotations

from localllm.options import (
    LOADING,
    MAX_CTX,
    MAX_PARALLEL,
    MAX_THREADS,
    MIN_CTX_ASKED,
    OPTIONS,
    SAMPLING,
    Option,
    OptionError,
)

__all__ = [
    "LOADING",
    "MAX_CTX",
    "MAX_PARALLEL",
    "MAX_THREADS",
    "MIN_CTX_ASKED",
    "OPTIONS",
    "SAMPLING",
    "Option",
    "OptionError",
    "check",
]


def check(**values: object) -> None:
    """Check the options given by their schema names (None: not set), each named by its CLI flag in
    the error. Raises :class:`OptionError` for the first bad one."""
    for name, value in values.items():
        OPTIONS[name].check(value)
