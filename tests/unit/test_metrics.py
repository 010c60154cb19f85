"""The EMF records reelay emits: names, dimensions and values, from the places that emit them."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from reelay import metrics
from reelay.models import ErrorCode, Task, TaskError, TaskStatus, Transition, utcnow
from reelay.store import DynamoTaskStore


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """The EMF records printed so far, as ``(name, value, dimensions)``."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setattr(metrics.metrics, "namespace", "reelay")
    monkeypatch.setattr(metrics.metrics, "service", "reelay")
    capsys.readouterr()

    def read() -> list[tuple[str, float, dict[str, str]]]:
        records = []
        for line in capsys.readouterr().out.splitlines():
            if '"_aws"' not in line:
                continue
            record = json.loads(line)
            [directive] = record["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"] == "reelay"
            [[*dims]] = directive["Dimensions"]
            for metric in directive["Metrics"]:
                value = record[metric["Name"]]
                records.append(
                    (metric["Name"], value[0] if isinstance(value, list) else value, {d: record[d] for d in dims})
                )
        return records

    return read


def _task(**kw: Any) -> Task:
    now = utcnow()
    fields: dict[str, Any] = {
        "id": "tsk_m",
        "provider": "generate_task",
        "protocol": "generate_task",
        "request": {"prompt": "p"},
        "created_at": now,
        "updated_at": now,
    }
    return Task(**(fields | kw))


def test_a_failed_task_counts_per_provider_and_code_and_in_the_service_total(emitted: Any) -> None:
    task = _task(status=TaskStatus.FAILED, error=TaskError(code=ErrorCode.CONTENT_POLICY, message="no"))
    metrics.task_ended(task, by_callback=True)
    assert emitted() == [
        ("TasksFailed", 1.0, {"service": "reelay", "provider": "generate_task", "code": "CONTENT_POLICY"}),
        ("TasksFailed", 1.0, {"service": "reelay"}),
    ]


def test_a_succeeded_callback_task_records_its_callback_to_succeeded_latency(emitted: Any) -> None:
    now = utcnow()
    ready = Transition.model_validate({"from": "submitted", "to": "ingesting", "at": now - timedelta(seconds=7)})
    task = _task(status=TaskStatus.SUCCEEDED, updated_at=now, history=[ready])
    metrics.task_ended(task, by_callback=True)
    records = emitted()
    assert ("TasksSucceeded", 1.0, {"service": "reelay", "provider": "generate_task"}) in records
    [latency] = [r for r in records if r[0] == "CallbackToSucceededSeconds"]
    assert latency[1] == pytest.approx(7.0) and latency[2]["provider"] == "generate_task"
    metrics.task_ended(task, by_callback=False)
    assert not [r for r in emitted() if r[0] == "CallbackToSucceededSeconds"]


def test_a_store_transition_out_of_queued_counts_a_submitted_task(aws: dict[str, str], emitted: Any) -> None:
    store = DynamoTaskStore(aws["TASK_TABLE_NAME"])
    task, _ = store.create(_task())
    task = store.transition(task, TaskStatus.SUBMITTED, reason="created")
    store.transition(task, TaskStatus.RUNNING, reason="provider running")
    assert [r for r in emitted() if r[0] == "TasksSubmitted"] == [
        ("TasksSubmitted", 1.0, {"service": "reelay", "provider": "generate_task"})
    ]


def test_reconcile_counts_fixes_by_kind_and_not_the_looks_that_found_nothing(emitted: Any) -> None:
    metrics.reconcile_fixed({"status_checked": 2, "poll_alive": 5, "submit_resent": 1, "skipped": 1})
    assert emitted() == [
        ("ReconcileFixes", 2.0, {"service": "reelay", "kind": "status_checked"}),
        ("ReconcileFixes", 2.0, {"service": "reelay"}),
        ("ReconcileFixes", 1.0, {"service": "reelay", "kind": "submit_resent"}),
        ("ReconcileFixes", 1.0, {"service": "reelay"}),
    ]


def test_copies_polls_governor_and_webhooks_have_their_metrics(emitted: Any) -> None:
    metrics.output_copied("sorahk", 1000, 0.5)
    metrics.polls_done("sorahk", 4)
    metrics.governor_waited("generate_task")
    metrics.governor_waited("generate_task", 2.5)
    metrics.webhook_attempted(True, "2xx")
    metrics.webhook_attempted(False, "5xx")
    metrics.webhook_exhausted()
    names = [(r[0], r[1]) for r in emitted()]
    assert names == [
        ("BytesCopied", 1000.0),
        ("SecondsCopying", 0.5),
        ("PollsPerTask", 4.0),
        ("GovernorWaits", 1.0),
        ("GovernorWaits", 1.0),
        ("GovernorWaitSeconds", 2.5),
        ("WebhookDeliveries", 1.0),
        ("WebhookFailures", 1.0),
        ("WebhookExhausted", 1.0),
        ("WebhookExhausted", 1.0),
    ]


def test_without_a_namespace_nothing_is_emitted_and_nothing_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(metrics.metrics, "namespace", None)
    metrics.polls_done("sorahk", 1)
    assert '"_aws"' not in capsys.readouterr().out


def test_the_governor_counts_a_task_that_joins_the_waiting_line(aws: dict[str, str], emitted: Any) -> None:
    from reelay.governor import Governor, ProviderLimits
    from reelay.governor_store import GovernorStore

    governor = Governor(GovernorStore("tasks"), {"generate_task": ProviderLimits(max_in_flight=1)})
    assert governor.admit(_task(id="tsk_first"))
    assert not governor.admit(_task(id="tsk_second"))  # no slot: it waits in line
    assert [(r[0], r[2].get("provider")) for r in emitted() if r[0] == "GovernorWaits"] == [
        ("GovernorWaits", "generate_task")
    ]
