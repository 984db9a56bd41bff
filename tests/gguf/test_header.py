"""localllm.gguf.header: the pure-Python GGUF header reader, checked against gguf's own reader."""

from __future__ import annotations

import io
import os
import struct
import time
from pathlib import Path

import pytest
from support.files import damaged_copy

from localllm.errors import CorruptModelError, ModelFileError, NotAGGUFError
from localllm.gguf import header as ggufmeta
from localllm.gguf import quants
from localllm.gguf.header import ArrayInfo, NeedMoreData, read_header, read_header_bytes


@pytest.fixture(scope="module")
def model_file(smollm2_path: Path) -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, fetched once by the suite (conftest)."""
    return smollm2_path


@pytest.fixture(scope="module")
def header(model_file: Path) -> ggufmeta.GGUFHeader:
    return read_header(model_file)


@pytest.fixture(scope="module")
def reference(model_file: Path):
    """gguf's own reader on the same file, and how long it took."""
    gguf = pytest.importorskip("gguf")
    started = time.perf_counter()
    reader = gguf.GGUFReader(model_file)
    return reader, time.perf_counter() - started


def _copy(src: Path, dest: Path, *, size: int | None = None, patch: tuple[int, bytes] | None = None) -> Path:
    return damaged_copy(src, dest, truncate_to=size, patch=patch)


# --------------------------------------------------------------------------------------------
# The real model


def test_real_model_metadata(header, model_file):
    assert header.version == 3
    assert header.architecture == "llama"
    assert header.context_length == 8192
    assert header.block_count == 30
    assert header.embedding_length == 576
    assert header.head_count == 9
    assert header.head_count_kv == 3
    assert header.arch_key("feed_forward_length") == 1536
    assert header.arch_key("no.such.key", "x") == "x"
    assert header.get("general.license") == "apache-2.0"
    assert header.get("general.languages") == ["en"]  # a small array, kept
    assert header.get("llama.attention.layer_norm_rms_epsilon") == 1e-05
    assert header.get("tokenizer.ggml.add_bos_token") is False
    assert header.vocab_size == 49152
    assert header.get("tokenizer.ggml.tokens") == ArrayInfo(ggufmeta.T_STRING, 49152)
    assert header.get("tokenizer.ggml.token_type") == ArrayInfo(ggufmeta.T_INT32, 49152)
    assert "im_start" in header.chat_template
    assert header.alignment == 32
    assert header.data_offset % 32 == 0 and header.data_offset >= header.header_size
    assert header.file_size == model_file.stat().st_size
    assert header.data_end == header.file_size


def test_file_type_and_sizes(header, reference):
    reader, _ = reference
    assert int(reader.fields["general.file_type"].contents()) == 3  # LLAMA_FTYPE_MOSTLY_Q4_1
    assert header.file_type == 3
    assert header.file_type_name == "Q4_1"
    assert 4 < header.bits_per_weight < 6.5
    assert header.tensor_bytes == sum(header.quant_mix.values())
    assert set(header.quant_mix) == {"Q4_1", "Q8_0", "F32"}  # token embeddings are Q8_0 in this file


def test_tensors_equal_gguf_reader(header, reference):
    reader, _ = reference
    assert len(header.tensors) == len(reader.tensors) == 272
    for mine, theirs in zip(header.tensors, reader.tensors):
        assert mine.name == theirs.name
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.ggml_type == int(theirs.tensor_type)
        assert header.data_offset + mine.offset == theirs.data_offset
        assert mine.n_elements == int(theirs.n_elements)
        assert mine.n_bytes == int(theirs.n_bytes)
    assert header.n_params == sum(int(t.n_elements) for t in reader.tensors)
    assert header.data_offset == reader.data_offset


def test_metadata_equals_gguf_reader(header, reference):
    reader, _ = reference
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(header.metadata) == list(fields)
    for key, f in fields.items():
        mine = header.metadata[key]
        if isinstance(mine, ArrayInfo):
            assert mine.element_type == int(f.types[1]) and mine.count == len(f.data), key
        elif isinstance(mine, float):
            assert mine == pytest.approx(float(f.contents()), rel=1e-6), key
        else:
            assert mine == f.contents(), key


