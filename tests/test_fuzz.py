"""A seeded mutator over the real SmolLM2 header and over JSONL lines (issue 11).

Every mutated input must give a clean result or one LocalLLMError / LineError: never another
exception, a signal, a hang or lost output. Fixed seeds, so a failure is reproducible: the test id
names the seed. Runs the real code paths: header read + validation + estimate; batch line
parsing; ``localllm inspect`` / ``fit`` as subprocesses for a few mutated files.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ggufedit

from localllm.batch import jobs
from localllm.errors import LocalLLMError
from localllm.fit import estimate
from localllm.gguf import header as ggufmeta

N_HEADER = 400
N_LINES = 2000


@pytest.fixture(scope="module")
def parts(smollm2_path: Path) -> ggufedit.Parts:
    return ggufedit.split(smollm2_path)


@pytest.fixture(scope="module")
def real_header(parts) -> bytes:
    return ggufedit.build(parts)


_SWAPS = [
    "s",
    7,
    -1,
    0,
    1 << 40,
    1.5,
    True,
    [1, 2],
    [9] * 30,
    ["x"],
    ggufedit.nested(3),
    ggufedit.nested(50),
    "",
    "\x1b[2J",
    [],
    [[1]],
    ggufedit.Raw(ggufedit.T_INT8, b"\xff"),
    ggufedit.Raw(ggufedit.T_FLOAT64, b"\0" * 8),
]


def mutate_header(rng: random.Random, parts: ggufedit.Parts, base: bytes) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:  # a key's value swapped for another type
        keys = [k for k in parts.entries if not k.startswith("tokenizer.ggml.")] + ["llama.expert_count"]
        changes = {rng.choice(keys): rng.choice(_SWAPS) for _ in range(rng.randint(1, 3))}
        return ggufedit.build(parts, changes)
    data = bytearray(base)
    if kind == 1:  # bit flips
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
    elif kind == 2:  # truncation
        return bytes(data[: rng.randrange(len(data))])
    elif kind == 3:  # a length or count field set huge: any 8 bytes read as u64
        pos = rng.randrange(0, len(data) - 8)
        data[pos : pos + 8] = struct.pack("<Q", rng.choice([1 << 62, 1 << 40, (1 << 64) - 1, 1 << 31, 10**7]))
    else:  # a 4-byte type or dimension field set to garbage
        pos = rng.randrange(0, len(data) - 4)
        data[pos : pos + 4] = struct.pack("<I", rng.choice([13, 9, 255, 1 << 31, 0, 5, 4]))
    return bytes(data)


def test_mutated_headers_give_a_result_or_one_clean_error(parts, real_header):
    sizes = real_header, len(real_header) + (parts.data if isinstance(parts.data, int) else len(parts.data))
    counts = {"ok": 0, "error": 0}
    started = time.monotonic()
    for seed in range(N_HEADER):
        rng = random.Random(seed)
        data = mutate_header(rng, parts, real_header)
        t0 = time.monotonic()
        try:
            header = ggufmeta.read_header_bytes(data, name="m.gguf", file_size=sizes[1])
            estimate.estimate(header)
            estimate.estimate(header, estimate.Settings(n_ctx=4096 * 4, n_seq=4))  # batch's shape
            counts["ok"] += 1
        except ggufmeta.NeedMoreData:
            counts["error"] += 1
        except LocalLLMError as exc:
            assert "\n" not in str(exc), f"seed {seed}"
            counts["error"] += 1
        except Exception as exc:  # any other exception is a bug: the point of the test
            pytest.fail(f"seed {seed}: {type(exc).__name__}: {exc}")
        assert time.monotonic() - t0 < 5, f"seed {seed} took {time.monotonic() - t0:.1f} s"
    assert counts["ok"] and counts["error"], counts
    assert time.monotonic() - started < 60


def _line(rng: random.Random) -> bytes:
    base = {
        "id": rng.choice([1, "a", 10**20, "", None, [], 1.5, "\u2028"]),
        "prompt": rng.choice(["hi", "", "x" * 1000, "\x00\x1b", "\ud800"]),
        "temperature": rng.choice([0.5, -1, "x", None, 1e999]),
        "max_tokens": rng.choice([1, 0, -5, 10**30, 2.5, None]),
        "stop": rng.choice(["\n", [], [""], None, [1]]),
        "json_schema": rng.choice([None, {"type": "string", "minLength": 10**9}, [], "x", {"type": "object"}]),
    }
    text = json.dumps({k: v for k, v in base.items() if rng.random() < 0.8}, ensure_ascii=rng.random() < 0.5)
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(rng.choice([0, 0, 1, 3])):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[pos : pos + rng.randint(1, 5)]
        elif op == 1:
            data[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2:
            data[pos:pos] = rng.choice(
                [
                    b"[" * 5000,
                    b"{" * 200,
                    b"NaN",
                    b"\xef\xbb\xbf",
                    b"\\ud800",
                    b"9" * 5000,
                    "\u2028".encode(),
                    b"\r",
                    b"\xe9",
                ]
            )
        elif op == 3 and data:
            data[pos % len(data)] ^= 1 << rng.randrange(8)
        else:
            data = bytearray(data[:pos])
    return bytes(data)


def test_mutated_jsonl_lines_each_parse_or_give_a_line_error():
    rng = random.Random(11)
    raw = [_line(rng) for _ in range(N_LINES)]
    started = time.monotonic()
    lines = jobs.read_lines(b"\n".join(raw))
    assert len(lines) >= sum(1 for r in raw if r.strip() and b"\n" not in r) - 5
    for number, text in lines:
        try:
            req = jobs.parse_line(text, number)
        except jobs.LineError as exc:
            record = {"id": exc.id, "line": number, "error": str(exc)}
        else:
            record = {"id": req.id, "text": req.messages[-1]["content"]}
        encoded = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")  # the record can be written
        assert json.loads(encoded) == record
    assert time.monotonic() - started < 30


def _write_sparse(tmp: Path, name: str, header: bytes, data_size: int) -> Path:
    path = tmp / name
    with open(path, "wb") as f:
        f.write(header)
        if data_size:
            f.seek(data_size - 1, 1)
            f.write(b"\0")
    return path


def test_mutated_files_through_inspect_and_fit(parts, real_header, tmp_path):
    data_size = parts.data if isinstance(parts.data, int) else len(parts.data)
    for seed in range(6):
        data = mutate_header(random.Random(1000 + seed), parts, real_header)
        path = _write_sparse(tmp_path, f"m{seed}.gguf", data, data_size)
        for command in ("inspect", "fit"):
            proc = subprocess.run(
                [sys.executable, "-m", "localllm", command, str(path)],
                capture_output=True,
                timeout=60,
                env={**os.environ},
            )
            err = proc.stderr.decode("utf-8", "replace")
            assert proc.returncode >= 0 and proc.returncode != -signal.SIGABRT, f"seed {1000 + seed}: {err}"
            assert "Traceback" not in err, f"seed {1000 + seed} {command}: {err}"
            if proc.returncode:
                assert err.startswith("localllm: error: "), err
