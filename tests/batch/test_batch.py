"""Batch completion (`localllm batch` and localllm.batch.jobs) with the real SmolLM2 model."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.signals import default_sigint

from localllm.batch import jobs as batch
from localllm.gguf import header as ggufmeta

THREADS = "1"  # the test machine is small and shared; one thread keeps timings steady


def lines_of(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def read_records(path: Path) -> list[dict]:
    data = path.read_text()
    assert data == "" or data.endswith("\n"), "the output ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def batch_cli(cli, model: Path, *args: str, input: str | None = None):
    return cli("batch", "-m", str(model), "--threads", THREADS, "--ctx", "512", *args, input=input)


@pytest.fixture(scope="module")
def model(smollm2_path):
    from localllm import runtime

    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1)) as m:
        yield m


def run_core(model, records, *, n_parallel=2, defaults=None, n_ctx_seq=512, **kwargs):
    defaults = defaults or batch.BatchDefaults(max_tokens=12)
    out = io.StringIO()
    state = batch.run_batch(
        model,
        batch.read_lines(lines_of(*records)),
        batch.StreamWriter(out),
        n_parallel=n_parallel,
        n_ctx_seq=n_ctx_seq,
        defaults=defaults,
        n_threads=1,
        **kwargs,
    )
    return [json.loads(line) for line in out.getvalue().splitlines()], state


# -- the command ----------------------------------------------------------------------------


def test_prompts_and_messages_are_answered(cli, smollm2_path, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        lines_of(
            {
                "id": "capital",
                "prompt": "What is the capital of France? Answer in one word.",
                "temperature": 0,
                "max_tokens": 16,
            },
            {
                "id": 7,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Name a primary color."},
                ],
                "max_tokens": 8,
            },
        )
    )
    result = batch_cli(cli, smollm2_path, str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr
    records = {r["id"]: r for r in read_records(out)}
    assert set(records) == {"capital", 7}
    capital = records["capital"]
    assert capital["text"].strip()
    for record in records.values():
        assert record["finish_reason"] in ("stop", "length")
        assert record["prompt_tokens"] > 10
        assert 1 <= record["completion_tokens"] <= 16
        assert set(record["timing"]) >= {"prompt_s", "generation_s"}
    assert records[7]["completion_tokens"] <= 8
    assert "batch finished: 2 done, 0 errors, 0 skipped" in result.stderr


def test_bad_lines_become_error_records_and_the_batch_goes_on(cli, smollm2_path, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        lines_of(
            "{not json",
            {"prompt": "no id here"},
            {"id": "a", "prompt": "Say hi.", "max_tokens": 4},
            {"id": "b"},
            {"id": "a", "prompt": "the same id again"},
            {"id": "c", "prompt": "word " * 600},
            {"id": "d", "prompt": "Say bye.", "max_tokens": 0},
            {"id": "e", "prompt": "Say yes.", "max_tokens": 4},
            {"id": "f", "prompt": "Say no.", "json_schema": {"type": "wat"}},
        )
    )
    result = batch_cli(cli, smollm2_path, str(src), "-o", str(out))
    assert result.returncode == 3, result.stderr  # lines failed: README, batch
    assert "7 of 9 lines failed" in result.stderr
    records = read_records(out)
    answered = sorted(r["id"] for r in records if "text" in r)
    errors = {r["line"]: r for r in records if "error" in r}
    assert answered == ["a", "e"]
    assert set(errors) == {1, 2, 4, 5, 6, 7, 9}
    assert "not valid JSON" in errors[1]["error"]
    assert '"id"' in errors[2]["error"]
    assert '"prompt"' in errors[4]["error"] and errors[4]["id"] == "b"
    assert "duplicate id" in errors[5]["error"]
    assert "context" in errors[6]["error"] and errors[6]["id"] == "c"
    assert "max_tokens" in errors[7]["error"]
    assert "JSON schema" in errors[9]["error"] and errors[9]["id"] == "f"
    assert "2 done, 7 errors" in result.stderr


def test_rerun_skips_what_the_output_holds(cli, smollm2_path, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        lines_of(
            {"id": 1, "prompt": "Say one.", "max_tokens": 4},
            "broken",
            {"id": 2, "prompt": "Say two.", "max_tokens": 4},
        )
    )
    done_before = {
        "id": 1,
        "text": "(from an earlier run)",
        "finish_reason": "stop",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "timing": {},
    }
    out.write_text(json.dumps(done_before) + "\n")
    first = batch_cli(cli, smollm2_path, str(src), "-o", str(out))
    assert first.returncode == 3, first.stderr
    records = read_records(out)
    assert records[0] == done_before
    assert sorted(str(r.get("id")) for r in records) == ["1", "2", "None"]
    assert "1 done, 1 errors, 1 skipped" in first.stderr

    again = batch_cli(cli, smollm2_path, str(src), "-o", str(out))
    assert again.returncode == 3, again.stderr  # the output still holds the broken line's error
    assert read_records(out) == records
    assert "0 done, 0 errors, 3 skipped" in again.stderr


def test_sigkill_leaves_whole_lines_and_a_rerun_completes(smollm2_path, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    # Far more work than the first three lines take (each line generates 48 tokens, end of text
    # ignored), so the kill lands mid-batch however fast or loaded the machine is.
    ids = [f"r{i}" for i in range(40)]
    src.write_text(
        lines_of(
            *(
                {"id": i, "prompt": f"Count from 1 to {n + 3}.", "max_tokens": 48, "temperature": 0, "ignore_eos": True}
                for n, i in enumerate(ids)
            )
        )
    )
    command = [
        sys.executable,
        "-m",
        "localllm",
        "batch",
        "-m",
        str(smollm2_path),
        str(src),
        "-o",
        str(out),
        "--threads",
        THREADS,
        "--ctx",
        "256",
        "--parallel",
        "2",
        "--quiet",
    ]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the batch finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    records = read_records(out)
    assert 3 <= len(records) < len(ids)
    assert len({r["id"] for r in records}) == len(records)

    # A crash elsewhere (a full disk, an older version) can leave a cut line; it is cut away.
    with open(out, "ab") as f:
        f.write(b'{"id": "r11", "text": "half a li')
    rerun = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    final = read_records(out)
    assert final[: len(records)] == records
    assert sorted(r["id"] for r in final) == sorted(ids)
    assert all("text" in r for r in final)


def test_ctrl_c_keeps_what_is_written_and_exits_130(smollm2_path, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        lines_of(*({"id": i, "prompt": "Tell me a long story.", "max_tokens": 40, "seed": i} for i in range(20)))
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localllm",
            "batch",
            "-m",
            str(smollm2_path),
            str(src),
            "-o",
            str(out),
            "--threads",
            THREADS,
            "--ctx",
            "256",
            "--parallel",
            "2",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,  # Ctrl-C reaches it even when the suite ignores SIGINT
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and out.read_bytes().count(b"\n") >= 1):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    records = read_records(out)
    assert 1 <= len(records) < 20
    assert "batch interrupted" in err and "run the same command to go on" in err


def test_a_batch_shares_its_lines_prefix_by_default_and_ctrl_c_still_stops_it(smollm2_path, tmp_path):
    """Lines sharing a long system prompt evaluate it once (the summary says how many tokens that
    saved). Each copy between sequences is logged by llama.cpp through a Python callback, where a
    KeyboardInterrupt is swallowed: test_ctrl_c_keeps_what_is_written_and_exits_130 fails when Ctrl-C
    raises instead of setting the batch's cancel event."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    system = "You answer questions about the harbour town's archive of maps, letters and photographs. " * 8
    src.write_text(
        lines_of(
            *(
                {
                    "id": i,
                    "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"Item {i}?"}],
                }
                | {"max_tokens": 40, "seed": i}
                for i in range(30)
            )
        )
    )
    command = [sys.executable, "-m", "localllm", "batch", "-m", str(smollm2_path), str(src), "-o", str(out)]
    command += ["--threads", THREADS, "--ctx", "512", "--parallel", "3"]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and out.read_bytes().count(b"\n") >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    records = read_records(out)
    assert 2 <= len(records) < 30
    assert "prompt tokens saved by shared prefixes" in err  # the prefix was shared
    assert "batch interrupted" in err and "run the same command to go on" in err