def test_faster_than_gguf_reader(model_file, reference):
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        read_header(model_file)
        best = min(best, time.perf_counter() - started)
    _, theirs = reference
    print(f"\nread_header: {best * 1000:.1f} ms; gguf.GGUFReader: {theirs * 1000:.0f} ms")
    assert best < 1.0  # ~20 ms in practice; generous to avoid flakiness


def test_does_not_import_numpy_or_gguf():
    import subprocess
    import sys

    code = "import sys, localllm.gguf.header; print('numpy' in sys.modules, 'gguf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_file_objects(model_file, header):
    with open(model_file, "rb") as f:
        f.seek(12345)  # reading starts at 0 whatever the position
        from_file = read_header(f)
    assert from_file.tensors == header.tensors and from_file.file_size == header.file_size

    class Stream(io.RawIOBase):
        """read() only, in small pieces: no seek, no size."""

        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            chunk = self.inner.read(min(len(b), 4096))
            b[: len(chunk)] = chunk
            return len(chunk)

    prefix = model_file.read_bytes()[: header.data_offset + 10]
    streamed = read_header(Stream(prefix))
    assert streamed.file_size is None  # unknown size: no truncation check
    assert streamed.tensors == header.tensors and streamed.vocab_size == 49152


def test_small_chunks_give_the_same_result(model_file, header):
    small = read_header(model_file, chunk_size=7)
    assert small.tensors == header.tensors and small.metadata == header.metadata


# --------------------------------------------------------------------------------------------
# Damaged files


@pytest.mark.parametrize("where", ["metadata", "tensor infos", "tensor data"])
def test_truncated_copies(model_file, header, tmp_path, where):
    cut = {
        "metadata": 500_000,  # inside tokenizer.ggml.tokens
        "tensor infos": header.header_size - 100,
        "tensor data": header.file_size - 1000,
    }[where]
    bad = _copy(model_file, tmp_path / "cut.gguf", size=cut)
    with pytest.raises(CorruptModelError) as err:
        read_header(bad)
    message = str(err.value)
    assert str(bad) in message and "truncated" in message and "\n" not in message
    assert f"{cut} bytes" in message
    if where == "tensor data":
        assert f"expected at least {header.file_size}" in message
        assert read_header(bad, check_size=False).tensors == header.tensors


def test_overlong_string_length_is_damage(model_file, header, tmp_path):
    # The length of a token half-way through the vocabulary, overwritten with 0xFF bytes.
    data = model_file.read_bytes()
    pos = header.get("tokenizer.ggml.tokens").offset
    for _ in range(20_000):
        pos += 8 + int.from_bytes(data[pos : pos + 8], "little")
    bad = _copy(model_file, tmp_path / "garbage.gguf", patch=(pos, b"\xff" * 8))
    with pytest.raises(CorruptModelError) as err:
        read_header(bad)
    assert str(bad) in str(err.value) and "damaged" in str(err.value)


def test_garbage_in_first_key(model_file, tmp_path):
    bad = _copy(model_file, tmp_path / "k.gguf", patch=(24, b"\xff\xff\xff\x7f\x00\x00\x00\x00"))
    with pytest.raises(CorruptModelError, match="damaged"):
        read_header(bad)


def test_invalid_value_type(model_file, tmp_path):
    data = model_file.read_bytes()
    key_len = int.from_bytes(data[24:32], "little")
    assert data[32 : 32 + key_len] == b"general.architecture"
    bad = _copy(model_file, tmp_path / "t.gguf", patch=(32 + key_len, struct.pack("<I", 77)))
    with pytest.raises(CorruptModelError, match="invalid value type 77"):
        read_header(bad)


