"""Polls, Step Functions state transitions and detection delay: reelay's schedule vs the seed's.

Runs the real ``reelay.schedule.PollSchedule`` against a simulated provider whose task takes
T seconds (+-10 %, seeded) and reports linear progress (sorahk and openai_videos report progress; a
protocol that does not is the "blind" column). The seed's schedule (generate_task tips):
wait 120 s, then poll every 5 s.

Two poll-path shapes are counted. The wait loop (main before the token design): each poll
costs 3 state transitions (Wait -> Poll -> Decide), plus 1 for the final state. The token
design (statemachine/poll.asl.json now): 1 transition per task whatever the number of polls;
each poll is an SQS message instead (a send, a receive and a delete: 3 SQS requests) and a
poll Lambda call, as before. benchmarks/poll_cost.py prices both on the local stack.

    .venv/bin/python benchmarks/poll_schedule.py [--typical 180]
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable

from reelay.schedule import PollSchedule

TRANSITIONS_PER_POLL = 3  # the wait loop
TOKEN_TRANSITIONS = 1  # the token design: the one Poll state
SQS_REQUESTS_PER_POLL = 3  # the token design: send, receive, delete
GENERATION_TIMES = (60, 180, 600, 1800)

Policy = Callable[[int, float, int | None, str], float]


def seed_policy(polls: int, elapsed: float, progress: int | None, task_id: str) -> float:
    return 120 if polls == 0 else 5


def reelay_policy(typical: float, *, with_progress: bool) -> Policy:
    schedule = PollSchedule.for_typical(typical)

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
    print(
        f"{'schedule':44} {'T (s)':>6} {'polls':>7} {'transitions':>12} {'token design':>13} {'+ SQS req':>10} "
        f"{'delay mean':>11} {'delay max':>10}"
    )
    for name, policy in policies.items():
        for generation in GENERATION_TIMES:
            # Each task's real generation time varies by +-10 % around T (seeded: repeatable).
            rng = random.Random(generation)
            runs = [run(policy, generation * rng.uniform(0.9, 1.1), f"tsk_{i}") for i in range(args.tasks)]
            polls = statistics.mean(r[0] for r in runs)
            transitions = statistics.mean(r[1] for r in runs)
            delays = [r[2] for r in runs]
            print(
                f"{name:44} {generation:>6} {polls:>7.1f} {transitions:>12.1f} {TOKEN_TRANSITIONS:>13} "
                f"{polls * SQS_REQUESTS_PER_POLL:>10.1f} {statistics.mean(delays):>10.1f}s {max(delays):>9.1f}s"
            )


if __name__ == "__main__":
    main()
