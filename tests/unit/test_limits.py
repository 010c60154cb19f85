"""The largest valid request makes a task item far under DynamoDB's 400 KB, for its whole life.

Every field of a request is bounded (README, "Limits"), so this test builds the largest body the
API accepts, sends it through the resolver, and sizes the stored item the way DynamoDB does,
then again after a full history and outputs.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import Binary

from reelay.api import MAX_BODY_BYTES, build_app
from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.models import (
    METADATA_KEY_MAX_CHARS,
    METADATA_MAX_BYTES,
    METADATA_MAX_KEYS,
    PROMPT_MAX_CHARS,
    URL_MAX_CHARS,
    Output,
    TaskStatus,
)
from reelay.store import HISTORY_LIMIT, DynamoTaskStore
from reelay.tasks import TaskService
from tests.unit.conftest import load_event
from tests.unit.fakes import FakeProvider, config

DYNAMODB_ITEM_LIMIT = 400 * 1024
ASTRAL = "\U0001f3ac"  # four bytes in UTF-8, one character to the length checks


def dynamodb_size(value: Any) -> int:
    """An item's size by DynamoDB's rules: names and UTF-8 strings, numbers, 3 bytes a map or list."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float | Decimal):
        return len(str(value).lstrip("-").replace(".", "")) // 2 + 2
    if isinstance(value, dict):
        return 3 + sum(len(k.encode()) + dynamodb_size(v) + 1 for k, v in value.items())
    if isinstance(value, list):
        return 3 + sum(dynamodb_size(v) + 1 for v in value)
    if isinstance(value, Binary):  # the task's compressed document
        return len(value.value)
    raise TypeError(type(value))


def _url(length: int) -> str:
    base = "https://images.example.com/"
    return base + "a" * (length - len(base))


def largest_valid_request() -> dict[str, Any]:
    # Metadata: every key at its longest, values filling the 8 KB budget exactly.
    keys = [f"{i:02d}" + "k" * (METADATA_KEY_MAX_CHARS - 2) for i in range(METADATA_MAX_KEYS)]
    per_value = (METADATA_MAX_BYTES - sum(len(k) for k in keys)) // METADATA_MAX_KEYS
    metadata = {k: "v" * per_value for k in keys}
    return {
        "provider": "generate_task",
        "prompt": ASTRAL * PROMPT_MAX_CHARS,
        "image_url": _url(URL_MAX_CHARS),
        "webhook_url": _url(URL_MAX_CHARS),
        "duration": 8,
        "resolution": "1080p",
        "metadata": metadata,
    }


def test_the_largest_valid_request_stays_far_under_dynamodbs_item_limit(aws: dict[str, str]) -> None:
    provider = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    store = DynamoTaskStore("tasks")
    service = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
    app = build_app(lambda: service, [provider.config])
    # Given the largest body the API accepts (under its 256 KB body limit)
    body = json.dumps(largest_valid_request(), ensure_ascii=False)
    assert len(body.encode()) < MAX_BODY_BYTES
    event = load_event("api_create_task.json")
    event["headers"] = {"content-type": "application/json"}
    event["body"] = body
    # When it is sent
    out = app.resolve(event, None)
    assert out["statusCode"] == 202, out["body"][:300]
    task_id = json.loads(out["body"])["id"]
    # Then its stored item is a small share of DynamoDB's limit
    table = boto3.resource("dynamodb").Table("tasks")
    item = table.get_item(Key={"pk": f"TASK#{task_id}", "sk": "TASK"})["Item"]
    assert dynamodb_size(item) < 64 * 1024
    # And stays under it for its whole life: a full history of long reasons and four outputs
    task = store.get(task_id)
    for _ in range(HISTORY_LIMIT // 2):
        task = store.update(task, progress=task.progress + 1)
    outputs = [
        Output(
            key=f"tasks/{task_id}/output-{i}.mp4",
            s3_uri="s3://results/" + "k" * 1024,
            bytes=1,
            sha256="0" * 64,
            content_type="video/mp4",
        )
        for i in range(4)
    ]
    task = store.transition(task, TaskStatus.INGESTING, reason="r" * 1000, result_urls=[_url(URL_MAX_CHARS)] * 4)
    task = store.transition(task, TaskStatus.SUCCEEDED, reason="r" * 1000, outputs=outputs)
    item = table.get_item(Key={"pk": f"TASK#{task_id}", "sk": "TASK"})["Item"]
    assert dynamodb_size(item) < DYNAMODB_ITEM_LIMIT // 4
