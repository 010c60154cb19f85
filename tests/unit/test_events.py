"""EventBridge events: one per ended task, from the one terminal path; nothing lost between the write and the send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest

from reelay.aws import EventBus, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.deadlines import Deadlines
from reelay.fetch import Fetcher, UrlPolicy
from reelay.models import ErrorCode, Output, Task, TaskStatus
from reelay.notify import NOTIFY_GRACE, Notifier, NotifyHook, emit_batch_completed
from reelay.reconcile import Reconciler
from reelay.store import DynamoTaskStore, DynamoWebhookSecretStore
from reelay.submission import Submitter
from reelay.tasks import new_task_id
from reelay.tracking import TaskTracker
from reelay.webhooks import RetrySchedule, WebhookSecrets, WebhookSender
from tests.template_support import REPO, template
from tests.unit.conftest import drain
from tests.unit.fakes import FakeProvider, config
from tests.unit.test_submission import RecordingStarter


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    sqs = boto3.client("sqs")
    events = boto3.client("events")
    events.create_event_bus(Name="bus")
    seen = sqs.create_queue(QueueName="seen")["QueueUrl"]
    seen_arn = sqs.get_queue_attributes(QueueUrl=seen, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    # What a consumer of the bus would see: a rule on reelay's events, into a queue.
    events.put_rule(Name="all", EventBusName="bus", EventPattern=json.dumps({"source": ["reelay"]}))
    events.put_targets(Rule="all", EventBusName="bus", Targets=[{"Id": "seen", "Arn": seen_arn}])
    notify_url = sqs.create_queue(QueueName="notify")["QueueUrl"]

    class World:
        provider = FakeProvider(config("generate_task", protocol="generate_task"))
        deadlines = Deadlines((provider.config,), notify_grace=NOTIFY_GRACE)
        now = [datetime.now(UTC)]
        store = DynamoTaskStore("tasks", due=deadlines.due, clock=lambda: World.now[0])
        notify_queue = TaskQueue(notify_url)
        tracker = TaskTracker(
            store, TaskQueue(aws["INGEST_QUEUE_URL"]), on_terminal=[NotifyHook(TaskQueue(notify_url))]
        )
        received: list[httpx.Request] = []

        def notifier(self) -> Notifier:
            fetcher = Fetcher(
                UrlPolicy(resolver=lambda h, p: ["93.184.216.34"]),
                transport=httpx.MockTransport(lambda r: self.received.append(r) or httpx.Response(204)),
            )
            secrets = WebhookSecrets(DynamoWebhookSecretStore("tasks"), overlap=timedelta(hours=1))
            return Notifier(self.store, EventBus("bus"), WebhookSender(fetcher, secrets), RetrySchedule())

        def task(self, status: TaskStatus = TaskStatus.RUNNING, **changes: Any) -> Task:
            now = datetime.now(UTC)
            task = Task(
                id=new_task_id(),
                provider="generate_task",
                protocol="generate_task",
                request={"prompt": "a lighthouse"},
                status=status,
                created_at=now,
                updated_at=now,
                **changes,
            )
            return self.store.create(task)[0]

        def events(self) -> list[dict[str, Any]]:
            return drain(seen)

        def reconciler(self) -> Reconciler:
            catalog = ProviderCatalog((self.provider.config,), factory=lambda c: self.provider)
            submitter = Submitter(
                self.store, catalog, self.tracker, RecordingStarter(), tokens=None, callback_base_url=None
            )
            return Reconciler(
                self.store,
                catalog,
                self.tracker,
                submitter,
                self.deadlines,
                submit_queue=TaskQueue(aws["SUBMIT_QUEUE_URL"]),
                ingest_queue=TaskQueue(aws["INGEST_QUEUE_URL"]),
                notify_queue=self.notify_queue,
                clock=lambda: self.now[0],
            )

    return World()


def test_an_ended_task_is_queued_once_for_notify_by_the_writer_that_ended_it(world: Any) -> None:
    task = world.task()
    world.tracker.fail(task, ErrorCode.PROVIDER_FAILED, "boom")
    world.tracker.fail(task, ErrorCode.PROVIDER_FAILED, "boom again")  # lost the race: no hook
    assert drain(world.notify_queue.url) == [{"task_id": task.id}]


def test_a_failed_task_puts_one_task_failed_event_with_the_task_as_the_api_shows_it(world: Any) -> None:
    task = world.tracker.fail(world.task(), ErrorCode.CONTENT_POLICY, "refused")
    world.notifier().notify(task.id)
    world.notifier().notify(task.id)  # a second copy of the message: no second event
    (event,) = world.events()
    assert (event["source"], event["detail-type"]) == ("reelay", "Task Failed")
    assert event["detail"]["id"] == task.id and event["detail"]["status"] == "failed"
    assert event["detail"]["error"] == {"code": "CONTENT_POLICY", "message": "refused"}
    assert event["resources"] == [task.id]


def test_a_succeeded_task_s_event_carries_its_outputs_without_presigned_urls(world: Any) -> None:
    task = world.task(TaskStatus.INGESTING)
    output = Output(key="tasks/x/0.mp4", s3_uri="s3://results/tasks/x/0.mp4", bytes=3, sha256="ab", content_type="v")
    task = world.tracker.succeed(task, [output])
    world.notifier().notify(task.id)
    (event,) = world.events()
    assert event["detail-type"] == "Task Succeeded"
    assert event["detail"]["outputs"] == [{"s3_uri": output.s3_uri, "bytes": 3, "sha256": "ab", "content_type": "v"}]
    assert "url" not in json.dumps(event["detail"]["outputs"]) and "webhook" not in event["detail"]
    # The terminal time is kept: the notify write does not move updated_at
    assert world.store.get(task.id).updated_at == task.updated_at


def test_a_terminal_task_stays_due_until_it_is_told_then_leaves_the_due_index(world: Any) -> None:
    task = world.tracker.fail(world.task(), ErrorCode.PROVIDER_FAILED, "boom")
    later = task.updated_at + NOTIFY_GRACE + timedelta(seconds=1)
    assert world.store.due(before=later, limit=10)[0] == [task.id]
    world.notifier().notify(task.id)
    assert world.store.due(before=later + timedelta(days=30), limit=10)[0] == []


def test_a_task_with_only_its_event_to_tell_is_told_with_one_write_and_no_claim(world: Any, monkeypatch: Any) -> None:
    # Given an ended task with no webhook and no endpoint subscribed: only its event to put
    task = world.tracker.fail(world.task(), ErrorCode.PROVIDER_FAILED, "boom")
    writes: list[Any] = []
    original = DynamoTaskStore.save

    def save(store: DynamoTaskStore, new: Task, **kwargs: Any) -> Task:
        writes.append(new.notify)
        return original(store, new, **kwargs)

    monkeypatch.setattr(DynamoTaskStore, "save", save)
    world.notifier().notify(task.id)
    # Then one write records the event (no claim before it: EventBridge's delivery is at least
    # once anyway, so a claim would buy nothing), and a later copy of the message tells nothing
    assert len(writes) == 1 and writes[0].lease_until is None and writes[0].event_sent_at is not None
    assert writes[0].endpoints == []
    world.notifier().notify(task.id)
    assert len(writes) == 1 and len(world.events()) == 1


def test_a_lone_event_that_cannot_be_put_writes_nothing_and_is_retried(world: Any, monkeypatch: Any) -> None:
    from reelay.aws import EventPublishFailed
    from reelay.workers import RetryLater

    task = world.tracker.fail(world.task(), ErrorCode.PROVIDER_FAILED, "boom")
    before = world.store.get(task.id)

    def put(*args: Any, **kwargs: Any) -> str:
        raise EventPublishFailed("EventBridge refused the event")

    monkeypatch.setattr(EventBus, "put", put)
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    # Nothing was claimed, so nothing is written; the task stays due for reconcile's resend
    after = world.store.get(task.id)
    assert after.version == before.version and after.notify is None
    assert world.store.due(before=task.updated_at + NOTIFY_GRACE + timedelta(seconds=1), limit=10)[0] == [task.id]


def test_a_notify_message_lost_after_the_terminal_write_is_sent_again_by_reconcile(world: Any) -> None:
    # Given a task that ended, and its notify message lost (a crash between the write and the send)
    task = world.tracker.fail(world.task(), ErrorCode.PROVIDER_FAILED, "boom")
    drain(world.notify_queue.url)
    # When reconcile runs before the grace is over: nothing; after it: the message is sent again
    world.now[0] = task.updated_at + timedelta(seconds=10)
    assert world.reconciler().run() == {}
    world.now[0] = task.updated_at + NOTIFY_GRACE + timedelta(seconds=1)
    assert world.reconciler().run() == {"notify_resent": 1}
    assert drain(world.notify_queue.url) == [{"task_id": task.id}]
    # And its look moved the due time on: the next run does not send it again at once
    assert world.reconciler().run() == {}
    # Then the worker tells it, once, and the task leaves the Due index
    world.notifier().notify(task.id)
    assert len(world.events()) == 1
    world.now[0] += timedelta(days=30)
    assert world.reconciler().run() == {}


def test_a_task_with_a_webhook_stays_due_until_the_webhook_is_final(world: Any) -> None:
    task = world.task(webhook_url="https://hooks.example.com/x", owner="alice")
    task = world.tracker.fail(task, ErrorCode.PROVIDER_FAILED, "boom")
    world.notifier().notify(task.id)
    assert len(world.received) == 1
    assert world.store.due(before=task.updated_at + timedelta(days=30), limit=10)[0] == []


def test_emit_batch_completed_puts_a_batch_completed_event(world: Any) -> None:
    emit_batch_completed(
        EventBus("bus"), batch_id="bat_1", owner="alice", counts={"succeeded": 9, "failed": 1}, report="s3://r/x"
    )
    (event,) = world.events()
    assert (event["source"], event["detail-type"]) == ("reelay", "Batch Completed")
    assert event["detail"] == {
        "batch_id": "bat_1",
        "owner": "alice",
        "counts": {"succeeded": 9, "failed": 1},
        "report": "s3://r/x",
    }


def test_the_template_has_the_bus_and_every_function_that_ends_tasks_may_tell_the_notify_worker() -> None:
    resources = template()["Resources"]
    assert resources["EventBus"]["Type"] == "AWS::Events::EventBus"
    notify = resources["NotifyFunction"]["Properties"]
    assert {"EventBridgePutEventsPolicy": {"EventBusName": {"Ref": "EventBus"}}} in notify["Policies"]
    assert notify["Environment"]["Variables"]["EVENT_BUS_NAME"] == {"Ref": "EventBus"}
    for name in ("CallbackFunction", "SubmitFunction", "PollFunction", "IngestFunction", "ReconcileFunction"):
        policies = json.dumps(resources[name]["Properties"]["Policies"])
        assert "NotifyQueue" in policies, name
    assert (REPO / "functions/notify/app.py").is_file()
