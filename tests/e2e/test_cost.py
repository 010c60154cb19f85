"""Cost per task, end to end: reelay's own counts equal an independent count of the AWS work done.

The independent count (``reelay_local.aws_calls.AwsCallCounter``) sees every request the moto
server answers and every Lambda invocation the local runtime runs, per task, from outside
reelay's code, and the state transitions in every execution's history. reelay's counts are what
``GET /v1/tasks/{id}`` shows as ``cost`` (and what ``reelay cost`` totals).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from reelay_cli.main import create_app
from reelay_local.aws_calls import AwsCallCounter, compare_task
from tests.e2e.conftest import E2E_ENV, Api, running_api

COST_ENV = E2E_ENV | {
    # Reconcile out of the way (every hour), so each task's work is its own path's only.
    "REELAY_RECONCILE_EVERY_SECONDS": "3600",
    "REELAY_GENERATE_TASK_TIMEOUT_SECONDS": "20",
    "REELAY_SORAHK_TYPICAL_SECONDS": "4",
    "REELAY_GENERATE_TASK_TYPICAL_SECONDS": "4",
    # A task's own cost, not that of waiting (as benchmarks/cost.py): with the request log on, a
    # loaded machine can make a callback's status check miss its grant, and with reconcile out
    # of the way the task then waits for the provider's next callback past this test's wait.
    "REELAY_GENERATE_TASK_REQUESTS_PER_MINUTE": "0",
}


@pytest.fixture(scope="module")
def counter() -> Iterator[AwsCallCounter]:
    with AwsCallCounter() as installed:
        yield installed


@pytest.fixture(scope="module")
def api(counter: AwsCallCounter) -> Iterator[Api]:
    """This module's own stack, started after the counter is installed (it sees every invocation)."""
    with running_api(COST_ENV) as client:
        yield client


def _run(api: Api, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = []
    for body in bodies:
        response = api.create(body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    with contextlib.suppress(TimeoutError):
        api.env.stack.drain(timeout=90, executions=True)
    return [api.wait(task_id, timeout=90) for task_id in ids]


def test_counted_costs_equal_the_independent_count_on_both_paths(api: Api, counter: AwsCallCounter) -> None:
    api.env.sim.configure("generate_task", rate_limit_per_minute=100000, max_concurrent=100000)
    counter.counting = True
    bodies = [
        {"provider": "generate_task", "prompt": f"cost callback {n} [sim:seconds=3]", "duration": 4} for n in range(3)
    ] + [{"provider": "sorahk", "prompt": f"cost poll {n} [sim:seconds=8]", "duration": 10} for n in range(3)]
    ids = []
    for body in bodies:
        response = api.create(body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    # Wait without counting a read: the stack's queues and executions empty, every handler done.
    api.env.stack.drain(timeout=120, executions=True)
    counter.stop_counting()
    transitions = counter.transitions(api.env.stack, ids)
    tasks = [api.task(task_id) for task_id in ids]
    assert [t["status"] for t in tasks] == ["succeeded"] * 6, tasks

    problems = [p for t in tasks for p in compare_task(t["id"], t["cost"], counter, transitions[t["id"]])]
    assert problems == [], "\n".join(problems)
    callback, polled = tasks[0]["cost"], tasks[3]["cost"]
    # A step that sends its task on carries its counts on that message (reelay.costs): the cost
    # item's ADDs are those of the steps that send it nowhere, not one per step (5 on the callback
    # path, 7-10 on the poll path): on the callback path submit and notify (2 per task on a quiet
    # machine, a callback's status check put off by load adds one); on the poll path notify only,
    # submit's counts riding on the execution's input to its first poll message.
    adds = [t["cost"]["aws"]["units"]["ddb_accounting_wu"] for t in tasks]
    assert max(adds[:3]) <= 3 and adds[3:] == [1, 1, 1], adds
    # The paths differ where they should: only the poll path pays Step Functions.
    assert callback["aws"]["units"].get("sfn_transitions", 0) == 0
    assert polled["aws"]["units"]["sfn_transitions"] == transitions[tasks[3]["id"]] == 1  # one state: Poll
    assert polled["aws"]["calls"]["sfn.StartExecution"] == 1
    for cost in (callback, polled):
        assert cost["aws_usd"] == pytest.approx(sum(cost["aws"]["lines"].values()))
        # The video's one PUT (256 KiB), and no previews: these tasks did not ask for them
        assert cost["aws"]["units"]["ddb_wu"] > 10 and cost["aws"]["calls"]["s3.PutObject"] == 1
        assert cost["generation_seconds"] > 0
    assert polled["provider_cents"] == 3 and polled["provider_cost_source"] == "reported"  # sorahk's own
    assert callback["provider_cost_source"] == "price_table"
    # Visibility changes name a receipt handle, not a task: compared in total.
    total_visibility = sum(t["cost"]["aws"]["calls"].get("sqs.ChangeMessageVisibility", 0) for t in tasks)
    assert total_visibility == counter.totals().get("sqs.ChangeMessageVisibility", 0)

    # `reelay cost` reports the same totals, per task and in all.
    result = CliRunner().invoke(create_app(), ["--api-url", api.env.stack.api_url, "--json", "cost", *ids])
    assert result.exit_code == 0, result.output
    import json

    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    by_task = {r["key"]: r for r in rows if r["scope"] == "task"}
    for task in tasks:
        assert by_task[task["id"]]["units"] == pytest.approx(task["cost"]["aws"]["units"])
    [total] = [r for r in rows if r["scope"] == "total"]
    assert total["tasks"] == 6
    assert total["aws_usd"] == pytest.approx(sum(t["cost"]["aws_usd"] for t in tasks))
    assert total["provider_cents"] == sum(t["cost"]["provider_cents"] for t in tasks)


def test_a_client_read_costs_the_task_nothing(api: Api) -> None:
    task = _run(api, [{"provider": "generate_task", "prompt": "read me [sim:seconds=1]", "duration": 4}])[0]
    api.env.stack.drain(timeout=60, executions=True)  # its notification too: the task's last own work
    before = api.task(task["id"])["cost"]
    for _ in range(5):
        api.task(task["id"])
    assert api.task(task["id"])["cost"] == before
