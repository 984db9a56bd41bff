"""The GGUF header reader at its edges: files built byte by byte, so every count, length and
offset is the one the test chose (issue 16). What is checked is what a user sees: the values
read, the one-line error and what it names, how much of a remote file is fetched."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from localllm.errors import CorruptModelError, ModelFileError, NotAGGUFError
from localllm.gguf import header as gh
from localllm.gguf import limits as gl
from localllm.gguf.header import ArrayInfo, NeedMoreData, read_header, read_header_bytes

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def u32(key: str, value: int) -> bytes:
    return kv(key, U32, struct.pack("<I", value))


def array(etype: int, count: int, payload: bytes) -> bytes:
    return struct.pack("<IQ", etype, count) + payload


def tensor(name: str, shape: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(shape))
        + struct.pack(f"<{len(shape)}Q", *shape)
        + struct.pack("<IQ", ggml_type, offset)
    )


ARCH = kv("general.architecture", STR, s("llama"))


def gguf(
    kvs: list[bytes],
    tensors: list[bytes] = (),
    *,
    version: int = 3,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    data: bytes = b"",
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ", version, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    if not tensors:
        return body
    return body + bytes(-len(body) % 32) + data


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- values ----------------------------------------------------------------------------------------


def test_every_scalar_type_reads_as_written(tmp_path):
    kvs = [
        ARCH,
        kv("t.u8", U8, struct.pack("<B", 200)),
        kv("t.i8", I8, struct.pack("<b", -100)),
        kv("t.u16", U16, struct.pack("<H", 60000)),
        kv("t.i16", I16, struct.pack("<h", -30000)),
        u32("t.u32", 4_000_000_000),
        kv("t.i32", I32, struct.pack("<i", -2_000_000_000)),
        kv("t.f32", F32, struct.pack("<f", 0.1)),
        kv("t.yes", BOOL, b"\x01"),
        kv("t.no", BOOL, b"\x00"),
        kv("t.u64", U64, struct.pack("<Q", 1 << 63)),
        kv("t.i64", I64, struct.pack("<q", -(1 << 62))),
        kv("t.f64", F64, struct.pack("<d", 0.1)),
    ]
    h = read_header(write(tmp_path, gguf(kvs)))
    assert [h.get(k) for k in ("t.u8", "t.i8", "t.u16", "t.i16", "t.u32", "t.i32")] == [
        200,
        -100,
        60000,
        -30000,
        4_000_000_000,
        -2_000_000_000,
    ]
    assert h.get("t.f32") == 0.1 and h.get("t.f64") == 0.1  # float32 shown as its shortest decimal
    assert h.get("t.yes") is True and h.get("t.no") is False
    assert h.get("t.u64") == 1 << 63 and h.get("t.i64") == -(1 << 62)
    assert h.get("no.such.key") is None and h.get("no.such.key", 7) == 7


def test_small_arrays_are_kept_and_big_ones_stand_as_array_info(tmp_path):
    n = gh.MAX_KEPT_ARRAY
    kvs = [
        ARCH,
        kv("t.kept", ARR, array(I32, n, struct.pack(f"<{n}i", *range(n)))),
        kv("t.big", ARR, array(I32, n + 1, struct.pack(f"<{n + 1}i", *range(n + 1)))),
        kv("t.flags", ARR, array(BOOL, 3, b"\x01\x00\x01")),
        kv("t.floats", ARR, array(F32, 2, struct.pack("<2f", 0.1, 2.5))),
        kv("t.words", ARR, array(STR, 2, s("a") + s("bé"))),
        u32("t.after", 42),
    ]
    data = gguf(kvs)
    h = read_header(write(tmp_path, data))
    assert h.get("t.kept") == list(range(n))
    big = h.get("t.big")
    assert big == ArrayInfo(I32, n + 1) and big.element_type_name == "int32"
    assert data[big.offset : big.offset + 8] == struct.pack("<2i", 0, 1)  # where its elements start
    assert h.get("t.flags") == [True, False, True]
    assert h.get("t.floats") == [0.1, 2.5]
    assert h.get("t.words") == ["a", "bé"]
    assert h.get("t.after") == 42


def test_a_big_array_of_arrays_is_stepped_over(tmp_path):
    inner = array(I32, 2, struct.pack("<2i", 1, 2))
    words = array(STR, 2, s("x") + s("yz"))
    count = gh.MAX_KEPT_ARRAY + 1
    kvs = [
        ARCH,
        kv("t.pairs", ARR, array(ARR, count, inner * count)),
        kv("t.wordlists", ARR, array(ARR, count, words * count)),
        u32("t.after", 7),
    ]
    h = read_header(write(tmp_path, gguf(kvs)))
    assert h.get("t.pairs") == ArrayInfo(ARR, count)
    assert h.get("t.wordlists") == ArrayInfo(ARR, count)
    assert h.get("t.after") == 7  # the reader landed exactly after them


def test_a_big_array_of_strings_is_stepped_over_through_a_small_buffer(tmp_path):
    count = 3000
    words = b"".join(s(f"w{i}" * (i % 7)) for i in range(count))
    kvs = [ARCH, kv("tokenizer.ggml.tokens", ARR, array(STR, count, words)), u32("t.after", 9)]
    path = write(tmp_path, gguf(kvs))
    for chunk in (5, 64, 1 << 20):
        h = read_header(path, chunk_size=chunk)
        assert h.vocab_size == count and h.get("t.after") == 9


@pytest.mark.parametrize("where", ["kept", "skipped"])
def test_arrays_nested_too_deep_are_damage_naming_the_key(tmp_path, where):
    count = 1 if where == "kept" else gh.MAX_KEPT_ARRAY + 1
    nested = array(I32, 0, b"")
    for _ in range(gl.MAX_NESTING):
        nested = array(ARR, count if nested.startswith(struct.pack("<I", ARR)) else 1, nested)
    nested = array(ARR, 1, nested)
    path = write(tmp_path, gguf([ARCH, kv("t.deep", ARR, nested)]))
    with pytest.raises(CorruptModelError, match=r"metadata array 't.deep' is nested more than 8 deep"):
        read_header(path)


def test_arrays_nested_to_the_limit_are_read(tmp_path):
    nested = array(I32, 1, struct.pack("<i", 5))
    for _ in range(gl.MAX_NESTING - 1):
        nested = array(ARR, 1, nested)
    h = read_header(write(tmp_path, gguf([ARCH, kv("t.deep", ARR, nested)])))
    value = h.get("t.deep")
    for _ in range(gl.MAX_NESTING - 1):
        value = value[0]
    assert value == [5]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (array(99, 1, b""), "metadata array 't.bad' has an invalid element type 99"),
        (array(I32, (1 << 30) + 1, b""), "metadata array 't.bad' has an impossible length 1073741825"),
        (array(ARR, gh.MAX_KEPT_ARRAY + 1, array(99, 0, b"")), "metadata array 't.bad[0]' has an invalid header"),
        (
            array(ARR, gh.MAX_KEPT_ARRAY + 1, array(I32, (1 << 30) + 1, b"")),
            "metadata array 't.bad[0]' has an invalid header",
        ),
    ],
)
def test_a_bad_array_header_is_damage_naming_the_key(tmp_path, payload, message):
    path = write(tmp_path, gguf([ARCH, kv("t.bad", ARR, payload)]))
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    assert str(err.value) == f"{path} is damaged: {message}"


def test_an_array_far_longer_than_the_file_is_damage_not_truncation(tmp_path):
    for etype in (I32, STR, ARR):
        path = write(tmp_path, gguf([ARCH, kv("t.huge", ARR, array(etype, 1 << 29, b"\x00" * 64))]))
        with pytest.raises(CorruptModelError, match="runs past the end of the file"):
            read_header(path)


def test_an_array_of_the_largest_length_allowed_is_judged_by_the_file_size(tmp_path):
    path = write(tmp_path, gguf([ARCH, kv("t.max", ARR, array(I32, 1 << 30, b"\x00" * 64))]))
    with pytest.raises(CorruptModelError, match="metadata array 't.max' .1073741824 elements. runs past the end"):
        read_header(path)


P = gl.PLAUSIBLE_STRING  # 64 MiB: an array that far past the end of the file is damage, not a cut


@pytest.mark.parametrize(
    ("etype", "after", "count", "verdict"),
    [
        # int32 elements: 4 bytes each
        (I32, 64, (P + 64) // 4, "truncated"),
        (I32, 64, (P + 64) // 4 + 1, "damaged"),
        # strings: at least their 8-byte length each
        (STR, 64, (P + 64) // 8, "truncated"),
        (STR, 64, (P + 64) // 8 + 1, "damaged"),
        (STR, 2_000_000, (P + 2_000_000) // 8 + 1, "damaged"),
        # arrays: at least a type and a count, 12 bytes each
        (ARR, 8, (P + 8) // 12, "truncated"),
        (ARR, 8, (P + 8) // 12 + 1, "damaged"),
    ],
)
def test_where_a_cut_array_turns_from_truncated_into_damaged(tmp_path, etype, after, count, verdict):
    """Past the end of the file by at most 64 MiB: a download cut short; further: damage."""
    path = write(tmp_path, gguf([ARCH, kv("t.a", ARR, array(etype, count, bytes(after)))]))
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    if verdict == "damaged":
        assert f"metadata array 't.a' ({count} elements) runs past the end of the file" in str(err.value)
    else:
        assert "is truncated" in str(err.value)


def test_an_array_a_little_longer_than_the_file_is_truncation(tmp_path):
    for etype in (I32, STR):
        path = write(tmp_path, gguf([ARCH, kv("t.cut", ARR, array(etype, 1000, b"\x00" * 64))]))
        with pytest.raises(CorruptModelError, match="is truncated"):
            read_header(path)


# -- strings and keys ------------------------------------------------------------------------------


def test_a_string_longer_than_llama_cpp_allows_is_damage_with_its_offset(tmp_path):
    data = gguf([ARCH, kv("t.s", STR, struct.pack("<Q", (1 << 30) + 1) + b"x" * 16)])
    path = write(tmp_path, data)
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    at = data.index(b"t.s") + 3 + 4
    assert str(err.value) == f"{path} is damaged: the value of 't.s' has an impossible length 1073741825 (at byte {at})"


def test_a_string_past_the_end_is_damage_when_absurd_and_truncation_when_plausible(tmp_path):
    absurd = write(tmp_path, gguf([ARCH, kv("t.s", STR, struct.pack("<Q", (64 << 20) + 1) + b"x")]), "a.gguf")
    with pytest.raises(CorruptModelError, match="past the end of the file"):
        read_header(absurd)
    plausible = write(tmp_path, gguf([ARCH, kv("t.s", STR, struct.pack("<Q", 64 << 20) + b"x")]), "p.gguf")
    with pytest.raises(CorruptModelError, match="is truncated"):
        read_header(plausible)
    exact = write(tmp_path, gguf([ARCH, kv("t.s", STR, struct.pack("<Q", 3) + b"abc")]), "e.gguf")
    assert read_header(exact).get("t.s") == "abc"


def test_empty_and_duplicate_keys_are_damage(tmp_path):
    empty = write(tmp_path, gguf([ARCH, kv("", U32, b"\x00" * 4)]), "e.gguf")
    with pytest.raises(CorruptModelError, match="metadata key 1 is empty"):
        read_header(empty)
    dup = write(tmp_path, gguf([ARCH, u32("t.a", 1), u32("t.a", 2)]), "d.gguf")
    with pytest.raises(CorruptModelError, match="duplicate metadata key 't.a'"):
        read_header(dup)


# -- versions and alignment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "error", "message"),
    [
        (0, CorruptModelError, "impossible GGUF version 0"),
        (0x10000, CorruptModelError, "impossible GGUF version 65536"),
        (4, ModelFileError, "GGUF version 4 is not supported (only 2 and 3)"),
        (0xFFFF, ModelFileError, "GGUF version 65535 is not supported"),
        (0x02000000, ModelFileError, "big-endian GGUF not supported"),
    ],
)
def test_versions_other_than_2_and_3_are_refused_by_name(tmp_path, version, error, message):
    path = write(tmp_path, gguf([ARCH], version=version))
    with pytest.raises(error) as err:
        read_header(path)
    assert message in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "GGUF version 1 is no longer supported (convert the model again)"),
        (b"GGUF" + struct.pack(">IQQ", 1, 0, 0), "big-endian GGUF not supported"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian GGUF not supported"),
    ],
)
def test_old_and_big_endian_files_say_exactly_what_they_are(tmp_path, head, message):
    path = write(tmp_path, head + bytes(64))
    with pytest.raises(ModelFileError) as err:
        read_header(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_metadata_key_of_impossible_length_is_damage_naming_which(tmp_path):
    data = gguf([ARCH, struct.pack("<Q", (1 << 30) + 1) + b"k" * 16])
    path = write(tmp_path, data)
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    at = data.index(b"k" * 16) - 8
    assert str(err.value) == f"{path} is damaged: metadata key 1 has an impossible length 1073741825 (at byte {at})"


def test_version_2_reads_like_3(tmp_path):
    h = read_header(write(tmp_path, gguf([ARCH, u32("t.x", 3)], version=2)))
    assert h.version == 2 and h.get("t.x") == 3


@pytest.mark.parametrize("alignment", [0, 3, 48, -32])
def test_an_alignment_that_is_not_a_power_of_2_is_damage(tmp_path, alignment):
    value = kv("general.alignment", I32, struct.pack("<i", alignment))
    path = write(tmp_path, gguf([ARCH, value]))
    with pytest.raises(CorruptModelError, match=f"general.alignment {alignment} is not a power of 2"):
        read_header(path)


def test_a_boolean_alignment_is_damage(tmp_path):
    path = write(tmp_path, gguf([ARCH, kv("general.alignment", BOOL, b"\x01")]))
    with pytest.raises(CorruptModelError, match="general.alignment True is not a power of 2"):
        read_header(path)


@pytest.mark.parametrize("alignment", [1, 8, 64])
def test_tensor_data_starts_at_the_alignment(tmp_path, alignment):
    kvs = [ARCH, u32("general.alignment", alignment)]
    body = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)) + b"".join(kvs) + tensor("a", (4,))
    data = body + bytes(-len(body) % alignment) + b"\x00" * 16
    h = read_header(write(tmp_path, data))
    assert h.alignment == alignment and h.header_size == len(body)
    assert h.data_offset == len(body) + (-len(body) % alignment) and h.data_end == h.data_offset + 16


# -- tensor infos ----------------------------------------------------------------------------------


def test_tensor_sizes_follow_their_type(tmp_path):
    tensors = [
        tensor("f32", (3, 2), 0, 0),
        tensor("q4_0", (64, 2), 2, 32),
        tensor("q4_k", (256,), 12, 128),
        tensor("q2_0", (64,), 42, 288),
    ]
    h = read_header(write(tmp_path, gguf([ARCH], tensors, data=bytes(306))))
    assert [(t.name, t.shape, t.n_elements, t.n_bytes, t.type_name) for t in h.tensors] == [
        ("f32", (3, 2), 6, 24, "F32"),
        ("q4_0", (64, 2), 128, 72, "Q4_0"),
        ("q4_k", (256,), 256, 144, "Q4_K"),
        ("q2_0", (64,), 64, 18, "Q2_0"),
    ]
    assert h.n_params == 6 + 128 + 256 + 64 and h.tensor_bytes == 24 + 72 + 144 + 18
    assert h.bits_per_weight == pytest.approx((24 + 72 + 144 + 18) * 8 / 454)
    assert h.data_end == h.data_offset + 288 + 18


def test_a_file_without_tensors_ends_at_its_header(tmp_path):
    data = gguf([ARCH])
    h = read_header(write(tmp_path, data))
    assert h.tensors == () and h.data_end == h.header_size == len(data) and h.bits_per_weight == 0.0


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (tensor("a", ()), "tensor 'a' has 0 dimensions"),
        (tensor("a", (1, 1, 1, 1, 1)), "tensor 'a' has 5 dimensions"),
        (tensor("a", (1 << 63,)), "tensor 'a' has an impossible shape [9223372036854775808]"),
        (tensor("a", (1 << 32, 1 << 31)), "tensor 'a' has an impossible shape [4294967296, 2147483648]"),
        (tensor("a", (4,), 5), "tensor 'a' has an unknown ggml type 5"),
        (tensor("a", (48,), 2), "tensor 'a' of type Q4_0 has rows of 48 elements, not a multiple of 32"),
        (tensor("a", (4,), 0, 8), "tensor 'a' has offset 8, not a multiple of 32"),
    ],
)
def test_a_bad_tensor_info_is_damage_naming_the_tensor(tmp_path, info, message):
    path = write(tmp_path, gguf([ARCH], [info], data=bytes(64)))
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    assert str(err.value) == f"{path} is damaged: {message}"


def test_a_four_dimensional_tensor_is_read(tmp_path):
    h = read_header(write(tmp_path, gguf([ARCH], [tensor("a", (2, 3, 4, 5))], data=bytes(480))))
    assert h.tensors[0].shape == (2, 3, 4, 5) and h.tensors[0].n_bytes == 480


def test_a_tensor_name_of_impossible_length_is_damage_naming_which(tmp_path):
    info = struct.pack("<Q", (1 << 30) + 1) + b"a" * 16
    data = gguf([ARCH], [info])
    path = write(tmp_path, data)
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    at = data.index(info)
    assert str(err.value) == f"{path} is damaged: tensor name 0 has an impossible length 1073741825 (at byte {at})"


def test_tensors_of_the_largest_shape_allowed_are_read(tmp_path):
    h = read_header(write(tmp_path, gguf([ARCH], [tensor("a", (1 << 31, 1 << 31))])), check_size=False)
    assert h.tensors[0].n_elements == 1 << 62


def test_overlapping_and_duplicate_tensors_are_damage(tmp_path):
    overlap = [tensor("a", (16,), 0, 0), tensor("b", (4,), 0, 32)]
    path = write(tmp_path, gguf([ARCH], overlap, data=bytes(128)), "o.gguf")
    with pytest.raises(CorruptModelError, match="tensor 'b' has offset 32, overlapping the tensor before it"):
        read_header(path)
    packed = [tensor("a", (8,), 0, 0), tensor("b", (4,), 0, 32)]
    assert [t.offset for t in read_header(write(tmp_path, gguf([ARCH], packed, data=bytes(48)), "p.gguf")).tensors] == [
        0,
        32,
    ]
    dup = [tensor("a", (4,), 0, 0), tensor("a", (4,), 0, 32)]
    path = write(tmp_path, gguf([ARCH], dup, data=bytes(64)), "d.gguf")
    with pytest.raises(CorruptModelError, match="duplicate tensor name 'a'"):
        read_header(path)


def test_a_file_shorter_than_its_tensor_data_is_truncated(tmp_path):
    data = gguf([ARCH], [tensor("a", (8,))], data=bytes(32))
    path = write(tmp_path, data[:-1])
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    assert str(err.value) == (
        f"{path} is truncated: {len(data) - 1} bytes, expected at least {len(data)} (download incomplete?)"
    )
    assert read_header(write(tmp_path, data, "whole.gguf")).data_end == len(data)


def test_counts_at_the_limit_are_plausible_and_beyond_it_damage(tmp_path):
    at_limit = write(tmp_path, gguf([ARCH], n_tensors=1_000_000), "l.gguf")
    with pytest.raises(CorruptModelError, match="truncated"):
        read_header(at_limit)
    over = write(tmp_path, gguf([ARCH], n_tensors=1_000_001), "o.gguf")
    with pytest.raises(CorruptModelError, match="impossible tensor count 1000001"):
        read_header(over)
    kv_limit = write(tmp_path, gguf([ARCH], n_kv=1_000_000), "kl.gguf")
    with pytest.raises(CorruptModelError, match="truncated"):
        read_header(kv_limit)
    over = write(tmp_path, gguf([ARCH], n_kv=1_000_001), "k.gguf")
    with pytest.raises(CorruptModelError, match="impossible metadata count 1000001"):
        read_header(over)


# -- what is not a GGUF file -----------------------------------------------------------------------


def test_a_text_file_is_named_with_its_first_characters(tmp_path):
    path = write(tmp_path, b"<!DOCTYPE html><html><body>Not Found</body></html>", "page.gguf")
    with pytest.raises(NotAGGUFError) as err:
        read_header(path)
    assert str(err.value) == f"{path} is not a GGUF file (starts with '<!DOCTYPE html><')"
    binary = write(tmp_path, b"PK\x03\x04" + bytes(20), "zip.gguf")
    with pytest.raises(NotAGGUFError) as err:
        read_header(binary)
    assert str(err.value) == f"{binary} is not a GGUF file (starts with {(b'PK' + bytes([3, 4]) + bytes(12))!r})"


def test_a_file_cut_inside_the_magic_is_not_a_gguf_or_truncated(tmp_path):
    with pytest.raises(NotAGGUFError, match="starts with b'GX'"):
        read_header(write(tmp_path, b"GX", "gx.gguf"))
    path = write(tmp_path, b"GGU", "ggu.gguf")
    with pytest.raises(CorruptModelError) as err:
        read_header(path)
    assert (
        str(err.value)
        == f"{path} is truncated: 3 bytes, and its GGUF header alone needs at least 4 (download incomplete?)"
    )


# -- file objects ----------------------------------------------------------------------------------


class Remote(io.RawIOBase):
    """A remote reader: read and seek, and a ``size`` attribute, but no file descriptor."""

    def __init__(self, data: bytes, size: int) -> None:
        self.inner = io.BytesIO(data)
        self.size = size
        self.name = "remote.gguf"

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        chunk = self.inner.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("no seek")


def test_a_remote_reader_with_a_size_is_checked_for_truncation(tmp_path):
    data = gguf([ARCH], [tensor("a", (8,))], data=bytes(32))
    with pytest.raises(CorruptModelError, match=f"remote.gguf is truncated: {len(data) - 1} bytes"):
        read_header(Remote(data, len(data) - 1))
    h = read_header(Remote(data, len(data)))
    assert h.file_size == len(data)


def test_a_seekable_stream_has_its_size_found_and_is_read_from_the_start():
    data = gguf([ARCH], [tensor("a", (8,))], data=bytes(32))
    stream = io.BytesIO(data)
    stream.seek(17)
    h = read_header(stream)
    assert h.file_size == len(data) and h.architecture == "llama"
    with pytest.raises(CorruptModelError, match=r"<GGUF stream> is truncated"):
        read_header(io.BytesIO(data[:-1]))


# -- a prefix fetched over HTTP --------------------------------------------------------------------


def test_need_more_data_says_exactly_where_the_cut_field_ends():
    data = gguf([ARCH, kv("t.s", STR, s("x" * 100))])
    cut = data.index(b"x" * 100) + 10
    with pytest.raises(NeedMoreData) as err:
        read_header_bytes(data[:cut])
    assert err.value.minimum == data.index(b"x" * 100) + 100
    assert err.value.needed == 2 * err.value.minimum  # at least double, so a caller needs few rounds
    assert str(err.value) == (
        f"GGUF header continues past the data given: need about {err.value.needed} bytes (at least {err.value.minimum})"
    )
    assert NeedMoreData(50).minimum == 50


def test_bytes_that_are_not_gguf_are_named_as_gguf_data():
    with pytest.raises(NotAGGUFError) as err:
        read_header_bytes(b"<html><body>Not Found</body></html>")
    assert str(err.value) == "<GGUF data> is not a GGUF file (starts with '<html><body>Not ')"


def test_need_more_data_never_asks_past_the_file_size():
    data = gguf([ARCH, kv("t.s", STR, s("x" * 100))])
    with pytest.raises(NeedMoreData) as err:
        read_header_bytes(data[:40], file_size=len(data))
    assert 40 < err.value.needed < len(data)
    with pytest.raises(NeedMoreData) as err:
        read_header_bytes(data[: data.index(b"x") + 5], file_size=len(data))
    assert err.value.needed == err.value.minimum == len(data)  # the string ends the file
    with pytest.raises(
        CorruptModelError, match="t.gguf is truncated: 50 bytes, and its GGUF header alone needs at least 52"
    ):
        read_header_bytes(data[:40], name="t.gguf", file_size=50)


def test_a_header_with_many_tensors_is_fetched_in_two_rounds():
    """The guess of what is left (per key, per tensor info) makes the second request cover it all."""
    n = 2000
    tensors = [tensor(f"blk.{i}.w", (4,), 0, 32 * i) for i in range(n)]
    data = gguf([ARCH, u32("t.x", 1)], tensors)
    with pytest.raises(NeedMoreData) as err:
        read_header_bytes(data[:64])
    assert len(data) <= err.value.needed <= 3 * len(data)
    assert len(read_header_bytes(data[: err.value.needed]).tensors) == n


def test_a_vocabulary_cut_short_asks_for_about_the_rest():
    count = 5000
    words = b"".join(s(f"tok{i:05d}") for i in range(count))  # 16 bytes each
    data = gguf([ARCH, kv("tokenizer.ggml.tokens", ARR, array(STR, count, words)), u32("t.after", 1)])
    cut = len(data) // 4
    with pytest.raises(NeedMoreData) as err:
        read_header_bytes(data[:cut])
    assert len(data) - 100 <= err.value.needed <= len(data) + 200
    assert read_header_bytes(data).vocab_size == count
