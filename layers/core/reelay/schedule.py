"""The adaptive poll schedule: how long the poll state machine waits before each poll.

A pure function of what is known at poll time: the polls made so far, the seconds since
the task was submitted, the provider's last reported progress and its typical generation
time. The first wait sits just before the typical time; after that, when the provider
reports progress, reelay estimates the time left from the progress rate and waits a share
of it, so waits shrink geometrically as the end nears (few polls, small detection delay);
without progress the wait grows from a floor up to a cap. Jitter (±10 %, deterministic per
task and poll) spreads the polls of tasks submitted together. No wait, the first included,
exceeds the cap (with its jitter: ``longest_wait``, within SQS's 900 s delay limit), which
sets the poll execution's heartbeat (``heartbeat_seconds``): a lost poll message is noticed
one heartbeat later and sent again.
"""

from __future__ import annotations

import hashlib
import math
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
    quiet_share: float = 2 / 3  # no progress-only write once the end is predicted within this share of typical

    @classmethod
    def for_provider(cls, config: ProviderConfig) -> PollSchedule:
        return cls.for_typical(config.typical_seconds)

    @classmethod
    def for_typical(cls, typical_seconds: float) -> PollSchedule:
        """The schedule for a provider whose tasks typically take ``typical_seconds``."""
        typical = max(1.0, typical_seconds)
        return cls(
            typical=typical,
            floor=min(5.0, max(1.0, typical / 20)),
            # No wait longer than four typical times (a poll message's delay is at most 900 s).
            cap=min(600.0, max(10.0, 4 * typical)),
            blind_cap=min(60.0, max(5.0, typical / 4)),
        )

    @property
    def progress_every(self) -> float:
        """How stale the stored progress may get: a poll that only moves the progress writes it only
        when the task's last write is older than this (the typical time: 180 s for 180 s),
        however far it moved. Near the predicted end polls come seconds apart, and each would
        rewrite the item otherwise. (Half the typical time let a 10-minute task's poll just
        outside the quiet end write a second time: in 3 % of such tasks at 180 s, 12 % at the
        cost bench's 18 s, when the provider's clock starts a little after the submit and its
        progress reads as a slower rate. Longer tasks write as often either way: their writes
        are the ones that move the ``Due`` entry on.)"""
        return self.typical

    def time_left(self, elapsed: float | None, progress: int | None) -> float | None:
        """The generation's predicted time left from its progress rate (None: no progress to go by)."""
        if progress is None or not 0 < progress < 100 or not elapsed or elapsed <= 0:
            return None
        return elapsed * (100 - progress) / progress

    def writes_progress(self, *, since_write: float, elapsed: float | None, progress: int | None) -> bool:
        """Whether a poll that only moves the progress writes it (each such write is a paid write).

        Only when the task's last write is older than ``progress_every``, and not once the end is
        predicted within ``quiet_share`` of a typical time (120 s for 180 s): the next write is
        then the end itself. A 10-minute task at 180 s typical writes its progress once, not
        twice (≈ 400 s in). The progress shown when a task ends is then up to ≈ 2 typical times
        old (simulated with linear progress: 237 s at most for 10-minute tasks, 335 s for
        15-minute ones), less than the wait between such a task's first two polls (≈ 300 s and
        ≈ 480 s); the answer that ends the task is never held back.
        """
        if since_write <= self.progress_every:
            return False
        left = self.time_left(elapsed, progress)
        return left is None or left >= self.quiet_share * self.typical

    @property
    def longest_wait(self) -> int:
        """The longest wait this schedule gives: the cap with the most jitter (<= 900 s, SQS's delay limit)."""
        return math.ceil(self.cap * (1 + self.jitter))

    @property
    def heartbeat_seconds(self) -> int:
        """How long the poll execution waits for a poll before it sends a fresh poll message.

        Longer than the longest wait plus one poll (the function's 40 s timeout fits in the
        margin), so only a lost message, never a slow one, ends the wait.
        """
        return int(self.longest_wait + min(60.0, max(10.0, self.cap)))

    def retry_wait(self, errors: int, *, retry_after: float | None = None, unit: float = 0.5) -> int:
        """Seconds before polling again after ``errors`` transient errors in a row (1 = the first).

        Exponential from 2 s with full jitter (``unit`` in [0, 1) draws it), at least the
        provider's ``Retry-After``, never longer than the cap.
        """
        high = min(self.cap, 2.0 * 2 ** max(0, errors - 1))
        wait = max(1.0, high * unit, retry_after or 0.0)
        return max(1, round(min(self.longest_wait, wait)))

    def wait(self, polls: int, *, task_id: str = "", elapsed: float | None = None, progress: int | None = None) -> int:
        """Seconds to wait before poll number ``polls`` (0 = the first)."""
        if polls <= 0:
            base = min(self.cap, self.typical * self.first_share)
        elif (eta := self.time_left(elapsed, progress)) is not None:
            base = min(self.cap, max(self.floor, eta * self.eta_share))
        else:
            base = min(self.blind_cap, self.floor * self.growth ** min(polls - 1, 64))
        return max(1, round(base * self._jitter(task_id, polls)))

    def _jitter(self, task_id: str, polls: int) -> float:
        digest = hashlib.sha256(f"{task_id}:{polls}".encode()).digest()
        unit = int.from_bytes(digest[:4], "big") / 2**32  # deterministic in [0, 1)
        return 1 - self.jitter + 2 * self.jitter * unit
