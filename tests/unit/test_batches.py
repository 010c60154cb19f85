"""Batch manifests on moto: splitting, chunks, idempotent lines, progress, the report and the API.

The batch queue is drained by calling ``BatchRunner.handle`` on each message, as the batch
function does; tasks end through the real ``TaskTracker`` with the batch hook registered.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from reelay.api import build_app
from reelay.aws import ResultBucket, TaskQueue
from reelay.batch_store import BatchQueue, DynamoBatchStore, ManifestObjects
from reelay.batches import (
    INBOX_ROOT,
    BatchProgress,
    BatchRunner,
    BatchService,
    BatchStatus,
    batch_id_of,
    inbox_prefix,
    owner_hash,
    read_lines,
)
from reelay.catalog import ProviderCatalog
from reelay.models import LOCAL_OWNER, BatchUploadRequest, ErrorCode, Output, TaskError, TaskStatus
from reelay.providers.base import ProviderConfig
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tracking import TaskTracker
from tests.unit.conftest import load_event

GT = ProviderConfig(
    name="generate_task", protocol="generate_task", base_url="https://g.example", api_key=SecretStr("k")
)


def test_lines_are_read_with_their_offsets_and_a_giant_line_is_skipped_not_held() -> None:
    data = b'{"a":1}\r\n\n{"b":2}\n' + b"x" * 50 + b"\nlast"
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]  # lines cross piece boundaries
    lines = list(read_lines(pieces, offset=100, first_line=1, max_bytes=40))
    assert [(n, c) for n, _, _, c in lines] == [(1, b'{"a":1}'), (2, b""), (3, b'{"b":2}'), (4, None), (5, b"last")]
    assert lines[0][1:3] == (100, 109) and lines[-1][2] == 100 + len(data)
    # And reading from a line's start gives the same lines from there on
    again = list(read_lines([data[lines[2][1] - 100 :]], offset=lines[2][1], first_line=3, max_bytes=40))
    assert again == lines[2:]


class Harness:
    """A batch stack on moto: the runner, the queue drained by hand, the tracker with the batch hook."""

    def __init__(
        self, aws: dict[str, str], *, chunk_lines: int = 500, providers: tuple[ProviderConfig, ...] = (GT,)
    ) -> None:
        sqs = boto3.client("sqs")
        self.queue_url = sqs.create_queue(QueueName="batch")["QueueUrl"]
        self.submit_url = aws["SUBMIT_QUEUE_URL"]
        self.store = DynamoTaskStore("tasks")
        self.batches = DynamoBatchStore("tasks")
        self.queue = BatchQueue(self.queue_url)
        catalog = ProviderCatalog(providers)
        self.tasks = TaskService(self.store, catalog, TaskQueue(self.submit_url), ResultBucket("results"))
        self.progress = BatchProgress(self.batches, self.queue)
        self.tracker = TaskTracker(
            self.store, TaskQueue(aws["INGEST_QUEUE_URL"]), on_terminal=[self.progress.task_ended]
        )
        self.completed: list[str] = []
        self.runner = BatchRunner(
            self.batches,
            ManifestObjects("results"),
            self.queue,
            lambda: self.tasks,
            providers,
            chunk_lines=chunk_lines,
            on_batch_completed=[lambda b: self.completed.append(b.id)],
        )
        self.s3 = boto3.client("s3")
        self.handled: list[dict[str, Any]] = []

    def put(self, key: str, lines: list[str]) -> dict[str, Any]:
        self.s3.put_object(Bucket="results", Key=key, Body="\n".join(lines).encode())
        return self.event(key)

    def event(self, key: str) -> dict[str, Any]:
        event = load_event("sqs_batch_manifest.json")
        body = json.loads(event["Records"][0]["body"])
        body["detail"]["bucket"]["name"] = "results"
        body["detail"]["object"]["key"] = key
        return body

    def drain(self, *, seconds_left: Callable[[], float] = lambda: 300.0, drop_kind: str | None = None) -> int:
        sqs, count = boto3.client("sqs"), 0
        while True:
            got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                return count
            for message in got:
                body = json.loads(message["Body"])
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                if body.get("kind") == drop_kind:
                    continue
                self.handled.append(body)
                self.runner.handle(body, seconds_left=seconds_left)
                count += 1

    def deliver(self, event: dict[str, Any]) -> None:
        self.runner.handle(event, seconds_left=lambda: 300.0)
        self.drain()

    def submit_messages(self) -> int:
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=self.submit_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def report(self, name: str) -> list[dict[str, Any]]:
        body = self.s3.get_object(Bucket="results", Key=f"reports/{name}.jsonl")["Body"].read().decode()
        return [json.loads(line) for line in body.splitlines()]

    def summary(self, name: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket="results", Key=f"reports/{name}.summary.json")["Body"].read())

    def end(self, task_id: str, *, ok: bool, cost: int = 0) -> None:
        task = self.store.update(self.store.get(task_id), cost_cents=cost)
        if ok:
            task = self.store.transition(task, TaskStatus.INGESTING, reason="test")
            out = Output(key=f"tasks/{task_id}/0.mp4", s3_uri=f"s3://results/tasks/{task_id}/0.mp4", bytes=1,
                         sha256="0" * 64, content_type="video/mp4")  # fmt: skip
            self.tracker.succeed(task, [out])
        else:
            self.tracker.fail(task, ErrorCode.CONTENT_POLICY, "refused")


def _line(i: int, **extra: Any) -> str:
    return json.dumps({"id": f"c{i}", "provider": "generate_task", "prompt": f"shot {i}", "duration": 4, **extra})


@pytest.fixture
def harness(aws: dict[str, str]) -> Harness:
    return Harness(aws, chunk_lines=3)


def test_an_invalid_line_is_told_what_is_wrong_in_words_as_the_api_would(aws: dict[str, str]) -> None:
    # Given a stack with sorahk and generate_task, and a manifest of lines each wrong in one way
    sorahk = ProviderConfig(name="sorahk", protocol="sorahk", base_url="https://s.example", api_key=SecretStr("k"))
    harness = Harness(aws, providers=(GT, sorahk))
    lines = [
        json.dumps({"provider": "sorahk", "prompt": "a fox", "duration": 25}),
        json.dumps({"provider": "generate_task", "prompt": " \u3000 "}),
        json.dumps({"provider": "generate_task", "prompt": "a fox", "image_url": "https://img.example/a b.png"}),
    ]
    # When it arrives and runs
    harness.deliver(harness.put("inbox/words.jsonl", lines))
    # Then each line's error says why in words: where 25 s is sold, what a prompt needs, what a URL is
    messages = [r["error"]["message"] for r in harness.report("words")]
    assert messages[0].startswith("request is invalid: duration: Input should be 10 or 15; 25 is offered by sorahk")
    assert messages[1] == "request is invalid: prompt: must contain a character that is not white space"
    assert messages[2].startswith("request is invalid: image_url: is not an http(s) URL this API takes")
    assert not any("pattern" in m for m in messages)


def test_a_manifest_with_a_quarter_invalid_lines_makes_every_valid_task_and_reports_every_line(
    harness: Harness,
) -> None:
    # Given 8 lines, every fourth invalid (a duration generate_task cannot do, broken JSON), and a blank line
    lines = [_line(i) for i in range(1, 9)]
    lines[3] = _line(4, duration=5)
    lines[7] = "{not json"
    lines.insert(5, "   ")
    # When it arrives and its chunks run
    harness.deliver(harness.put("inbox/shots.jsonl", lines))
    batch_id = batch_id_of("results", "inbox/shots.jsonl", hashlib.md5("\n".join(lines).encode()).hexdigest())
    batch = harness.batches.get(batch_id)
    # Then one task per valid line, queued for submission, owned by the local owner, line numbers kept
    assert batch is not None and batch.split_done and batch.lines == 9 and batch.chunks_total == 3
    assert (batch.tasks, batch.invalid, batch.chunks_done) == (6, 2, 3)
    records = list(harness.batches.lines(batch_id))
    assert [r.line for r in records] == [1, 2, 3, 4, 5, 7, 8, 9]
    tasks = harness.batches.tasks([r.task_id for r in records if r.task_id])
    assert sorted(t.batch_line for t in tasks.values()) == [1, 2, 3, 5, 7, 8]
    assert {t.owner for t in tasks.values()} == {LOCAL_OWNER} and {t.batch_id for t in tasks.values()} == {batch_id}
    assert harness.submit_messages() == 6
    # And no report while tasks run
    harness.end(records[0].task_id or "", ok=True, cost=12)
    assert harness.drain() == 0 and harness.batches.get(batch_id).status is BatchStatus.RUNNING  # type: ignore[union-attr]
    # When every task ends (one refused)
    for record in records[1:]:
        if record.task_id:
            harness.end(record.task_id, ok=record.line != 5, cost=10)
    harness.drain()
    # Then the report has every input line in order, with ids, statuses, outputs or errors
    report = harness.report("shots")
    assert [r["line"] for r in report] == [1, 2, 3, 4, 5, 7, 8, 9]
    assert [r["status"] for r in report] == ["succeeded"] * 3 + ["invalid", "failed", "succeeded", "succeeded"] + [
        "invalid"
    ]
    assert report[0]["id"] == "c1" and report[0]["outputs"] == [f"s3://results/tasks/{report[0]['task_id']}/0.mp4"]
    assert report[3]["error"]["code"] == "VALIDATION_FAILED" and "duration" in report[3]["error"]["message"]
    assert report[3]["id"] == "c4" and "task_id" not in report[3]
    assert report[4]["error"] == {"code": "CONTENT_POLICY", "message": "refused"}
    assert report[7]["error"]["code"] == "MALFORMED_JSON"
    # And the summary beside it
    summary = harness.summary("shots")
    assert summary["batch_id"] == batch_id and summary["lines"] == 8
    assert summary["by_status"] == {"succeeded": 5, "invalid": 2, "failed": 1}
    assert summary["by_code"] == {"VALIDATION_FAILED": 1, "MALFORMED_JSON": 1, "CONTENT_POLICY": 1}
    assert summary["cost_cents"] == 12 + 5 * 10 and summary["wall_seconds"] >= 0
    done = harness.batches.get(batch_id)
    assert done is not None and done.status is BatchStatus.COMPLETED and harness.completed == [batch_id]
    assert (done.succeeded, done.failed, done.cost_cents) == (5, 1, 62)
    # And a report message delivered again announces nothing twice
    harness.runner.handle({"kind": "report", "batch_id": batch_id}, seconds_left=lambda: 300.0)
    assert harness.completed == [batch_id]


def test_the_same_manifest_delivered_three_times_makes_the_tasks_of_one_delivery(harness: Harness) -> None:
    lines = [_line(i) for i in range(1, 8)]
    event = harness.put("inbox/again.jsonl", lines)
    # When the event arrives twice, the content is put again (a third event), and a chunk is re-delivered
    harness.deliver(event)
    harness.deliver(event)
    harness.deliver(harness.put("inbox/again.jsonl", lines))
    chunk = next(m for m in harness.handled if m.get("kind") == "chunk")
    harness.runner.handle(chunk, seconds_left=lambda: 300.0)
    # Then the tasks of one delivery: 7 tasks, 7 submit messages, counts committed once
    assert harness.submit_messages() == 7
    batch = harness.batches.get(
        batch_id_of("results", "inbox/again.jsonl", hashlib.md5("\n".join(lines).encode()).hexdigest())
    )
    assert batch is not None and (batch.tasks, batch.chunks_done, batch.chunks_total) == (7, 3, 3)
    # And other content at the same key is another batch
    harness.deliver(harness.put("inbox/again.jsonl", lines[:2]))
    assert harness.submit_messages() == 9


def test_a_chunk_that_died_after_making_tasks_makes_none_again_and_counts_once(harness: Harness) -> None:
    lines = [_line(i) for i in range(1, 4)]
    harness.runner.handle(harness.put("inbox/retry.jsonl", lines), seconds_left=lambda: 300.0)
    chunk = json.loads(boto3.client("sqs").receive_message(QueueUrl=harness.queue_url)["Messages"][0]["Body"])
    # Given a chunk whose tasks were made and sent on but whose commit never happened (the worker died)
    batch = harness.batches.get(chunk["batch_id"])
    assert batch is not None
    made: list[Any] = []
    for n in (1, 2):
        harness.runner._line(batch, n, lines[n - 1].encode(), made)
    harness.runner._tasks().dispatch_many(made)
    assert harness.submit_messages() == 2
    # When the chunk runs again
    harness.runner.handle(chunk, seconds_left=lambda: 300.0)
    # Then only the missing task is made, and the chunk counts once
    assert harness.submit_messages() == 3
    batch = harness.batches.get(chunk["batch_id"])
    assert batch is not None and (batch.tasks, batch.chunks_done) == (3, 1)


def test_a_split_short_of_time_continues_in_a_new_message(harness: Harness) -> None:
    lines = [_line(i) for i in range(1, 11)]
    # When the split has less than its reserve left after each chunk it cuts
    harness.runner.handle(harness.put("inbox/long.jsonl", lines), seconds_left=lambda: 1.0)
    harness.drain(seconds_left=lambda: 1.0)
    # Then it went on in continuation messages, and every line made its task exactly once
    splits = [m for m in harness.handled if m.get("kind") == "split"]
    assert len(splits) == 3 and [s["line"] for s in splits] == [4, 7, 10]
    chunks = sorted((m["index"], m["first_line"], m["lines"]) for m in harness.handled if m.get("kind") == "chunk")
    assert chunks == [(0, 1, 3), (1, 4, 3), (2, 7, 3), (3, 10, 1)]
    assert harness.submit_messages() == 10


def test_an_empty_manifest_completes_with_an_empty_report(harness: Harness) -> None:
    harness.deliver(harness.put("inbox/empty.jsonl", []))
    assert harness.report("empty") == []
    assert harness.summary("empty")["by_status"] == {}


def test_another_owners_inbox_maps_to_that_owner_and_an_unregistered_one_is_ignored(harness: Harness) -> None:
    ann = "arn:aws:iam::111111111111:user/ann"
    harness.batches.register_inbox(owner_hash(ann), ann)
    harness.deliver(harness.put(f"{inbox_prefix(ann)}mine.jsonl", [_line(1)]))
    harness.deliver(harness.put(f"{INBOX_ROOT}{'0' * 32}/stray.jsonl", [_line(1)]))
    harness.deliver(harness.put("inbox/notes.txt", [_line(1)]))
    records = [m for m in harness.handled if m.get("kind") == "chunk"]
    assert len(records) == 1
    batch = harness.batches.get(records[0]["batch_id"])
    assert batch is not None and batch.owner == ann and batch.name == "mine"
    task = next(iter(harness.batches.tasks([r.task_id for r in harness.batches.lines(batch.id) if r.task_id]).values()))
    assert task.owner == ann
    assert batch.report_path == f"reports/{owner_hash(ann)}/mine"


# ----------------------------------------------------------------- the API


class _Ctx:
    function_name = "api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"


def _call(app: Any, method: str, path: str, body: Any = None, authorizer: Any = None) -> tuple[int, dict[str, Any]]:
    event = load_event("api_create_task.json")
    event["headers"] = {"content-type": "application/json"}
    event["rawPath"] = path
    event["requestContext"]["http"].update(method=method, path=path)
    event["requestContext"].pop("authorizer", None)
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    event["body"] = json.dumps(body) if body is not None else None
    out = app.resolve(event, _Ctx())
    return out["statusCode"], json.loads(out["body"])


def test_the_api_presigns_a_manifest_put_and_shows_only_the_owners_batch(harness: Harness) -> None:
    service = BatchService(harness.batches, ResultBucket("results"))
    app = build_app(lambda: harness.tasks, [GT], lambda: service)
    content = "\n".join([_line(1), _line(2)]).encode()
    md5 = hashlib.md5(content).hexdigest()
    # When the local owner asks to upload a manifest
    status, ticket = _call(app, "POST", "/v1/batches", {"name": "daily", "bytes": len(content), "md5": md5})
    assert status == 201, ticket
    assert ticket["key"] == "inbox/daily.jsonl" and ticket["report_key"] == "reports/daily.jsonl"
    assert ticket["headers"]["Content-MD5"] == base64.b64encode(bytes.fromhex(md5)).decode()
    assert "content-md5" in ticket["url"].lower()  # signed in: S3 refuses another body
    # Then the batch is shown at once, awaiting its manifest
    status, waiting = _call(app, "GET", f"/v1/batches/{ticket['batch_id']}")
    assert status == 200 and waiting["status"] == "awaiting" and waiting["tasks"] == 0
    # And puts it (the batch id was known before the upload)
    harness.deliver(harness.put(ticket["key"], [_line(1), _line(2)]))
    status, view = _call(app, "GET", f"/v1/batches/{ticket['batch_id']}")
    assert status == 200, view
    assert (view["tasks"], view["running"], view["invalid"], view["status"]) == (2, 2, 0, "running")
    # Then another owner sees a 404, the same as a batch that does not exist
    ann = {"iam": {"userArn": "arn:aws:iam::111111111111:user/ann"}}
    status, foreign = _call(app, "GET", f"/v1/batches/{ticket['batch_id']}", authorizer=ann)
    assert status == 404 and foreign["error"]["code"] == "NOT_FOUND"
    assert _call(app, "GET", "/v1/batches/bat_" + "0" * 28)[0] == 404
    # And another owner's upload goes to its own inbox, registered to it
    status, theirs = _call(app, "POST", "/v1/batches", {"name": "x", "bytes": 1, "md5": md5}, authorizer=ann)
    assert status == 201 and theirs["key"] == f"inbox/{owner_hash(ann['iam']['userArn'])}/x.jsonl"
    assert harness.batches.inbox_owner(owner_hash(ann["iam"]["userArn"])) == ann["iam"]["userArn"]
    # And bad input is a 422
    assert _call(app, "POST", "/v1/batches", {"name": "../x", "bytes": 1, "md5": md5})[0] == 422
    assert _call(app, "GET", "/v1/batches/nope")[0] == 422


def test_batch_upload_names_are_bounded() -> None:
    BatchUploadRequest(name="team/2026-12-01.shots", bytes=1, md5="0" * 32)
    for bad in ("", "../up", "a//b", "/abs", "x" * 201):
        with pytest.raises(ValueError):
            BatchUploadRequest(name=bad, bytes=1, md5="0" * 32)


def test_a_lost_count_is_recounted_by_the_check_and_the_batch_still_completes(harness: Harness) -> None:
    lines = [_line(i) for i in range(1, 5)]
    harness.deliver(harness.put("inbox/lost.jsonl", lines))
    records = list(harness.batches.lines(next(m for m in harness.handled if m.get("kind") == "chunk")["batch_id"]))
    batch_id = next(m for m in harness.handled if m.get("kind") == "chunk")["batch_id"]
    # Given every task ended, but one end was never counted (its terminal hook failed)
    for record in records[:-1]:
        harness.end(record.task_id or "", ok=True, cost=5)
    lost = harness.store.get(records[-1].task_id or "")
    refused = TaskError(code=ErrorCode.CONTENT_POLICY, message="x")
    harness.store.transition(lost, TaskStatus.FAILED, reason="test", error=refused)
    assert harness.drain() == 0 and not harness.completed
    # When the check comes
    settled = harness.runner.check(batch_id)
    harness.drain()
    # Then the batch was recounted from its records and completed, with the right figures
    assert settled is not None and (settled.ended, settled.succeeded, settled.failed) == (4, 3, 1)
    assert harness.completed == [batch_id]
    assert harness.summary("lost")["by_status"] == {"succeeded": 3, "failed": 1}


def test_a_count_that_arrives_after_the_recount_is_not_added_again(harness: Harness) -> None:
    harness.deliver(harness.put("inbox/late.jsonl", [_line(1), _line(2)]))
    batch_id = next(m for m in harness.handled if m.get("kind") == "chunk")["batch_id"]
    records = list(harness.batches.lines(batch_id))
    # Given both tasks ended, the second one's count not yet added (its hook is still to run)
    harness.end(records[0].task_id or "", ok=True, cost=5)
    late = harness.store.get(records[1].task_id or "")
    refused = TaskError(code=ErrorCode.CONTENT_POLICY, message="x")
    harness.store.transition(late, TaskStatus.FAILED, reason="test", error=refused)
    # When the check recounts the batch, and then the late hook adds its count
    settled = harness.runner.check(batch_id)
    assert settled is not None and (settled.ended, settled.succeeded, settled.failed) == (2, 1, 1)
    assert harness.batches.task_ended(batch_id, succeeded=False, code="CONTENT_POLICY", cost_cents=0) is None
    # Then the task is counted once
    batch = harness.batches.get(batch_id)
    assert batch is not None
    assert (batch.tasks, batch.ended, batch.failed, batch.codes) == (2, 2, 1, {"CONTENT_POLICY": 1})


def test_a_check_before_every_task_ended_changes_nothing_and_comes_back(harness: Harness) -> None:
    harness.deliver(harness.put("inbox/early.jsonl", [_line(1), _line(2)]))
    batch_id = next(m for m in harness.handled if m.get("kind") == "chunk")["batch_id"]
    before = harness.batches.get(batch_id)
    after = harness.runner.check(batch_id)
    assert after == before and not harness.completed
    # The check is queued again, delayed (not visible yet)
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=harness.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert int(attributes["ApproximateNumberOfMessagesDelayed"]) >= 2  # the split's check and this one
