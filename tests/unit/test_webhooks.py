"""Signed client webhooks: URLs at input, owners' secrets and rotation, signing, the schedule, delivery."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from reelay.api import build_app
from reelay.aws import EventBus, ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.fetch import Fetcher, UrlPolicy
from reelay.models import NotifyState, Task, TaskStatus, WebhookOutcome, utcnow
from reelay.notify import Notifier
from reelay.store import DynamoTaskStore, DynamoWebhookSecretStore
from reelay.tasks import TaskService
from reelay.tokens import CursorSigner
from reelay.webhooks import (
    DEFAULT_RETRY_SECONDS,
    RetrySchedule,
    WebhookSecrets,
    WebhookSender,
    retry_after_seconds,
    task_payload,
    webhook_id,
    webhook_url_refusal,
)
from reelay.workers import RetryLater
from tests.unit.conftest import load_event
from tests.unit.fakes import FakeProvider, config

RECEIVER = "https://hooks.example.com/reelay"


def public(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Receiver:
    """An ``httpx.MockTransport`` handler: answers from a script, keeps every request."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if self.answers else httpx.Response(204)


# -- URLs at input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # plain http
        "https://10.0.0.7/x",  # private address
        "https://169.254.169.254/latest",  # metadata service
        "https://127.0.0.1:9000/x",  # loopback, not listed
        "https://localhost/x",
        "https://printer.local/x",
        "https://intranet/x",  # no dot: not a public name
        "https://8.8.8.8/x",  # an address, not a host name
    ],
)
def test_a_private_loopback_or_plain_http_webhook_url_is_refused_at_input(url: str) -> None:
    assert webhook_url_refusal(url) is not None


def test_a_public_https_url_or_a_listed_local_receiver_is_accepted() -> None:
    assert webhook_url_refusal("https://hooks.example.com:8443/reelay?x=1") is None
    assert webhook_url_refusal("http://127.0.0.1:9000/hook", frozenset({"127.0.0.1:9000"})) is None
    assert webhook_url_refusal("http://127.0.0.1:9001/hook", frozenset({"127.0.0.1:9000"})) is not None


@pytest.fixture
def api(aws: dict[str, str]) -> Any:
    provider = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    hosts = frozenset({"127.0.0.1:9000"})
    service = TaskService(
        DynamoTaskStore("tasks"),
        catalog,
        TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        ResultBucket("results"),
        cursors=CursorSigner(b"k" * 32),
        webhook_hosts=hosts,
    )
    secrets = WebhookSecrets(DynamoWebhookSecretStore("tasks"), overlap=timedelta(hours=1))
    app = build_app(lambda: service, [provider.config], webhook_secrets=lambda: secrets, webhook_hosts=hosts)

    def call(method: str, path: str, body: Any = None, *, owner: str | None = None) -> tuple[int, dict[str, Any]]:
        event = load_event("api_create_task.json")
        event["headers"] = {"content-type": "application/json"}
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["requestContext"]["http"]["method"] = method
        if owner:
            event["requestContext"]["authorizer"] = {"iam": {"userArn": owner}}
        event["body"] = json.dumps(body) if body is not None else None
        out = app.resolve(event, None)
        return out["statusCode"], json.loads(out["body"])

    return call


@pytest.mark.parametrize("url", ["https://10.0.0.7/x", "http://127.0.0.1:9001/x", "https://localhost/x"])
def test_the_api_answers_422_naming_webhook_url_and_stores_nothing(api: Any, url: str) -> None:
    status, body = api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a cat", "webhook_url": url})
    assert status == 422, body
    assert body["error"]["code"] == "VALIDATION_FAILED"
    assert "webhook_url" in json.dumps(body["error"])
    assert not [i for i in boto3.resource("dynamodb").Table("tasks").scan()["Items"] if i["pk"].startswith("TASK#")]


def test_the_api_takes_a_listed_local_receiver_and_shows_the_pending_webhook(api: Any) -> None:
    body = {"provider": "generate_task", "prompt": "a cat", "webhook_url": "http://127.0.0.1:9000/hook"}
    status, task = api("POST", "/v1/tasks", body)
    assert status == 202, task
    assert task["webhook"] == {"id": webhook_id(task["id"]), "outcome": "pending", "attempts": []}


