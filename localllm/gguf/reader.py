"""Parsing a GGUF header front to back through a small buffer of our own.

No mmap and no need to know the file size: the same code reads a local file, any binary file-like
object with ``read`` and ``seek`` (a remote reader that fetches ranges lazily) and a prefix of a
file held in memory. Big metadata arrays (the vocabulary) are stepped over and stand in the result
as :class:`~localllm.gguf.info.ArrayInfo`. Checks follow llama.cpp's ``gguf.cpp`` where they are
cheap (:mod:`localllm.gguf.limits`), then :func:`localllm.gguf.validate.check` judges the values.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from localllm.errors import CorruptModelError, ModelFileError, NotAGGUFError

from . import limits, validate
from .info import ArrayInfo, GGUFHeader, TensorInfo
from .tables import (
    QUANT_SIZES,
    SCALAR,
    SCALAR_STRUCT,
    T_ARRAY,
    T_BOOL,
    T_FLOAT32,
    T_STRING,
    VALUE_TYPE_NAMES,
    ggml_type_name,
)

GGUF_MAGIC = b"GGUF"


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


class EndOfData(Exception):
    """The source ended at ``available`` bytes; ``needed`` bytes were required."""

    def __init__(self, needed: int, available: int | None = None) -> None:
        super().__init__(needed)
        self.needed = needed
        self.available = available
        self.extra = 0  # estimated further bytes still to come (for NeedMoreData)


class _Damaged(Exception):
    """The header makes no sense; the message says what (the file name is added later)."""


class Source:
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
        """Make sure ``n`` bytes are buffered from ``pos``; EndOfData if the source ends first."""
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
                raise EndOfData(self.base + n, self.base + have)
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
                raise EndOfData(target, self.size)
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
_HEAD = struct.Struct("<4sIQQ")  # magic, version, n_tensors, n_kv (v2 and v3)


class _Parser:
    def __init__(self, src: Source) -> None:
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
        if n > limits.MAX_STRING:
            raise _Damaged(f"{what} has an impossible length {n} (at byte {at})")
        rem = self.src.remaining()
        if rem is not None and n > rem:
            if n > limits.PLAUSIBLE_STRING:
                raise _Damaged(f"{what} has length {n} (at byte {at}), past the end of the file")
            raise EndOfData(self.src.tell() + n, self.src.size)

    def value(self, vtype: int, key: str) -> object:
        fmt = SCALAR_STRUCT.get(vtype)
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
        if depth > limits.MAX_NESTING:
            raise _Damaged(f"metadata array {_root(key)!r} is nested more than {limits.MAX_NESTING} deep")
        if etype not in VALUE_TYPE_NAMES:
            raise _Damaged(f"metadata array {key!r} has an invalid element type {etype}")
        if count > limits.MAX_ARRAY:
            raise _Damaged(f"metadata array {key!r} has an impossible length {count}")
        start = src.tell()
        scalar = SCALAR.get(etype)
        if scalar is not None:
            nbytes = count * scalar[1]
            rem = src.remaining()
            if rem is not None and nbytes > rem and nbytes - rem > limits.PLAUSIBLE_STRING:
                raise _Damaged(f"metadata array {key!r} ({count} elements) runs past the end of the file")
        else:
            rem = src.remaining()
            min_size = 8 if etype == T_STRING else 12  # a length each / a type and a count each
            if rem is not None and count * min_size > rem and count * min_size - rem > limits.PLAUSIBLE_STRING:
                raise _Damaged(f"metadata array {key!r} ({count} elements) runs past the end of the file")
        if count <= limits.MAX_KEPT_ARRAY:
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
        if depth > limits.MAX_NESTING:
            raise _Damaged(f"metadata array {_root(key)!r} is nested more than {limits.MAX_NESTING} deep")
        if etype not in VALUE_TYPE_NAMES or count > limits.MAX_ARRAY:
            raise _Damaged(f"metadata array {key!r} has an invalid header")
        scalar = SCALAR.get(etype)
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
            except EndOfData as eof:
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
        if n_tensors > limits.MAX_COUNT:
            raise _Damaged(f"impossible tensor count {n_tensors}")
        if n_kv > limits.MAX_COUNT:
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

        alignment = metadata.get("general.alignment", limits.DEFAULT_ALIGNMENT)
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
        if n_dims == 0 or n_dims > limits.MAX_DIMS:
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
        sizes = QUANT_SIZES.get(ggml_type)
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


def parse(src: Source, label: str) -> GGUFHeader:
    """Parse from offset 0 of ``src``; errors are raised with ``label`` (the file) in them."""
    # Magic first, so that a text file or an empty one gets the right error.
    try:
        src.fill(4)
    except EndOfData:
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
    except EndOfData as eof:
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


def safe_name(text: str) -> str:
    """A name for messages: control characters and undecodable bytes shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(src: Source) -> str:
    start = src.buf[src.pos : src.pos + 16]
    if all(32 <= b < 127 for b in start):
        return repr(start.decode("ascii"))
    return repr(start)
