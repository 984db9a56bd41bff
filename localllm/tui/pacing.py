"""How often a streaming reply is drawn: as often as every 100 ms while drawing is cheap, less often
when it is not, so that the UI thread stays within a CPU budget however the reply is shaped.

Drawing a growing reply costs Textual a layout of the screen whenever the reply's height changes,
and a list or a table that is still being written is rebuilt at each update: a Markdown reply at
30 tokens/s took 23-29% of a core drawn 10 times a second. The pacer measures the UI thread's own
CPU time (:func:`time.thread_time`, not the model's threads) between two draws and stretches the
interval when that share is over budget, shrinking it again when drawing gets cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FASTEST = 0.1  # seconds: the shortest interval between two draws (10 a second)
SLOWEST = 1.0  # seconds: the longest, so that a reply never looks stalled
BUDGET = 0.05  # the share of one core the UI thread may use while a reply streams


@dataclass
class Pacer:
    """Decides, at each tick of a :data:`FASTEST` timer, whether the reply is drawn now."""

    fastest: float = FASTEST
    slowest: float = SLOWEST
    budget: float = BUDGET
    interval: float = field(init=False)
    _last: tuple[float, float] | None = field(init=False, default=None)  # (wall, thread CPU) at the last draw

    def __post_init__(self) -> None:
        self.interval = self.fastest

    def due(self, now: float) -> bool:
        """Whether the interval has passed since the last draw (always, before the first)."""
        # 5 ms of slack: a timer ticking every 100 ms wakes a little early as often as late
        return self._last is None or now - self._last[0] >= self.interval - 0.005

    def drew(self, now: float, cpu: float) -> None:
        """A draw happened at wall time ``now`` with the UI thread's CPU time at ``cpu``: the next
        interval follows the share of a core used since the last one."""
        if self._last is not None:
            wall, used = now - self._last[0], cpu - self._last[1]
            if wall > 0:
                wanted = self.interval * (used / wall) / self.budget  # the interval that meets the budget
                # halfway there each time: one expensive draw (a code block's first line) does not
                # slow the reply's next second, a run of them does
                self.interval = min(self.slowest, max(self.fastest, (self.interval + wanted) / 2))
        self._last = (now, cpu)

    def reset(self) -> None:
        """A new reply: drawn at the fastest rate until it proves expensive."""
        self.interval = self.fastest
        self._last = None
