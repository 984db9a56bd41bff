"""Threads that fit the machine as it is (issue 28): the default counts follow the free cores, the
tuner backs off when tokens/s collapses, and --threads forces a number.

The load is simulated (a load source saying how many cores other programs want) and so are the
decode times the tuner rates; the last tests run the real SmolLM2 model."""

from __future__ import annotations

import itertools

import pytest

from localllm import runtime
from localllm.runtime.threads import ThreadPolicy, ThreadTuner, busy_cores, free_threads


def policy(cores: int, busy: float) -> ThreadPolicy:
    return ThreadPolicy(cores=cores, load=lambda: busy)


@pytest.mark.parametrize(
    ("cores", "busy", "threads"),
    [(2, 0, 2), (2, 1, 1), (2, 2, 1), (8, 0, 8), (8, 1, 7), (8, 2, 6), (2, 0.3, 2), (8, 20, 1)],
)
def test_the_default_counts_are_the_free_cores(cores, busy, threads):
    p = policy(cores, busy)
    assert p.generation_threads() == threads
    assert p.prompt_threads() == threads


def test_a_short_probe_averages_its_samples():
    readings = itertools.cycle([2.0, 1.0])  # a busy program runnable half the time, another always
    p = ThreadPolicy(cores=4, load=lambda: next(readings), samples=4)
    assert p.busy() == 1.5
    assert p.generation_threads() == 3  # 4 - 1.5, rounded to the nearest (half up)


def test_the_real_probe_does_not_count_this_process():
    # This process reads the load while it runs: its own runnable thread is not someone else's.
    assert busy_cores() >= 0
    assert free_threads(2, busy_cores()) in (1, 2)


class Machine:
    """A simulated machine: the load other programs put on it now, and what a decode of one token
    takes at each thread count."""

    def __init__(self, cores: int, busy: float, seconds: dict[int, float]) -> None:
        self.busy = busy
        self.seconds = seconds
        self.applied: list[int] = []
        self.policy = ThreadPolicy(cores=cores, load=lambda: self.busy)

    def tuner(self, start: int) -> ThreadTuner:
        return ThreadTuner(self.policy, self.applied.append, start=start)

    def decode(self, tuner: ThreadTuner, tokens: int) -> None:
        for _ in range(tokens):
            tuner.tick(1, self.seconds[tuner.threads])


def test_a_steady_machine_keeps_its_count():
    machine = Machine(2, 0, {1: 0.01, 2: 0.006})
    tuner = machine.tuner(2)
    machine.decode(tuner, 2000)
    assert tuner.threads == 2 and machine.applied == []


def test_a_collapse_the_load_does_not_show_steps_down():
    # The rate at 2 threads falls to a fifth (another VM took a core: nothing runnable here shows it).
    machine = Machine(2, 0, {1: 0.01, 2: 0.006})
    tuner = machine.tuner(2)
    machine.decode(tuner, 200)
    machine.seconds[2] = 0.03
    machine.decode(tuner, 100)
    assert tuner.threads == 1 and machine.applied[0] == 1


def test_a_program_that_runs_for_a_moment_changes_nothing():
    machine = Machine(2, 0, {1: 0.01, 2: 0.006})
    tuner = machine.tuner(2)
    machine.decode(tuner, 200)
    tuner.restart()
    machine.busy, machine.seconds[2] = 1, 0.03  # one window's worth: 0.27 s, a fifth of the rate
    machine.decode(tuner, 9)
    machine.busy, machine.seconds[2] = 0, 0.006
    machine.decode(tuner, 200)
    assert machine.applied == []


def test_a_busy_machine_steps_down_and_comes_back_when_the_load_drops():
    machine = Machine(4, 0, {1: 0.04, 2: 0.02, 3: 0.014, 4: 0.011})
    tuner = machine.tuner(4)
    machine.decode(tuner, 200)
    machine.busy = 2  # two busy programs start
    machine.decode(tuner, 100)
    assert tuner.threads == 2
    stepped_down = len(machine.applied)
    machine.busy = 0  # they end: one step up at a time, each kept because it is faster
    machine.decode(tuner, 400)
    assert tuner.threads == 4
    assert machine.applied[stepped_down:] == [3, 4]


def test_a_step_up_that_is_slower_is_undone_and_not_retried_at_once():
    # The probe sees a free core, but 2 threads decode slower than 1 here (a core shared with
    # something the probe cannot see): the tuner goes back, and waits longer before each new try.
    machine = Machine(2, 0, {1: 0.01, 2: 0.02})
    tuner = machine.tuner(1)
    machine.decode(tuner, 100)  # 1 s of decoding: one try
    assert machine.applied[:2] == [2, 1]
    machine.decode(tuner, 2000)  # 20 s more: a few more tries, spaced out
    tries = machine.applied.count(2)
    assert 2 <= tries <= 5
    assert tuner.threads == 1