def test_the_webhook_url_rule_is_in_the_openapi_document(api: Any) -> None:
    _, doc = api("GET", "/v1/openapi.json")
    text = json.dumps(doc)
    assert r"https?://(?:127\\.0\\.0\\.1:9000)" in text  # the listed receiver
    assert "/v1/webhook-secret" in doc["paths"] and "/v1/webhook-secret/rotate" in doc["paths"]


# -- secrets -------------------------------------------------------------------------------


def test_get_makes_one_secret_rotate_adds_a_newer_one_and_each_owner_has_its_own(api: Any) -> None:
    status, first = api("GET", "/v1/webhook-secret")
    assert status == 200 and len(first["secrets"]) == 1 and first["secrets"][0].startswith("whsec_")
    assert api("GET", "/v1/webhook-secret")[1] == first  # stable until rotated
    status, rotated = api("POST", "/v1/webhook-secret/rotate")
    assert status == 200
    assert len(rotated["secrets"]) == 2 and rotated["secrets"][1] == first["secrets"][0]  # newest first
    assert api("GET", "/v1/webhook-secret")[1] == rotated
    other = api("GET", "/v1/webhook-secret", owner="arn:aws:iam::123456789012:user/bob")[1]
    assert set(other["secrets"]).isdisjoint(rotated["secrets"])


def test_after_the_overlap_only_the_new_secret_is_valid_and_never_more_than_two_are(aws: dict[str, str]) -> None:
    clock = Clock()
    secrets = WebhookSecrets(DynamoWebhookSecretStore("tasks"), overlap=timedelta(hours=24), clock=clock)
    old = secrets.valid("alice")
    new = secrets.rotate("alice")
    assert new[1:] == old
    newest = secrets.rotate("alice")  # a second rotation inside the window: the oldest ends now
    assert len(newest) == 2 and newest[1] == new[0]
    clock.advance(24 * 3600 + 1)
    assert secrets.valid("alice") == newest[:1]


# -- signing -------------------------------------------------------------------------------


def _task(**changes: Any) -> Task:
    now = utcnow()
    fields: dict[str, Any] = {
        "id": "tsk_019a0000000000000000000000ab",
        "provider": "generate_task",
        "protocol": "generate_task",
        "request": {"prompt": "a lighthouse"},
        "status": TaskStatus.FAILED,
        "created_at": now,
        "updated_at": now,
        "webhook_url": RECEIVER,
        "owner": "alice",
    }
    return Task(**(fields | changes))


def test_during_an_overlap_each_delivery_verifies_with_either_secret_alone(aws: dict[str, str]) -> None:
    secrets = WebhookSecrets(DynamoWebhookSecretStore("tasks"), overlap=timedelta(hours=1))
    old = secrets.valid("alice")[0]
    new = secrets.rotate("alice")[0]
    receiver = Receiver()
    sender = WebhookSender(Fetcher(UrlPolicy(resolver=public), transport=httpx.MockTransport(receiver)), secrets)
    sender.attempt(_task())
    request = receiver.requests[0]
    headers = dict(request.headers)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        assert Webhook(secret).verify(request.content, headers)["data"]["id"] == _task().id
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJD" * 8).verify(request.content, headers)


def test_the_body_is_the_task_as_the_api_shows_it_without_presigned_urls() -> None:
    message = json.loads(task_payload(_task()))
    assert message["type"] == "task.failed"
    assert message["data"]["id"] == _task().id and message["data"]["status"] == "failed"
    assert "webhook" not in message["data"]


# -- the schedule ----------------------------------------------------------------------------


def test_the_default_schedule_is_about_5s_5min_30min_2h_5h_10h_24h_with_jitter() -> None:
    schedule = RetrySchedule()
    assert schedule.delays == DEFAULT_RETRY_SECONDS and schedule.attempts == 8
    for attempt, delay in enumerate(DEFAULT_RETRY_SECONDS, start=1):
        waits = {schedule.wait_after(attempt) for _ in range(20)}
        assert all(0.9 * delay <= w <= 1.1 * delay for w in waits if w is not None)
        assert len(waits) > 1  # jittered
    assert schedule.wait_after(8) is None


