"""Rewrite a real GGUF's metadata, key by key, for tests of damaged and hostile headers.

:func:`split` cuts a GGUF's header into its raw key/value entries and its raw tensor infos (by a
walker of its own, independent of ``localllm.gguf.header``); :func:`build` puts a header back
together with some entries replaced, added or dropped, and :func:`write` follows it with the
original tensor data (or a sparse hole of the same size, which is enough for everything but
running the model).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)
_SIZES = {
    T_UINT8: 1,
    T_INT8: 1,
    T_UINT16: 2,
    T_INT16: 2,
    T_UINT32: 4,
    T_INT32: 4,
    T_FLOAT32: 4,
    T_BOOL: 1,
    T_UINT64: 8,
    T_INT64: 8,
    T_FLOAT64: 8,
}
_FMT = {
    T_UINT8: "B",
    T_INT8: "b",
    T_UINT16: "H",
    T_INT16: "h",
    T_UINT32: "I",
    T_INT32: "i",
    T_FLOAT32: "f",
    T_BOOL: "?",
    T_UINT64: "Q",
    T_INT64: "q",
    T_FLOAT64: "d",
}


@dataclass(frozen=True)
class Raw:
    """A value given as its GGUF type and encoded bytes (for values Python types cannot say)."""

    vtype: int
    data: bytes


@dataclass
class Parts:
    version: int
    entries: dict[str, bytes]  # key -> type + encoded value
    tensor_infos: bytes
    n_tensors: int
    alignment: int
    data: bytes | int  # the tensor data, or its size (written as a hole)


def _skip_value(buf: bytes, pos: int, vtype: int) -> int:
    if vtype in _SIZES:
        return pos + _SIZES[vtype]
    if vtype == T_STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    etype, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if etype in _SIZES:
        return pos + count * _SIZES[etype]
    for _ in range(count):
        pos = _skip_value(buf, pos, etype)
    return pos


def split(path: Path, *, keep_data: bool = False) -> Parts:
    with open(path, "rb") as f:
        head = f.read(64 << 20)  # the whole header of any test model
    _, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", head, 0)
    pos = 24
    entries: dict[str, bytes] = {}
    alignment = 32
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", head, pos)
        key = head[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        (vtype,) = struct.unpack_from("<I", head, pos)
        end = _skip_value(head, pos + 4, vtype)
        entries[key] = head[pos:end]
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", head, pos + 4)
        pos = end
    start = pos
    for _ in range(n_tensors):
        (n,) = struct.unpack_from("<Q", head, pos)
        pos += 8 + n
        (n_dims,) = struct.unpack_from("<I", head, pos)
        pos += 4 + 8 * n_dims + 12
    infos = head[start:pos]
    data_offset = (pos + alignment - 1) // alignment * alignment
    size = path.stat().st_size - data_offset
    data: bytes | int = size
    if keep_data:
        with open(path, "rb") as f:
            f.seek(data_offset)
            data = f.read()
    return Parts(version, entries, infos, n_tensors, alignment, data)


def _string(s: str | bytes) -> bytes:
    raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _type_of(value: object) -> int:
    if isinstance(value, Raw):
        return value.vtype
    if isinstance(value, bool):
        return T_BOOL
    if isinstance(value, int):
        return T_UINT32 if 0 <= value < 1 << 32 else (T_UINT64 if value >= 0 else T_INT64)
    if isinstance(value, float):
        return T_FLOAT32
    if isinstance(value, (str, bytes)):
        return T_STRING
    if isinstance(value, list):
        return T_ARRAY
    raise TypeError(value)


def _payload(value: object, vtype: int) -> bytes:
    if isinstance(value, Raw):
        return value.data
    if vtype in _FMT:
        return struct.pack("<" + _FMT[vtype], value)
    if vtype == T_STRING:
        return _string(value)  # type: ignore[arg-type]
    assert isinstance(value, list)
    etype = _type_of(value[0]) if value else T_INT32
    if etype == T_UINT32 and all(isinstance(v, int) and not isinstance(v, bool) and v < 1 << 31 for v in value):
        etype = T_INT32
    return struct.pack("<IQ", etype, len(value)) + b"".join(_payload(v, etype) for v in value)


def encode(value: object) -> bytes:
    """A metadata value as it follows its key: type, then the value."""
    vtype = _type_of(value)
    return struct.pack("<I", vtype) + _payload(value, vtype)


def nested(depth: int) -> Raw:
    """An array of arrays ... ``depth`` deep, the innermost empty."""
    data = struct.pack("<IQ", T_INT32, 0)
    for _ in range(depth - 1):
        data = struct.pack("<IQ", T_ARRAY, 1) + data
    return Raw(T_ARRAY, data)


def build(parts: Parts, changes: dict[str, object] | None = None, drop: tuple[str, ...] = ()) -> bytes:
    """The header bytes (padded to the alignment) with ``changes`` applied: key -> value (a Python
    value or a :class:`Raw`)."""
    entries = {k: v for k, v in parts.entries.items() if k not in drop}
    for key, value in (changes or {}).items():
        entries[key] = encode(value)
    out = bytearray(struct.pack("<4sIQQ", b"GGUF", parts.version, parts.n_tensors, len(entries)))
    for key, entry in entries.items():
        out += _string(key) + entry
    out += parts.tensor_infos
    out += b"\0" * (-len(out) % parts.alignment)
    return bytes(out)


def write(dest: Path, parts: Parts, changes: dict[str, object] | None = None, drop: tuple[str, ...] = ()) -> Path:
    header = build(parts, changes, drop)
    with open(dest, "wb") as f:
        f.write(header)
        if isinstance(parts.data, int):
            if parts.data:
                f.seek(parts.data - 1, 1)
                f.write(b"\0")
        else:
            f.write(parts.data)
    return dest