def test_a_reply_slowing_down_as_its_context_grows_is_no_collapse():
    machine = Machine(2, 0, {1: 0.02, 2: 0.01})
    tuner = machine.tuner(2)
    for _ in range(100):  # 0.25 s windows, each 1% slower than the one before: 63% slower in all
        machine.decode(tuner, 25)
        machine.seconds[2] *= 1.01
    assert machine.applied == []


def test_time_outside_decodes_does_not_count():
    # A consumer pausing between tokens, or a server waiting for requests, never reaches the
    # tuner: it rates the decode seconds it is told.
    machine = Machine(2, 0, {1: 0.01, 2: 0.006})
    tuner = machine.tuner(2)
    machine.decode(tuner, 100)
    tuner.restart()
    machine.decode(tuner, 100)
    assert machine.applied == []


# -- the real model -------------------------------------------------------------------------------

SAMPLING = runtime.SamplingOptions(temperature=0, max_tokens=48, ignore_eos=True)
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


def test_the_default_counts_follow_the_simulated_load(smollm2_path):
    for busy, threads in ((0, 2), (1, 1), (2, 1)):
        with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256), thread_policy=policy(2, busy)) as model:
            assert (model.n_threads, model.n_threads_batch) == (threads, threads)
            assert model.load_report.threads == {
                "n_threads": threads,
                "n_threads_batch": threads,
                "threads_forced": False,
            }
            assert "n_threads" not in model.load_report.settings  # a saved KV cache does not depend on it
            generation = model.chat(PROMPT, SAMPLING)
            generation.read()
            # (the tuner may still step down if this busy test machine collapses the real rate)
            assert generation.stats.threads == model.n_threads <= threads
            assert generation.stats.threads_batch == threads


def test_threads_forces_both_counts_whatever_the_load(smollm2_path):
    options = runtime.LoadOptions(n_ctx=256, n_threads=1)
    with runtime.Model(smollm2_path, options, thread_policy=policy(2, 0)) as model:
        assert model.threads_forced and model.thread_tuner is None
        assert (model.n_threads, model.n_threads_batch) == (1, 1)
        assert model.load_report.threads["threads_forced"] is True
        generation = model.chat(PROMPT, SAMPLING)
        generation.read()
        assert (generation.stats.threads, generation.stats.threads_batch) == (1, 1)
        with runtime.BatchSession(model, 2, 256) as session:
            assert session.thread_tuner is None and session.threads == 1


def flipping_policy() -> ThreadPolicy:
    """A machine whose other programs come and go every few samples, rated in tiny windows, so
    the thread count changes many times within one reply."""
    calls = itertools.count()
    return ThreadPolicy(cores=2, load=lambda: 2.0 if next(calls) // 3 % 2 else 0.0, window_s=0.002, sample_s=0)


def test_greedy_output_is_the_same_when_the_count_changes_mid_reply(smollm2_path):
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256, n_threads=1)) as fixed:
        expected = fixed.chat(PROMPT, SAMPLING).read()
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256), thread_policy=flipping_policy()) as model:
        tuner = model.thread_tuner
        assert tuner is not None
        assert model.chat(PROMPT, SAMPLING).read() == expected
        assert tuner.changes >= 2


def test_greedy_output_of_a_batch_is_the_same_when_the_count_changes(smollm2_path):
    def requests(model):
        prompts = [[{"role": "user", "content": f"Tell me about {topic}."}] for topic in ("the sea", "bread")]
        return [runtime.BatchRequest(i, model.chat_tokens(p), SAMPLING) for i, p in enumerate(prompts)]

    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256, n_threads=1)) as fixed:
        with runtime.BatchSession(fixed, 2, 256) as session:
            expected = {r.key: r.text for r in session.run(requests(fixed))}
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256), thread_policy=flipping_policy()) as model:
        with runtime.BatchSession(model, 2, 256) as session:
            tuner = session.thread_tuner
            assert tuner is not None
            assert {r.key: r.text for r in session.run(requests(model))} == expected
            assert tuner.changes >= 2


def test_a_reply_starts_with_the_cores_free_now(smollm2_path):
    # Loaded on a free machine; two busy programs start before the next reply.
    load = {"busy": 0.0}
    thread_policy = ThreadPolicy(cores=2, load=lambda: load["busy"])
    with runtime.Model(smollm2_path, runtime.LoadOptions(n_ctx=256), thread_policy=thread_policy) as model:
        assert (model.n_threads, model.n_threads_batch) == (2, 2)
        load["busy"] = 2.0
        generation = model.chat(PROMPT, SAMPLING)
        generation.read()
        assert (generation.stats.threads, generation.stats.threads_batch) == (1, 1)
