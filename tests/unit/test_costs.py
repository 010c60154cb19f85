"""Cost per task: DynamoDB unit rules, the per-invocation ledger, its flush, pricing and provider prices."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from reelay import costs
from reelay.aws import PollStarter, ResultBucket, TaskQueue
from reelay.errors import QueueSendFailed
from reelay.models import ErrorCode, Task, TaskError, TaskStatus, utcnow
from reelay.observability import observed
from reelay.store import INDEXES, DynamoTaskStore
from tests.template_support import REPO


class _Ctx:
    function_name = "fn"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fn"
    aws_request_id = "req-1"


def _task(**kw: Any) -> Task:
    now = utcnow()
    fields: dict[str, Any] = {
        "id": "tsk_1",
        "provider": "generate_task",
        "protocol": "generate_task",
        "request": {"prompt": "a cat", "duration": 8},
        "created_at": now,
        "updated_at": now,
    }
    return Task(**(fields | kw))


# -- DynamoDB's size and unit rules -------------------------------------------------------------


def test_item_size_counts_names_and_values_and_units_round_up_per_kilobyte() -> None:
    assert costs.item_size({"pk": "TASK#1"}) == 2 + 6
    assert costs.item_size({"n": Decimal("12345")}) == 1 + 4  # 5 digits: 3 bytes + 1
    assert costs.item_size({"m": {"a": "xy"}}) == 1 + 3 + (1 + 2 + 1)
    assert costs.write_units(1) == 1 and costs.write_units(1024) == 1 and costs.write_units(1025) == 2
    assert costs.read_units(4096, consistent=True) == 1 and costs.read_units(4097, consistent=True) == 2
    assert costs.read_units(10, consistent=False) == Decimal("0.5")


def test_index_writes_follow_key_changes_and_projections() -> None:
    old = {"pk": "p", "sk": "s", "owner": "o", "created_key": "c", "due_pk": "DUE", "due_at": "1", "x": "a"}
    # A new item: one write per index it is in (the listing indexes need their keys).
    assert costs.index_write_units(None, old, INDEXES) == 1 + 1  # ByOwnerCreated and Due carry keys only
    # The Due key moves: a delete and a put on Due; ByOwnerCreated (keys only) is not written.
    new = old | {"due_at": "2"}
    assert costs.index_write_units(old, new, INDEXES) == 2
    # An unprojected attribute changed: no index writes at all (every index holds keys only).
    assert costs.index_write_units(old, old | {"x": "b"}, INDEXES) == 0
    # Leaving the sparse index (a terminal task) is one delete there.
    gone = {k: v for k, v in old.items() if k not in ("due_pk", "due_at")}
    assert costs.index_write_units(old, gone, INDEXES) == 1
    # An ALL projection would copy the item on every write that changes it.
    everything = [costs.IndexSpec(name="ByOwner", keys=("owner", "created_key"))]
    assert costs.index_write_units(old, old | {"x": "b"}, everything) == 1


def test_the_indexes_priced_are_the_template_s() -> None:
    template = (REPO / "template.yaml").read_text()
    declared = set(re.findall(r"IndexName: (\w+)", template))
    assert {i.name for i in INDEXES} == declared


# -- the ledger, counted by the adapters and flushed once per invocation -------------------------


def test_store_operations_are_counted_per_task_and_flushed_with_one_add(aws: dict[str, str]) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    with costs.invocation() as ledger:
        task, _ = store.create(_task())
        task = store.transition(task, TaskStatus.SUBMITTED, reason="created")
        store.get(task.id)
        flushed = ledger.close(duration_ms=99.2, memory_mb=512, http=False)
    counts = flushed["tsk_1"]
    assert counts["n_ddb.PutItem"] == 2 and counts["n_ddb.GetItem"] == 1
    # create: 1 table unit + ByOwnerCreated + Due; transition: 1 table unit (the listing index
    # holds keys only; the Due entry, still ahead and earlier than the new due, stays).
    assert counts["ddb_wu"] == (1 + 1 + 1) + 1
    assert counts["ddb_ru"] == 1
    assert counts["lambda_requests"] == 1
    assert counts["lambda_gb_s"] == Decimal("0.1") * Decimal("0.5")  # 100 ms billed at 512 MB
    assert counts["ddb_accounting_wu"] == 1
    # The flush wrote exactly these counts; a second invocation adds to them.
    assert store.costs(["tsk_1"])["tsk_1"] == counts
    with costs.invocation() as ledger:
        store.get("tsk_1")
        ledger.close(duration_ms=1, memory_mb=512, http=False)
    assert store.costs(["tsk_1", "tsk_none"]) == {
        "tsk_1": counts
        | {
            "n_ddb.GetItem": Decimal(2),
            "ddb_ru": Decimal(2),
            "lambda_requests": Decimal(2),
            "lambda_gb_s": counts["lambda_gb_s"] + Decimal("0.0005"),  # 1 ms at 512 MB
            "ddb_accounting_wu": Decimal(2),
        },
        "tsk_none": {},
    }


def test_the_cost_record_stays_one_write_unit_with_every_counter() -> None:
    calls = [
        "ddb.PutItem", "ddb.GetItem", "ddb.TransactWriteItems", "sqs.SendMessage", "sqs.ChangeMessageVisibility",
        "sfn.StartExecution", "sfn.DescribeExecution", "s3.PutObject", "s3.CreateMultipartUpload", "s3.UploadPart",
        "s3.ListParts", "s3.CompleteMultipartUpload", "s3.AbortMultipartUpload", "s3.DeleteObject", "s3.HeadObject",
        "s3.GetObject", "events.PutEvents", "webhook.Deliver",
    ]  # fmt: skip
    item: dict[str, Any] = {"pk": "COST#tsk_" + "x" * 26, "sk": "COST"}
    item |= {name: Decimal("123456.123456") for name in costs.AWS_PRICES_USD}
    item |= {costs.CALL_PREFIX + name: Decimal("123456") for name in calls}
    assert costs.write_units(costs.item_size(item)) == 1


def test_an_invocation_shares_its_own_cost_among_the_tasks_it_worked_on(aws: dict[str, str]) -> None:
    queue = TaskQueue(aws["SUBMIT_QUEUE_URL"])
    with costs.invocation() as ledger:
        for task_id in ("tsk_a", "tsk_b", "tsk_c", "tsk_d"):
            queue.send(task_id)
        flushed = ledger.close(duration_ms=1000, memory_mb=1024, http=True)
    assert set(flushed) == {"tsk_a", "tsk_b", "tsk_c", "tsk_d"}
    for counts in flushed.values():
        assert counts["lambda_requests"] == Decimal("0.25") and counts["apigw_requests"] == Decimal("0.25")
        assert counts["lambda_gb_s"] == Decimal("0.25") and counts["sqs_requests"] == 1


def test_bucket_calls_are_counted_for_the_task_their_key_names_even_from_other_threads(aws: dict[str, str]) -> None:
    import contextvars
    import threading

    bucket = ResultBucket(aws["RESULTS_BUCKET"], client=boto3.client("s3"))
    with costs.invocation() as ledger:
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run,
            args=(bucket.put, "tasks/tsk_9/output-0.mp4", b"x"),
            kwargs={"content_type": "video/mp4", "metadata": {}},
        )
        thread.start()
        thread.join()
        bucket.head("tasks/tsk_9/output-0.mp4")
        bucket.head("uploads/someone/a.png")  # no task named and none being worked on: not a task's
        flushed = ledger.close(duration_ms=1, memory_mb=128, http=False)
    assert list(flushed) == ["tsk_9"]
    assert flushed["tsk_9"]["s3_put_requests"] == 1 and flushed["tsk_9"]["s3_get_requests"] == 1


def test_outside_an_invocation_nothing_is_counted(aws: dict[str, str]) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    store.create(_task())
    assert store.costs(["tsk_1"]) == {"tsk_1": {}}


def test_observed_accounts_a_posted_request_but_not_a_client_read(aws: dict[str, str]) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    store.create(_task())

    @observed(http=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        store.get("tsk_1")
        return {"statusCode": 200}

    def event(method: str) -> dict[str, Any]:
        context = {"requestId": "r", "http": {"method": method}}
        return {"pathParameters": {"task_id": "tsk_1"}, "requestContext": context}

    handler(event("GET"), _Ctx())
    assert store.costs(["tsk_1"])["tsk_1"] == {}
    handler(event("POST"), _Ctx())
    counts = store.costs(["tsk_1"])["tsk_1"]
    assert counts["apigw_requests"] == 1 and counts["lambda_requests"] == 1 and counts["n_ddb.GetItem"] == 1


# -- counts carried on a task's message -----------------------------------------------------------


def _records(*bodies: dict[str, Any]) -> dict[str, Any]:
    return {"Records": [{"messageId": f"m{i}", "body": json.dumps(b)} for i, b in enumerate(bodies)]}


def _received(sqs: Any, queue_url: str) -> dict[str, Any]:
    [message] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    return dict(json.loads(message["Body"]))


def test_a_step_that_sends_its_task_on_carries_its_counts_and_writes_no_add(aws: dict[str, str]) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    queue = TaskQueue(aws["SUBMIT_QUEUE_URL"])
    sqs = boto3.client("sqs")
    store.create(_task())

    @observed()
    def sender(event: dict[str, Any], context: Any) -> None:
        with costs.received("tsk_1", json.loads(event["Records"][0]["body"])):
            store.get("tsk_1")
            queue.send("tsk_1")

    sender(_records({"task_id": "tsk_1"}), _Ctx())
    assert store.costs(["tsk_1"])["tsk_1"] == {}  # no ADD: the counts left with the message
    body = _received(sqs, aws["SUBMIT_QUEUE_URL"])
    carried = costs.carried(body)
    assert carried["n_ddb.GetItem"] == 1 and carried["n_sqs.SendMessage"] == 1 and carried["sqs_requests"] == 1
    assert carried["lambda_requests"] == 1 and carried["lambda_gb_s"] > 0 and "ddb_accounting_wu" not in carried

    @observed()
    def last_step(event: dict[str, Any], context: Any) -> None:
        with costs.received("tsk_1", json.loads(event["Records"][0]["body"])):
            store.get("tsk_1")

    last_step(_records(body), _Ctx())
    counts = store.costs(["tsk_1"])["tsk_1"]
    # One ADD holds both steps: two reads, one send, two Lambda requests.
    assert counts["n_ddb.GetItem"] == 2 and counts["n_sqs.SendMessage"] == 1 and counts["lambda_requests"] == 2
    assert counts["ddb_accounting_wu"] == 1
    assert counts["lambda_gb_s"] >= carried["lambda_gb_s"] + Decimal("0.0005")


class _Executions:
    """A Step Functions client that starts each name once (and keeps each execution's input)."""

    def __init__(self) -> None:
        self.inputs: dict[str, dict[str, Any]] = {}

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        if name in self.inputs:
            error = {"Error": {"Code": "ExecutionAlreadyExists", "Message": name}}
            raise ClientError(error, "StartExecution")  # type: ignore[arg-type]
        self.inputs[name] = json.loads(input)
        return {"executionArn": f"{stateMachineArn}:{name}"}


def test_a_poll_execution_s_input_carries_the_starting_step_s_counts_unless_it_was_not_started(
    aws: dict[str, str],
) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    store.create(_task())
    sfn = _Executions()
    starter = PollStarter("arn:aws:states:us-east-1:123456789012:stateMachine:poll", client=sfn)

    @observed()
    def submit(event: dict[str, Any], context: Any) -> None:
        with costs.received("tsk_1", json.loads(event["Records"][0]["body"])):
            store.get("tsk_1")
            starter.start("tsk_1", {"task_id": "tsk_1", "wait_seconds": 5})

    # Given a step that starts the task's poll execution
    submit(_records({"task_id": "tsk_1"}), _Ctx())
    # Then the input carries its counts (for the state machine's first poll message), and no ADD
    carried = costs.carried(sfn.inputs["tsk_1"])
    assert carried["n_ddb.GetItem"] == 1 and carried["n_sfn.StartExecution"] == 1
    assert carried["lambda_requests"] == 1 and carried["lambda_gb_s"] > 0
    assert store.costs(["tsk_1"])["tsk_1"] == {}

    # And when the execution already exists (a redelivered submit), its own counts stay with it
    submit(_records({"task_id": "tsk_1"}), _Ctx())
    counts = store.costs(["tsk_1"])["tsk_1"]
    assert counts["n_sfn.StartExecution"] == 1 and counts["n_ddb.GetItem"] == 1 and counts["lambda_requests"] == 1


def test_the_state_machine_puts_the_input_and_its_retry_number_on_its_first_message() -> None:
    definition = json.loads((REPO / "statemachine/poll.asl.json").read_text())
    body = definition["States"]["Poll"]["Parameters"]["MessageBody"]
    assert body["input.$"] == "$" and body["attempt.$"] == "$$.State.RetryCount"


def test_a_failed_step_gives_back_what_it_received_and_its_redelivery_brings_it_again(aws: dict[str, str]) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    store.create(_task())
    body = {"task_id": "tsk_1", "costs": {"n_ddb.GetItem": "5", "ddb_ru": "5", "lambda_requests": "1"}}

    @observed()
    def failing(event: dict[str, Any], context: Any) -> None:
        with contextlib.suppress(RuntimeError), costs.received("tsk_1", body):
            store.get("tsk_1")
            raise RuntimeError("step failed")

    failing(_records(body), _Ctx())
    counts = store.costs(["tsk_1"])["tsk_1"]
    assert counts["n_ddb.GetItem"] == 1 and counts["lambda_requests"] == 1  # its own work only


def test_counts_of_a_message_that_was_not_sent_are_added_at_the_end(aws: dict[str, str]) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    store.create(_task())
    queue = TaskQueue(aws["SUBMIT_QUEUE_URL"] + "-missing")

    @observed()
    def sender(event: dict[str, Any], context: Any) -> None:
        store.get("tsk_1")
        with contextlib.suppress(QueueSendFailed):
            queue.send("tsk_1")

    sender(_records({"task_id": "tsk_1"}), _Ctx())
    counts = store.costs(["tsk_1"])["tsk_1"]
    assert counts["n_ddb.GetItem"] == 1 and counts["n_sqs.SendMessage"] == 1 and counts["lambda_requests"] == 1


def test_a_carried_share_is_corrected_when_the_step_worked_on_a_task_its_event_did_not_name(
    aws: dict[str, str],
) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    queue = TaskQueue(aws["SUBMIT_QUEUE_URL"])
    store.create(_task())
    store.create(_task(id="tsk_2"))

    @observed()
    def sender(event: dict[str, Any], context: Any) -> None:
        store.get("tsk_2")  # a task the event does not name (a freed slot's next task)
        queue.send("tsk_1")  # carries a share of 1: the event names tsk_1 only
        queue.send("tsk_2")  # not named: not carried, its counts are added at the end

    sender(_records({"task_id": "tsk_1"}), _Ctx())
    found = store.costs(["tsk_1", "tsk_2"])
    carried = costs.carried(_received_all(aws["SUBMIT_QUEUE_URL"])["tsk_1"])
    assert carried["lambda_requests"] == 1
    # The invocation worked on two tasks: tsk_1's ADD takes back the half it carried too much.
    assert found["tsk_1"]["lambda_requests"] == Decimal("-0.5") and found["tsk_2"]["lambda_requests"] == Decimal("0.5")
    assert "costs" not in _received_all.last["tsk_2"]


def _received_all(queue_url: str) -> dict[str, dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies = [
        json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    ]
    _received_all.last = {b["task_id"]: b for b in bodies}  # type: ignore[attr-defined]
    return _received_all.last  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"costs": "5"},
        {"costs": {"n_ddb.GetItem": True, "bogus": "1", "ddb_ru": "NaN", "lambda_requests": "1e999999999"}},
        {"costs": {"ddb_wu": None, "sqs_requests": [1], 3: "1", "ddb_ru": "-2", "s3_put_requests": "0"}},
    ],
)
def test_carried_counts_from_a_message_keep_only_known_finite_counters(body: dict[str, Any]) -> None:
    assert costs.carried(body) == {}