def test_the_retry_seconds_setting_replaces_the_schedule() -> None:
    schedule = RetrySchedule.parse("1, 2,3")
    assert schedule.delays == (1.0, 2.0, 3.0) and schedule.attempts == 4
    assert RetrySchedule.parse("").delays == DEFAULT_RETRY_SECONDS


def test_retry_after_is_read_in_seconds_or_as_a_date_and_capped_at_a_day() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Wed, 02 Dec 2026 12:10:00 GMT", now) == 600
    assert retry_after_seconds("999999", now) == 86400
    assert retry_after_seconds("soon", now) is None


# -- delivery through the worker ---------------------------------------------------------------


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    boto3.client("events").create_event_bus(Name="bus")

    class World:
        clock = Clock()
        store = DynamoTaskStore("tasks")
        secrets = WebhookSecrets(DynamoWebhookSecretStore("tasks"), overlap=timedelta(hours=1))
        receiver = Receiver()
        resolved: list[str] = ["93.184.216.34"]

        def notifier(self, schedule: str = "5,300") -> Notifier:
            fetcher = Fetcher(
                UrlPolicy(resolver=lambda h, p: list(self.resolved)), transport=httpx.MockTransport(self.receiver)
            )
            return Notifier(
                self.store,
                EventBus("bus"),
                WebhookSender(fetcher, self.secrets),
                RetrySchedule.parse(schedule),
                clock=self.clock,
            )

        def ended(self, **changes: Any) -> Task:
            task, _ = self.store.create(_task(**changes))
            return task

        def webhook(self, task: Task) -> Any:
            notify = self.store.get(task.id).notify
            assert notify is not None and notify.webhook is not None
            return notify.webhook

    return World()


def test_two_failures_then_a_2xx_is_one_delivery_with_three_attempts_and_one_webhook_id(world: Any) -> None:
    world.receiver.answers = [httpx.Response(503), httpx.Response(500), httpx.Response(200)]
    task = world.ended()
    notifier = world.notifier("5,300")
    with pytest.raises(RetryLater) as first:
        notifier.notify(task.id)
    assert 4 <= first.value.seconds <= 6
    attempt = world.webhook(task).attempts[0]
    assert (attempt.status, attempt.next_at is not None) == (503, True)
    # A copy of the message before the next attempt is due sends nothing
    with pytest.raises(RetryLater):
        notifier.notify(task.id)
    assert len(world.receiver.requests) == 1
    world.clock.advance(6)
    with pytest.raises(RetryLater) as second:
        notifier.notify(task.id)
    assert 270 <= second.value.seconds <= 330
    world.clock.advance(331)
    notifier.notify(task.id)
    webhook = world.webhook(task)
    assert webhook.outcome is WebhookOutcome.DELIVERED
    assert [a.status for a in webhook.attempts] == [503, 500, 200]
    assert webhook.attempts[-1].next_at is None
    assert {r.headers["webhook-id"] for r in world.receiver.requests} == {webhook_id(task.id)}
    assert len({r.headers["webhook-timestamp"] for r in world.receiver.requests}) == 3  # signed per attempt
    assert len({r.content for r in world.receiver.requests}) == 1  # the same body every time
    # Once delivered, another copy of the message sends nothing
    notifier.notify(task.id)
    assert len(world.receiver.requests) == 3


def test_each_attempt_is_counted_delivered_or_failed_and_a_410_as_given_up(world: Any, monkeypatch: Any) -> None:
    from reelay import metrics

    counted: list[tuple[str, Any]] = []
    monkeypatch.setattr(metrics, "webhook_attempted", lambda ok, outcome: counted.append((outcome, ok)))
    monkeypatch.setattr(metrics, "webhook_exhausted", lambda: counted.append(("given up", None)))
    world.receiver.answers = [httpx.Response(503), httpx.Response(410)]
    task = world.ended()
    notifier = world.notifier("1")
    with pytest.raises(RetryLater):
        notifier.notify(task.id)
    world.clock.advance(2)
    notifier.notify(task.id)
    assert counted == [("retrying", False), ("gone", False), ("given up", None)]


