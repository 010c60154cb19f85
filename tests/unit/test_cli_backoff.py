"""How often the CLI asks about a running task: back-off, stretched by the task's progress."""

from __future__ import annotations

from reelay_cli.backoff import ProgressPacer, poll_delays


def _looks(pacer_pause: object, generation: float, *, linear: bool = True) -> tuple[int, float]:
    """(GETs, seconds from the task's end to the look that saw it) for a task of ``generation`` s."""
    t, looks = 0.0, 0
    while True:
        looks += 1
        if t >= generation:
            return looks, t - generation
        progress = min(99, int(100 * t / generation)) if linear else None
        t += pacer_pause(progress)  # type: ignore[operator]


def test_a_long_task_with_progress_is_asked_far_less_and_its_end_seen_as_soon() -> None:
    fixed = {"uniform": lambda a, b: 0.0}
    for generation in (180, 600):
        plain = poll_delays(first=1.0, cap=10.0, **fixed)
        before, before_delay = _looks(lambda _p, delays=plain: next(delays), generation)
        after, after_delay = _looks(ProgressPacer(first=1.0, cap=10.0, **fixed).pause, generation)
        assert after * 2 <= before, (generation, before, after)
        assert after_delay <= 10.0 and before_delay <= 10.0


def test_without_progress_the_pauses_are_the_plain_back_off() -> None:
    fixed = {"uniform": lambda a, b: 0.0}
    plain = poll_delays(first=1.0, cap=10.0, **fixed)
    pacer = ProgressPacer(first=1.0, cap=10.0, **fixed)
    assert [pacer.pause(None) for _ in range(12)] == [next(plain) for _ in range(12)]


def test_a_stretched_pause_never_exceeds_the_long_cap_nor_half_the_time_left() -> None:
    pacer = ProgressPacer(first=1.0, cap=10.0, long_cap=60.0, uniform=lambda a, b: 0.0)
    pacer.pause(1)
    pause = pacer.pause(2)  # 1 % in 1 s: 98 s left
    assert pause == 49.0
    assert max(pacer.pause(3 + i) for i in range(3)) <= 60.0
