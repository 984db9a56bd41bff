"""Fast reader of a GGUF file's header: metadata key/values and tensor infos, no tensor data.

Pure Python (``struct`` and the standard library). ``gguf.GGUFReader`` takes seconds on a real
model because it turns the vocabulary arrays into numpy objects; here big arrays (more than
:data:`MAX_KEPT_ARRAY` elements: ``tokenizer.ggml.tokens``, ``merges``, ``scores``...) are stepped
over and stand in the metadata as :class:`ArrayInfo` (element type, count). Small arrays are kept
as Python lists.

The file is read front to back through a small buffer of our own (no mmap, no need to know the
file size), so the same code works on a local file, on any binary file-like object with ``read``
and ``seek`` (e.g. a remote reader that fetches ranges lazily), and, through
:func:`read_header_bytes`, on a prefix of a file fetched over HTTP: :class:`NeedMoreData` says how
much more to fetch.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3,
little-endian). Checks follow llama.cpp's ``gguf.cpp`` where they are cheap, so that a damaged or
truncated file gets a clear one-line error before llama.cpp sees it.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

from localllm.errors import CorruptModelError, ModelFileError, NotAGGUFError

from . import quants, validate

__all__ = [
    "ArrayInfo",
    "GGUFHeader",
    "GGML_QUANT_SIZES",
    "GGML_TYPE_NAMES",
    "MAX_KEPT_ARRAY",
    "NeedMoreData",
    "TensorInfo",
    "ggml_type_name",
    "read_header",
    "read_header_bytes",
]

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_KEPT_ARRAY = 256  # arrays with more elements are skipped and recorded as ArrayInfo

# Sanity limits: beyond them a count or length is garbage, not a real model.
_MAX_COUNT = 1_000_000  # n_kv, n_tensors
_MAX_STRING = 1 << 30  # llama.cpp's GGUF_MAX_STRING_LENGTH
_MAX_ARRAY = 1 << 30  # llama.cpp's GGUF_MAX_ARRAY_ELEMENTS
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = validate.MAX_NESTING  # arrays of arrays of ...: deeper is damage (and recursion)
_PLAUSIBLE_STRING = 64 << 20  # longer and past the end of the file: damaged rather than truncated

# --------------------------------------------------------------------------------------------
# Tables

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)

VALUE_TYPE_NAMES = {
    T_UINT8: "uint8", T_INT8: "int8", T_UINT16: "uint16", T_INT16: "int16",
    T_UINT32: "uint32", T_INT32: "int32", T_FLOAT32: "float32", T_BOOL: "bool",
    T_STRING: "string", T_ARRAY: "array", T_UINT64: "uint64", T_INT64: "int64",
    T_FLOAT64: "float64",
}  # fmt: skip

# struct format character and size of the fixed-size value types.
_SCALAR = {
    T_UINT8: ("B", 1), T_INT8: ("b", 1), T_UINT16: ("H", 2), T_INT16: ("h", 2),
    T_UINT32: ("I", 4), T_INT32: ("i", 4), T_FLOAT32: ("f", 4), T_BOOL: ("B", 1),
    T_UINT64: ("Q", 8), T_INT64: ("q", 8), T_FLOAT64: ("d", 8),
}  # fmt: skip
_SCALAR_STRUCT = {t: struct.Struct("<" + c) for t, (c, _) in _SCALAR.items()}
_INT_TYPES = frozenset({T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_UINT64, T_INT64})

# ggml tensor types: (block size in elements, bytes per block). Copied from gguf 0.19's
# gguf.constants.GGML_QUANT_SIZES (a test checks they stay equal), names from GGMLQuantizationType.
GGML_QUANT_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
    22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}  # fmt: skip

# Types that the llama.cpp bundled with llama-cpp-python 0.3.36 knows but gguf 0.19 does not
# (vendor/llama.cpp/ggml/include/ggml.h, ggml-common.h). Kept apart so the table above can be
# compared with gguf's.
_EXTRA_QUANT_SIZES: dict[int, tuple[int, int]] = {42: (64, 18)}  # Q2_0: fp16 scale + 64 x 2 bits
_EXTRA_TYPE_NAMES: dict[int, str] = {42: "Q2_0"}
_QUANT_SIZES = {**GGML_QUANT_SIZES, **_EXTRA_QUANT_SIZES}
_TYPE_NAMES = {**GGML_TYPE_NAMES, **_EXTRA_TYPE_NAMES}


def ggml_type_name(ggml_type: int) -> str:
    """``"Q4_K"`` for 12; ``"type 99"`` for an id this module does not know."""
    return _TYPE_NAMES.get(ggml_type, f"type {ggml_type}")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # as stored: ne[0] (the contiguous dimension) first, like GGUFReader
    ggml_type: int
    offset: int  # relative to GGUFHeader.data_offset
    n_elements: int
    n_bytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)


@dataclass
class ArrayInfo:
    """Stands in for a big metadata array that was skipped (e.g. the vocabulary)."""

    element_type: int
    count: int
    # Absolute offset of the first element in the file, to read the array later if needed.
    offset: int | None = field(default=None, compare=False)

    @property
    def element_type_name(self) -> str:
        return VALUE_TYPE_NAMES.get(self.element_type, str(self.element_type))


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, object] = field(repr=False)
    tensors: tuple[TensorInfo, ...] = field(repr=False)
    alignment: int
    data_offset: int  # absolute offset of the tensor data (header end, aligned up)
    header_size: int  # bytes up to the end of the tensor infos (before the alignment padding)
    file_size: int | None

    def get(self, key: str, default: object = None) -> object:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def arch_key(self, suffix: str, default: object = None) -> object:
        """The value of ``f"{architecture}.{suffix}"``, e.g. ``arch_key("context_length")``."""
        arch = self.architecture
        if arch is None:
            return default
        return self.metadata.get(f"{arch}.{suffix}", default)

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def context_length(self) -> int | None:
        return self.arch_key("context_length")  # type: ignore[return-value]

    @property
    def block_count(self) -> int | None:
        return self.arch_key("block_count")  # type: ignore[return-value]

    @property
    def embedding_length(self) -> int | None:
        return self.arch_key("embedding_length")  # type: ignore[return-value]

    @property
    def head_count(self) -> int | list[int] | None:
        return self.arch_key("attention.head_count")  # type: ignore[return-value]

    @property
    def head_count_kv(self) -> int | list[int] | None:
        """An int, or a per-layer list for hybrid models (kept as it is)."""
        return self.arch_key("attention.head_count_kv")  # type: ignore[return-value]

    @property
    def file_type(self) -> int | None:
        value = self.metadata.get("general.file_type")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def file_type_name(self) -> str | None:
        """``"Q4_K_M"`` and so on (llama.cpp's llama_ftype names); None when the file says nothing."""
        ftype = self.file_type
        if ftype is None:
            return None
        return quants.ftype_name(ftype)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        n = self.n_params
        return self.tensor_bytes * 8 / n if n else 0.0

    @property
    def quant_mix(self) -> dict[str, int]:
        """Bytes of tensor data per ggml type name, e.g. ``{"Q4_1": 70_000_000, "F32": 200_000}``."""
        mix: dict[str, int] = {}
        for t in self.tensors:
            name = t.type_name
            mix[name] = mix.get(name, 0) + t.n_bytes
        return mix

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def vocab_size(self) -> int | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, ArrayInfo):
            return tokens.count
        if isinstance(tokens, list):
            return len(tokens)
        return None

    @property
    def data_end(self) -> int:
        """Where the last tensor's data ends: the smallest size a complete file can have."""
        if not self.tensors:
            return self.header_size
        return self.data_offset + max(t.offset + t.n_bytes for t in self.tensors)