def test_a_410_stops_at_once(world: Any) -> None:
    world.receiver.answers = [httpx.Response(410)]
    task = world.ended()
    world.notifier().notify(task.id)
    world.clock.advance(10_000)
    world.notifier().notify(task.id)
    assert world.webhook(task).outcome is WebhookOutcome.GONE
    assert len(world.receiver.requests) == 1


def test_retry_after_replaces_the_scheduled_wait(world: Any) -> None:
    world.receiver.answers = [httpx.Response(429, headers={"retry-after": "120"})]
    task = world.ended()
    with pytest.raises(RetryLater) as wait:
        world.notifier("5,300").notify(task.id)
    assert wait.value.seconds == 120
    assert world.webhook(task).next_at == world.clock.now + timedelta(seconds=120)


def test_no_answer_is_retried_and_a_spent_schedule_is_exhausted(world: Any) -> None:
    sent: list[httpx.Request] = []

    def down(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.ConnectError("refused")

    world.receiver = down
    task = world.ended()
    notifier = world.notifier("1")
    with pytest.raises(RetryLater):
        notifier.notify(task.id)
    world.clock.advance(2)
    notifier.notify(task.id)  # the second and last attempt
    webhook = world.webhook(task)
    assert webhook.outcome is WebhookOutcome.EXHAUSTED
    assert [a.status for a in webhook.attempts] == [None, None] and webhook.attempts[0].error
    assert len(sent) == 2


def test_a_host_that_resolves_to_a_private_address_is_refused_and_nothing_is_sent(world: Any) -> None:
    world.resolved = ["10.1.2.3"]
    task = world.ended()
    world.notifier().notify(task.id)
    webhook = world.webhook(task)
    assert webhook.outcome is WebhookOutcome.REFUSED and "refused" in (webhook.attempts[0].error or "")
    assert world.receiver.requests == []


def test_an_attempt_claimed_by_another_copy_is_not_sent_twice(world: Any) -> None:
    task = world.ended()
    # Given another copy of the message holds the attempt's lease (claimed, not yet recorded)
    from reelay.models import WebhookDelivery

    state = NotifyState(
        event_sent_at=world.clock.now,
        webhook=WebhookDelivery(id=webhook_id(task.id)),
        lease_until=world.clock.now + timedelta(seconds=60),
    )
    world.store.save(task.model_copy(update={"notify": state}), expected=task)
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    assert world.receiver.requests == []


def test_two_copies_of_the_message_put_one_event_and_make_one_attempt(world: Any, monkeypatch: Any) -> None:
    # Given two copies of a task's notify message (a resend by reconcile and the first send),
    # the second arriving while the first is putting the event
    task = world.ended()
    first, second = world.notifier(), world.notifier()
    puts: list[str] = []
    original = EventBus.put

    def put(bus: EventBus, detail_type: str, detail: Any, **kwargs: Any) -> str:
        puts.append(detail_type)
        if len(puts) == 1:
            with pytest.raises(RetryLater):  # the second copy finds the claim and comes back later
                second.notify(task.id)
        return original(bus, detail_type, detail, **kwargs)

    monkeypatch.setattr(EventBus, "put", put)
    first.notify(task.id)
    # Then one event, one delivery, and the record clears the claim; a later copy tells nothing
    second.notify(task.id)
    assert puts == ["Task Failed"] and len(world.receiver.requests) == 1
    notify = world.store.get(task.id).notify
    assert notify.lease_until is None and notify.event_sent_at is not None
    assert notify.webhook.outcome is WebhookOutcome.DELIVERED


def test_the_task_view_shows_each_attempt_with_at_status_and_next_at(world: Any) -> None:
    from reelay.tasks import task_view

    world.receiver.answers = [httpx.Response(503)]
    task = world.ended()
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    view = task_view(world.store.get(task.id)).model_dump(mode="json")
    (attempt,) = view["webhook"]["attempts"]
    assert attempt["status"] == 503 and attempt["at"] and attempt["next_at"]
    assert view["webhook"]["outcome"] == "retrying"