def test_stdin_and_stdout(cli, smollm2_path):
    result = batch_cli(
        cli,
        smollm2_path,
        "-",
        "-o",
        "-",
        "--quiet",
        input=lines_of({"id": "x", "prompt": "Say hi.", "max_tokens": 4}, "oops"),
    )
    assert result.returncode == 3, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(str(r["id"]) for r in records) == ["None", "x"]
    assert result.stderr == "localllm: error: 1 of 2 lines failed; their error records are in the output\n"


def test_structured_output_matches_the_schema(model):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "mood": {"enum": ["happy", "sad"]}},
        "required": ["name", "age", "mood"],
    }
    records, _ = run_core(
        model,
        [
            {"id": 1, "prompt": "Describe a person as JSON.", "json_schema": schema, "max_tokens": 60, "seed": 3},
            {
                "id": 2,
                "prompt": "Describe a cat as JSON.",
                "max_tokens": 60,
                "seed": 4,
                "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
            },
            {"id": 3, "prompt": "Any JSON object.", "max_tokens": 60, "response_format": {"type": "json_object"}},
        ],
        defaults=batch.BatchDefaults(max_tokens=60),
    )
    by_id = {r["id"]: r for r in records}
    for key in (1, 2):
        value = json.loads(by_id[key]["text"])
        assert isinstance(value["name"], str) and isinstance(value["age"], int)
        assert value["mood"] in ("happy", "sad")
    assert by_id[1]["finish_reason"] == by_id[2]["finish_reason"] == "stop"
    assert isinstance(json.loads(by_id[3]["text"]), dict)


