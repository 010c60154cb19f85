"""Every AWS client reelay makes waits a bounded time and retries in the standard mode."""

from __future__ import annotations

import re
from typing import Any

from reelay.aws import CLIENT_CONFIG, ApiKeyTable, EventBus, PollStarter, PollTokens, ResultBucket, TaskQueue
from reelay.batch_store import BatchQueue, DynamoBatchStore, ManifestObjects
from reelay.bootstrap import Container
from reelay.governor_store import GovernorStore
from reelay.store import DynamoTaskStore
from tests.template_support import REPO

STANDARD = {"mode": "standard", "total_max_attempts": 3}


def _config(client: Any) -> Any:
    return client.meta.config


def test_the_shared_config_bounds_every_wait_and_uses_standard_retries() -> None:
    assert (CLIENT_CONFIG.connect_timeout, CLIENT_CONFIG.read_timeout) == (5, 20)
    assert CLIENT_CONFIG.retries == STANDARD


def test_each_adapter_s_own_client_has_it(aws: dict[str, str]) -> None:
    clients = [
        TaskQueue(aws["SUBMIT_QUEUE_URL"])._sqs,
        EventBus("bus")._events,
        PollStarter("arn:aws:states:us-east-1:123456789012:stateMachine:x")._sfn,
        PollTokens()._sfn,
        DynamoTaskStore(aws["TASK_TABLE_NAME"])._client,
        GovernorStore(aws["TASK_TABLE_NAME"])._table.meta.client,
        DynamoBatchStore(aws["TASK_TABLE_NAME"])._table.meta.client,
        ApiKeyTable("keys")._table.meta.client,
        ManifestObjects(aws["RESULTS_BUCKET"])._s3,
        BatchQueue(aws["SUBMIT_QUEUE_URL"])._sqs,
    ]
    for client in clients:
        config = _config(client)
        assert (config.connect_timeout, config.read_timeout, config.retries) == (5, 20, STANDARD), client
    # The results bucket keeps botocore's 60 s read (a large object's completion can take a while)
    # and its own settings on top.
    s3 = _config(ResultBucket(aws["RESULTS_BUCKET"])._s3)
    assert (s3.connect_timeout, s3.read_timeout, s3.retries) == (5, 60, STANDARD)
    assert s3.max_pool_connections == 32 and s3.s3 == {
        "payload_signing_enabled": False,
        "us_east_1_regional_endpoint": "regional",
    }


def test_the_container_s_shared_clients_have_it(aws: dict[str, str]) -> None:
    container = Container.from_environ(dict(aws))
    for client in (container._sqs, container._dynamodb.meta.client):
        config = _config(client)
        assert (config.connect_timeout, config.read_timeout, config.retries) == (5, 20, STANDARD)


def test_no_module_makes_a_client_of_its_own() -> None:
    made = re.compile(r"boto3\.(client|resource|Session)\(")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "layers/core/reelay").rglob("*.py")) + sorted((REPO / "functions").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if made.search(line) and not (path.name == "aws.py" and line.lstrip().startswith("return boto3."))
    ]
    assert offenders == []