# -- prices ------------------------------------------------------------------------------------


def test_units_are_priced_at_the_list_prices_by_line() -> None:
    cost = costs.price(
        {"sfn_transitions": 1000, "ddb_wu": 1_000_000, "lambda_requests": 1, "lambda_gb_s": 1, "n_ddb.PutItem": 3}
    )
    assert cost.lines["step_functions"] == pytest.approx(0.025)
    assert cost.lines["dynamodb"] == pytest.approx(0.625)
    assert cost.lines["lambda"] == pytest.approx(0.0000002 + 0.0000133334)
    assert cost.usd == pytest.approx(0.025 + 0.625 + 0.0000002 + 0.0000133334)
    assert cost.calls == {"ddb.PutItem": 3.0}


def test_every_counter_has_a_price_line() -> None:
    assert set(costs.AWS_PRICES_USD) == set(costs.PRICE_LINES)


def test_provider_cost_is_the_reported_one_else_the_price_table() -> None:
    sent = utcnow() - timedelta(seconds=30)
    reported = _task(protocol="sorahk", provider="sorahk", cost_cents=3, first_create_sent_at=sent)
    assert costs.provider_cents(reported) == (3, "reported")
    tabled = _task(first_create_sent_at=sent, provider_task_id="p1")
    assert costs.provider_cents(tabled) == (8 * 30, "price_table")
    assert costs.provider_cents(_task()) == (None, None)  # never sent: nothing charged
    refused = _task(
        status=TaskStatus.FAILED, first_create_sent_at=sent, error=TaskError(code=ErrorCode.PROVIDER_AUTH, message="x")
    )
    assert costs.provider_cents(refused) == (None, None)


