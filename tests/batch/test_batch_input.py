"""Whatever the JSONL input and whatever is already at the output path: one error record per bad
line, the batch goes on, nothing of another file is lost (issue 11)."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys

import pytest

from localllm.batch import jobs
from localllm.errors import OutputError, UsageError

GOOD = {"id": "ok", "prompt": "Say hi.", "max_tokens": 2}


def good(ident="ok") -> bytes:
    return json.dumps(dict(GOOD, id=ident)).encode()


HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep": (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
    "deep object": (b'{"id": 1, "prompt": "x", "x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}", "nested"),
    "huge id": (b'{"id": ' + b"7" * 5000 + b', "prompt": "x"}', "not valid JSON"),
    "lone surrogate": (b'{"id": "s", "prompt": "x\\ud800y"}', "lone surrogate"),
    "latin-1": ('{"id": "l", "prompt": "caf\u00e9"}'.encode("latin-1"), "not UTF-8"),
    "NaN": (b'{"id": "n", "prompt": "x", "temperature": NaN}', "NaN"),
    "Infinity": (b'{"id": "i", "prompt": "x", "top_p": Infinity}', "Infinity"),
    "-Infinity": (b'{"id": "j", "prompt": "x", "temperature": -Infinity}', "-Infinity"),
    "1e999": (b'{"id": "k", "prompt": "x", "temperature": 1e999}', "finite"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_lines_are_line_errors(name):
    raw, message = HOSTILE[name]
    [(number, text)] = jobs.read_lines(raw + b"\n")
    with pytest.raises(jobs.LineError) as info:
        jobs.parse_line(text, number)
    assert message in str(info.value)
    json.dumps({"error": str(info.value)}, ensure_ascii=False).encode("utf-8")  # the record can be written


@pytest.mark.parametrize(
    ("field", "value"), [("top_k", -100), ("temperature", 500), ("min_p", 2), ("repeat_penalty", -1), ("top_p", 50)]
)
def test_a_lines_sampling_options_have_the_limits_of_every_other_surface(field, value):
    """A line's options are checked as run's flags are (issue 20): top_k, min_p and repeat_penalty
    were ignored, and temperature had no upper limit."""
    with pytest.raises(jobs.LineError, match=f'^"{field}" must be a (whole )?number from'):
        jobs.parse_line(json.dumps({"id": 1, "prompt": "x", field: value}), 1)


def test_a_lines_sampling_options_reach_the_sampler():
    line = jobs.parse_line(json.dumps({"id": 1, "prompt": "x", "top_k": 1, "min_p": 0.2, "repeat_penalty": 1.1}), 1)
    job = jobs._Requests(None, jobs.BatchDefaults(), jobs.Job([], jobs.StreamWriter(io.StringIO())))
    sampling = job._sampling(line)
    assert (sampling.top_k, sampling.min_p, sampling.repeat_penalty) == (1, 0.2, 1.1)
    assert (sampling.temperature, sampling.seed, sampling.max_tokens) == (0.8, 0, jobs.DEFAULT_MAX_TOKENS)


def test_lines_split_on_newline_only_with_a_bom_and_crlf_accepted():
    data = (
        "\ufeff"
        + json.dumps({"id": 1, "prompt": "a\u2028b\u2029c\x85d\x0ce"}, ensure_ascii=False)
        + "\r\n"
        + "\n  \n"
        + json.dumps({"id": 2, "prompt": "z"})
        + "\n"
    ).encode()
    lines = jobs.read_lines(data)
    assert [n for n, _ in lines] == [1, 4]
    assert jobs.parse_line(lines[0][1], 1).messages[0]["content"] == "a\u2028b\u2029c\x85d\x0ce"
    assert jobs.read_lines(data.decode()) == lines  # text in gives the same lines


@pytest.fixture(scope="module")
def model(smollm2_path):
    from localllm import runtime

    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1)) as m:
        yield m


def test_a_batch_of_hostile_lines_answers_the_good_ones(model):
    data = b"\n".join([good("first"), *(raw for raw, _ in HOSTILE.values()), good("last")]) + b"\n"
    out = io.StringIO()
    state = jobs.run_batch(
        model,
        jobs.read_lines(data),
        jobs.StreamWriter(out),
        n_parallel=2,
        n_ctx_seq=64,
        defaults=jobs.BatchDefaults(max_tokens=2),
        n_threads=1,
    )
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(r["id"] for r in records if "text" in r) == ["first", "last"]
    assert sorted(r["line"] for r in records if "error" in r) == list(range(2, 2 + len(HOSTILE)))
    assert state.failed == len(HOSTILE)


# -- the output file -------------------------------------------------------------------------------

RECORD = {"id": 1, "text": "x", "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1, "timing": {}}


@pytest.mark.parametrize(
    "content",
    [
        b"hello world",  # no final newline: was emptied
        b"notes\nmore notes",  # was cut to its first line, then refused
        b'{"id": 1, "prompt": "an input file"}\n',  # JSON objects, but not records
        b'{"a": 1}\n{"b": 2}',
        json.dumps(RECORD).encode() + b"\n" + b"trailing words",  # records, then a tail no record starts with
        b"[1, 2]\n",
        b"\xff\xfe binary \x00\n",
    ],
)
def test_an_output_that_is_not_batch_output_is_refused_untouched(tmp_path, content):
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    with pytest.raises(UsageError, match="not the output of localllm batch"):
        jobs.ResultWriter(out)
    assert out.read_bytes() == content


def test_a_torn_record_after_records_is_repaired(tmp_path):
    out = tmp_path / "out.jsonl"
    whole = json.dumps(RECORD).encode() + b"\n"
    out.write_bytes(whole + b'{"id": 2, "text": "half')
    writer = jobs.ResultWriter(out)
    writer.close()
    assert out.read_bytes() == whole
    out.write_bytes(b'{"id": 3, "te')  # torn first record of a run killed at once
    jobs.ResultWriter(out).close()
    assert out.read_bytes() == b""


def test_a_second_writer_on_the_same_output_refuses(tmp_path):
    out = tmp_path / "out.jsonl"
    first = jobs.ResultWriter(out)
    try:
        with pytest.raises(UsageError, match="being written by another localllm batch"):
            jobs.ResultWriter(out)
        first.write(RECORD)
    finally:
        first.close()
    jobs.ResultWriter(out).close()  # free again once the first is done
    assert json.loads(out.read_text()) == RECORD


def test_a_directory_or_fifo_as_output_is_one_error(tmp_path):
    with pytest.raises(UsageError, match="directory"):
        jobs.ResultWriter(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening to write does not block
    try:
        with pytest.raises(UsageError, match="not a regular file"):
            jobs.ResultWriter(fifo)
    finally:
        os.close(fd)


def test_a_full_disk_leaves_valid_jsonl(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    writer = jobs.ResultWriter(out)
    writer.write(RECORD)
    real_write = os.write

    def half_then_full(fd, data):
        if fd == writer._fd:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OutputError, match="No space left on device"):
        writer.write(dict(RECORD, id=2))
    monkeypatch.undo()
    writer.close()
    assert [json.loads(line) for line in out.read_text().splitlines()] == [RECORD]


# -- the command -------------------------------------------------------------------------------------


def test_batch_cli_with_latin1_and_hostile_stdin_goes_on_and_exits_3(smollm2_path, tmp_path):
    out = tmp_path / "out.jsonl"
    data = b"\xef\xbb\xbf" + good("first") + b"\n" + HOSTILE["latin-1"][0] + b"\n" + HOSTILE["deep"][0] + b"\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "localllm",
            "batch",
            "-m",
            str(smollm2_path),
            "--threads",
            "1",
            "--ctx",
            "256",
            "-n",
            "2",
            "-",
            "-o",
            str(out),
        ],
        input=data,
        capture_output=True,
        timeout=180,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert "2 of 3 lines failed" in err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records if "text" in r] == ["first"]
    assert sorted(r["line"] for r in records if "error" in r) == [2, 3]
