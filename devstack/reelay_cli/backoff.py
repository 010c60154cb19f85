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
