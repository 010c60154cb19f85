"""Unit tests: no network (pytest-socket), AWS through moto's in-process mock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.template_support import REPO, create_task_table

EVENTS = REPO / "events"


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Unit tests never touch the network: any socket use fails the test.
    from pytest_socket import disable_socket

    disable_socket(allow_unix_socket=True)


def load_event(name: str) -> dict[str, Any]:
    """A sample payload from events/ (the one home of sample events)."""
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


_DYNAMODB_REQUEST = threading.Lock()


@pytest.fixture
def _atomic_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each DynamoDB request is atomic, as DynamoDB makes a conditional write or a transaction.

    moto differs from AWS here: its in-process backend checks a condition and then writes, in
    plain Python, with nothing between threads, so under load two threads' conditional writes
    can both pass. The tests of concurrent workers (``ThreadPoolExecutor``) would then measure
    moto, not reelay; they run with each DynamoDB request under one lock instead, which is the
    guarantee reelay relies on in AWS.
    """
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def call(client: BaseClient, operation: str, params: Any) -> Any:
        if client.meta.service_model.service_name != "dynamodb":
            return original(client, operation, params)
        with _DYNAMODB_REQUEST:
            return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", call)


@pytest.fixture
def aws(_atomic_dynamodb: None) -> Iterator[dict[str, str]]:
    """moto-backed table, bucket and queues named like a stack's; yields their names/urls."""
    with mock_aws():
        create_task_table(boto3.client("dynamodb"), "tasks")
        boto3.client("s3").create_bucket(Bucket="results")
        sqs = boto3.client("sqs")
        names = {
            "TASK_TABLE_NAME": "tasks",
            "RESULTS_BUCKET": "results",
            "SUBMIT_QUEUE_URL": sqs.create_queue(QueueName="submit")["QueueUrl"],
            "INGEST_QUEUE_URL": sqs.create_queue(QueueName="ingest")["QueueUrl"],
        }
        yield names


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete every message of a queue; their JSON bodies."""
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            return bodies
        for m in msgs:
            bodies.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


__all__ = ["Path", "drain", "load_event"]
