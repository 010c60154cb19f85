"""The poll function's logic: schedule, deadline, continuation, failure recording."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import ProviderTransientError
from reelay.models import ErrorCode, TaskStatus, VideoRequest, utcnow
from reelay.polling import PollService
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tracking import TaskTracker
from tests.unit.conftest import drain, load_event
from tests.unit.fakes import FakeProvider, config
from tests.unit.test_submission import RecordingStarter


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    class World:
        provider = FakeProvider(config("sorahk", typical_seconds=300, deadline_seconds=3600), callbacks=False)
        store = DynamoTaskStore("tasks")
        catalog = ProviderCatalog((provider.config,), factory=lambda c: World.provider)
        starter = RecordingStarter()
        clock = [utcnow()]
        service = PollService(
            store,
            catalog,
            TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])),
            starter,
            max_polls=3,
            clock=lambda: World.clock[0],
        )
        ingest_queue = aws["INGEST_QUEUE_URL"]

        def submitted(self) -> str:
            tasks = TaskService(self.store, self.catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
            task = tasks.create(VideoRequest(provider="sorahk", prompt="a cat"))[0]
            self.store.transition(task, TaskStatus.SUBMITTED, reason="t", provider_task_id="p-1")
            return task.id

    return World()


def _event(task_id: str, **kw: Any) -> dict[str, Any]:
    return load_event("poll.json") | {"task_id": task_id} | kw


def test_polls_until_success_with_shrinking_waits_then_done(world: Any) -> None:
    task_id = world.submitted()
    state = _event(task_id)
    waits = []
    for progress in (20, 60):
        world.provider.running(progress)
        world.clock[0] += timedelta(seconds=120)
        state = world.service.poll(state)
        assert state["outcome"] == "wait"
        waits.append(state["wait_seconds"])
    assert waits[0] > waits[1]  # the end nears: waits shrink
    assert world.store.get(task_id).status is TaskStatus.RUNNING
    world.provider.succeed("https://cdn.example/v.mp4")
    done = world.service.poll(_event(task_id, polls=0))
    assert done["outcome"] == "done" and done["status"] == "ingesting"
    assert drain(world.ingest_queue) == [{"task_id": task_id}]


def test_continues_in_a_fresh_execution_after_max_polls(world: Any) -> None:
    task_id = world.submitted()
    world.provider.running(10)
    state = _event(task_id)
    outcomes = []
    for _ in range(3):
        state = world.service.poll(state)
        outcomes.append(state["outcome"])
    assert outcomes == ["wait", "wait", "continued"]
    name, payload = world.starter.started[0]
    assert name == f"{task_id}-1"
    assert payload["polls"] == 0 and payload["segment"] == 1 and payload["total_polls"] == 3


def test_deadline_fails_the_task(world: Any) -> None:
    task_id = world.submitted()
    world.clock[0] += timedelta(seconds=3601)
    out = world.service.poll(_event(task_id))
    assert out["outcome"] == "done"
    task = world.store.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is ErrorCode.DEADLINE_EXCEEDED
    assert world.provider.status_calls == []


def test_transient_errors_propagate_typed_for_the_state_machine_retry(world: Any) -> None:
    task_id = world.submitted()
    world.provider.status_error = ProviderTransientError("HTTP 502", provider="sorahk")
    with pytest.raises(ProviderTransientError):
        world.service.poll(_event(task_id))
    assert world.store.get(task_id).status is TaskStatus.SUBMITTED


def test_caught_errors_fail_the_task_with_a_stable_code_and_no_stack_trace(world: Any) -> None:
    task_id = world.submitted()
    event = load_event("poll_fail.json") | {"task_id": task_id}
    event["error"]["Cause"] = json.dumps(
        {
            "errorMessage": "sorahk rejected reelay's credential (401)",
            "errorType": "ProviderAuthError",
            "stackTrace": ["File x, line 1"],
        }
    )
    world.service.fail(event)
    task = world.store.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is ErrorCode.PROVIDER_AUTH
    assert "stackTrace" not in task.error.message and "File x" not in task.error.message
