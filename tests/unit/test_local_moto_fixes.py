"""The local stack's fixes to moto's DynamoDB (``reelay_local.moto_server``) change its speed, not its answers.

moto serves a Query by sorting the whole table and a TransactWriteItems by deep-copying every table
it names; the local stack serves them from the items they name. These tests hold the fixed moto
to the unfixed one's answers, and to DynamoDB's all-or-nothing transactions.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError
from moto import mock_aws

from reelay_local.moto_server import MotoServer


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name="us-east-1")
        created = resource.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": "S"}
                for name in ("pk", "sk", "due_pk", "due_at", "owner", "ck")
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "Due",
                    "KeySchema": [
                        {"AttributeName": "due_pk", "KeyType": "HASH"},
                        {"AttributeName": "due_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                },
                {
                    "IndexName": "ByOwner",
                    "KeySchema": [
                        {"AttributeName": "owner", "KeyType": "HASH"},
                        {"AttributeName": "ck", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield created


@contextlib.contextmanager
def _fixes() -> Iterator[None]:
    server = MotoServer()
    server._install_fixes()  # what MotoServer.start installs, without a server
    try:
        yield
    finally:
        server._remove_fixes()


@pytest.fixture
def fixed() -> Iterator[None]:
    with _fixes():
        yield


def _fill(table: Any, count: int) -> None:
    rng = random.Random(7)
    with table.batch_writer() as writer:
        for i in range(count):
            item = {"pk": f"P#{i % 23}", "sk": f"{rng.random():.6f}", "n": i}
            if rng.random() < 0.7:
                item |= {"due_pk": f"DUE#{i % 4}", "due_at": f"{rng.randint(0, 99):02d}"}
            if rng.random() < 0.5:
                item |= {"owner": f"o{i % 3}", "ck": f"{rng.random():.4f}"}
            writer.put_item(Item=item)


def _queries() -> list[dict[str, Any]]:
    rng = random.Random(11)
    queries: list[dict[str, Any]] = []
    for _ in range(12):
        queries.append(
            {
                "KeyConditionExpression": Key("pk").eq(f"P#{rng.randint(0, 25)}"),
                "Limit": rng.choice([3, 20, 1000]),
                "ScanIndexForward": rng.random() < 0.5,
            }
        )
    queries.append({"KeyConditionExpression": Key("pk").eq("P#3") & Key("sk").begins_with("0.1")})
    queries.append({"KeyConditionExpression": Key("pk").eq("P#4"), "Select": "COUNT"})
    for _ in range(12):
        queries.append(
            {
                "IndexName": "Due",
                "KeyConditionExpression": Key("due_pk").eq(f"DUE#{rng.randint(0, 5)}")
                & Key("due_at").lt(f"{rng.randint(0, 99):02d}"),
                "Limit": rng.choice([7, 100]),
            }
        )
        queries.append(
            {
                "IndexName": "ByOwner",
                "KeyConditionExpression": Key("owner").eq(f"o{rng.randint(0, 3)}"),
                "Limit": rng.choice([5, 50]),
                "FilterExpression": Attr("n").gt(100),
                "ScanIndexForward": rng.random() < 0.5,
            }
        )
    return queries


def _answers(table: Any) -> list[list[Any]]:
    """Every page of every query, following LastEvaluatedKey."""
    answers = []
    for query in _queries():
        pages, kwargs = [], dict(query)
        while True:
            page = table.query(**kwargs)
            pages.append((page.get("Items"), page.get("Count"), page.get("LastEvaluatedKey")))
            if "LastEvaluatedKey" not in page or len(pages) > 100:  # a broken order can page forever
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        answers.append(pages)
    return answers


def test_queries_answer_as_unfixed_moto_does(table: Any) -> None:
    _fill(table, 400)
    unfixed = _answers(table)
    with _fixes():
        assert _answers(table) == unfixed
        # and a scan still returns every item
        assert table.scan()["Count"] == 400
    assert sum(len(items or []) for pages in unfixed for items, _, _ in pages) > 500  # the queries return items


def _transact(table: Any, *, fail: bool) -> None:
    client = table.meta.client
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "t", "Item": {"pk": "new", "sk": "1", "v": "made"}}},
            {
                "Update": {
                    "TableName": "t",
                    "Key": {"pk": "old", "sk": "1"},
                    "UpdateExpression": "SET v = :v",
                    "ExpressionAttributeValues": {":v": "changed"},
                }
            },
            {"Delete": {"TableName": "t", "Key": {"pk": "gone", "sk": "1"}}},
            {
                "ConditionCheck": {
                    "TableName": "t",
                    "Key": {"pk": "check", "sk": "1"},
                    "ConditionExpression": "attribute_not_exists(pk)" if fail else "attribute_exists(pk)",
                }
            },
        ]
    )


def _state(table: Any) -> list[dict[str, Any]]:
    return sorted(table.scan()["Items"], key=lambda item: item["pk"])


@pytest.mark.usefixtures("fixed")
def test_a_cancelled_transaction_changes_nothing(table: Any) -> None:
    for pk in ("old", "gone", "check"):
        table.put_item(Item={"pk": pk, "sk": "1", "v": "before", "due_pk": "DUE#0", "due_at": "05"})
    before = _state(table)
    with pytest.raises(ClientError, match="TransactionCanceled"):
        _transact(table, fail=True)
    assert _state(table) == before
    assert table.query(IndexName="Due", KeyConditionExpression=Key("due_pk").eq("DUE#0"))["Count"] == 3
    # and one that passes makes every change
    _transact(table, fail=False)
    after = {item["pk"]: item.get("v") for item in _state(table)}
    assert after == {"new": "made", "old": "changed", "check": "before"}
