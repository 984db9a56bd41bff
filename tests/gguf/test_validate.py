"""Header values that contradict themselves or the tensors: one CorruptModelError naming the key,
before llama.cpp or the estimate sees them (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ggufedit

from localllm.errors import CorruptModelError, EstimateError
from localllm.fit import estimate
from localllm.gguf import header as ggufmeta
from localllm.gguf import validate


@pytest.fixture(scope="module")
def parts(smollm2_path: Path) -> ggufedit.Parts:
    return ggufedit.split(smollm2_path)


BAD = [
    ({"llama.block_count": 0}, "llama.block_count is 0"),
    ({"llama.block_count": 1000}, "llama.block_count is out of range: 1000"),
    ({"llama.block_count": 30_000_000}, "llama.block_count is out of range"),
    ({"llama.block_count": 31}, "tensors for 30 layers (none for layer 30)"),
    ({"llama.block_count": 29}, "tensor blk.29."),
    ({"llama.block_count": "30"}, "llama.block_count must be an integer, not a string"),
    ({"llama.context_length": "8192"}, "llama.context_length must be an integer, not a string"),
    ({"llama.context_length": [8192, 8192]}, "llama.context_length must be an integer, not an array of 2"),
    ({"llama.context_length": 0}, "llama.context_length is 0"),
    ({"llama.context_length": -1}, "llama.context_length is out of range"),
    ({"llama.context_length": 1.5}, "llama.context_length must be an integer, not a float"),
    ({"llama.attention.head_count": [9, 9]}, "llama.attention.head_count has 2 entries for 30 layers"),
    ({"llama.attention.head_count": ["9"] * 30}, "llama.attention.head_count[0] must be an integer"),
    ({"llama.attention.head_count": 7}, "head_count 7 does not divide llama.embedding_length 576"),
    ({"llama.attention.head_count_kv": 4}, "head_count_kv 4 does not divide"),
    ({"llama.attention.head_count_kv": 10}, "head_count_kv 10 does not divide"),
    ({"llama.expert_used_count": 2}, "expert_used_count is 2 but the header gives no llama.expert_count"),
    ({"llama.expert_count": 4, "llama.expert_used_count": 8}, "expert_used_count 8 is more than"),
    ({"llama.expert_count": 8, "llama.expert_used_count": 2}, "no expert tensors"),
    ({"llama.expert_count": 100_000}, "llama.expert_count is out of range"),
    ({"llama.embedding_length": True}, "llama.embedding_length must be an integer, not a bool"),
    ({"general.architecture": 7}, "general.architecture must be a string"),
    ({"general.name": ["a"]}, "general.name must be a string"),
    ({"tokenizer.chat_template": 3}, "tokenizer.chat_template must be a string"),
    ({"general.tags": ggufedit.nested(9)}, "'general.tags' is nested more than 8 deep"),
    ({"general.tags": ggufedit.nested(5000)}, "'general.tags' is nested more than 8 deep"),
]


@pytest.mark.parametrize(
    ("changes", "message"), BAD, ids=[next(iter(c)) + "=" + repr(next(iter(c.values())))[:20] for c, _ in BAD]
)
def test_bad_header_values_are_one_error_naming_the_key(parts, changes, message):
    with pytest.raises(CorruptModelError) as info:
        ggufmeta.read_header_bytes(ggufedit.build(parts, changes), name="m.gguf")
    assert str(info.value).startswith("m.gguf is damaged: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_the_real_header_and_plausible_variants_pass(parts):
    for changes in (
        {},
        {"llama.attention.head_count_kv": [3] * 30},
        {"llama.feed_forward_length": [1536] * 30},
        {"llama.attention.head_count_kv": [0, 3] * 15},
        {"general.tags": ggufedit.nested(2)},
        {"llama.attention.head_count": 15, "llama.attention.key_length": 64},
    ):
        header = ggufmeta.read_header_bytes(ggufedit.build(parts, changes))
        estimate.estimate(header)


def test_a_file_with_bad_values_is_refused_on_read(parts, tmp_path):
    path = ggufedit.write(tmp_path / "bad.gguf", parts, {"llama.block_count": 1000})
    with pytest.raises(CorruptModelError, match="llama.block_count"):
        ggufmeta.read_header(path)


def test_the_estimate_checks_headers_built_by_hand(parts):
    header = ggufmeta.read_header_bytes(ggufedit.build(parts))
    meta = dict(header.metadata, **{"llama.block_count": 10_000_000})
    forged = ggufmeta.GGUFHeader(
        header.version, meta, header.tensors, header.alignment, header.data_offset, header.header_size, header.file_size
    )
    with pytest.raises(CorruptModelError, match="block_count"):
        estimate.estimate(forged)
    without = dict(header.metadata)
    del without["llama.block_count"]
    forged = ggufmeta.GGUFHeader(
        header.version,
        without,
        header.tensors,
        header.alignment,
        header.data_offset,
        header.header_size,
        header.file_size,
    )
    with pytest.raises(EstimateError):
        estimate.estimate(forged)


def test_depth_counts_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert validate._depth(deep, 8) == 9
    assert validate._depth([1, [2, [3]]], 8) == 3
    assert validate._depth([], 8) == 1