def test_absurd_counts(model_file, tmp_path):
    bad = _copy(model_file, tmp_path / "n.gguf", patch=(16, struct.pack("<Q", 1 << 40)))
    with pytest.raises(CorruptModelError, match="impossible metadata count"):
        read_header(bad)
    bad = _copy(model_file, tmp_path / "t.gguf", patch=(8, struct.pack("<Q", 10**7)))
    with pytest.raises(CorruptModelError, match="impossible tensor count"):
        read_header(bad)


def test_not_gguf(tmp_path):
    text = tmp_path / "readme.gguf"
    text.write_text("This is not a model, just some text.\n")
    with pytest.raises(NotAGGUFError) as err:
        read_header(text)
    assert str(text) in str(err.value) and "not a GGUF file" in str(err.value)
    assert "This is not" in str(err.value)

    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(NotAGGUFError) as err:
        read_header(empty)
    assert str(empty) in str(err.value) and "empty" in str(err.value)

    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"PK")
    with pytest.raises(NotAGGUFError):
        read_header(tiny)


def test_unreadable_paths(tmp_path):
    with pytest.raises(ModelFileError) as err:
        read_header(tmp_path)
    assert type(err.value) is ModelFileError and "directory" in str(err.value)
    with pytest.raises(ModelFileError, match="no such file"):
        read_header(tmp_path / "missing.gguf")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked.gguf"
        locked.write_bytes(b"GGUF")
        locked.chmod(0)
        try:
            with pytest.raises(ModelFileError, match="permission denied"):
                read_header(locked)
        finally:
            locked.chmod(0o600)


def test_old_and_big_endian_versions(tmp_path):
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + struct.pack("<I", 1) + bytes(16))
    with pytest.raises(ModelFileError, match="version 1"):
        read_header(v1)
    big = tmp_path / "big.gguf"
    big.write_bytes(b"GGUF" + struct.pack(">IQQ", 3, 0, 0))
    with pytest.raises(ModelFileError, match="big-endian GGUF not supported") as err:
        read_header(big)
    assert str(big) in str(err.value)


# --------------------------------------------------------------------------------------------
# A prefix of the file (HTTP range requests)


def test_read_header_bytes(model_file, header):
    data = model_file.read_bytes()
    with pytest.raises(NeedMoreData) as err:
        read_header_bytes(data[:1000])
    assert not isinstance(err.value, CorruptModelError)
    assert err.value.needed >= err.value.minimum > 1000

    whole = read_header_bytes(data[: header.header_size])
    assert whole.tensors == header.tensors and whole.metadata == header.metadata
    assert whole.data_offset == header.data_offset and whole.file_size is None
    assert read_header_bytes(data[: header.data_offset], file_size=len(data)).file_size == len(data)

    # Fetching what NeedMoreData asks for converges in a few rounds.
    have, rounds = 1000, 0
    while True:
        rounds += 1
        try:
            got = read_header_bytes(data[:have])
            break
        except NeedMoreData as more:
            assert more.needed > have
            have = more.needed
    assert got.tensors == header.tensors and rounds <= 6  # 5 on SmolLM2 from 1000 bytes

    with pytest.raises(NeedMoreData):
        read_header_bytes(b"")
    with pytest.raises(NotAGGUFError):
        read_header_bytes(b"<html>")


# --------------------------------------------------------------------------------------------
# Synthetic files written with gguf's writer