class NeedMoreData(Exception):
    """:func:`read_header_bytes` was given a buffer that ends before the header does.

    ``needed`` is an estimate of the total number of bytes (from the start of the file) to fetch
    next; ``minimum`` is a lower bound that is certain.
    """

    def __init__(self, needed: int, minimum: int | None = None) -> None:
        self.needed = needed
        self.minimum = needed if minimum is None else minimum
        super().__init__(needed)

    def __str__(self) -> str:
        return f"GGUF header continues past the data given: need about {self.needed} bytes (at least {self.minimum})"


# --------------------------------------------------------------------------------------------
# Reading


class _EOF(Exception):
    """The source ended at ``available`` bytes; ``needed`` bytes were required."""

    def __init__(self, needed: int, available: int | None = None) -> None:
        super().__init__(needed)
        self.needed = needed
        self.available = available
        self.extra = 0  # estimated further bytes still to come (for NeedMoreData)


class _Damaged(Exception):
    """The header makes no sense; the message says what (the file name is added later)."""


class _Source:
    """Sequential reads from a binary file-like object through a buffer of our own."""

    def __init__(self, f: BinaryIO, size: int | None, chunk: int) -> None:
        self.f = f
        self.size = size
        self.chunk = chunk
        self.buf = b""
        self.pos = 0  # in buf
        self.base = 0  # absolute offset of buf[0]
        self.seekable = True

    def tell(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.tell()

    def fill(self, n: int) -> None:
        """Make sure ``n`` bytes are buffered from ``pos``; _EOF if the source ends first."""
        have = len(self.buf) - self.pos
        if have >= n:
            return
        parts = [self.buf[self.pos :]] if have else []
        want = max(self.chunk, n - have)
        while have < n:
            data = self.f.read(want)
            if not data:
                self.buf = b"".join(parts)
                self.base += self.pos
                self.pos = 0
                raise _EOF(self.base + n, self.base + have)
            parts.append(bytes(data))
            have += len(data)
            want = max(self.chunk, n - have)
        self.buf = b"".join(parts)
        self.base += self.pos
        self.pos = 0

    def take(self, n: int) -> bytes:
        self.fill(n)
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def unpack(self, st: struct.Struct) -> tuple:
        self.fill(st.size)
        values = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return values

    def skip(self, n: int) -> None:
        have = len(self.buf) - self.pos
        if n <= have:
            self.pos += n
            return
        target = self.tell() + n
        if self.size is not None:
            if target > self.size:
                raise _EOF(target, self.size)
            self._jump(target)
            return
        # Unknown size: check that the byte before the target exists.
        self._jump(target - 1)
        self.fill(1)
        self.pos += 1

    def _jump(self, target: int) -> None:
        if self.seekable:
            try:
                self.f.seek(target)
            except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
                self.seekable = False
            else:
                self.buf, self.pos, self.base = b"", 0, target
                return
        while self.tell() < target:  # not seekable: read and drop
            step = min(target - self.tell(), max(self.chunk, 1 << 20))
            self.fill(step)
            self.pos += step


_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_HEAD = struct.Struct("<4sIQQ")  # magic, version, n_tensors, n_kv (v2 and v3)


class _Parser:
    def __init__(self, src: _Source) -> None:
        self.src = src
        self.n_kv = 0
        self.n_tensors = 0
        self.kv_done = 0
        self.tensors_done = 0

    # -- strings and values ------------------------------------------------------------------

    def string(self, what: str) -> str:
        src = self.src
        (n,) = src.unpack(_U64)
        self._check_string_length(n, src.tell() - 8, what)
        return src.take(n).decode("utf-8", errors="replace")

    def _check_string_length(self, n: int, at: int, what: str) -> None:
        if n > _MAX_STRING:
            raise _Damaged(f"{what} has an impossible length {n} (at byte {at})")
        rem = self.src.remaining()
        if rem is not None and n > rem:
            if n > _PLAUSIBLE_STRING:
                raise _Damaged(f"{what} has length {n} (at byte {at}), past the end of the file")
            raise _EOF(self.src.tell() + n, self.src.size)

    def value(self, vtype: int, key: str) -> object:
        fmt = _SCALAR_STRUCT.get(vtype)
        if fmt is not None:
            (v,) = self.src.unpack(fmt)
            if vtype == T_FLOAT32:
                return _f32(v)
            return bool(v) if vtype == T_BOOL else v
        if vtype == T_STRING:
            return self.string(f"the value of {key!r}")
        if vtype == T_ARRAY:
            return self.array(key)
        raise _Damaged(f"metadata key {key!r} has an invalid value type {vtype}")

    def array(self, key: str, depth: int = 1) -> object:
        src = self.src
        etype, count = src.unpack(_ARRAY_HEAD)
        if depth > _MAX_NESTING:
            raise _Damaged(f"metadata array {_root(key)!r} is nested more than {_MAX_NESTING} deep")
        if etype not in VALUE_TYPE_NAMES:
            raise _Damaged(f"metadata array {key!r} has an invalid element type {etype}")
        if count > _MAX_ARRAY:
            raise _Damaged(f"metadata array {key!r} has an impossible length {count}")
        start = src.tell()
        scalar = _SCALAR.get(etype)
        if scalar is not None:
            nbytes = count * scalar[1]
            rem = src.remaining()
            if rem is not None and nbytes > rem and nbytes - rem > _PLAUSIBLE_STRING:
                raise _Damaged(f"metadata array {key!r} ({count} elements) runs past the end of the file")
        else:
            rem = src.remaining()
            min_size = 8 if etype == T_STRING else 12  # a length each / a type and a count each
            if rem is not None and count * min_size > rem and count * min_size - rem > _PLAUSIBLE_STRING:
                raise _Damaged(f"metadata array {key!r} ({count} elements) runs past the end of the file")
        if count <= MAX_KEPT_ARRAY:
            if scalar is not None:
                values = list(struct.unpack(f"<{count}{scalar[0]}", src.take(count * scalar[1])))
                if etype == T_FLOAT32:
                    return [_f32(v) for v in values]
                return [bool(v) for v in values] if etype == T_BOOL else values
            if etype == T_STRING:
                return [self.string(f"element {i} of {key!r}") for i in range(count)]
            return [self.array(f"{key}[{i}]", depth + 1) for i in range(count)]
        # Big array: step over it.
        if scalar is not None:
            src.skip(count * scalar[1])
        elif etype == T_STRING:
            self.skip_strings(count, key)
        else:
            for i in range(count):
                self.skip_array(f"{key}[{i}]", depth + 1)
        return ArrayInfo(etype, count, start)

    def skip_array(self, key: str, depth: int) -> None:
        etype, count = self.src.unpack(_ARRAY_HEAD)
        if depth > _MAX_NESTING:
            raise _Damaged(f"metadata array {_root(key)!r} is nested more than {_MAX_NESTING} deep")
        if etype not in VALUE_TYPE_NAMES or count > _MAX_ARRAY:
            raise _Damaged(f"metadata array {key!r} has an invalid header")
        scalar = _SCALAR.get(etype)
        if scalar is not None:
            self.src.skip(count * scalar[1])
        elif etype == T_STRING:
            self.skip_strings(count, key)
        else:
            for i in range(count):
                self.skip_array(f"{key}[{i}]", depth + 1)

    def skip_strings(self, count: int, key: str) -> None:
        """Step over ``count`` length-prefixed strings, reading only their lengths."""
        src = self.src
        unpack_from = _U64.unpack_from
        left = count
        start = src.tell()
        while left:
            buf = src.buf
            pos = src.pos
            end = len(buf)
            # Fast path: whole strings inside the buffer.
            while left and pos + 8 <= end:
                (n,) = unpack_from(buf, pos)
                nxt = pos + 8 + n
                if nxt > end:
                    break
                pos = nxt
                left -= 1
            src.pos = pos
            if not left:
                break
            # A string straddles the end of the buffer: read its length, then skip it.
            try:
                (n,) = src.unpack(_U64)
                self._check_string_length(n, src.tell() - 8, f"element {count - left} of {key!r}")
                src.skip(n)
            except _EOF as eof:
                done = count - left
                avg = (src.tell() - start) / done if done else 16
                eof.extra = int(left * avg)
                raise
            left -= 1

    # -- the header ---------------------------------------------------------------------------

    def parse(self) -> tuple[int, dict[str, object], list[TensorInfo], int, int]:
        src = self.src
        magic, version, n_tensors, n_kv = src.unpack(_HEAD)
        if version in (2, 3):
            pass
        elif version == 1:
            raise ModelFileError("GGUF version 1 is no longer supported (convert the model again)")
        elif version & 0xFFFF == 0 and int.from_bytes(version.to_bytes(4, "little"), "big") in (1, 2, 3):
            raise ModelFileError("big-endian GGUF not supported")
        elif version == 0 or version > 0xFFFF:
            raise _Damaged(f"impossible GGUF version {version}")
        else:
            raise ModelFileError(f"GGUF version {version} is not supported (only 2 and 3)")
        if n_tensors > _MAX_COUNT:
            raise _Damaged(f"impossible tensor count {n_tensors}")
        if n_kv > _MAX_COUNT:
            raise _Damaged(f"impossible metadata count {n_kv}")
        self.n_tensors, self.n_kv = n_tensors, n_kv

        metadata: dict[str, object] = {}
        for i in range(n_kv):
            key = self.string(f"metadata key {i}")
            if not key:
                raise _Damaged(f"metadata key {i} is empty")
            if key in metadata:
                raise _Damaged(f"duplicate metadata key {key!r}")
            (vtype,) = src.unpack(_U32)
            metadata[key] = self.value(vtype, key)
            self.kv_done = i + 1

        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment <= 0
            or alignment & (alignment - 1)
        ):
            raise _Damaged(f"general.alignment {alignment!r} is not a power of 2")

        tensors: list[TensorInfo] = []
        names: set[str] = set()
        for i in range(n_tensors):
            tensors.append(self.tensor_info(i, names))
            self.tensors_done = i + 1
        header_size = src.tell()

        # Offsets: aligned, in order, not overlapping (llama.cpp wants them exactly packed).
        prev_end = 0
        for t in tensors:
            if t.offset % alignment:
                raise _Damaged(f"tensor {t.name!r} has offset {t.offset}, not a multiple of {alignment}")
            if t.offset < prev_end:
                raise _Damaged(f"tensor {t.name!r} has offset {t.offset}, overlapping the tensor before it")
            prev_end = t.offset + t.n_bytes
        return version, metadata, tensors, alignment, header_size

    def tensor_info(self, i: int, names: set[str]) -> TensorInfo:
        src = self.src
        name = self.string(f"tensor name {i}")
        if name in names:
            raise _Damaged(f"duplicate tensor name {name!r}")
        names.add(name)
        (n_dims,) = src.unpack(_U32)
        if n_dims == 0 or n_dims > _MAX_DIMS:
            raise _Damaged(f"tensor {name!r} has {n_dims} dimensions")
        shape = struct.unpack(f"<{n_dims}Q", src.take(8 * n_dims))
        ggml_type, offset = src.unpack(_TYPE_OFFSET)
        n_elements = 1
        for d in shape:
            if d >= 1 << 63:
                raise _Damaged(f"tensor {name!r} has an impossible shape {list(shape)}")
            n_elements *= d
        if n_elements >= 1 << 63:
            raise _Damaged(f"tensor {name!r} has an impossible shape {list(shape)}")
        sizes = _QUANT_SIZES.get(ggml_type)
        if sizes is None:
            raise _Damaged(f"tensor {name!r} has an unknown ggml type {ggml_type}")
        block, type_size = sizes
        if shape[0] % block:
            raise _Damaged(
                f"tensor {name!r} of type {ggml_type_name(ggml_type)} has rows of {shape[0]} elements,"
                f" not a multiple of {block}"
            )
        return TensorInfo(name, tuple(shape), ggml_type, offset, n_elements, n_elements // block * type_size)

    def estimate_rest(self) -> int:
        """A rough guess of the header bytes still to come (for NeedMoreData)."""
        return (self.n_kv - self.kv_done) * 64 + (self.n_tensors - self.tensors_done) * 80


_ARRAY_HEAD = struct.Struct("<IQ")


def _root(key: str) -> str:
    """``"a.b"`` for ``"a.b[3][0]"``: the metadata key an array element belongs to."""
    return key.split("[", 1)[0]


_TYPE_OFFSET = struct.Struct("<IQ")


def _f32(v: float) -> float:
    """The shortest decimal that is the same float32 (1e-05, not 9.999999747378752e-06)."""
    raw = _F32.pack(v)
    for digits in (6, 7, 8):
        shorter = float(f"{v:.{digits}g}")
        if _F32.pack(shorter) == raw:
            return shorter
    return v


_F32 = struct.Struct("<f")


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _parse(src: _Source, label: str) -> GGUFHeader:
    """Parse from offset 0 of ``src``; errors are raised with ``label`` (the file) in them."""
    # Magic first, so that a text file or an empty one gets the right error.
    try:
        src.fill(4)
    except _EOF:
        got = src.buf[src.pos :]
        if not GGUF_MAGIC.startswith(got):
            raise NotAGGUFError(f"{label} is not a GGUF file (starts with {got!r})") from None
        raise
    head = src.buf[src.pos : src.pos + 4]
    if head != GGUF_MAGIC:
        raise NotAGGUFError(f"{label} is not a GGUF file (starts with {_show(src)})")
    parser = _Parser(src)
    try:
        version, metadata, tensors, alignment, header_size = parser.parse()
    except _Damaged as e:
        raise CorruptModelError(f"{label} is damaged: {e}") from None
    except ModelFileError as e:
        raise type(e)(f"{label}: {e.message}", e.hint) from None
    except _EOF as eof:
        eof.extra += parser.estimate_rest()
        raise
    data_offset = _align(header_size, alignment)
    header = GGUFHeader(
        version=version,
        metadata=metadata,
        tensors=tuple(tensors),
        alignment=alignment,
        data_offset=data_offset,
        header_size=header_size,
        file_size=src.size,
    )
    validate.check(header, label)
    return header


def _safe(text: str) -> str:
    """A name for messages: control characters and undecodable bytes shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(src: _Source) -> str:
    start = src.buf[src.pos : src.pos + 16]
    if all(32 <= b < 127 for b in start):
        return repr(start.decode("ascii"))
    return repr(start)


PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]


def check_model_path(path: str | os.PathLike[str], label: str | None = None) -> None:
    """ModelFileError with one specific line unless ``path`` is a readable regular file: missing,
    a broken link, a symlink loop, a directory, a FIFO (which would block a reader), a device or
    socket, or unreadable."""
    import errno
    import stat

    label = label or str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ModelFileError(f"{label} is a broken symbolic link (its target does not exist)") from None
        raise ModelFileError(f"no such file: {label}", hint="check the path, or pass a catalog name instead") from None
    except PermissionError:
        raise ModelFileError(f"{label} cannot be read: permission denied") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ModelFileError(f"{label} is a symbolic link loop, not a file") from None
        raise ModelFileError(f"{label} cannot be read: {e.strerror or e}") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        raise ModelFileError(f"{label} is a directory, not a GGUF file", hint="pass the .gguf file inside it")
    if stat.S_ISFIFO(mode):
        raise ModelFileError(f"{label} is a named pipe (FIFO), not a GGUF file")
    if stat.S_ISSOCK(mode):
        raise ModelFileError(f"{label} is a socket, not a GGUF file")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise ModelFileError(f"{label} is a device, not a GGUF file")
    if not stat.S_ISREG(mode):
        raise ModelFileError(f"{label} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ModelFileError(f"{label} cannot be read: permission denied")


def read_header(path_or_file: PathOrFile, *, check_size: bool = True, chunk_size: int = 1 << 20) -> GGUFHeader:
    """Read a GGUF file's metadata and tensor infos (no tensor data).

    ``path_or_file`` is a path or a binary file-like object with ``read`` (and ``seek``, used to
    step over big arrays; reading starts at offset 0). With ``check_size`` (and a known size) a
    file shorter than the end of its tensor data raises CorruptModelError ("truncated").

    Raises NotAGGUFError, CorruptModelError, or ModelFileError (missing, unreadable, directory,
    unsupported GGUF version or byte order); every message is one line naming the file.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        path = Path(path_or_file)
        label = _safe(str(path))
        check_model_path(path, label)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise ModelFileError(f"{label} does not exist") from None
        except IsADirectoryError:
            raise ModelFileError(f"{label} is a directory, not a GGUF file") from None
        except PermissionError:
            raise ModelFileError(f"{label} cannot be read: permission denied") from None
        except OSError as e:
            raise ModelFileError(f"{label} cannot be read: {e.strerror or e}") from None
        with f:
            try:
                size = os.fstat(f.fileno()).st_size
                return _read(f, label, size, check_size, chunk_size)
            except OSError as e:
                raise ModelFileError(f"{label} cannot be read: {e.strerror or e}") from None
    f = path_or_file
    label = str(getattr(f, "name", None) or "<GGUF stream>")
    size = _stream_size(f)
    try:
        f.seek(0)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    try:
        return _read(f, label, size, check_size, chunk_size)
    except OSError as e:
        raise ModelFileError(f"{label} cannot be read: {e.strerror or e}") from None


def _stream_size(f: object) -> int | None:
    """The size of a file object if it is cheap to know; None otherwise."""
    try:
        st = os.fstat(f.fileno())  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    else:
        import stat

        if stat.S_ISREG(st.st_mode):
            return st.st_size
    size = getattr(f, "size", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    try:
        here = f.tell()  # type: ignore[attr-defined]
        end = f.seek(0, io.SEEK_END)  # type: ignore[attr-defined]
        f.seek(here)  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError, TypeError, io.UnsupportedOperation):
        return None
    return end if isinstance(end, int) else None


def _read(f: BinaryIO, label: str, size: int | None, check_size: bool, chunk_size: int) -> GGUFHeader:
    src = _Source(f, size, chunk_size)
    try:
        header = _parse(src, label)
    except _EOF as eof:
        if eof.available == 0:
            raise NotAGGUFError(f"{label} is empty, not a GGUF file") from None
        have = eof.available if eof.available is not None else size
        raise CorruptModelError(
            f"{label} is truncated: {have} bytes, and its GGUF header alone needs at least"
            f" {eof.needed} (download incomplete?)"
        ) from None
    if check_size and size is not None and size < header.data_end:
        raise CorruptModelError(
            f"{label} is truncated: {size} bytes, expected at least {header.data_end} (download incomplete?)"
        )
    return header


def read_header_bytes(data: bytes, *, name: str = "<GGUF data>", file_size: int | None = None) -> GGUFHeader:
    """Parse the header from a prefix of a GGUF file (e.g. fetched with an HTTP range request).

    Raises NeedMoreData when ``data`` ends before the header does: fetch ``e.needed`` bytes and try
    again. ``file_size`` (the whole file's, if known) is reported in the result and sharpens the
    sanity checks; the tensor data is never checked here. ``name`` goes in error messages.
    """
    src = _Source(io.BytesIO(b""), file_size, 1 << 20)
    src.buf = bytes(data)  # everything there is, already in the buffer
    src.seekable = False
    try:
        return _parse(src, name)
    except _EOF as eof:
        minimum = eof.needed
        # Guess from what is left (array elements, keys, tensor infos), but at least double what
        # is needed now, so that a caller following `needed` needs only a few rounds.
        needed = max(minimum + eof.extra, 2 * minimum)
        if file_size is not None:
            if minimum > file_size:
                raise CorruptModelError(
                    f"{name} is truncated: {file_size} bytes, and its GGUF header alone needs at least"
                    f" {minimum} (download incomplete?)"
                ) from None
            needed = min(needed, file_size)
        raise NeedMoreData(needed, minimum) from None