def test_same_input_seeds_and_parallel_give_the_same_output(model):
    records = [
        {"id": i, "prompt": f"Write a sentence about the number {i}.", "seed": 100 + i, "temperature": 0.9}
        for i in range(5)
    ]
    first, _ = run_core(model, records, n_parallel=3)
    second, _ = run_core(model, records, n_parallel=3)
    strip = lambda rs: [(r["id"], r["text"], r["completion_tokens"]) for r in rs]  # noqa: E731
    assert strip(first) == strip(second)
    assert len({r["text"] for r in first}) > 1  # the seeds matter


def test_more_requests_than_sequences_run_several_at_once(model):
    n = 3
    records = [
        {"id": i, "prompt": f"List {i + 2} fruits.", "max_tokens": 10 + 3 * i, "temperature": 0, "ignore_eos": True}
        for i in range(8)
    ]
    results, state = run_core(model, records, n_parallel=n, defaults=batch.BatchDefaults(max_tokens=40))
    assert sorted(r["id"] for r in results) == list(range(8))
    assert state.done == 8
    assert all(r["completion_tokens"] == 10 + 3 * r["id"] for r in results)
    # Each sequence lives from admission to its last token; count how many overlap.
    spans = [
        (r["timing"]["wait_s"], r["timing"]["wait_s"] + r["timing"]["prompt_s"] + r["timing"]["generation_s"])
        for r in results
    ]
    most = max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)
    assert most == n
    # New ones were admitted as others finished, not after the first group was done.
    assert sorted(a for a, _ in spans)[n] < max(b for _, b in spans[:n])


def test_stop_strings_end_the_reply(model):
    records, _ = run_core(
        model,
        [
            {
                "id": "s",
                "prompt": "Count from 1 to 10, separated by commas.",
                "temperature": 0,
                "stop": ["4"],
                "max_tokens": 40,
            },
        ],
    )
    assert records[0]["finish_reason"] == "stop"
    assert "4" not in records[0]["text"] and "3" in records[0]["text"]


