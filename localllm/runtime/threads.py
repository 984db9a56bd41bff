"""How many CPU threads llama.cpp computes with, chosen for the machine as it is (issue 28).

llama.cpp's worker threads spin at each barrier of a graph: when one of them is descheduled
because another program wants the core, the others wait for it. On a busy machine the physical
core count is then the worst choice (a 2-core machine with one busy program: 27 tok/s with 2
threads against 108 with 1). So the default count is the physical cores that are free:

- :class:`ThreadPolicy` counts the cores other programs want (:func:`busy_cores`: the runnable
  threads of the whole machine less this process's own, sampled a few times) and gives the counts
  for generation and for prompt evaluation, chosen apart: both at load, prompt evaluation's again
  before each reply (a short probe), generation's lowered by that probe and otherwise left to the
  tuner, which sees how fast it really decodes;
- :class:`ThreadTuner` watches the decoding rate of a reply and steps the generation count down
  when tokens/s collapses (below half the best seen at that count, or the probe sees fewer free
  cores, two windows in a row), and back up when the probe sees free cores again, keeping the higher count only if it is
  really faster.

``--threads N`` bypasses both: N threads for everything, never changed. Nothing here imports
llama.cpp: the tuner is told how to apply a count (a ``LlamaContext.set_n_threads`` call), and
its load source and the decode times it sees are plain values, so tests simulate a busy machine.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .options import default_threads

LoadSource = Callable[[], float]  # how many cores other programs want now (a fraction is fine)


def _runnable_threads_of_this_process() -> int:
    running = 0
    for path in glob.glob("/proc/self/task/*/stat"):
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        end = text.rfind(b")")  # the command name may hold spaces and parentheses
        if end >= 0 and text[end + 2 : end + 3] == b"R":
            running += 1
    return running


_last_own: tuple[float, float] | None = None  # (wall clock, this process's CPU seconds), elsewhere


def _busy_from_loadavg() -> float:
    """Where there is no /proc: the 1-minute load average less what this process used since the
    last probe (a slow, rough measure; the tuner's rate watch catches what it misses)."""
    global _last_own
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows: no load average; take the cores as free
        return 0.0
    now, times = time.monotonic(), os.times()
    cpu = times.user + times.system
    own = 0.0
    if _last_own is not None and now > _last_own[0]:
        own = (cpu - _last_own[1]) / (now - _last_own[0])
    _last_own = (now, cpu)
    return max(0.0, load - own)


def busy_cores() -> float:
    """How many threads of other programs are runnable now: the machine's runnable scheduling
    entities (/proc/loadavg's fourth field, counted at this instant, not averaged over a minute)
    less this process's own runnable threads (the one reading included)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return _busy_from_loadavg()
    return float(max(0, running - _runnable_threads_of_this_process()))


def probe(source: LoadSource = busy_cores, samples: int = 5, interval_s: float = 0.002) -> float:
    """A short probe: the mean of ``samples`` readings of ``source``, ``interval_s`` apart
    (about 10 ms by default)."""
    total = 0.0
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        total += source()
    return total / samples


def free_threads(cores: int, busy: float) -> int:
    """The threads that fit ``cores`` physical cores when other programs want ``busy`` of them:
    the free cores, rounded to the nearest, at least 1."""
    return max(1, min(cores, int(cores - busy + 0.5)))


@dataclass
class ThreadPolicy:
    """The default thread counts for this machine: ``cores`` usable physical cores (default: as
    llama.cpp's tools count them), less what ``load`` says other programs use; and how its
    tuners watch the decoding rate (``window_s`` seconds of decoding a window, the load sampled
    every ``sample_s``, see :class:`ThreadTuner`)."""

    cores: int = field(default_factory=default_threads)
    load: LoadSource = busy_cores
    samples: int = 5
    window_s: float = 0.25
    sample_s: float = 0.05

    def busy(self) -> float:
        return probe(self.load, self.samples)

    def generation_threads(self, busy: float | None = None) -> int:
        """Threads for generation (one token per decode); ``busy`` measured already, or probed now."""
        return free_threads(self.cores, self.busy() if busy is None else busy)

    def prompt_threads(self, busy: float | None = None) -> int:
        """Threads for prompt evaluation (many tokens per decode), from a probe of its own. On this
        2-core machine a busy program costs prompt evaluation as much as generation (190-235 tok/s
        with 1 thread, 57-139 with 2), so it too takes the free cores."""
        return free_threads(self.cores, self.busy() if busy is None else busy)

    def tuner(self, apply: Callable[[int], None], start: int) -> ThreadTuner:
        """A tuner of the generation count, from ``start`` threads, with this policy's settings."""
        return ThreadTuner(self, apply, start=start, window_s=self.window_s, sample_s=self.sample_s)


class ThreadTuner:
    """Adjusts the generation thread count while replies decode.

    The caller reports each decode with :meth:`tick` (tokens made and the seconds the decode took,
    so time spent waiting for a consumer or a request never counts). Every ``window_s`` seconds of
    decoding it rates the window: below ``collapse`` times the best rate seen at this count (for
    the same ``shape``: a batch's number of sequences), or fewer free cores by the load samples,
    two windows in a row, steps the count down (the best fades by ``fade`` a window, so a reply slowing down as its
    context grows is no collapse); more free cores steps it up, and a step up that decodes slower
    than the count before it is undone. A count left is not tried again for ``retry_s`` seconds of
    decoding, doubled each time it is left.
    ``apply(n)`` makes llama.cpp use ``n`` threads from the next decode on.
    """

    def __init__(
        self,
        policy: ThreadPolicy,
        apply: Callable[[int], None],
        *,
        start: int,
        window_s: float = 0.25,
        collapse: float = 0.5,
        sample_s: float = 0.05,
        retry_s: float = 2.0,
        fade: float = 0.97,
    ) -> None:
        self.policy = policy
        self.apply = apply
        self.threads = start
        self.window_s, self.collapse, self.sample_s = window_s, collapse, sample_s
        self.retry_s, self.fade = retry_s, fade
        self.best: dict[tuple[int, object], float] = {}  # (threads, shape) -> best window rate
        self.changes = 0  # how many times the count changed
        self._shape: object = None
        self._tokens = 0
        self._seconds = 0.0
        self._since_sample = sample_s  # sample the load at the first tick
        self._busy: list[float] = []
        self._clock = 0.0  # seconds of decoding seen, the tuner's own time
        self._trial: tuple[int, float] | None = None  # after a step up: (count before, its rate)
        self._no_retry_until: dict[int, float] = {}  # count -> decoding time before it is tried again
        self._retry_wait: dict[int, float] = {}
        self._strikes = 0  # windows in a row that asked for fewer threads

    def restart(self) -> None:
        """Start a new window (a new reply: the time between two is no decoding)."""
        self._tokens, self._seconds, self._busy = 0, 0.0, []

    def at_most(self, n: int) -> None:
        """Use no more than ``n`` threads from now on (a probe found fewer free cores)."""
        if n < self.threads:
            self._trial = None
            self._set(max(1, n))
            self.restart()

    def tick(self, tokens: int, seconds: float, shape: object = None) -> None:
        """``tokens`` made by one decode of ``seconds``; ``shape``: what the rate depends on
        besides the thread count (a window holds one shape)."""
        if shape != self._shape:
            self._shape = shape
            self.restart()
        self._tokens += tokens
        self._seconds += seconds
        self._clock += seconds
        self._since_sample += seconds
        if self._since_sample >= self.sample_s:
            self._since_sample = 0.0
            self._busy.append(self.policy.load())
        if self._seconds >= self.window_s:
            self._decide(self._tokens / self._seconds if self._seconds > 0 else 0.0)
            self.restart()

    def _decide(self, rate: float) -> None:
        n, shape = self.threads, self._shape
        key = (n, shape)
        # The best fades (a reply slows down as its context grows): only a sudden drop collapses.
        best = max(self.best.get(key, 0.0) * self.fade, rate)
        self.best[key] = best
        trial, self._trial = self._trial, None
        if trial is not None and rate < trial[1]:  # the step up was not faster: back, and wait
            self._hold_off(n)
            self._set(trial[0])
            return
        busy = sum(self._busy) / len(self._busy) if self._busy else 0.0
        fits = free_threads(self.policy.cores, busy)
        collapsed = rate < self.collapse * best
        # Down after two windows in a row, not one: a program that runs for a moment is no load.
        self._strikes = self._strikes + 1 if n > 1 and (fits < n or collapsed) else 0
        if self._strikes == 1:
            return
        self._strikes = 0
        if n > 1 and fits < n:
            self._set(fits)
        elif n > 1 and collapsed:
            self._hold_off(n)
            self.best.pop(key, None)
            self._set(n - 1)
        elif fits > n and self._clock >= self._no_retry_until.get(n + 1, 0.0):
            self._trial = (n, rate)
            self._set(n + 1)

    def _hold_off(self, n: int) -> None:
        """Try ``n`` threads again only after a while, twice as long as the last time."""
        wait = self._retry_wait.get(n, self.retry_s / 2) * 2
        self._retry_wait[n] = wait
        self._no_retry_until[n] = self._clock + wait

    def _set(self, n: int) -> None:
        if n != self.threads:
            self.threads = n
            self.changes += 1
            self.apply(n)
