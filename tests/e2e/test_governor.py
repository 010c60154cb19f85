"""The governor end to end: the real handlers on the local stack against the simulator's limits.

The module's stack serves two generate_task instances on the one simulator key: ``generate_task``
with 2 tasks in flight and 8 requests a minute (the simulator enforces the same limits with 429s,
so a violation would show), and ``gt_fair`` with one slot and no request limit, for the order in
which waiting tasks are let in. The first test waits out one 60 s window on purpose.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from reelay.bootstrap import Container
from reelay.models import Task, utcnow
from reelay.tasks import new_task_id
from tests.e2e.conftest import Api, running_api

ENV = {
    "REELAY_PROVIDERS": "generate_task,gt_fair",
    "REELAY_GENERATE_TASK_MAX_IN_FLIGHT": "2",
    "REELAY_GENERATE_TASK_REQUESTS_PER_MINUTE": "8",
    "REELAY_GENERATE_TASK_TYPICAL_SECONDS": "4",
    "REELAY_GT_FAIR_PROTOCOL": "generate_task",
    "REELAY_GT_FAIR_MAX_IN_FLIGHT": "1",
    "REELAY_GT_FAIR_REQUESTS_PER_MINUTE": "0",
    "REELAY_GT_FAIR_TYPICAL_SECONDS": "4",
    "REELAY_LOG_LEVEL": "WARNING",
    "REELAY_RECONCILE_EVERY_SECONDS": "2",
}


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with running_api(ENV, parameter_overrides={"SubmitConcurrency": "4"}) as client:
        yield client


def _sim_tasks(api: Api, marker: str) -> list[dict[str, Any]]:
    made = [t for t in api.env.sim.tasks("generate_task") if marker in t["prompt"]]
    return sorted(made, key=lambda t: t["created_at"])


def _offer_batch(api: Api, provider: str, lines: int, batch_id: str) -> list[str]:
    """Put batch tasks straight in, as a manifest's lines are: stored, then offered to the line."""
    container = Container.from_environ(api.env.stack.functions["SubmitFunction"].environment)
    ids = []
    for line in range(1, lines + 1):
        now = utcnow()
        task = Task(
            id=new_task_id(),
            provider=provider,
            protocol="generate_task",
            request={"provider": provider, "prompt": f"{batch_id} line {line}", "duration": 4},
            created_at=now,
            updated_at=now,
            batch_id=batch_id,
            batch_line=line,
        )
        container.store.create(task)
        container.governor.offer(task)
        ids.append(task.id)
    return ids


def test_a_burst_stays_within_the_providers_slots_and_any_minute_window_with_no_429(api: Api) -> None:
    """Given a provider of 2 in flight and 8 requests a minute, when 5 tasks (10 requests, more
    than one window takes) are sent at once, then all succeed, the simulator saw at most 2 in
    flight, no window of 60 s held more than 8 requests, no 429 was answered and no task was
    made twice (the simulator enforces the same limits: a violation would be a 429)."""
    # The local stack runs the submit function with the concurrency the template gives it.
    [mapping] = [m for m in api.env.stack.queue_mappings if m.function == "SubmitFunction"]
    assert mapping.max_concurrency == 4
    api.env.sim.configure("generate_task", generation_seconds=2, max_concurrent=2, rate_limit_per_minute=8)
    run = uuid.uuid4().hex[:6]
    ids = []
    for i in range(5):
        response = api.create({"provider": "generate_task", "prompt": f"burst {i} [tag:b-{run}-{i}]", "duration": 4})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for task_id in ids:
        assert api.wait(task_id, timeout=180)["status"] == "succeeded"
    limits = api.env.sim.counters()["limits"]["generate_task"]
    assert limits["rate_429s"] == 0 and limits["concurrency_429s"] == 0
    assert 1 <= limits["max_in_flight"] <= 2 and limits["max_requests_in_window"] <= 8
    assert limits["requests"] >= 10  # a create and a status check per task, at least
    tags = api.env.sim.counters()["tags"]
    assert all(len(tags[f"b-{run}-{i}"]) == 1 for i in range(5))


def test_an_api_task_goes_ahead_of_a_waiting_batch(api: Api) -> None:
    """Given a batch of 4 holding a one-slot provider, when an API task arrives, then it is
    the next task let in, before the rest of the batch."""
    api.env.sim.configure("generate_task", generation_seconds=2)
    batch = f"batch-{uuid.uuid4().hex[:6]}"
    batch_ids = _offer_batch(api, "gt_fair", 4, batch)
    response = api.create({"provider": "gt_fair", "prompt": f"interactive for {batch}", "duration": 4})
    assert response.status_code == 202
    assert api.wait(response.json()["id"], timeout=60)["status"] == "succeeded"
    for task_id in batch_ids:
        assert api.wait(task_id, timeout=60)["status"] == "succeeded"
    order = [t["prompt"] for t in _sim_tasks(api, batch)]
    assert order[1] == f"interactive for {batch}", order  # line 1 had the slot already
    assert order.index(f"interactive for {batch}") < order.index(f"{batch} line 2")


def test_the_slot_frees_when_the_provider_reports_success_not_when_the_copy_ends(api: Api) -> None:
    """Given a one-slot provider and a result that downloads slowly, the next task is created
    while the first is still being copied."""
    api.env.sim.configure("generate_task", generation_seconds=1)
    run = uuid.uuid4().hex[:6]
    slow = api.create({"provider": "gt_fair", "prompt": f"slow copy {run} [sim:drip=40000]", "duration": 4})
    after = api.create({"provider": "gt_fair", "prompt": f"next {run}", "duration": 4})
    assert slow.status_code == after.status_code == 202
    next_task = api.wait(after.json()["id"], until=("submitted", "running", "ingesting", "succeeded"), timeout=60)
    slow_view = api.task(slow.json()["id"])
    assert slow_view["status"] == "ingesting", (slow_view["status"], next_task["status"])
    assert api.wait(slow.json()["id"], timeout=90)["status"] == "succeeded"


def test_two_batches_share_a_provider(api: Api) -> None:
    """Given batch A waiting for a one-slot provider, when batch B arrives, then B's first task
    starts before A's last: neither waits for the other to finish."""
    api.env.sim.configure("generate_task", generation_seconds=1)
    tag = uuid.uuid4().hex[:6]
    a_ids = _offer_batch(api, "gt_fair", 4, f"A{tag}")
    b_ids = _offer_batch(api, "gt_fair", 2, f"B{tag}")
    for task_id in a_ids + b_ids:
        assert api.wait(task_id, timeout=90)["status"] == "succeeded"
    order = [t["prompt"].split(" ")[0] for t in _sim_tasks(api, tag)]
    assert order.index(f"B{tag}") < len(order) - 1 - order[::-1].index(f"A{tag}"), order
