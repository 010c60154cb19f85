"""Webhook endpoints managed as the ``openai`` SDK does (``client.webhooks``), and their OpenAI-style events.

The routes are driven by the official SDK in-process (``tests.unit.test_openai_api.Bridge``); the
deliveries by the notify worker (``reelay.notify.Notifier``) against moto, with receivers behind an
``httpx.MockTransport`` of the one fetcher of untrusted URLs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import httpx2
import openai
import pytest
from openai import OpenAI

from reelay.api import build_app
from reelay.aws import EventBus
from reelay.deadlines import NOTIFY_GRACE, notification_pending, notify_due
from reelay.fetch import Fetcher, UrlPolicy
from reelay.models import NotifyState, Task, TaskKind, TaskStatus, WebhookDelivery, WebhookOutcome
from reelay.notify import Notifier
from reelay.store import DynamoTaskStore, DynamoWebhookEndpointStore, DynamoWebhookSecretStore
from reelay.tasks import task_view
from reelay.webhook_endpoints import MAX_ENDPOINTS, WebhookEndpoints
from reelay.webhooks import (
    RetrySchedule,
    WebhookSecrets,
    WebhookSender,
    event_id,
    openai_event_payload,
    task_data,
    webhook_id,
)
from reelay.workers import RetryLater
from tests.unit.test_openai_api import API, Bridge

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HOOKS = "https://hooks.example.com"
TASK_ID = "tsk_019a0000000000000000000000ab"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Receivers:
    """Webhook receivers by URL path: each answers from its own script (then 204) and keeps its requests."""

    def __init__(self) -> None:
        self.answers: dict[str, list[httpx.Response]] = defaultdict(list)
        self.requests: dict[str, list[httpx.Request]] = defaultdict(list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests[request.url.path].append(request)
        script = self.answers[request.url.path]
        return script.pop(0) if script else httpx.Response(204)

    def count(self) -> int:
        return sum(len(r) for r in self.requests.values())


class World:
    def __init__(self) -> None:
        boto3.client("events").create_event_bus(Name="bus")
        self.clock = Clock()
        self.receivers = Receivers()
        self.tasks = DynamoTaskStore("tasks")
        self.secrets = WebhookSecrets(DynamoWebhookSecretStore("tasks"), overlap=timedelta(hours=1))
        self.store = DynamoWebhookEndpointStore("tasks")
        fetcher = Fetcher(
            UrlPolicy(resolver=lambda host, port: ["93.184.216.34"]),
            transport=httpx.MockTransport(self.receivers),
        )
        self.sender = WebhookSender(fetcher, self.secrets)
        self.endpoints = WebhookEndpoints(
            self.store, self.sender, allowed_hosts=frozenset({"127.0.0.1:9000"}), clock=self.clock
        )
        app = build_app(lambda: None, webhook_endpoints=lambda: self.endpoints)  # type: ignore[arg-type, return-value]
        self.bridge = Bridge(app)
        self.sdk = OpenAI(
            base_url=f"{API}/v1",
            api_key="rk-test",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=httpx2.MockTransport(self.bridge)),
        )

    def as_owner(self, owner: str) -> OpenAI:
        self.bridge.owner = owner
        return self.sdk

    def notifier(self, schedule: str = "5,300") -> Notifier:
        return Notifier(
            self.tasks, EventBus("bus"), self.sender, RetrySchedule.parse(schedule), endpoints=self.store,
            clock=self.clock,
        )  # fmt: skip

    def ended(self, status: TaskStatus = TaskStatus.SUCCEEDED, **changes: Any) -> Task:
        now = self.clock.now
        fields: dict[str, Any] = {
            "id": TASK_ID,
            "provider": "generate_task",
            "protocol": "generate_task",
            "request": {"prompt": "a lighthouse"},
            "status": status,
            "created_at": now - timedelta(minutes=2),
            "updated_at": now,
            "owner": "alice",
        }
        task, _ = self.tasks.create(Task(**(fields | changes)))
        return task

    def notify_state(self, task: Task) -> NotifyState:
        state = self.tasks.get(task.id).notify
        assert state is not None
        return state

    def deliveries(self, task: Task) -> dict[str, WebhookDelivery]:
        return {str(d.endpoint_id): d for d in self.notify_state(task).endpoints or ()}


@pytest.fixture
def world(aws: dict[str, str]) -> Iterator[World]:
    yield World()


def _create(sdk: OpenAI, path: str, event_types: list[str] | None = None, name: str = "hook") -> Any:
    return sdk.webhooks.create(
        url=f"{HOOKS}{path}",
        name=name,
        event_types=event_types or ["video.completed", "video.failed"],  # type: ignore[list-item]
    )


def _verifies(sdk: OpenAI, request: httpx.Request, secret: str) -> bool:
    try:
        sdk.webhooks.verify_signature(request.content, dict(request.headers), secret=secret, tolerance=10**9)
    except openai.InvalidWebhookSignatureError:
        return False
    return True


# -- the routes, through the SDK --------------------------------------------------------------


def test_create_answers_the_endpoint_with_its_secret_and_retrieve_and_list_without_it(world: World) -> None:
    made = _create(world.sdk, "/a", ["video.completed"], name="prod")

    assert made.object == "webhook_endpoint" and made.id.startswith("we_")
    assert made.signing_secret.startswith("whsec_") and made.signing_secret_hint.endswith(made.signing_secret[-4:])
    assert (made.url, made.name, made.event_types) == (f"{HOOKS}/a", "prod", ["video.completed"])
    assert made.created_at == made.updated_at == int(world.clock.now.timestamp())
    got = world.sdk.webhooks.retrieve(made.id)
    assert got.id == made.id and got.signing_secret_hint == made.signing_secret_hint
    raw = world.sdk.webhooks.with_raw_response.retrieve(made.id).http_response.json()
    assert "signing_secret" not in raw
    assert [e.id for e in world.sdk.webhooks.list()] == [made.id]
    assert world.sdk.webhooks.event_types.list().data == ["video.completed", "video.failed"]


def test_the_list_pages_newest_first_on_last_id(world: World) -> None:
    made = []
    for path in ("/a", "/b", "/c"):
        made.append(_create(world.sdk, path).id)
        world.clock.advance(1)

    first = world.sdk.webhooks.list(limit=2)
    assert [e.id for e in first.data] == made[::-1][:2] and first.has_more
    assert [e.id for e in world.sdk.webhooks.list(limit=2)] == made[::-1]  # the SDK pages on after=last_id


def test_update_changes_the_given_fields_and_an_unchanged_update_keeps_updated_at(world: World) -> None:
    made = _create(world.sdk, "/a")
    world.clock.advance(10)
    same = world.sdk.webhooks.update(made.id, name="hook")
    assert same.updated_at == made.updated_at

    changed = world.sdk.webhooks.update(made.id, url=f"{HOOKS}/b", event_types=["video.failed"])

    assert (changed.url, changed.event_types, changed.name) == (f"{HOOKS}/b", ["video.failed"], "hook")
    assert changed.updated_at == made.updated_at + 10
    assert world.sdk.webhooks.retrieve(made.id).url == f"{HOOKS}/b"


def test_delete_answers_the_deleted_object_and_the_endpoint_is_gone(world: World) -> None:
    made = _create(world.sdk, "/a")

    deleted = world.sdk.webhooks.delete(made.id)

    assert (deleted.id, deleted.deleted, deleted.object) == (made.id, True, "webhook_endpoint.deleted")
    with pytest.raises(openai.NotFoundError):
        world.sdk.webhooks.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        world.sdk.webhooks.delete(made.id)
    assert list(world.sdk.webhooks.list()) == []


@pytest.mark.parametrize("event_types", [["batch.completed"], ["video.completed", "response.failed"], []])
def test_an_event_type_other_than_the_video_ones_is_a_bad_request_naming_them(
    world: World, event_types: list[str]
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        world.sdk.webhooks.create(url=f"{HOOKS}/a", name="x", event_types=event_types)  # type: ignore[arg-type]

    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "event_types" and body["type"] == "invalid_request_error"
    assert "video.completed" in body["message"] and "video.failed" in body["message"]
    assert list(world.sdk.webhooks.list()) == []


@pytest.mark.parametrize(
    "url", ["https://10.0.0.7/x", "http://hooks.example.com/x", "https://localhost/x", "http://127.0.0.1:9001/x"]
)
def test_a_url_the_webhook_url_rule_refuses_is_a_bad_request_on_url(world: World, url: str) -> None:
    made = _create(world.sdk, "/a")
    with pytest.raises(openai.BadRequestError) as on_create:
        world.sdk.webhooks.create(url=url, name="x", event_types=["video.completed"])
    with pytest.raises(openai.BadRequestError) as on_update:
        world.sdk.webhooks.update(made.id, url=url)

    for refused in (on_create, on_update):
        assert refused.value.body["param"] == "url"  # type: ignore[index]
    assert world.sdk.webhooks.retrieve(made.id).url == f"{HOOKS}/a"


def test_a_listed_local_receiver_is_accepted_over_http(world: World) -> None:
    made = world.sdk.webhooks.create(url="http://127.0.0.1:9000/hook", name="local", event_types=["video.failed"])
    assert made.url == "http://127.0.0.1:9000/hook"


def test_an_owner_has_at_most_the_limit_of_endpoints_and_deleting_one_makes_room(world: World) -> None:
    made = [_create(world.sdk, f"/{n}").id for n in range(MAX_ENDPOINTS)]

    with pytest.raises(openai.BadRequestError) as refused:
        _create(world.sdk, "/one-more")

    assert refused.value.body["code"] == "too_many_webhook_endpoints"  # type: ignore[index]
    assert str(MAX_ENDPOINTS) in refused.value.message
    world.sdk.webhooks.delete(made[0])
    assert _create(world.sdk, "/one-more").id
    assert _create(world.as_owner("bob"), "/bobs").id  # another owner's limit is its own


def test_another_owners_endpoint_is_not_found_on_every_route(world: World) -> None:
    made = _create(world.as_owner("alice"), "/a")
    bob = world.as_owner("bob")

    for call in (
        lambda: bob.webhooks.retrieve(made.id),
        lambda: bob.webhooks.update(made.id, name="mine now"),
        lambda: bob.webhooks.delete(made.id),
        lambda: bob.webhooks.rotate_secret(made.id),
        lambda: bob.webhooks.test(made.id, event_type="video.completed"),
    ):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert set(missing.value.response.json()["error"]) == {"message", "type", "param", "code"}
    assert list(bob.webhooks.list()) == []
    assert world.receivers.count() == 0
    assert world.as_owner("alice").webhooks.retrieve(made.id).name == "hook"


def test_test_posts_one_signed_sample_event_and_answers_the_receivers_status(world: World) -> None:
    made = _create(world.sdk, "/a")
    world.receivers.answers["/a"] = [httpx.Response(503)]

    result = world.sdk.webhooks.test(made.id, event_type="video.failed")

    assert (result.object, result.success, result.status_code) == ("webhook_endpoint.test", True, 503)
    assert (result.event_type, result.webhook_endpoint_id) == ("video.failed", made.id)
    (request,) = world.receivers.requests["/a"]
    assert _verifies(world.sdk, request, made.signing_secret)
    event = json.loads(request.content)
    assert event["type"] == "video.failed" and event["object"] == "event"
    assert event["id"] == request.headers["webhook-id"] and event["id"].startswith("evt_")
    with pytest.raises(openai.BadRequestError):
        world.sdk.webhooks.test(made.id, event_type="batch.completed")  # type: ignore[arg-type]


def test_rotate_without_keep_old_ends_the_old_secret_at_once(world: World) -> None:
    made = _create(world.sdk, "/a")

    rotated = world.sdk.webhooks.rotate_secret(made.id)

    assert rotated.signing_secret != made.signing_secret and rotated.updated_at >= made.updated_at
    world.sdk.webhooks.test(made.id, event_type="video.completed")
    (request,) = world.receivers.requests["/a"]
    assert request.headers["webhook-signature"].count("v1,") == 1
    assert _verifies(world.sdk, request, rotated.signing_secret)
    assert not _verifies(world.sdk, request, made.signing_secret)


def test_rotate_keeping_the_old_secret_signs_with_both_for_24_hours(world: World) -> None:
    made = _create(world.sdk, "/a")

    rotated = world.sdk.webhooks.rotate_secret(made.id, keep_old_secret_active_for_24_hours=True)
    world.sdk.webhooks.test(made.id, event_type="video.completed")
    world.clock.advance(24 * 3600 + 1)
    world.sdk.webhooks.test(made.id, event_type="video.completed")

    during, after = world.receivers.requests["/a"]
    assert during.headers["webhook-signature"].count("v1,") == 2
    assert _verifies(world.sdk, during, made.signing_secret) and _verifies(world.sdk, during, rotated.signing_secret)
    assert after.headers["webhook-signature"].count("v1,") == 1
    assert not _verifies(world.sdk, after, made.signing_secret) and _verifies(world.sdk, after, rotated.signing_secret)


# -- the event ---------------------------------------------------------------------------------


def test_the_event_is_openais_shape_with_the_video_id_and_the_tasks_end() -> None:
    ended = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    base: dict[str, Any] = {
        "id": TASK_ID,
        "provider": "generate_task",
        "protocol": "generate_task",
        "request": {"prompt": "x"},
        "created_at": ended - timedelta(minutes=3),
        "updated_at": ended,
    }

    completed = json.loads(openai_event_payload(Task(**base, status=TaskStatus.SUCCEEDED)))
    failed = json.loads(openai_event_payload(Task(**base, status=TaskStatus.FAILED)))

    assert completed == {
        "id": event_id(TASK_ID),
        "object": "event",
        "type": "video.completed",
        "created_at": int(ended.timestamp()),
        "data": {"id": TASK_ID},
    }
    assert failed["type"] == "video.failed" and failed["id"] == completed["id"]
    assert event_id(TASK_ID) != webhook_id(TASK_ID)  # the task's own webhook keeps its id


# -- deliveries through the one notify path ------------------------------------------------------


def test_two_endpoints_and_the_tasks_own_webhook_are_delivered_from_one_notify_under_one_claim(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _create(world.sdk, "/a"), _create(world.sdk, "/b", ["video.completed"])
    not_subscribed = _create(world.sdk, "/c", ["video.failed"])
    task = world.ended(webhook_url=f"{HOOKS}/own")
    saves: list[int] = []
    original = DynamoTaskStore.save
    monkeypatch.setattr(DynamoTaskStore, "save", lambda s, t, **kw: saves.append(1) or original(s, t, **kw))

    world.notifier().notify(task.id)

    assert len(saves) == 2  # the claim and the one record
    assert world.receivers.requests.keys() == {"/a", "/b", "/own"} and world.receivers.count() == 3
    for endpoint, path in ((a, "/a"), (b, "/b")):
        (request,) = world.receivers.requests[path]
        assert _verifies(world.sdk, request, endpoint.signing_secret)
        assert not _verifies(world.sdk, request, not_subscribed.signing_secret)
        assert request.headers["webhook-id"] == event_id(task.id)
        assert json.loads(request.content)["data"]["id"] == task.id
    assert world.receivers.requests["/a"][0].content == world.receivers.requests["/b"][0].content
    (own,) = world.receivers.requests["/own"]
    assert own.headers["webhook-id"] == webhook_id(task.id) and json.loads(own.content)["type"] == "task.succeeded"
    assert not _verifies(world.sdk, own, a.signing_secret)
    assert _verifies(world.sdk, own, world.secrets.valid("alice")[0])  # reelay's shape, the owner's secret
    state = world.notify_state(task)
    assert state.settled(has_webhook=True) and state.lease_until is None
    assert {k: d.outcome for k, d in world.deliveries(task).items()} == {
        a.id: WebhookOutcome.DELIVERED,
        b.id: WebhookOutcome.DELIVERED,
    }
    world.notifier().notify(task.id)  # a later copy of the message tells nothing
    assert world.receivers.count() == 3


def test_a_failed_video_goes_to_the_endpoints_subscribed_to_video_failed(world: World) -> None:
    _create(world.sdk, "/done", ["video.completed"])
    failed = _create(world.sdk, "/failed", ["video.failed"])
    task = world.ended(TaskStatus.FAILED)

    world.notifier().notify(task.id)

    (request,) = world.receivers.requests["/failed"]
    assert json.loads(request.content)["type"] == "video.failed"
    assert set(world.deliveries(task)) == {failed.id}


def test_an_image_task_tells_no_endpoint(world: World) -> None:
    _create(world.sdk, "/a")
    task = world.ended(kind=TaskKind.IMAGE)

    world.notifier().notify(task.id)

    assert world.receivers.count() == 0 and world.notify_state(task).endpoints == []


def test_a_503_on_one_endpoint_is_retried_on_schedule_and_the_other_is_not_sent_again(world: World) -> None:
    a, b = _create(world.sdk, "/a"), _create(world.sdk, "/b")
    world.receivers.answers["/a"] = [httpx.Response(503)]
    task = world.ended()
    notifier = world.notifier("5,300")

    with pytest.raises(RetryLater) as first:
        notifier.notify(task.id)

    assert 4 <= first.value.seconds <= 6
    retrying = world.deliveries(task)[a.id]
    assert retrying.outcome is WebhookOutcome.RETRYING and retrying.attempts[0].status == 503
    assert world.deliveries(task)[b.id].outcome is WebhookOutcome.DELIVERED
    assert notification_pending(world.tasks.get(task.id))
    with pytest.raises(RetryLater):  # not due yet: nothing sent
        notifier.notify(task.id)
    assert world.receivers.count() == 2
    world.clock.advance(6)
    notifier.notify(task.id)
    assert len(world.receivers.requests["/a"]) == 2 and len(world.receivers.requests["/b"]) == 1
    done = world.deliveries(task)[a.id]
    assert done.outcome is WebhookOutcome.DELIVERED and [x.status for x in done.attempts] == [503, 204]
    assert {r.headers["webhook-id"] for r in world.receivers.requests["/a"]} == {event_id(task.id)}
    assert not notification_pending(world.tasks.get(task.id))


def test_retry_after_and_410_rule_endpoint_deliveries_as_the_tasks_own(world: World) -> None:
    a, b = _create(world.sdk, "/a"), _create(world.sdk, "/b")
    world.receivers.answers["/a"] = [httpx.Response(503, headers={"retry-after": "120"})]
    world.receivers.answers["/b"] = [httpx.Response(410)]
    task = world.ended()

    with pytest.raises(RetryLater) as waiting:
        world.notifier("5,300").notify(task.id)

    assert 119 <= waiting.value.seconds <= 121
    assert world.deliveries(task)[b.id].outcome is WebhookOutcome.GONE
    assert world.deliveries(task)[a.id].outcome is WebhookOutcome.RETRYING


def test_a_deleted_endpoints_pending_delivery_ends_gone_without_a_post(world: World) -> None:
    a = _create(world.sdk, "/a")
    world.receivers.answers["/a"] = [httpx.Response(503)]
    task = world.ended()
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    world.sdk.webhooks.delete(a.id)
    world.clock.advance(6)

    world.notifier().notify(task.id)

    assert len(world.receivers.requests["/a"]) == 1
    gone = world.deliveries(task)[a.id]
    assert gone.outcome is WebhookOutcome.GONE and len(gone.attempts) == 1
    assert not notification_pending(world.tasks.get(task.id))


def test_an_endpoint_whose_url_was_updated_gets_the_retry_at_the_new_url(world: World) -> None:
    a = _create(world.sdk, "/a")
    world.receivers.answers["/a"] = [httpx.Response(503)]
    task = world.ended()
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    world.sdk.webhooks.update(a.id, url=f"{HOOKS}/moved")
    world.clock.advance(6)

    world.notifier().notify(task.id)

    assert len(world.receivers.requests["/a"]) == 1
    (moved,) = world.receivers.requests["/moved"]
    assert _verifies(world.sdk, moved, a.signing_secret)
    assert world.deliveries(task)[a.id].outcome is WebhookOutcome.DELIVERED


def test_a_failed_read_of_the_endpoints_on_a_retry_sends_nothing_and_takes_no_claim(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(world.sdk, "/a")
    world.receivers.answers["/a"] = [httpx.Response(503)]
    task = world.ended(webhook_url=f"{HOOKS}/own")
    world.receivers.answers["/own"] = [httpx.Response(503)]
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    world.clock.advance(6)

    def unavailable(store: Any, owner: str) -> Any:
        raise RuntimeError("DynamoDB unavailable")

    monkeypatch.setattr(DynamoWebhookEndpointStore, "of_owner", unavailable)
    with pytest.raises(RuntimeError):
        world.notifier().notify(task.id)

    assert world.receivers.count() == 2 and world.notify_state(task).lease_until is None


def test_endpoints_are_looked_up_once_so_a_later_endpoint_is_not_told_of_an_earlier_event(world: World) -> None:
    _create(world.sdk, "/a")
    world.receivers.answers["/a"] = [httpx.Response(503)]
    task = world.ended()
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)
    _create(world.sdk, "/late")
    world.clock.advance(6)

    world.notifier().notify(task.id)

    assert "/late" not in world.receivers.requests and len(world.deliveries(task)) == 1


def test_settled_and_notify_due_count_the_endpoint_deliveries() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    later = now + timedelta(minutes=5)
    pending = WebhookDelivery(id="evt_x", endpoint_id="we_a", outcome=WebhookOutcome.RETRYING, next_at=later)
    delivered = WebhookDelivery(id="evt_x", endpoint_id="we_b", outcome=WebhookOutcome.DELIVERED)
    task = Task(
        id=TASK_ID,
        provider="generate_task",
        protocol="generate_task",
        request={},
        status=TaskStatus.SUCCEEDED,
        created_at=now,
        updated_at=now,
        notify=NotifyState(event_sent_at=now, endpoints=[pending, delivered]),
    )

    assert not task.notify.settled(has_webhook=False)  # type: ignore[union-attr]
    assert notification_pending(task) and notify_due(task) == later + NOTIFY_GRACE
    done = task.model_copy(
        update={"notify": NotifyState(event_sent_at=now, endpoints=[delivered, delivered.model_copy()])}
    )
    assert done.notify.settled(has_webhook=False) and notify_due(done) is None  # type: ignore[union-attr]
    # A record from before endpoints existed (no list) is settled by its event alone
    assert NotifyState(event_sent_at=now).settled(has_webhook=False)


def test_the_task_view_shows_the_endpoint_deliveries_and_the_event_detail_does_not(world: World) -> None:
    a = _create(world.sdk, "/a")
    world.receivers.answers["/a"] = [httpx.Response(503)]
    task = world.ended()
    with pytest.raises(RetryLater):
        world.notifier().notify(task.id)

    stored = world.tasks.get(task.id)
    view = task_view(stored).model_dump(mode="json")

    (shown,) = view["webhook_endpoints"]
    assert (shown["endpoint_id"], shown["id"], shown["outcome"]) == (a.id, event_id(task.id), "retrying")
    assert shown["attempts"][0]["status"] == 503 and shown["attempts"][0]["next_at"]
    assert "webhook_endpoints" not in task_data(stored)
