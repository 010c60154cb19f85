"""The poll function's logic: delayed poll messages, the task token, deadline, errors, failure recording."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest

import reelay.store
from reelay import costs
from reelay.aws import PollTokens, ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.deadlines import Deadlines
from reelay.errors import ProviderAuthError, ProviderRateLimited, ProviderTransientError
from reelay.models import ErrorCode, TaskStatus, VideoRequest, utcnow
from reelay.polling import MAX_TRANSIENT_ERRORS, PollMessage, PollService
from reelay.store import PASSING, DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tracking import TaskTracker
from tests.unit.conftest import drain, load_event
from tests.unit.fakes import FakeProvider, config


class RecordingTokens(PollTokens):
    """Records the task-token calls; a token in ``gone`` is no longer awaited by any execution."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.gone: set[str] = set()

    def heartbeat(self, token: str) -> bool:
        self.calls.append(("heartbeat", token, None))
        return token not in self.gone

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        self.calls.append(("succeed", token, output))
        return token not in self.gone

    def fail(self, token: str, *, error: str, cause: str) -> bool:
        self.calls.append(("fail", token, {"Error": error, "Cause": cause}))
        return token not in self.gone

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.calls]


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    poll_queue = boto3.client("sqs").create_queue(QueueName="poll")["QueueUrl"]

    class World:
        provider = FakeProvider(config("sorahk", typical_seconds=300, deadline_seconds=3600), callbacks=False)
        store = DynamoTaskStore("tasks")
        catalog = ProviderCatalog((provider.config,), factory=lambda c: World.provider)
        tokens = RecordingTokens()
        clock = [utcnow()]
        service = PollService(
            store,
            catalog,
            TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])),
            TaskQueue(poll_queue),
            tokens,
            clock=lambda: World.clock[0],
        )
        ingest_queue = aws["INGEST_QUEUE_URL"]
        queue = poll_queue

        def submitted(self) -> str:
            tasks = TaskService(self.store, self.catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
            task = tasks.create(VideoRequest(provider="sorahk", prompt="a cat"))[0]
            self.store.transition(task, TaskStatus.SUBMITTED, reason="t", provider_task_id="p-1")
            return task.id

        def queued_polls(self) -> int:
            """Poll messages on the queue, delayed or not."""
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
            found = boto3.client("sqs").get_queue_attributes(QueueUrl=poll_queue, AttributeNames=names)
            return sum(int(v) for v in found["Attributes"].values())

    return World()


def _message(task_id: str, **kw: Any) -> PollMessage:
    return PollMessage(task_id=task_id, token="tok-1", **kw)


def test_a_running_task_gets_its_next_poll_after_a_heartbeat_with_shrinking_waits(world: Any, monkeypatch: Any) -> None:
    task_id = world.submitted()
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(TaskQueue, "send", lambda self, tid, **kw: sent.append({"task_id": tid, **kw}))
    message = _message(task_id)
    for progress in (20, 60):
        world.provider.running(progress)
        world.clock[0] += timedelta(seconds=120)
        assert world.service.poll(message) == "next"
        message = PollMessage(**{k: v for k, v in sent[-1].items() if k != "delay_seconds"})
    assert world.tokens.kinds() == ["heartbeat", "heartbeat"]
    assert [s["polls"] for s in sent] == [1, 2] and all(s["token"] == "tok-1" for s in sent)
    assert sent[0]["delay_seconds"] > sent[1]["delay_seconds"] >= 1  # the end nears: waits shrink
    assert world.store.get(task_id).status is TaskStatus.RUNNING


def test_a_poll_that_only_moves_the_progress_writes_it_at_most_once_a_typical_time(
    world: Any, monkeypatch: Any
) -> None:
    # Given a running task (typical 300 s: its stored progress may be 300 s stale)
    task_id = world.submitted()
    monkeypatch.setattr(TaskQueue, "send", lambda self, tid, **kw: None)
    world.provider.running(5)
    assert world.service.poll(_message(task_id)) == "next"
    running = world.store.get(task_id)
    assert (running.status, running.progress) == (TaskStatus.RUNNING, 5)
    # When polls within 300 s of that write find the progress on, by a little or by a lot: no write
    for polls, (seconds, progress) in enumerate(((10, 8), (60, 12), (70, 30), (150, 30)), start=1):
        world.clock[0] += timedelta(seconds=seconds)
        world.provider.running(progress)
        assert world.service.poll(_message(task_id, polls=polls)) == "next"
    assert world.store.get(task_id).version == running.version
    # Then one 305 s after the last write, far from the predicted end (≈ 710 s left), writes it
    world.clock[0] += timedelta(seconds=15)
    world.provider.running(30)
    assert world.service.poll(_message(task_id, polls=5)) == "next"
    assert (world.store.get(task_id).progress, world.store.get(task_id).version) == (30, running.version + 1)
    # And the answer that ends it is never held back, however soon it comes
    world.clock[0] += timedelta(seconds=1)
    world.provider.succeed("https://cdn.example/v.mp4")
    assert world.service.poll(_message(task_id, polls=6)) == "done"
    assert (world.store.get(task_id).status, world.store.get(task_id).progress) == (TaskStatus.INGESTING, 100)


def test_a_long_task_is_polled_just_before_its_due_entry_passes_and_that_poll_moves_the_entry_on(
    world: Any, aws: dict[str, str], monkeypatch: Any
) -> None:
    # Given a task (typical 300 s) whose entry from when it was created comes due 600 s on, and
    # whose progress rate puts its next poll after that
    deadlines = Deadlines((world.provider.config,))
    store = DynamoTaskStore("tasks", due=deadlines.due, clock=lambda: world.clock[0])
    tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]))
    service = PollService(
        store, world.catalog, tracker, TaskQueue(world.queue), world.tokens, clock=lambda: world.clock[0]
    )
    tasks = TaskService(store, world.catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
    created = tasks.create(VideoRequest(provider="sorahk", prompt="a cat"))[0]
    world.clock[0] = created.created_at
    monkeypatch.setattr(reelay.store, "utcnow", lambda: world.clock[0])  # the writes' time is the test's
    store.transition(created, TaskStatus.SUBMITTED, reason="t", provider_task_id="p-1")
    entry = datetime.fromisoformat(str(store.get(created.id).stored_due))
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(TaskQueue, "send", lambda self, tid, **kw: sent.append({"task_id": tid, **kw}))
    world.clock[0] = created.created_at + timedelta(seconds=150)
    world.provider.running(10)
    assert service.poll(_message(created.id)) == "next"
    running = store.get(created.id)
    assert running.status is TaskStatus.RUNNING and running.stored_due == entry.isoformat()  # kept
    # When it is polled: the wait (60 % of the 1,350 s left) is cut to land just before the entry
    wait = sent[-1]["delay_seconds"]
    assert wait < 0.6 * 1350 * 0.9
    poll_at = world.clock[0] + timedelta(seconds=wait)
    assert entry - PASSING < poll_at < entry
    # Then that poll writes its progress though the last write is recent, and moves the entry on
    # before it passes (no reconcile run can find the task early)
    world.clock[0] = poll_at
    world.provider.running(35)
    assert service.poll(_message(created.id, polls=1)) == "next"
    moved = store.get(created.id)
    assert moved.progress == 35 and moved.stored_due == deadlines.due(moved).isoformat()
    assert datetime.fromisoformat(str(moved.stored_due)) > poll_at + timedelta(seconds=500)
    # And the wait after it is the schedule's own again (the entry is far ahead)
    assert sent[-1]["delay_seconds"] > 60


def test_stale_progress_is_not_rewritten_once_the_end_is_predicted_near(world: Any, monkeypatch: Any) -> None:
    # Given a running task (typical 300 s) whose stored progress is 200 s old
    task_id = world.submitted()
    monkeypatch.setattr(TaskQueue, "send", lambda self, tid, **kw: None)
    world.provider.running(20)
    world.clock[0] += timedelta(seconds=100)
    assert world.service.poll(_message(task_id)) == "next"
    running = world.store.get(task_id)
    world.clock[0] += timedelta(seconds=200)
    # When a poll 300 s in finds 80 % (75 s left, under two thirds of the typical time): no write
    world.provider.running(80)
    assert world.service.poll(_message(task_id, polls=1)) == "next"
    assert world.store.get(task_id).version == running.version
    # Then the end is written at once
    world.clock[0] += timedelta(seconds=40)
    world.provider.succeed("https://cdn.example/v.mp4")
    assert world.service.poll(_message(task_id, polls=2)) == "done"
    assert world.store.get(task_id).status is TaskStatus.INGESTING


def test_the_final_answer_hands_over_to_ingest_and_ends_the_execution(world: Any) -> None:
    task_id = world.submitted()
    world.provider.succeed("https://cdn.example/v.mp4")
    assert world.service.poll(_message(task_id, polls=3)) == "done"
    assert world.tokens.calls == [("succeed", "tok-1", {"task_id": task_id, "status": "ingesting"})]
    assert drain(world.ingest_queue) == [{"task_id": task_id}]
    assert world.queued_polls() == 0  # the chain ends: no further poll
    # A duplicate of the message (SQS delivers at least once) changes nothing and asks no one.
    assert world.service.poll(_message(task_id, polls=3)) == "done"
    assert world.provider.status_calls == ["p-1"]


def test_a_failure_to_end_the_execution_still_hands_over_to_ingest_and_the_poll_comes_back(
    world: Any, monkeypatch: Any
) -> None:
    # Given a final answer, and Step Functions failing the SendTaskSuccess (it runs before the
    # ingest message, so that message carries the poll's whole cost)
    task_id = world.submitted()
    world.provider.succeed("https://cdn.example/v.mp4")

    succeed = RecordingTokens.succeed
    down = [True]

    def flaky(self: Any, token: str, output: dict[str, Any]) -> bool:
        if down[0]:
            raise RuntimeError("ServiceUnavailable")
        return succeed(self, token, output)

    monkeypatch.setattr(RecordingTokens, "succeed", flaky)
    # When it polls: the error comes out, but only once the ingest message is out
    with pytest.raises(RuntimeError, match="ServiceUnavailable"):
        world.service.poll(_message(task_id, polls=3))
    assert drain(world.ingest_queue) == [{"task_id": task_id}]
    assert world.store.get(task_id).status is TaskStatus.INGESTING
    # Then the poll's message comes back, finds the task settled and ends the execution
    down[0] = False
    assert world.service.poll(_message(task_id, polls=3)) == "done"
    assert world.tokens.kinds() == ["succeed"] and drain(world.ingest_queue) == []


def test_a_provider_reported_failure_ends_the_task_and_the_execution_cleanly(world: Any) -> None:
    from reelay.providers.base import ProviderState, ProviderStatus

    task_id = world.submitted()
    world.provider.state = ProviderStatus(
        provider_task_id="p-1", state=ProviderState.FAILED, error_code=ErrorCode.CONTENT_POLICY, error_message="no"
    )
    assert world.service.poll(_message(task_id)) == "done"
    assert world.store.get(task_id).error.code is ErrorCode.CONTENT_POLICY
    assert world.tokens.kinds() == ["succeed"]


def test_a_poll_whose_execution_no_longer_waits_stops_its_chain(world: Any) -> None:
    task_id = world.submitted()
    world.provider.running(10)
    world.tokens.gone.add("tok-1")
    assert world.service.poll(_message(task_id)) == "stopped"
    assert world.queued_polls() == 0


def test_deadline_fails_the_task_without_asking_the_provider(world: Any) -> None:
    task_id = world.submitted()
    # An hour past its submission (counted from the task, not the fixture: a loaded machine is slow)
    world.clock[0] = world.store.get(task_id).updated_at + timedelta(seconds=3601)
    assert world.service.poll(_message(task_id)) == "done"
    task = world.store.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is ErrorCode.DEADLINE_EXCEEDED
    assert world.provider.status_calls == [] and world.tokens.kinds() == ["succeed"]


def test_transient_errors_are_polled_again_with_backoff_then_fail_by_name(world: Any, monkeypatch: Any) -> None:
    task_id = world.submitted()
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(TaskQueue, "send", lambda self, tid, **kw: sent.append(kw))
    world.provider.status_error = ProviderRateLimited("slow down", provider="sorahk", retry_after=30)
    assert world.service.poll(_message(task_id, polls=2)) == "next"
    assert sent[-1]["errors"] == 1 and sent[-1]["polls"] == 2 and sent[-1]["delay_seconds"] >= 30  # Retry-After
    world.provider.status_error = ProviderTransientError("HTTP 502", provider="sorahk")
    assert world.service.poll(_message(task_id, errors=MAX_TRANSIENT_ERRORS - 2)) == "next"
    assert world.store.get(task_id).status is TaskStatus.SUBMITTED  # never failed by a retried error
    assert world.service.poll(_message(task_id, errors=MAX_TRANSIENT_ERRORS - 1)) == "failed"
    assert world.tokens.calls[-1] == ("fail", "tok-1", {"Error": "ProviderTransientError", "Cause": "HTTP 502"})
    # A good answer resets the count.
    world.provider.status_error = None
    world.provider.running(40)
    assert world.service.poll(_message(task_id, errors=5)) == "next" and sent[-1]["errors"] == 0


def test_an_error_that_ends_the_task_is_sent_to_the_execution_by_class_name(world: Any) -> None:
    task_id = world.submitted()
    world.provider.status_error = ProviderAuthError("sorahk rejected reelay's credential (401)", provider="sorahk")
    assert world.service.poll(_message(task_id)) == "failed"
    kind, _, error = world.tokens.calls[-1]
    assert kind == "fail" and error["Error"] == "ProviderAuthError"
    # The state machine's Catch hands it to RecordFailure: the code comes from the name.
    world.service.fail({"action": "fail", "task_id": task_id, "error": error})
    task = world.store.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is ErrorCode.PROVIDER_AUTH
    assert "credential" in task.error.message


def test_an_error_with_no_execution_waiting_is_recorded_on_the_task(world: Any) -> None:
    task_id = world.submitted()
    world.tokens.gone.add("tok-1")
    world.provider.status_error = ProviderAuthError("refused", provider="sorahk")
    assert world.service.poll(_message(task_id)) == "failed"
    assert world.store.get(task_id).error.code is ErrorCode.PROVIDER_AUTH


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


def test_the_state_machine_timeout_is_a_deadline(world: Any) -> None:
    task_id = world.submitted()
    world.service.fail({"task_id": task_id, "error": {"Error": "States.Timeout", "Cause": ""}})
    assert world.store.get(task_id).error.code is ErrorCode.DEADLINE_EXCEEDED


def test_a_batch_reports_only_the_message_that_raised(world: Any) -> None:
    task_id = world.submitted()
    world.provider.running(10)
    event = load_event("sqs_poll.json")
    good = event["Records"][0] | {"messageId": "good", "body": _message(task_id).model_dump_json()}
    bad = event["Records"][0] | {"messageId": "bad", "body": _message("tsk_missing").model_dump_json()}
    # Dropped, as they can never succeed: no task id and token, not JSON, not an object.
    junk = [event["Records"][0] | {"messageId": f"junk-{n}", "body": body} for n, body in enumerate(("{}", "{", "[1]"))]
    result = world.service.handle_batch({"Records": [good, bad, *junk]}, None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert world.queued_polls() == 1  # the good one's next poll


@pytest.mark.parametrize(("attempt", "with_costs", "taken"), [(0, True, True), (1, True, False), (0, False, False)])
def test_counts_carried_by_the_state_machine_are_taken_from_its_first_attempt_only(
    world: Any, attempt: int, with_costs: bool, taken: bool
) -> None:
    # Given the state machine's message (a retry resends the same input, costs included; an
    # execution started with no counts to carry has none)
    task_id = world.submitted()
    world.provider.running(10)
    execution_input: dict[str, Any] = {"task_id": task_id, "wait_seconds": 5}
    if with_costs:
        execution_input["costs"] = {"n_sfn.StartExecution": "1"}
    body = json.loads(_message(task_id, attempt=attempt).model_dump_json()) | {"input": execution_input}
    record = load_event("sqs_poll.json")["Records"][0] | {"messageId": "m", "body": json.dumps(body)}

    # When the poll worker takes it
    with costs.invocation() as ledger:
        world.service.handle_batch({"Records": [record]}, None)
        shares = ledger.close(duration_ms=100, memory_mb=256, http=False)

    # Then the counts join the poll's on the first attempt only, and the poll is made either way
    assert ("n_sfn.StartExecution" in shares[task_id]) is taken
    assert world.queued_polls() == 1


def test_the_token_is_not_in_the_message_repr() -> None:
    assert "secret-token" not in repr(PollMessage(task_id="t", token="secret-token"))


def test_a_message_is_left_for_the_next_invocation_when_its_poll_would_not_fit(world: Any) -> None:
    task_id = world.submitted()
    world.provider.running(10)
    service = PollService(
        world.store, world.catalog, world.service._tracker, TaskQueue(world.queue), world.tokens, record_seconds=30
    )
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=world.queue, MessageBody=_message(task_id).model_dump_json())
    [received] = sqs.receive_message(QueueUrl=world.queue, VisibilityTimeout=600)["Messages"]
    record = load_event("sqs_poll.json")["Records"][0] | {
        "messageId": received["MessageId"],
        "receiptHandle": received["ReceiptHandle"],
        "body": received["Body"],
    }

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 10_000  # 10 s left, a poll may take 30

    with costs.invocation() as ledger:
        result = service.handle_batch({"Records": [record]}, Context())
        shares = ledger.close(duration_ms=100, memory_mb=256, http=False)
    assert result == {"batchItemFailures": [{"itemIdentifier": received["MessageId"]}]}
    assert world.provider.status_calls == []  # not started
    assert sqs.receive_message(QueueUrl=world.queue).get("Messages")  # visible again at once
    # And its task still shares the invocation that received it (as an independent count sees it)
    assert shares[task_id]["lambda_requests"] == 1