def test_generation_time_runs_from_the_first_create_to_the_provider_s_result() -> None:
    sent = utcnow() - timedelta(seconds=100)
    task = _task(first_create_sent_at=sent, status=TaskStatus.QUEUED)
    assert costs.generation_seconds(task) is None
    from reelay.models import Transition

    ready = Transition.model_validate({"from": "running", "to": "ingesting", "at": sent + timedelta(seconds=42)})
    assert costs.generation_seconds(task.model_copy(update={"history": [ready]})) == 42.0


def test_sum_costs_adds_tasks_for_a_batch_report() -> None:
    one = costs.task_cost(_task(cost_cents=5), {"sfn_transitions": 10, "ddb_wu": 4})
    two = costs.task_cost(_task(cost_cents=7), {"sfn_transitions": 30})
    totals = costs.sum_costs([one, two])
    assert totals.tasks == 2 and totals.provider_cents == 12
    assert totals.units["sfn_transitions"] == 40
    assert totals.aws_usd == pytest.approx(one.aws_usd + two.aws_usd)


def test_the_cli_report_groups_by_task_batch_and_period_and_totals_them() -> None:
    from datetime import UTC, datetime

    from reelay.contract import TaskView
    from reelay_cli.cost_report import cost_rows

    def view(task_id: str, batch: str | None, day: int, cents: int) -> TaskView:
        when = datetime(2026, 12, day, 10, tzinfo=UTC)
        cost = costs.task_cost(_task(cost_cents=cents), {"sfn_transitions": 100})
        return TaskView(
            id=task_id,
            provider="sorahk",
            kind="video",
            status="succeeded",
            progress=100,
            created_at=when,
            updated_at=when,
            batch_id=batch,
            cost=cost,
        )

    tasks = [view("tsk_a", "b1", 1, 3), view("tsk_b", "b1", 2, 3), view("tsk_c", None, 2, 5)]
    rows = {(r.scope, r.key): r for r in cost_rows(tasks, period="day", per_task=True)}
    assert set(rows) == {
        ("task", "tsk_a"),
        ("task", "tsk_b"),
        ("task", "tsk_c"),
        ("batch", "b1"),
        ("period", "2026-12-01"),
        ("period", "2026-12-02"),
        ("total", "all"),
    }
    assert rows[("batch", "b1")].totals.tasks == 2 and rows[("batch", "b1")].totals.provider_cents == 6
    assert rows[("period", "2026-12-02")].totals.provider_cents == 8
    total = rows[("total", "all")]
    assert total.totals.units["sfn_transitions"] == 300
    assert total.aws_usd_per_1000 == pytest.approx(100 * 0.000025 * 1000)
