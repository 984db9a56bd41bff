"""How sizes, rates, durations and counts are written for people: one formatter for each.

Bytes are always binary units, labelled as such (``4.0 GiB``, ``512 MiB``): memory is sold and
reported by operating systems in powers of two, and one file must show as the same size in every
command and screen.
"""

from __future__ import annotations

from collections.abc import Sequence

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_UNITS = ((TiB, "TiB", 2), (GiB, "GiB", 1), (MiB, "MiB", 0), (KiB, "KiB", 0))


def _unit(n: float) -> tuple[int, str, int]:
    for size, name, decimals in _UNITS:
        if abs(n) >= size:
            if name == "MiB" and abs(n) < 10 * MiB:
                return size, name, 1
            return size, name, decimals
    return 1, "B", 0


def format_bytes(n: float) -> str:
    """``4.0 GiB``, ``512 MiB``, ``2.5 MiB``, ``12 KiB``, ``100 B``."""
    size, name, decimals = _unit(n)
    return f"{n / size:.{decimals}f} {name}"


def format_breakdown(parts: Sequence[int]) -> tuple[str, list[str]]:
    """The total of ``parts`` and each part, all in the total's unit, rounded so that the parts
    shown add up to the total shown (largest remainders take the last digit)."""
    total = sum(parts)
    size, name, decimals = _unit(total)
    scale = 10**decimals
    exact = [p / size * scale for p in parts]
    floors = [int(x // 1) for x in exact]
    want = round(total / size * scale)
    by_remainder = sorted(range(len(parts)), key=lambda i: exact[i] - floors[i], reverse=True)
    for i in by_remainder[: max(0, want - sum(floors))]:
        floors[i] += 1

    def text(units: int) -> str:
        return f"{units / scale:.{decimals}f} {name}"

    return text(want), [text(f) for f in floors]


def format_rate(bytes_per_s: float) -> str:
    return f"{format_bytes(bytes_per_s)}/s"


def format_clock(seconds: float | None) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on; ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_count(count: int) -> str:
    """Parameter counts as people write them: ``135M``, ``1.7B``, ``70.6B``."""
    for suffix, unit in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= unit:
            return f"{count / unit:.1f}".removesuffix(".0") + suffix
    return str(count)


def terminal_safe(text: str) -> str:
    """``text`` with control characters (escape sequences included) shown as ``\\xNN``: names read
    from a file must not be able to drive the terminal they are printed to. Undecodable bytes of a
    path or an argument (``surrogateescape``) are shown as ``\\xNN`` too, so printing never fails."""
    if text.isprintable():
        return text
    return "".join(
        c
        if c.isprintable() or c in "\n\t"
        else f"\\x{ord(c) - 0xDC00:02x}"
        if "\udc80" <= c <= "\udcff"
        else f"\\x{ord(c):02x}"
        if ord(c) < 0x100
        else f"\\u{ord(c):04x}"
        for c in text
    )


def json_terminal_safe(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the C1 controls and line
    separators that JSON leaves raw escaped as ``\\u00NN``: still the same JSON, safe on a terminal.
    The undecodable bytes of a path (``surrogateescape``, U+DC80-U+DCFF) become ``\\udcNN`` escapes:
    the output stays valid UTF-8, and Python's json reads the same path back."""
    return "".join(
        f"\\u{ord(c):04x}" if ("\x7f" <= c <= "\x9f" or c in "\u2028\u2029" or "\udc80" <= c <= "\udcff") else c
        for c in text
    )
