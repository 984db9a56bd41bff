"""`batch --parallel` by default: what the free memory holds, at most one per input line and
llama.cpp's limit, with the reason said (issue 13, item 4). Simulated machines, the real SmolLM2."""

from __future__ import annotations

import json

from localllm.fit import hardware
from localllm.fit.plan import MAX_PARALLEL, LoadChoice, plan_parallel
from localllm.gguf import header as ggufmeta

GiB = 1 << 30


def cpu_machine(ram: int):
    return hardware.with_overrides(hardware.profile("laptop-8gb"), ram=ram, vram=0)


def gpu_machine(vram: int):
    return hardware.with_overrides(hardware.profile("rtx-24gb-64gb-ram"), vram=vram)


def test_more_memory_decodes_more_sequences_at_once(smollm2_path):
    header = ggufmeta.read_header(smollm2_path)
    on_cpu = LoadChoice(4096, 0)
    counts = [plan_parallel(header, cpu_machine(ram), 4096, on_cpu).n for ram in (2 * GiB, 4 * GiB, 8 * GiB)]
    assert 8 < counts[0] < counts[1] < counts[2]  # no fixed cap of 8 any more
    # On a GPU it is the GPU memory that counts, with all layers there.
    on_gpu = LoadChoice(4096, -1)
    small, big = (plan_parallel(header, gpu_machine(v), 4096, on_gpu).n for v in (2 * GiB, 6 * GiB))
    assert 1 < small < big
    # Longer sequences: fewer of them.
    assert plan_parallel(header, cpu_machine(4 * GiB), 8192, on_cpu).n < counts[1]


def test_the_reason_says_what_limits_it(smollm2_path):
    header = ggufmeta.read_header(smollm2_path)
    memory = plan_parallel(header, cpu_machine(2 * GiB), 4096, LoadChoice(4096, 0))
    n = memory.n
    assert memory.reason.startswith(f"the memory holds {n}: {n + 1} sequences of 4,096 tokens would need ")
    assert memory.reason.endswith(" RAM (the planner keeps 20% free)")
    gpu = plan_parallel(header, gpu_machine(2 * GiB), 4096, LoadChoice(4096, -1))
    assert gpu.reason.endswith(" GPU memory (the planner keeps 20% free)")
    # The input lines cap it, and llama.cpp's limit of sequences per context caps everything.
    lines = plan_parallel(header, cpu_machine(8 * GiB), 4096, LoadChoice(4096, 0), lines=3)
    assert (lines.n, lines.reason) == (3, "one per input line")
    huge = plan_parallel(header, cpu_machine(1 << 40), 4096, LoadChoice(4096, 0), lines=100_000)
    assert huge.n == MAX_PARALLEL == 256 and "llama.cpp's limit of 256" in huge.reason


def test_batch_runs_one_sequence_per_line_when_memory_allows(cli, smollm2_path, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"Say {i}.", "max_tokens": 2}) + "\n" for i in range(3)))
    result = cli("batch", "-m", str(smollm2_path), "--threads", "1", "--ctx", "256", str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 lines, 3 at a time (one per input line), 256 tokens of context each" in result.stderr
    assert len(out.read_text().splitlines()) == 3
    given = cli("batch", "-m", str(smollm2_path), "--threads", "1", "--ctx", "256", "-p", "2", str(src),
                "-o", str(tmp_path / "again.jsonl"))  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert "3 lines, 2 at a time, 256 tokens" in given.stderr


def test_batch_loads_with_the_planners_gpu_layers(smollm2_path):
    """Item 3 still holds: batch offloads as run would unless --gpu-layers says otherwise, and the
    sequences at once are planned for that placement (GPU memory, not RAM)."""
    from localllm import app

    big_gpu = gpu_machine(24 * GiB)
    with app.open_for_batch(str(smollm2_path), n_ctx_seq=4096, n_threads=1, lines=1000, hardware=big_gpu) as job:
        assert job.opened.load_report.settings["n_gpu_layers"] == -1
        header = ggufmeta.read_header(smollm2_path)
        assert job.n_parallel == plan_parallel(header, big_gpu, 4096, LoadChoice(4096, -1), 1000).n
        assert job.n_parallel > 8 and job.parallel_reason
    with app.open_for_batch(str(smollm2_path), n_ctx_seq=4096, n_gpu_layers=0, n_threads=1, lines=2,
                            hardware=big_gpu) as job:  # fmt: skip
        assert job.opened.load_report.settings["n_gpu_layers"] == 0
        assert (job.n_parallel, job.parallel_reason) == (2, "one per input line")


def test_gpu_layers_asked_of_a_machine_without_a_gpu_count_in_ram(smollm2_path):
    header = ggufmeta.read_header(smollm2_path)
    ram = cpu_machine(4 * GiB)
    asked = plan_parallel(header, ram, 4096, LoadChoice(4096, -1))
    assert asked == plan_parallel(header, ram, 4096, LoadChoice(4096, 0)) and asked.n > 8
