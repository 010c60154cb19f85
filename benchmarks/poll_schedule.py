"""Polls, Step Functions state transitions and detection delay: reelay's schedule vs the seed's.

Runs the real ``reelay.schedule.PollSchedule`` against a simulated provider whose task takes
T seconds (+-10 %, seeded) and reports linear progress (sorahk and openai_videos report progress; a
protocol that does not is the "blind" column). The seed's schedule (generate_task tips):
wait 120 s, then poll every 5 s. Each poll costs 3 state transitions in the poll state
machine (Wait -> Poll -> Decide), plus 1 for the final state.

    .venv/bin/python benchmarks/poll_schedule.py [--typical 180]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable

from reelay.schedule import PollSchedule

TRANSITIONS_PER_POLL = 3
GENERATION_TIMES = (60, 180, 600, 1800)

Policy = Callable[[int, float, int | None, str], float]


def seed_policy(polls: int, elapsed: float, progress: int | None, task_id: str) -> float:
    return 120 if polls == 0 else 5


def reelay_policy(typical: float, *, with_progress: bool) -> Policy:
    schedule = PollSchedule(
        typical=typical, floor=min(5.0, max(1.0, typical / 20)), blind_cap=min(60.0, max(5.0, typical / 4))
    )

    def policy(polls: int, elapsed: float, progress: int | None, task_id: str) -> float:
        return schedule.wait(polls, task_id=task_id, elapsed=elapsed, progress=progress if with_progress else None)

    return policy


def run(policy: Policy, generation: float, task_id: str) -> tuple[int, int, float]:
    """(polls, state transitions, detection delay in s) for one task."""
    t, polls, progress = 0.0, 0, None
    while True:
        t += policy(polls, t, progress, task_id)
        polls += 1
        if t >= generation:
            return polls, polls * TRANSITIONS_PER_POLL + 1, t - generation
        progress = min(99, int(100 * t / generation))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--typical", type=float, default=180.0, help="the provider's typical generation time (s)")
    parser.add_argument("--tasks", type=int, default=200, help="tasks per cell (jitter differs per task)")
    args = parser.parse_args()
    policies = {
        "seed (120 s, then every 5 s)": seed_policy,
        f"reelay, progress reported (typical {args.typical:.0f} s)": reelay_policy(args.typical, with_progress=True),
        f"reelay, no progress (typical {args.typical:.0f} s)": reelay_policy(args.typical, with_progress=False),
    }
    print(f"{'schedule':44} {'T (s)':>6} {'polls':>7} {'transitions':>12} {'delay mean':>11} {'delay max':>10}")
    for name, policy in policies.items():
        for generation in GENERATION_TIMES:
            # Each task's real generation time varies by +-10 % around T (seeded: repeatable).
            rng = random.Random(generation)
            runs = [run(policy, generation * rng.uniform(0.9, 1.1), f"tsk_{i}") for i in range(args.tasks)]
            polls = statistics.mean(r[0] for r in runs)
            transitions = statistics.mean(r[1] for r in runs)
            delays = [r[2] for r in runs]
            print(
                f"{name:44} {generation:>6} {polls:>7.1f} {transitions:>12.1f} {statistics.mean(delays):>10.1f}s "
                f"{max(delays):>9.1f}s"
            )


if __name__ == "__main__":
    main()