def test_default_parallel_is_what_the_planner_fits(smollm2_path):
    """batch --parallel defaults to the most sequences whose KV cache and buffers the memory planner
    fits with headroom (one memory model for every command), at most llama.cpp's limit."""
    from localllm.fit import estimate, hardware
    from localllm.fit.plan import HEADROOM, MAX_PARALLEL, max_parallel

    header = ggufmeta.read_header(smollm2_path)

    def machine(ram: int):
        return hardware.with_overrides(hardware.profile("laptop-8gb"), ram=ram, vram=0)

    def need(n: int) -> int:
        return estimate.estimate(header, estimate.Settings(n_ctx=4096 * n, n_seq=n)).cpu.total

    # RAM for exactly three sequences with the planner's headroom (the profile keeps 2 GiB for the OS).
    ram = int(need(3) / HEADROOM)
    budget_for_three = machine(ram)
    while budget_for_three.ram_budget * HEADROOM < need(3):
        ram += 1 << 20
        budget_for_three = machine(ram)
    assert max_parallel(header, budget_for_three, 4096, 0) == 3
    assert max_parallel(header, machine(64 << 20), 4096, 0) == 1  # never less than one
    assert max_parallel(header, machine(1 << 40), 4096, 0) == MAX_PARALLEL  # 256: llama.cpp's LLAMA_MAX_SEQ


