"""Callbacks: token first, the body a hint, the status endpoint the truth, duplicates harmless."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from reelay.aws import ResultBucket, TaskQueue
from reelay.callback_api import build_callback_app
from reelay.callbacks import CallbackReceiver
from reelay.catalog import ProviderCatalog
from reelay.errors import CallbackRejected, ProviderRateLimited
from reelay.models import ErrorCode, TaskStatus, VideoRequest
from reelay.providers.base import ProviderState, ProviderStatus
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from tests.unit.conftest import drain, load_event
from tests.unit.fakes import FakeProvider, config

TOKENS = CallbackTokens(b"c" * 32)


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    class World:
        provider = FakeProvider(config("generate_task"))
        store = DynamoTaskStore("tasks")
        catalog = ProviderCatalog((provider.config,), factory=lambda c: World.provider)
        receiver = CallbackReceiver(store, catalog, TOKENS, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])))
        tasks = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
        ingest_queue = aws["INGEST_QUEUE_URL"]

        def submitted(self) -> str:
            task = self.tasks.create(VideoRequest(provider="generate_task", prompt="a cat"))[0]
            self.store.transition(task, TaskStatus.SUBMITTED, reason="t", provider_task_id="p-1")
            return task.id

    return World()


def _body(url: str = "https://evil.example/steal.mp4") -> bytes:
    return json.dumps(
        {"code": 200, "data": {"taskId": "p-1", "state": "success", "resultJson": json.dumps({"resultUrls": [url]})}}
    ).encode()


@pytest.mark.parametrize("token", [None, "", "wrong", TOKENS.token("generate_task", "tsk_other")])
def test_bad_token_is_rejected_before_any_work(world: Any, token: str | None) -> None:
    task_id = world.submitted()
    before = world.store.get(task_id)
    with pytest.raises(CallbackRejected):
        world.receiver.receive("generate_task", task_id, token, _body())
    assert world.provider.status_calls == []
    assert world.store.get(task_id) == before


def test_body_is_only_a_hint_the_status_endpoint_decides(world: Any) -> None:
    task_id = world.submitted()
    world.provider.succeed("https://cdn.provider.example/real.mp4")
    task = world.receiver.receive("generate_task", task_id, TOKENS.token("generate_task", task_id), _body())
    assert world.provider.status_calls == ["p-1"]
    assert task.status is TaskStatus.INGESTING
    assert task.result_urls == ["https://cdn.provider.example/real.mp4"]
    assert drain(world.ingest_queue) == [{"task_id": task_id}]


def test_a_success_claim_is_ignored_while_the_provider_says_running(world: Any) -> None:
    task_id = world.submitted()
    world.provider.running(40)
    task = world.receiver.receive("generate_task", task_id, TOKENS.token("generate_task", task_id), _body())
    assert task.status is TaskStatus.RUNNING and task.progress == 40
    assert drain(world.ingest_queue) == []


def test_fifty_concurrent_duplicates_make_one_transition_and_one_ingest(world: Any) -> None:
    task_id = world.submitted()
    world.provider.succeed("https://cdn.provider.example/real.mp4")
    token = TOKENS.token("generate_task", task_id)
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: world.receiver.receive("generate_task", task_id, token, _body()), range(50)))
    assert all(r.status is TaskStatus.INGESTING for r in results)
    task = world.store.get(task_id)
    assert [h.to_status for h in task.history].count(TaskStatus.INGESTING) == 1
    assert drain(world.ingest_queue) == [{"task_id": task_id}]


def test_out_of_order_and_late_callbacks_change_nothing(world: Any) -> None:
    task_id = world.submitted()
    token = TOKENS.token("generate_task", task_id)
    world.provider.running(70)
    world.receiver.receive("generate_task", task_id, token, b"{}")
    world.provider.running(30)  # a stale report
    assert world.receiver.receive("generate_task", task_id, token, b"{}").progress == 70
    world.provider.state = ProviderStatus(
        provider_task_id="p-1", state=ProviderState.FAILED, error_code=ErrorCode.CONTENT_POLICY, error_message="refused"
    )
    failed = world.receiver.receive("generate_task", task_id, token, b"garbage")
    assert failed.status is TaskStatus.FAILED and failed.error.code is ErrorCode.CONTENT_POLICY
    calls = len(world.provider.status_calls)
    world.provider.succeed("https://cdn.provider.example/late.mp4")
    assert world.receiver.receive("generate_task", task_id, token, _body()).status is TaskStatus.FAILED
    assert len(world.provider.status_calls) == calls  # terminal: no provider call at all


def test_callback_adopts_the_provider_task_of_a_lost_create(world: Any) -> None:
    task = world.tasks.create(VideoRequest(provider="generate_task", prompt="a cat"))[0]
    world.provider.running(10)
    body = json.dumps({"taskId": "p-77", "state": "processing"}).encode()
    got = world.receiver.receive("generate_task", task.id, TOKENS.token("generate_task", task.id), body)
    assert world.provider.status_calls == ["p-77"]
    assert got.provider_task_id == "p-77" and got.status is TaskStatus.RUNNING


class _Ctx:
    function_name = "callback"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:callback"
    aws_request_id = "req"


def test_http_mapping_401_404_200(world: Any) -> None:
    app = build_callback_app(lambda: world.receiver)
    task_id = world.submitted()
    world.provider.running(5)

    def call(token: str, tid: str = task_id) -> int:
        event = load_event("callback_generate_task.json")
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/callbacks/generate_task/{tid}"
        event["queryStringParameters"] = {"t": token}
        event["rawQueryString"] = f"t={token}"
        return app.resolve(event, _Ctx())["statusCode"]

    assert call("nope") == 401
    assert call(TOKENS.token("generate_task", "tsk_missing"), "tsk_missing") == 404
    assert call(TOKENS.token("generate_task", task_id)) == 200


def test_powertools_development_mode_prints_no_callback_token(
    world: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_DEV", "true")  # reelay dev's readable logs
    app = build_callback_app(lambda: world.receiver)
    task_id = world.submitted()
    world.provider.running(5)
    token = TOKENS.token("generate_task", task_id)
    event = load_event("callback_generate_task.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/callbacks/generate_task/{task_id}"
    event["queryStringParameters"] = {"t": token}
    event["rawQueryString"] = f"t={token}"
    assert app.resolve(event, _Ctx())["statusCode"] == 200
    printed = capsys.readouterr()
    assert token not in printed.out + printed.err


class RecordingQueue:
    """The submit queue, as the receiver uses it: what was sent, and with what delay."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, Any]] = []

    def send(self, task_id: str, *, delay_seconds: int = 0, **extra: Any) -> None:
        self.sent.append((task_id, delay_seconds, extra.get("kind")))


def test_a_status_check_held_back_by_the_request_limit_is_queued_for_the_submit_worker_not_a_503(
    world: Any,
) -> None:
    # generate_task never retries a callback: a 503 here would leave the task (and its slot)
    # to reconcile's look minutes later.
    looks = RecordingQueue()
    receiver = CallbackReceiver(world.store, world.catalog, TOKENS, world.receiver._tracker, looks=looks)
    task_id = world.submitted()
    before = world.store.get(task_id)
    world.provider.status_error = ProviderRateLimited("held", provider="generate_task", retry_after=2.2)
    task = receiver.receive("generate_task", task_id, TOKENS.token("generate_task", task_id), _body())
    assert task.status is TaskStatus.SUBMITTED
    assert looks.sent == [(task_id, 3, "look")]  # when the request log has room, rounded up
    assert world.store.get(task_id) == before  # nothing written
    # Without a queue to hand it to, the provider is asked to deliver again (503), as before.
    with pytest.raises(ProviderRateLimited):
        world.receiver.receive("generate_task", task_id, TOKENS.token("generate_task", task_id), _body())
