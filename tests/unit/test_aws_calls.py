"""The independent count (reelay_local.aws_calls): which task a scheduled invocation is shared among."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest

from reelay_local.aws_calls import AwsCallCounter
from reelay_local.lambda_runtime import FunctionRuntime
from reelay_local.local_iam import function_key, function_of_key

RECONCILE = function_key("ReconcileFunction")


def _request(key: str, task_id: str) -> dict[str, Any]:
    """A DynamoDB GetItem signed with ``key``, naming ``task_id``, as the moto server receives it."""
    body = json.dumps({"TableName": "t", "Key": {"pk": {"S": f"TASK#{task_id}"}}}).encode()
    return {
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={key}/20261207/us-east-1/dynamodb/aws4_request, x",
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem",
        "PATH_INFO": "/",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }


class _Runtime:
    """Stands in for the local runtime: an invocation makes the requests it is given."""

    def __init__(self, counter: AwsCallCounter, during: Any) -> None:
        self._counter, self._during = counter, during

    def _find(self, function: str) -> Any:
        return SimpleNamespace(spec=SimpleNamespace(logical_id=function, memory_size=1024))


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Any:
    def invoke(runtime: _Runtime, function: str, event: Any) -> Any:
        runtime._during(function, event)
        return None

    monkeypatch.setattr(FunctionRuntime, "invoke", invoke)
    with AwsCallCounter() as installed:
        yield installed


def test_a_scheduled_invocation_is_shared_among_the_tasks_its_requests_named(counter: AwsCallCounter) -> None:
    def during(function: str, event: Any) -> None:
        counter._request(_request(RECONCILE, "tsk_a"))
        counter._request(_request(RECONCILE, "tsk_b"))
        counter._request(_request(function_key("SubmitFunction"), "tsk_c"))  # another function's

    FunctionRuntime.invoke(_Runtime(counter, during), "ReconcileFunction", {"source": "aws.events"})  # type: ignore[arg-type]
    assert counter.invocations.requests == {"tsk_a": 0.5, "tsk_b": 0.5}
    assert counter.task_calls("tsk_c")["ddb.GetItem"] == 1 and not counter.invocations.unattributed


def test_a_request_made_while_two_scheduled_invocations_run_is_neither_s(counter: AwsCallCounter) -> None:
    def during(function: str, event: Any) -> None:
        if event.get("outer"):
            # The inner one's request is made while both run: whose it is cannot be told
            FunctionRuntime.invoke(_Runtime(counter, during), "ReconcileFunction", {"source": "aws.events"})  # type: ignore[arg-type]
        counter._request(_request(RECONCILE, "tsk_a" if event.get("outer") else "tsk_b"))

    FunctionRuntime.invoke(_Runtime(counter, during), "ReconcileFunction", {"outer": True})  # type: ignore[arg-type]
    assert counter.invocations.requests == {"tsk_a": 1.0}  # the outer's, made once it ran alone
    assert counter.invocations.unattributed["ReconcileFunction"] == 1


def test_a_function_key_names_its_function() -> None:
    assert function_of_key(RECONCILE) == "ReconcileFunction"
    assert function_of_key("AKIAEXAMPLE") is None and function_of_key("LOCAL") is None