def test_bench_json(cli, smollm2_path):
    result = cli(
        "bench",
        str(smollm2_path),
        "-r",
        "2",
        "-p",
        "64",
        "-n",
        "16",
        "--threads",
        THREADS,
        "--parallel",
        "1,2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    tests = {row["test"]: row for row in report["results"]}
    assert set(tests) == {"pp64", "tg16", "batched pp16+tg16 N=1", "batched pp16+tg16 N=2"}
    # Speeds are benchmarks' business (benchmarks/bench_batch.py): here, that each test measured something.
    assert all(row["tokens_per_s"] > 0 for row in report["results"])
    assert len(tests["tg16"]["samples"]) == 2 and tests["tg16"]["sd"] >= 0


def test_batch_rejects_bad_options(cli, smollm2_path, tmp_path):
    result = cli("batch", "-m", str(smollm2_path), str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "no such input file" in result.stderr
    result = cli("batch", "-m", str(smollm2_path), "-", "--parallel", "0", input="")
    assert result.returncode == 2 and "--parallel" in result.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("hello world\n")
    result = cli("batch", "-m", str(smollm2_path), "-", "-o", str(foreign), input=lines_of({"id": 1, "prompt": "x"}))
    assert result.returncode == 2 and "not the output of localllm batch" in result.stderr
    assert foreign.read_text() == "hello world\n"
    assert os.path.getsize(foreign) == 12


def test_progress_bar_and_summary_show_counts_speed_and_eta(capsys):
    from localllm.cli.batch import ProgressBar, summary_line

    state = batch.BatchProgress(total=10, done=3, errors=1, skipped=2, prompt_tokens=400, completion_tokens=120)
    state.wall_s = 4.0
    bar = ProgressBar(enabled=True)
    bar(state)
    bar.end()
    line = capsys.readouterr().err
    assert "4/10" in line and "30.0 tok/s" in line and "ETA 0:06" in line and "1 errors" in line
    assert summary_line(state) == (
        "batch finished: 3 done, 1 errors, 2 skipped (already in the output), "
        "400 prompt + 120 generated tokens in 4.0 s, 30.0 tok/s generated"
    )
    ProgressBar(enabled=False)(state)
    assert capsys.readouterr().err == ""


def test_cancel_stops_between_steps_and_frees_the_sequences(model):
    import threading

    from localllm import runtime

    cancel = threading.Event()
    prompt = model.tokenize(model.render_chat([{"role": "user", "content": "Tell a story."}]), add_special=False)
    requests = [
        runtime.BatchRequest(i, prompt, runtime.SamplingOptions(max_tokens=4 + 4 * i, ignore_eos=True, seed=i))
        for i in range(6)
    ]
    with runtime.BatchSession(model, 2, 256, n_threads=1) as session:
        finished = []
        for result in session.run(requests, cancel=cancel):
            finished.append(result.key)
            cancel.set()
        assert finished == [0]
        # The session is usable again: nothing of the cancelled run is left in its cache.
        again = list(session.run(requests[:2]))
        assert sorted(r.key for r in again) == [0, 1]
        assert [r.completion_tokens for r in sorted(again, key=lambda r: r.key)] == [4, 8]


def test_bench_uses_the_planned_gpu_layers_and_says_so(cli, smollm2_path, monkeypatch):
    """On a machine whose GPU holds the model, bench offloads as run would; --gpu-layers 0 forces
    the CPU. (This build has no GPU backend: llama.cpp keeps the layers on the CPU, but the
    planned setting is what is asked for and reported.)"""
    from localllm import app
    from localllm.fit import hardware

    big_gpu = hardware.with_overrides(hardware.profile("rtx-24gb-64gb-ram"), vram=24 << 30)
    monkeypatch.setattr(app.machine, "detect", lambda **_: big_gpu)
    with app.open_for_bench(str(smollm2_path), n_ctx=1024, n_threads=1) as opened:
        assert opened.load_report.settings["n_gpu_layers"] == -1
    with app.open_for_bench(str(smollm2_path), n_ctx=1024, n_gpu_layers=0, n_threads=1) as opened:
        assert opened.load_report.settings["n_gpu_layers"] == 0
    result = cli(
        "bench", str(smollm2_path), "-r", "1", "-p", "16", "-n", "4", "--parallel", "1", "--threads", "1", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gpu_layers"] == 0  # this machine has no GPU: the planner keeps the CPU


def test_a_stop_string_across_two_tokens_ends_the_reply(model):
    # Greedy, the reply's tokens are "The", " capital", " city", " of", " France", " is", " Paris",
    # ".": "ance is" begins in " France" and ends in " is" (tests/runtime/test_engine.py checks them).
    ask = {"id": "s", "prompt": "What is the capital city of France? Answer in one sentence.", "temperature": 0}
    records, _ = run_core(model, [{**ask, "max_tokens": 24}, {**ask, "id": "t", "stop": ["ance is"], "max_tokens": 24}])
    by_id = {r["id"]: r for r in records}
    assert by_id["s"]["text"] == "The capital city of France is Paris."
    assert by_id["t"]["finish_reason"] == "stop"
    assert by_id["t"]["text"] == "The capital city of Fr"


SYSTEM = (
    "You are a librarian in a small town. You answer questions about books, opening hours, and "
    "library cards. Keep answers short and friendly. The library opens at nine and closes at five, "
    "and a card is free for everyone who lives in the town or works there."
)


def test_lines_sharing_a_prefix_evaluate_it_once_and_answer_as_before(model):
    # Short replies: llama.cpp's CPU kernels round differently with the tokens in a batch, and a
    # prefix evaluated for another line can flip a near-tie in a long reply (as a resumed batch can).
    questions = ["When do you open?", "Is a card free?", "Can I borrow books?", "Do you close at five?"]
    questions += ["Who can get a card?", "Are you open today?", "Is there a reading room?"]
    records = [
        {
            "id": i,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
            "temperature": 0,
            "max_tokens": 5,
        }
        for i, q in enumerate(questions)
    ]
    alone, before = run_core(model, records, n_parallel=3, share_prefix=0)
    shared, after = run_core(model, records, n_parallel=3, share_prefix=batch.SHARE_PREFIX)
    strip = lambda rs: sorted((r["id"], r["text"], r["prompt_tokens"]) for r in rs)  # noqa: E731
    assert strip(shared) == strip(alone)
    assert before.shared_tokens == 0
    # Every line but the first copies the system prompt's tokens (more than 60 each).
    assert after.shared_tokens > 60 * (len(records) - 1)
    assert after.prompt_tokens == before.prompt_tokens

    from localllm.cli.batch import summary_line

    assert f"{after.shared_tokens} prompt tokens saved by shared prefixes" in summary_line(after)