def _write(path: Path, *, alignment: int | None = None, extra=None) -> Path:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    w = gguf.GGUFWriter(path, "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_block_count(2)
    w.add_head_count_kv([1, 2])  # per-layer
    w.add_file_type(15)
    w.add_array("test.big_ints", list(range(300)))
    w.add_array("test.words", ["a", "bé", ""])
    w.add_array("test.nested", [[1, 2], ["x"]])
    w.add_array("test.big_strings", [f"s{i}" * (i % 5) for i in range(1000)])
    w.add_float64("test.f64", 0.25)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int8("test.i8", -3)
    w.add_bool("test.yes", True)
    if extra:
        extra(w)
    w.add_tensor("a", np.ones((3, 5), dtype=np.float32))
    w.add_tensor("b", np.zeros((2, 64), dtype=np.float16))
    q = np.zeros((4, 18 * 2), dtype=np.uint8)  # 4 rows of 64 Q4_0 weights
    w.add_tensor("c", q, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_synthetic_v3_custom_alignment(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = _write(tmp_path / "tiny.gguf", alignment=64)
    h = read_header(path)
    reader = gguf.GGUFReader(path)
    assert h.version == 3 and h.alignment == 64 and h.data_offset % 64 == 0
    assert h.data_offset == reader.data_offset
    assert h.get("test.big_ints") == ArrayInfo(ggufmeta.T_INT32, 300)
    assert h.get("test.big_strings") == ArrayInfo(ggufmeta.T_STRING, 1000)
    assert h.get("test.words") == ["a", "bé", ""]
    assert h.get("test.nested") == [[1, 2], ["x"]]
    assert h.get("test.f64") == 0.25 and h.get("test.u64") == 1 << 40 and h.get("test.i8") == -3
    assert h.get("test.yes") is True
    assert h.head_count_kv == [1, 2] and h.context_length == 128 and h.name == "tiny"
    assert h.file_type_name == "Q4_K_M"
    assert [(t.name, t.shape, t.type_name) for t in h.tensors] == [
        ("a", (5, 3), "F32"),
        ("b", (64, 2), "F16"),
        ("c", (64, 4), "Q4_0"),
    ]
    for mine, theirs in zip(h.tensors, reader.tensors):
        assert h.data_offset + mine.offset == theirs.data_offset
        assert mine.offset % 64 == 0
        assert mine.n_bytes == int(theirs.n_bytes)
    assert h.data_end <= path.stat().st_size < h.data_end + 64  # the writer pads the last tensor
    assert h.n_params == 15 + 128 + 256
    assert h.quant_mix == {"F32": 60, "F16": 256, "Q4_0": 4 * 18 * 2}
    # The same bytes labelled version 2 (same layout) read the same.
    v2 = _copy(path, tmp_path / "v2.gguf", patch=(4, struct.pack("<I", 2)))
    h2 = read_header(v2)
    assert h2.version == 2 and h2.tensors == h.tensors


def test_synthetic_damage(tmp_path):
    path = _write(tmp_path / "tiny.gguf")
    h = read_header(path)
    data = path.read_bytes()
    # Find tensor "c"'s info: name, n_dims, dims, type, offset.
    at = data.index(b"\x01\x00\x00\x00\x00\x00\x00\x00c", h.header_size - 60) + 9
    type_at = at + 4 + 2 * 8
    assert struct.unpack_from("<I", data, type_at)[0] == 2
    bad = _copy(path, tmp_path / "type.gguf", patch=(type_at, struct.pack("<I", 99)))
    with pytest.raises(CorruptModelError, match="unknown ggml type 99"):
        read_header(bad)
    bad = _copy(path, tmp_path / "dims.gguf", patch=(at, struct.pack("<I", 5)))
    with pytest.raises(CorruptModelError, match="5 dimensions"):
        read_header(bad)
    bad = _copy(path, tmp_path / "offset.gguf", patch=(type_at + 4, struct.pack("<Q", 8)))
    with pytest.raises(CorruptModelError, match="offset"):
        read_header(bad)


def test_big_endian_file_from_gguf_writer(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with pytest.raises(ModelFileError, match="big-endian"):
        read_header(path)


# --------------------------------------------------------------------------------------------
# Tables that must not drift from gguf's


def test_quant_sizes_equal_gguf():
    constants = pytest.importorskip("gguf.constants")
    assert ggufmeta.GGML_QUANT_SIZES == {int(t): v for t, v in constants.GGML_QUANT_SIZES.items()}
    assert ggufmeta.GGML_TYPE_NAMES == {int(t): t.name for t in constants.GGMLQuantizationType}


def test_file_type_names_match_gguf():
    constants = pytest.importorskip("gguf.constants")
    for ftype in constants.LlamaFileType:
        expected = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        assert quants.FTYPE_NAMES[int(ftype)] == expected
