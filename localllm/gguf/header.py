"""Fast reader of a GGUF file's header: metadata key/values and tensor infos, no tensor data.

Pure Python (``struct`` and the standard library). ``gguf.GGUFReader`` takes seconds on a real
model because it turns the vocabulary arrays into numpy objects; here big arrays (more than
:data:`MAX_KEPT_ARRAY` elements: ``tokenizer.ggml.tokens``, ``merges``, ``scores``...) are stepped
over and stand in the metadata as :class:`ArrayInfo` (element type, count). Small arrays are kept
as Python lists.

This module is the entry point (open a path or a stream, or parse bytes fetched over HTTP:
:class:`NeedMoreData` says how much more to fetch); the work is split by job:

- :mod:`.reader`: parsing, through a buffer of our own;
- :mod:`.limits`: how large a count or length may be before it is damage;
- :mod:`.info`: :class:`GGUFHeader` and the values derived from it;
- :mod:`.tables`: value types and ggml tensor types.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3,
little-endian). A damaged or truncated file gets a clear one-line error before llama.cpp sees it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

from localllm.errors import CorruptModelError, ModelFileError, NotAGGUFError

from .info import ArrayInfo, GGUFHeader, TensorInfo
from .limits import DEFAULT_ALIGNMENT, MAX_KEPT_ARRAY
from .reader import GGUF_MAGIC, EndOfData, NeedMoreData, Source, parse, safe_name
from .tables import (
    GGML_QUANT_SIZES,
    GGML_TYPE_NAMES,
    T_ARRAY,
    T_BOOL,
    T_FLOAT32,
    T_FLOAT64,
    T_INT8,
    T_INT16,
    T_INT32,
    T_INT64,
    T_STRING,
    T_UINT8,
    T_UINT16,
    T_UINT32,
    T_UINT64,
    VALUE_TYPE_NAMES,
    ggml_type_name,
)

__all__ = [
    "DEFAULT_ALIGNMENT",
    "GGUF_MAGIC",
    "ArrayInfo",
    "GGUFHeader",
    "GGML_QUANT_SIZES",
    "GGML_TYPE_NAMES",
    "MAX_KEPT_ARRAY",
    "NeedMoreData",
    "T_ARRAY",
    "T_BOOL",
    "T_FLOAT32",
    "T_FLOAT64",
    "T_INT8",
    "T_INT16",
    "T_INT32",
    "T_INT64",
    "T_STRING",
    "T_UINT8",
    "T_UINT16",
    "T_UINT32",
    "T_UINT64",
    "TensorInfo",
    "VALUE_TYPE_NAMES",
    "check_model_path",
    "ggml_type_name",
    "read_header",
    "read_header_bytes",
]

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
        label = safe_name(str(path))
        check_model_path(path, label)
        try:
            f: BinaryIO = open(path, "rb", buffering=0)
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
                size: int | None = os.fstat(f.fileno()).st_size
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


def _stream_size(f: BinaryIO) -> int | None:
    """The size of a file object if it is cheap to know; None otherwise (a stream may have only
    ``read``, hence the AttributeError)."""
    try:
        st = os.fstat(f.fileno())
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
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(here)
    except (OSError, ValueError, AttributeError, TypeError, io.UnsupportedOperation):
        return None
    return end if isinstance(end, int) else None


def _read(f: BinaryIO, label: str, size: int | None, check_size: bool, chunk_size: int) -> GGUFHeader:
    src = Source(f, size, chunk_size)
    try:
        header = parse(src, label)
    except EndOfData as eof:
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
    src = Source(io.BytesIO(b""), file_size, 1 << 20)
    src.buf = bytes(data)  # everything there is, already in the buffer
    src.seekable = False
    try:
        return parse(src, name)
    except EndOfData as eof:
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
