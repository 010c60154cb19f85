"""How often the CLI, the demo and the web page ask about a task that is still running.

A task takes from seconds (the simulator) to many minutes (a real provider). Asking every second
for ten minutes is 600 requests for one answer; asking every 10 s makes a short task look slow.
So the first pause is short and each next one grows, up to a cap, with jitter so that many
watchers started together do not ask in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

GROWTH = 1.5
"""Each pause is this much longer than the one before (before jitter), up to the cap."""
JITTER = 0.2
"""Each pause is moved by up to this share of itself, either way."""


def poll_delays(
    *, first: float = 1.0, cap: float = 10.0, uniform: Callable[[float, float], float] = random.uniform
) -> Iterator[float]:
    """Endless pauses in seconds: ``first``, then 1.5 times longer each time up to ``cap``, each ±20 % jitter.

    ``uniform`` draws the jitter (``random.uniform``; tests pass a fixed one). The jittered pause
    never exceeds ``cap`` nor goes below zero, and a ``first`` of 0 stays 0 (no waiting, in tests).
    """
    cap = max(cap, first)
    base = first
    while True:
        yield min(cap, max(0.0, base * (1 + uniform(-JITTER, JITTER))))
        base = min(cap, base * GROWTH)


class ProgressPacer:
    """Pauses between looks at one task: the back-off of :func:`poll_delays`, stretched while the
    task's progress says its end is still far.

    The progress rate is measured from the first look that reported progress, on the clock of the
    pauses themselves (their sum), so a skewed client clock or a slow answer cannot mislead it.
    While the estimated time left is long, the pause is ``share`` of it (at most ``long_cap``);
    near the end it falls back to the back-off, so the end is seen as soon as before. A 10-minute
    task watched this way takes about a quarter of the requests of the plain back-off.
    """

    def __init__(
        self,
        *,
        first: float = 1.0,
        cap: float = 10.0,
        long_cap: float = 60.0,
        share: float = 0.5,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._delays = poll_delays(first=first, cap=cap, uniform=uniform)
        self._long_cap = max(long_cap, cap)
        self._share = share
        self._elapsed = 0.0
        self._start: tuple[float, int] | None = None

    def pause(self, progress: int | None) -> float:
        """The pause before the next look, given the progress the last look reported."""
        pause = next(self._delays)
        if progress is not None and 0 < progress < 100:
            if self._start is None:
                self._start = (self._elapsed, progress)
            else:
                since, then = self._start
                if progress > then and self._elapsed > since:
                    rate = (progress - then) / (self._elapsed - since)
                    pause = max(pause, min(self._long_cap, self._share * (100 - progress) / rate))
        self._elapsed += pause
        return pause
