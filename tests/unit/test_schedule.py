"""The poll schedule's bounds for the token-driven poll path: cap, heartbeat, transient-error backoff."""

from __future__ import annotations

import pytest

from reelay.schedule import PollSchedule


@pytest.mark.parametrize("typical", [1, 3, 60, 180, 600, 3600])
def test_no_wait_outlasts_the_heartbeat_nor_an_sqs_delay(typical: float) -> None:
    schedule = PollSchedule.for_typical(typical)
    waits = [
        schedule.wait(polls, task_id=f"t{i}", elapsed=elapsed, progress=progress)
        for i in range(20)
        for polls, elapsed, progress in [(0, None, None), (1, 1.0, 1), (3, 10.0, None), (50, 1e6, None), (2, 5.0, 99)]
    ]
    retries = [schedule.retry_wait(n, retry_after=ra, unit=0.99) for n in range(1, 12) for ra in (None, 5000.0)]
    # A poll message waits at most 900 s in SQS; the heartbeat leaves room for one poll (40 s).
    assert max(waits + retries) <= schedule.longest_wait <= 900
    assert schedule.heartbeat_seconds >= schedule.longest_wait + min(40, schedule.cap)


def test_the_cap_keeps_the_long_waits_of_a_real_provider_and_scales_down_for_the_simulator() -> None:
    assert PollSchedule.for_typical(180).cap == 600  # as before: detection delay unchanged
    assert PollSchedule.for_typical(3).cap == 12  # locally a lost message is noticed within ~24 s
    assert PollSchedule.for_typical(3).heartbeat_seconds == 14 + 12


def test_transient_errors_back_off_exponentially_honouring_retry_after() -> None:
    schedule = PollSchedule.for_typical(180)
    highs = [schedule.retry_wait(n, unit=0.999) for n in range(1, 9)]
    assert highs == sorted(highs) and highs[0] == 2 and highs[-1] == 256
    assert schedule.retry_wait(1, unit=0.0) == 1  # full jitter reaches down to a second
    assert schedule.retry_wait(1, retry_after=30, unit=0.0) == 30
