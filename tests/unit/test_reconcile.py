"""Reconcile: every overdue task is driven forward by asking the provider, and every task ends."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest

from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.deadlines import Deadlines
from reelay.errors import CreateOutcomeUnknown, ProviderTransientError
from reelay.models import ErrorCode, Task, TaskStatus, VideoRequest, utcnow
from reelay.reconcile import Reconciler
from reelay.store import DynamoTaskStore
from reelay.submission import SubmitOutcome, Submitter
from reelay.tasks import TaskService
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from tests.unit.conftest import drain
from tests.unit.fakes import FakeProvider, config
from tests.unit.test_submission import RecordingStarter

TYPICAL = 60.0
DEADLINE = 3600.0


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    class World:
        gt = FakeProvider(
            config("generate_task", protocol="generate_task", typical_seconds=TYPICAL, deadline_seconds=DEADLINE)
        )
        sk = FakeProvider(
            config("sorahk", protocol="sorahk", typical_seconds=TYPICAL, deadline_seconds=DEADLINE), callbacks=False
        )
        providers = {"generate_task": gt, "sorahk": sk}
        deadlines = Deadlines((gt.config, sk.config), ingest_give_up=timedelta(hours=1))
        now = [utcnow()]
        store = DynamoTaskStore("tasks", due=deadlines.due, clock=lambda: World.now[0])
        catalog = ProviderCatalog((gt.config, sk.config), factory=lambda c: World.providers[c.name])
        tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]))
        starter = RecordingStarter()
        submitter = Submitter(
            store, catalog, tracker, starter, tokens=CallbackTokens(b"s" * 32), callback_base_url="https://api.example"
        )
        tasks = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
        reconciler = Reconciler(
            store,
            catalog,
            tracker,
            Submitter(store, catalog, tracker, starter, tokens=None, callback_base_url=None),
            deadlines,
            submit_queue=TaskQueue(aws["SUBMIT_QUEUE_URL"]),
            ingest_queue=TaskQueue(aws["INGEST_QUEUE_URL"]),
            clock=lambda: World.now[0],
        )

        def task(self, provider: str = "generate_task") -> str:
            task_id = self.tasks.create(VideoRequest(provider=provider, prompt="a lighthouse"))[0].id
            drain(aws["SUBMIT_QUEUE_URL"])
            return task_id

        def later(self, seconds: float) -> None:
            self.now[0] = utcnow() + timedelta(seconds=seconds)

        def get(self, task_id: str) -> Task:
            return self.store.get(task_id)

    return World()


def test_a_callback_that_never_came_is_replaced_by_a_status_check_at_twice_the_typical_time(
    world: Any, aws: dict[str, str]
) -> None:
    # Given a submitted callback-mode task whose provider finished but never called back
    task_id = world.task()
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    world.gt.succeed("https://cdn.example/v.mp4")
    # When reconcile runs before twice the typical time: nothing is due. (Its entry from when it
    # was queued, at twice the typical time too, was kept by the submit write.)
    world.later(1.5 * TYPICAL)
    assert world.reconciler.run() == {}
    assert world.get(task_id).status is TaskStatus.SUBMITTED and world.get(task_id).reconcile_count == 0
    # When it runs after it
    world.later(2 * TYPICAL + 1)
    counts = world.reconciler.run()
    # Then the status endpoint was asked, the task moved on and its ingest was enqueued
    assert counts == {"callback_missed_ingesting": 1}
    assert world.get(task_id).status is TaskStatus.INGESTING
    assert [m["task_id"] for m in drain(aws["INGEST_QUEUE_URL"])] == [task_id]


def test_an_entry_kept_by_a_later_write_is_moved_on_when_reached_without_a_look(world: Any) -> None:
    # Given a task created (due at twice the typical time) and then ingesting, whose own look is
    # the ingest stall, 20 minutes on: the write kept the earlier entry instead of moving it
    task_id = world.task()
    world.submitter.submit(task_id)
    task = world.get(task_id)
    world.store.transition(task, TaskStatus.INGESTING, reason="provider succeeded")
    assert world.get(task_id).stored_due == task.stored_due
    # When reconcile reaches the entry: it moves it to the task's due time, and asks nobody
    world.later(2 * TYPICAL + 1)
    assert world.reconciler.run() == {"not_due_yet": 1}
    assert world.reconciler.run() == {}
    moved = world.get(task_id)
    assert moved.stored_due == world.deadlines.due(moved).isoformat() and moved.version == task.version + 1


def test_a_running_poll_task_found_early_gets_its_look_at_once_not_a_move_to_be_found_again(world: Any) -> None:
    # Given a poll-path task whose progress write, 1.5 typical times on, kept its entry from
    # when it was queued (twice the typical time) though its own due time is 3.5 typical times
    task_id = world.task("sorahk")
    world.submitter.submit(task_id)
    task = world.get(task_id)
    world.later(1.5 * TYPICAL)
    progressed = world.store.save(
        task.model_copy(update={"status": TaskStatus.RUNNING, "progress": 40, "updated_at": world.now[0]}),
        expected=task,
    )
    assert progressed.stored_due == task.stored_due
    # When reconcile reaches the entry: the execution is asked about at once and the look recorded
    world.later(2 * TYPICAL + 1)
    assert world.reconciler.run() == {"poll_alive": 1}
    looked = world.get(task_id)
    assert looked.reconcile_count == 1 and looked.stored_due == world.deadlines.due(looked).isoformat()
    # Then the next due time is twice the typical time from the look, not the 3.5 typical times a
    # move would have left (to be found early again by the run after)
    world.later(3.5 * TYPICAL + 1)
    assert world.reconciler.run() == {}
    world.later(4 * TYPICAL + 2)
    assert world.reconciler.run() == {"poll_alive": 1}


def test_a_status_check_that_changes_nothing_moves_the_next_look_on(world: Any) -> None:
    task_id = world.task()
    world.submitter.submit(task_id)
    world.later(2 * TYPICAL + 1)
    assert world.reconciler.run() == {"status_checked": 1}
    assert world.reconciler.run() == {}  # looked at just now: not due again yet
    task = world.get(task_id)
    assert task.reconcile_count == 1 and task.status is TaskStatus.SUBMITTED


def test_a_lost_submit_message_is_sent_again(world: Any, aws: dict[str, str]) -> None:
    # Given a stored task whose submit message was lost
    task_id = world.task()
    # When reconcile runs after the queued task's look time (twice the typical time)
    world.later(2 * TYPICAL + 1)
    assert world.reconciler.run() == {"submit_resent": 1}
    # Then its submit message is on the queue again, and no create was sent by reconcile
    assert [m["task_id"] for m in drain(aws["SUBMIT_QUEUE_URL"])] == [task_id]
    assert world.gt.creates == []


def test_a_task_left_queued_is_sent_again_at_doubling_intervals_not_every_look_time(
    world: Any, aws: dict[str, str]
) -> None:
    # Given a task whose submit message is not taken (a backlog in the submit queue)
    task_id = world.task()
    resent_at = []
    # When reconcile runs every minute for 40 minutes
    for minute in range(1, 41):
        world.later(60 * minute)
        if world.reconciler.run() == {"submit_resent": 1}:
            resent_at.append(minute)
        drain(aws["SUBMIT_QUEUE_URL"])
    # Then its message is sent again 2, 4, 8, 10 (the cap) and 10 minutes apart (typical: 1 min):
    # 5 times, where a look every twice the typical time sent it 20 times
    assert resent_at == [2, 6, 14, 24, 34]
    assert world.gt.creates == [] and world.get(task_id).reconcile_count == 5


def test_a_held_create_nothing_settles_fails_create_unconfirmed_at_the_deadline(world: Any) -> None:
    task_id = world.task()
    world.gt.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD
    world.later(DEADLINE + 1)
    assert world.reconciler.run() == {"held_create_failed": 1}
    task = world.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is ErrorCode.CREATE_UNCONFIRMED
    assert "a charge may exist" in task.error.message and "generate_task" in task.error.message
    assert len(world.gt.creates) == 1  # never re-sent


def test_a_task_still_running_at_the_deadline_is_asked_once_more_then_failed(world: Any) -> None:
    task_id = world.task()
    world.submitter.submit(task_id)
    world.gt.running(40)
    world.later(DEADLINE + 1)
    assert world.reconciler.run() == {"deadline_exceeded": 1}
    task = world.get(task_id)
    assert task.error.code is ErrorCode.DEADLINE_EXCEEDED and "charge is likely" in task.error.message
    assert world.gt.status_calls == ["p-1"]


def test_a_result_found_at_the_deadline_is_still_copied(world: Any) -> None:
    task_id = world.task()
    world.submitter.submit(task_id)
    world.gt.succeed("https://cdn.example/v.mp4")
    world.later(DEADLINE + 1)
    assert world.reconciler.run() == {"deadline_result_found": 1}
    assert world.get(task_id).status is TaskStatus.INGESTING


def test_a_last_look_the_provider_refuses_is_put_off_not_failed_until_its_grace_ends(world: Any) -> None:
    from reelay.errors import ProviderRateLimited

    task_id = world.task()
    world.submitter.submit(task_id)
    world.gt.succeed("https://cdn.example/v.mp4")  # made, but the look at the deadline gets a 429
    world.gt.status_error = ProviderRateLimited("slow down", provider="generate_task", retry_after=5)
    world.later(DEADLINE + 1)
    assert world.reconciler.run() == {"deadline_look_deferred": 1}
    assert world.get(task_id).status is TaskStatus.SUBMITTED
    # The next run's look gets through: the result is copied, not lost
    world.gt.status_error = None
    world.later(DEADLINE + 30)
    assert world.reconciler.run() == {"deadline_result_found": 1}
    assert world.get(task_id).status is TaskStatus.INGESTING


def test_a_last_look_refused_past_its_grace_fails_the_task(world: Any) -> None:
    from reelay.errors import ProviderTransientError
    from reelay.reconcile import LAST_LOOK_GRACE

    task_id = world.task()
    world.submitter.submit(task_id)
    world.gt.status_error = ProviderTransientError("HTTP 503", provider="generate_task")
    world.later(DEADLINE + LAST_LOOK_GRACE.total_seconds() + 60)
    assert world.reconciler.run() == {"deadline_exceeded": 1}
    assert world.get(task_id).error.code is ErrorCode.DEADLINE_EXCEEDED


def test_a_task_never_sent_by_its_deadline_fails_without_a_charge(world: Any) -> None:
    task_id = world.task()
    world.later(DEADLINE + 1)
    assert world.reconciler.run() == {"deadline_never_sent": 1}
    task = world.get(task_id)
    assert task.error.code is ErrorCode.DEADLINE_EXCEEDED and "no charge" in task.error.message


def test_a_dead_poll_execution_is_restarted_under_a_fresh_name(world: Any) -> None:
    task_id = world.task("sorahk")
    world.submitter.submit(task_id)
    assert [n for n, _ in world.starter.started] == [task_id]
    world.later(2 * TYPICAL + 1)
    assert world.reconciler.run() == {"poll_alive": 1}
    world.starter.died.add(task_id)
    world.later(6 * TYPICAL)
    assert world.reconciler.run() == {"poll_restarted": 1}
    assert [n for n, _ in world.starter.started] == [task_id, f"{task_id}-1"]
    restarted = world.starter.started[1][1]
    assert restarted["task_id"] == task_id and 1 <= restarted["timeout_seconds"] <= 3 * 3600
    assert world.get(task_id).poll_execution == f"{task_id}-1"


def test_a_stalled_ingest_is_enqueued_again_and_fails_past_the_ingest_deadline(world: Any, aws: dict[str, str]) -> None:
    task_id = world.task()
    world.submitter.submit(task_id)
    world.gt.succeed("https://cdn.example/v.mp4")
    world.tracker.apply(world.get(task_id), world.gt.status("p-1"))
    drain(aws["INGEST_QUEUE_URL"])
    world.later(world.deadlines.ingest_stall.total_seconds() + 1)
    assert world.reconciler.run() == {"ingest_resent": 1}
    assert [m["task_id"] for m in drain(aws["INGEST_QUEUE_URL"])] == [task_id]
    world.later(3601)
    assert world.reconciler.run() == {"ingest_deadline": 1}
    assert world.get(task_id).error.code is ErrorCode.INGEST_FAILED


def test_a_provider_that_is_down_leaves_the_task_for_a_later_look(world: Any) -> None:
    task_id = world.task()
    world.submitter.submit(task_id)
    world.gt.status_error = ProviderTransientError("HTTP 503", provider="generate_task")
    world.later(2 * TYPICAL + 1)
    assert world.reconciler.run() == {"provider_unavailable": 1}
    task = world.get(task_id)
    assert task.status is TaskStatus.SUBMITTED and task.reconciled_at is not None


def test_a_run_stops_taking_tasks_when_its_time_is_nearly_up(world: Any) -> None:
    for _ in range(3):
        world.task()
    world.later(2 * TYPICAL + 1)
    left = iter([100.0, 100.0, 10.0, 10.0])
    counts = world.reconciler.run(seconds_left=lambda: next(left, 0.0))
    assert counts == {"left_for_next_run": 2, "submit_resent": 1}


def test_a_run_keeps_time_for_the_cost_items_its_looks_leave_to_write(world: Any) -> None:
    # Given 30 due tasks and a run whose every look takes 10 s of its 300
    for _ in range(30):
        world.task()
    world.later(2 * TYPICAL + 1)
    left = itertools.chain([300.0], itertools.count(300.0, -10.0))  # the first is the run's own check
    counts = world.reconciler.run(seconds_left=lambda: next(left))
    # Then it stops while half the time it spent looking is still left beyond the reserve (one
    # cost-item write per task looked at follows the run): 17 looks, to 140 s left, not 26 to 50 s
    assert counts == {"submit_resent": 17, "left_for_next_run": 13}


def test_terminal_tasks_leave_the_due_index(world: Any) -> None:
    task_id = world.task()
    world.tracker.fail(world.get(task_id), ErrorCode.PROVIDER_FAILED, "gone")
    ids, _ = world.store.due(before=datetime.max.replace(tzinfo=utcnow().tzinfo), limit=10)
    assert task_id not in ids
