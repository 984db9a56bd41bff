"""Running the same `batch` command again: what the output file already holds decides which lines
run, and a resumed run answers exactly the lines a user still waits for (issue 16)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from localllm.batch import jobs
from localllm.errors import OutputError, UsageError


def record(ident, text="x") -> dict:
    return {
        "id": ident,
        "text": text,
        "finish_reason": "stop",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "timing": {},
    }


def error_record(ident, line, message="bad") -> dict:
    return {"id": ident, "line": line, "error": message}


def write_output(path: Path, *records: dict, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def input_lines(*objects) -> list[tuple[int, str]]:
    return jobs.read_lines("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects))


def prompt(ident) -> dict:
    return {"id": ident, "prompt": "Say hi.", "max_tokens": 2}


@pytest.fixture(scope="module")
def model(smollm2_path):
    from localllm import runtime

    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1)) as m:
        yield m


def rerun(model, out: Path, lines) -> tuple[list[dict], jobs.BatchProgress]:
    before = out.read_bytes() if out.exists() else b""
    writer = jobs.ResultWriter(out)
    try:
        state = jobs.run_batch(
            model, lines, writer, n_parallel=2, n_ctx_seq=64, defaults=jobs.BatchDefaults(max_tokens=2), n_threads=1
        )
    finally:
        writer.close()
    added = out.read_bytes()[len(before) :]
    return [json.loads(line) for line in added.decode().splitlines()], state


# -- what a rerun skips and what it runs -------------------------------------------------------------


def test_a_rerun_answers_only_the_lines_the_output_lacks(model, tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"), error_record(None, 2, 'no "id"'))
    lines = input_lines(prompt("a"), {"prompt": "no id"}, prompt("c"))
    added, state = rerun(model, out, lines)
    assert [r["id"] for r in added] == ["c"] and "text" in added[0]
    assert (state.total, state.done, state.errors) == (1, 1, 0)
    assert (state.skipped, state.failed_before, state.failed) == (2, 1, 1)


def test_a_duplicate_id_is_still_reported_on_resume(model, tmp_path):
    """The first line with an id was answered before the crash; the second line with the same id
    gets its duplicate error, not silently skipped as if it had been answered."""
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"))
    added, state = rerun(model, out, input_lines(prompt("a"), prompt("b"), prompt("a")))
    assert sorted(json.dumps(r["id"]) for r in added) == ['"a"', '"b"']
    [dup] = [r for r in added if "error" in r]
    assert dup["line"] == 3 and "duplicate id" in dup["error"]
    assert (state.skipped, state.done, state.errors) == (1, 1, 1)


def test_the_integer_id_1_and_the_string_id_1_are_different_lines(model, tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, record(1))
    added, state = rerun(model, out, input_lines(prompt(1), prompt("1")))
    assert [r["id"] for r in added] == ["1"]
    assert state.skipped == 1


def test_a_line_that_failed_before_is_skipped_by_its_line_number_even_if_now_valid(model, tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, error_record("x", 1, "prompt longer than the context"))
    added, state = rerun(model, out, input_lines(prompt("x"), prompt("y")))
    assert [r["id"] for r in added] == ["y"]
    assert (state.skipped, state.failed_before) == (1, 1)


def test_lines_that_are_not_requests_are_answered_with_errors_on_resume(model, tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, error_record(None, 1, "not valid JSON"), error_record(None, 2, "not a JSON object"))
    lines = input_lines("{broken", "[1, 2]", "[3]", '"text"', prompt("ok"))
    added, state = rerun(model, out, lines)
    assert sorted(r["line"] for r in added if "error" in r) == [3, 4]
    assert [r["id"] for r in added if "text" in r] == ["ok"]
    assert (state.skipped, state.failed_before, state.failed) == (2, 2, 4)


def test_a_complete_output_runs_nothing_and_changes_nothing(model, tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"), record("b"))
    before = out.read_bytes()
    added, state = rerun(model, out, input_lines(prompt("a"), prompt("b")))
    assert added == [] and out.read_bytes() == before
    assert (state.total, state.skipped, state.finished) == (0, 2, 0)


def test_progress_is_reported_for_every_finished_line(model, tmp_path):
    seen: list[tuple[int, int]] = []
    writer = jobs.ResultWriter(tmp_path / "out.jsonl")
    try:
        jobs.run_batch(
            model,
            input_lines(prompt("a"), "not json", prompt("b")),
            writer,
            n_parallel=2,
            n_ctx_seq=64,
            defaults=jobs.BatchDefaults(max_tokens=2),
            n_threads=1,
            progress=lambda s: seen.append((s.done, s.errors)),
        )
    finally:
        writer.close()
    assert seen[0] == (0, 0) and seen[-1] == (2, 1)
    assert (0, 1) in seen  # the bad line was reported as it was rejected, before the replies


# -- reading the input -------------------------------------------------------------------------------


def test_text_input_with_undecodable_bytes_gives_that_line_an_error():
    """stdin read as text keeps bytes that are not UTF-8 as surrogate escapes; only that line fails."""
    text = '{"id": 1, "prompt": "ok"}\n{"id": 2, "prompt": "caf\udce9"}\n'
    lines = jobs.read_lines(text)
    assert [n for n, _ in lines] == [1, 2]
    assert jobs.parse_line(lines[0][1], 1).id == 1
    with pytest.raises(jobs.LineError, match="not UTF-8 text"):
        jobs.parse_line(lines[1][1], 2)


def test_a_byte_order_mark_before_the_first_line_is_ignored():
    lines = jobs.read_lines(b'\xef\xbb\xbf{"id": 1, "prompt": "a"}\r\n')
    assert lines == [(1, '{"id": 1, "prompt": "a"}')]
    assert jobs.read_lines('\ufeff{"id": 1, "prompt": "a"}\n') == lines


# -- what ResultWriter reads back --------------------------------------------------------------------


def test_blank_lines_in_the_output_are_tolerated(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(json.dumps(record("a")).encode() + b"\n\n  \n" + json.dumps(error_record(2, 4)).encode() + b"\n")
    writer = jobs.ResultWriter(out)
    writer.close()
    assert writer.done_ids == {'"a"'} and writer.failed_lines == {4}


@pytest.mark.parametrize(
    "bad",
    [
        {"text": "no id"},
        {"id": 1, "error": "a line number that is not one", "line": "3"},
        {"id": 1, "error": "no line number"},
        {"id": 1, "finish_reason": "stop"},  # neither text nor error
    ],
)
def test_a_line_that_is_almost_a_record_is_refused_and_named(tmp_path, bad):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"), bad)
    before = out.read_bytes()
    with pytest.raises(UsageError, match="line 2 is not a batch record") as err:
        jobs.ResultWriter(out)
    assert err.value.hint == "write the output to a new file"
    assert out.read_bytes() == before


def test_a_torn_last_line_is_cut_and_the_next_record_follows_the_kept_ones(tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"), tail=b'{"id": "b", "te')
    writer = jobs.ResultWriter(out)
    writer.write(record("b"))
    writer.close()
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b"]


def test_records_are_appended_whole_in_utf8_after_what_is_there(tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"))
    writer = jobs.ResultWriter(out)
    writer.write(record("é", text="café ☕"))
    writer.close()
    data = out.read_bytes()
    assert data.endswith(
        '"café ☕"'.encode() + b', "finish_reason": "stop", "prompt_tokens": 1, "completion_tokens": 1, "timing": {}}\n'
    )
    assert [json.loads(line)["id"] for line in data.decode().splitlines()] == ["a", "é"]
    assert out.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_a_new_output_file_is_created_readable_by_others_not_executable(tmp_path):
    out = tmp_path / "new.jsonl"
    jobs.ResultWriter(out).close()
    assert out.is_file() and out.read_bytes() == b""
    assert out.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_an_output_over_a_megabyte_is_read_back_whole(tmp_path):
    out = tmp_path / "out.jsonl"
    ids = [f"{i:04d}-" + "x" * 990 for i in range(1500)]  # about 1.6 MB, read in more than one piece
    write_output(out, *(record(i) for i in ids))
    data = out.read_bytes()
    start = data.rfind(b'"id": "', 0, 1 << 20) + len(b'"id": "')
    assert start < 1 << 20 < start + len(ids[0])  # the first MiB ends inside an id
    writer = jobs.ResultWriter(out)
    writer.close()
    assert writer.done_ids == {json.dumps(i) for i in ids}


def test_a_tail_that_is_not_a_record_is_refused_with_what_to_do(tmp_path):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"), tail=b"not a record")
    with pytest.raises(UsageError) as err:
        jobs.ResultWriter(out)
    assert str(err.value) == f"{out} does not end with a complete line: it is not the output of localllm batch"
    assert err.value.hint == "write the output to a new file"


def test_an_output_that_cannot_be_read_is_one_error_naming_it(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    write_output(out, record("a"))

    def broken(fd, n):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "read", broken)
    with pytest.raises(UsageError) as err:
        jobs.ResultWriter(out)
    assert str(err.value) == f"cannot read {out}: Input/output error"


def test_a_short_write_is_completed_into_one_whole_line(tmp_path):
    out = tmp_path / "out.jsonl"
    writer = jobs.ResultWriter(out)
    real_write = os.write
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))  # 7 bytes at a time
        writer.write(record("a", text="a longer reply than seven bytes"))
    writer.close()
    assert json.loads(out.read_text()) == record("a", text="a longer reply than seven bytes")


def test_a_full_disk_says_what_is_kept_and_what_to_do(tmp_path):
    out = tmp_path / "out.jsonl"
    writer = jobs.ResultWriter(out)
    writer.write(record("a"))

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", full)
        with pytest.raises(OutputError) as err:
            writer.write(record("b"))
    writer.close()
    assert str(err.value) == f"cannot write {out}: No space left on device"
    assert err.value.hint == "the results written so far are kept; free space and run the same command"
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a"]


def test_a_second_close_is_harmless_and_frees_the_file(tmp_path):
    out = tmp_path / "out.jsonl"
    writer = jobs.ResultWriter(out)
    writer.close()
    writer.close()
    os.fstat(1)  # no other file (stdout) was closed by the second close
    jobs.ResultWriter(out).close()


def test_an_output_in_a_missing_folder_is_one_error_naming_it(tmp_path):
    out = tmp_path / "no such folder" / "out.jsonl"
    with pytest.raises(UsageError) as err:
        jobs.ResultWriter(out)
    assert str(err.value) == f"cannot write {out}: No such file or directory"


def test_a_pipe_as_output_file_says_to_use_stdout(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(UsageError) as err:
            jobs.ResultWriter(fifo)
    finally:
        os.close(reader)
    assert str(err.value) == f"cannot write {fifo}: not a regular file" and err.value.hint == "use -o - for a pipe"


def test_a_second_batch_on_the_same_output_says_what_to_do(tmp_path):
    out = tmp_path / "out.jsonl"
    first = jobs.ResultWriter(out)
    try:
        with pytest.raises(UsageError) as err:
            jobs.ResultWriter(out)
    finally:
        first.close()
    assert str(err.value) == f"{out} is being written by another localllm batch"
    assert err.value.hint == "wait for it to finish, or write to another file"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
