"""The adaptive poll schedule: how long the poll state machine waits before each poll.

A pure function of what is known at poll time: the polls made so far, the seconds since
the task was submitted, the provider's last reported progress and its typical generation
time. The first wait sits just before the typical time; after that, when the provider
reports progress, reelay estimates the time left from the progress rate and waits a share
of it, so waits shrink geometrically as the end nears (few polls, small detection delay);
without progress the wait grows from a floor up to a cap. Jitter (±10 %, deterministic per
task and poll) spreads the polls of tasks submitted together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from reelay.providers.base import ProviderConfig


@dataclass(frozen=True)
class PollSchedule:
    """Wait times for one provider. All values in seconds."""

    typical: float
    floor: float = 5.0
    cap: float = 600.0
    first_share: float = 0.5  # first wait = this share of the typical generation time
    eta_share: float = 0.6  # with progress: wait this share of the estimated time left
    growth: float = 1.6  # without progress: each wait this much longer than the last
    blind_cap: float = 60.0  # without progress: never wait longer than this
    jitter: float = 0.1

    @classmethod
    def for_provider(cls, config: ProviderConfig) -> PollSchedule:
        typical = max(1.0, config.typical_seconds)
        return cls(typical=typical, floor=min(5.0, max(1.0, typical / 20)), blind_cap=min(60.0, max(5.0, typical / 4)))

    def wait(self, polls: int, *, task_id: str = "", elapsed: float | None = None, progress: int | None = None) -> int:
        """Seconds to wait before poll number ``polls`` (0 = the first)."""
        if polls <= 0:
            base = self.typical * self.first_share
        elif progress is not None and 0 < progress < 100 and elapsed and elapsed > 0:
            eta = elapsed * (100 - progress) / progress
            base = min(self.cap, max(self.floor, eta * self.eta_share))
        else:
            base = min(self.blind_cap, self.floor * self.growth ** min(polls - 1, 64))
        return max(1, round(base * self._jitter(task_id, polls)))

    def _jitter(self, task_id: str, polls: int) -> float:
        digest = hashlib.sha256(f"{task_id}:{polls}".encode()).digest()
        unit = int.from_bytes(digest[:4], "big") / 2**32  # deterministic in [0, 1)
        return 1 - self.jitter + 2 * self.jitter * unit
