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
