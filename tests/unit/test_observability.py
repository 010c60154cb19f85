"""Every function is wrapped the one way: task_id on its records, nothing captured into X-Ray."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from reelay.observability import for_each_task, logger, observed
from tests.template_support import REPO


class _Ctx:
    function_name = "fn"
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fn"
    aws_request_id = "req-1"


@pytest.mark.parametrize("app", sorted((REPO / "functions").glob("*/app.py")), ids=lambda p: p.parent.name)
def test_every_handler_uses_the_shared_module_and_copies_no_decorators(app: Any) -> None:
    code = app.read_text()
    assert "from reelay.observability import" in code and "@observed(" in code
    assert "Logger(" not in code and "Tracer(" not in code and "capture_lambda_handler" not in code


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the shared logger writes, as JSON lines."""
    stream = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(stream)  # type: ignore[attr-defined]
    yield stream
    handler.setStream(previous)  # type: ignore[attr-defined]


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    stream.seek(0)
    stream.truncate()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_handler_that_knows_its_task_logs_the_task_id_on_every_record(logs: io.StringIO) -> None:
    logger.setLevel(logging.INFO)

    @observed(http=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        logger.info("first")
        logging.getLogger("x")  # unrelated loggers do not matter
        logger.info("second")
        return {"url": "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=secret"}

    event = {"pathParameters": {"task_id": "tsk_1"}, "requestContext": {"requestId": "r-1"}}
    handler(event, _Ctx())
    records = _records(logs)
    assert [r["message"] for r in records] == ["first", "second"]
    assert all(r["task_id"] == "tsk_1" and r["function_request_id"] == "req-1" for r in records)
    # And the next invocation, about no task, carries none
    handler({}, _Ctx())
    assert all("task_id" not in r for r in _records(logs))


def test_a_queue_worker_labels_each_records_logs_with_its_own_task(logs: io.StringIO) -> None:
    logger.setLevel(logging.INFO)
    step = for_each_task(lambda task_id, attempt: logger.info("step"))
    step("tsk_a", 0)
    step("tsk_b", 0)
    logger.info("after")
    assert [r.get("task_id") for r in _records(logs)] == ["tsk_a", "tsk_b", None]


def test_the_tracer_never_captures_a_handlers_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from reelay import observability

    seen: dict[str, Any] = {}

    def capture(handler: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return handler

    monkeypatch.setattr(observability.tracer, "capture_lambda_handler", capture)
    observed()(lambda event, context: None)
    assert seen["capture_response"] is False
