"""Callback tokens and the adaptive poll schedule (pure functions)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reelay.schedule import PollSchedule
from reelay.tokens import CallbackTokens


def test_token_verifies_only_for_its_task_and_provider() -> None:
    tokens = CallbackTokens(b"k" * 32)
    token = tokens.token("generate_task", "tsk_1")
    assert tokens.verify("generate_task", "tsk_1", token)
    assert not tokens.verify("generate_task", "tsk_2", token)
    assert not tokens.verify("sorahk", "tsk_1", token)
    assert not tokens.verify("generate_task", "tsk_1", None)
    assert not tokens.verify("generate_task", "tsk_1", token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not CallbackTokens(b"z" * 32).verify("generate_task", "tsk_1", token)


def test_callback_url_carries_the_token() -> None:
    tokens = CallbackTokens(b"k" * 32)
    url = tokens.url("https://api.example/", "generate_task", "tsk_1")
    assert url == f"https://api.example/callbacks/generate_task/tsk_1?t={tokens.token('generate_task', 'tsk_1')}"


def test_first_wait_is_near_the_typical_generation_time() -> None:
    schedule = PollSchedule(typical=300)
    assert 0.4 * 300 <= schedule.wait(0, task_id="a") <= 0.6 * 300


def test_with_progress_waits_shrink_as_the_end_nears() -> None:
    schedule = PollSchedule(typical=300, jitter=0)
    early = schedule.wait(1, elapsed=200, progress=20)
    late = schedule.wait(2, elapsed=900, progress=90)
    assert early > late >= schedule.floor


def test_without_progress_waits_grow_to_a_cap() -> None:
    schedule = PollSchedule(typical=300, jitter=0, blind_cap=60)
    waits = [schedule.wait(n) for n in range(1, 12)]
    assert waits == sorted(waits)
    assert waits[-1] == 60


def test_jitter_is_deterministic_per_task_and_spreads_tasks() -> None:
    schedule = PollSchedule(typical=300)
    assert schedule.wait(0, task_id="a") == schedule.wait(0, task_id="a")
    assert len({schedule.wait(0, task_id=f"t{i}") for i in range(20)}) > 5


@given(
    polls=st.integers(0, 5000),
    elapsed=st.floats(0, 1e6),
    progress=st.one_of(st.none(), st.integers(-5, 120)),
    typical=st.floats(1, 10_000),
)
def test_every_wait_is_a_positive_integer_within_the_cap(
    polls: int, elapsed: float, progress: int | None, typical: float
) -> None:
    schedule = PollSchedule(typical=typical)
    wait = schedule.wait(polls, task_id="x", elapsed=elapsed, progress=progress)
    assert isinstance(wait, int)
    assert 1 <= wait <= max(schedule.cap, typical) * 1.1 + 1


def test_a_progress_only_write_needs_stale_progress_and_an_end_not_predicted_near() -> None:
    schedule = PollSchedule.for_typical(180)  # progress_every 180 s; quiet once 120 s are left
    # Fresh progress is not rewritten, however far it moved.
    assert not schedule.writes_progress(since_write=180, elapsed=200, progress=10)
    # Stale progress far from the end is (400 s in at 66 %: ≈ 206 s left).
    assert schedule.writes_progress(since_write=300, elapsed=400, progress=66)
    # Stale progress near the predicted end is not (510 s in at 85 %: ≈ 90 s left): the end comes next.
    assert not schedule.writes_progress(since_write=200, elapsed=510, progress=85)
    # No progress rate to go by: stale progress is written.
    assert schedule.writes_progress(since_write=200, elapsed=510, progress=None)


def _progress_writes(seconds: float, typical: float, task_id: str, *, late_start: float = 0.0) -> int:
    """The progress-only writes of a task whose progress grows linearly, polled on its schedule
    (``late_start``: how long after the submit the provider's clock starts)."""
    schedule = PollSchedule.for_typical(typical)
    t = float(schedule.wait(0, task_id=task_id))
    written, writes, polls = t, 0, 0  # the first poll moves it to running (a write of its own)
    while t < seconds + late_start:
        progress = max(0, min(99, int(100 * (t - late_start) / seconds)))
        if polls and schedule.writes_progress(since_write=t - written, elapsed=t, progress=progress):
            written, writes = t, writes + 1
        polls += 1
        t += schedule.wait(polls, task_id=task_id, elapsed=t, progress=progress)
    return writes


def test_a_ten_minute_task_at_a_three_minute_typical_time_writes_its_progress_once() -> None:
    # The cost bench's poll-path tasks (benchmarks/cost.py): before the quiet end, 2 or 3.
    assert {_progress_writes(600, 180, f"task-{n}") for n in range(200)} == {1}
    # A three-minute task: none (its first poll's move to running shows 50 %).
    assert {_progress_writes(180, 180, f"task-{n}") for n in range(200)} == {0}
    # And never twice when the provider's clock starts up to 5 % of a typical time after the
    # submit (its progress then reads as a slower rate), at the deployed typical time and at the
    # cost bench's ten times faster one (whole-second waits)
    for typical, seconds in ((180, 600), (18, 60)):
        late = [typical * 0.05 * n / 200 for n in range(200)]
        writes = {_progress_writes(seconds, typical, f"task-{n}", late_start=late[n]) for n in range(200)}
        assert max(writes) == 1, (typical, writes)
