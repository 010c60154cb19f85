"""The task store: DynamoDB, conditional writes, a short transition history.

Item layout (one table, see template.yaml ``TaskTable``):
- a task:        pk=``TASK#<id>``   sk=``TASK``  + index attributes for its owner's newest-first
  listing: ``owner`` (index ``ByOwner``), ``owner_status`` (``ByOwnerStatus``), ``owner_provider``
  (``ByOwnerProvider``) and ``owner_status_provider`` (``ByOwnerStatusProvider``), each with the
  range key ``created_key``, so every filter is a key condition (no filter-then-limit short pages);
  and, while not terminal, ``due_pk``/``due_at`` (sparse ``Due`` index that reconcile reads
  instead of scanning).
- an idempotency record: pk=``IDEM#<scope>#<key>`` sk=``IDEM`` with the task id and a hash of
  the request; it expires (TTL) after ``IDEMPOTENCY_TTL``.
- a provider-task claim: pk=``PTASK#<provider>#<provider task id>`` sk=``PTASK`` with the reelay
  task id that owns it, so a lost create is never adopted by a second reelay task.

The due time comes from a ``DuePolicy`` (``reelay.deadlines.Deadlines.due`` in the functions).

Every write is conditional on the version read (and, for transitions, the status), so two
writers can never both win and a terminal task never moves again.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from reelay.errors import IdempotencyConflict, RequestInvalid, TaskNotFound, TransitionConflict
from reelay.models import ALLOWED_TRANSITIONS, Task, TaskStatus, Transition, utcnow

HISTORY_LIMIT = 20
IDEMPOTENCY_TTL = timedelta(hours=24)
# How long a task may sit in a state before reconcile looks at it, when no policy is given.
DUE_AFTER: dict[TaskStatus, timedelta] = {
    TaskStatus.QUEUED: timedelta(minutes=10),
    TaskStatus.SUBMITTED: timedelta(minutes=45),
    TaskStatus.RUNNING: timedelta(minutes=45),
    TaskStatus.INGESTING: timedelta(minutes=30),
}

DuePolicy = Callable[[Task], datetime | None]
# Where a page ended: DynamoDB's LastEvaluatedKey (all string attributes).
PageKey = dict[str, str]


def default_due(task: Task) -> datetime | None:
    return None if task.status.terminal else task.updated_at + DUE_AFTER[task.status]


class TaskStore(ABC):
    """Where tasks live. One implementation (DynamoDB); tests use it against moto."""

    @abstractmethod
    def create(self, task: Task, *, idempotency_scope: str | None = None, request_hash: str = "") -> tuple[Task, bool]:
        """Store a new task; with an idempotency key, return ``(existing, False)`` on a replay."""

    @abstractmethod
    def get(self, task_id: str) -> Task:
        """The task, or ``TaskNotFound``."""

    @abstractmethod
    def list(
        self,
        *,
        owner: str,
        status: TaskStatus | None,
        provider: str | None,
        limit: int,
        after: PageKey | None = None,
        ascending: bool = False,
    ) -> tuple[builtins.list[Task], PageKey | None]:
        """``owner``'s tasks, newest first (oldest first if ``ascending``), ``limit`` at most, and
        the key the next page starts after.

        The key is the store's own (plain); the API signs it into a cursor (``reelay.tokens``).
        """

    @abstractmethod
    def page_key(self, task: Task) -> PageKey:
        """The key a page of ``task.owner``'s unfiltered list starts after, to continue after ``task``."""

    @abstractmethod
    def save(self, task: Task, *, expected: Task) -> Task:
        """Write ``task`` if the stored one is still ``expected`` (same version and status)."""

    def transition(self, task: Task, to: TaskStatus, *, reason: str, **changes: Any) -> Task:
        """Move ``task`` to ``to`` (and apply ``changes``) if nobody else moved it first."""
        if to not in ALLOWED_TRANSITIONS[task.status]:
            raise TransitionConflict(f"task {task.id}: {task.status} -> {to} is not allowed")
        now = utcnow()
        entry = Transition.model_validate({"from": task.status, "to": to, "at": now, "reason": reason[:200]})
        history = [*task.history, entry][-HISTORY_LIMIT:]
        new = task.model_copy(update={**changes, "status": to, "updated_at": now, "history": history})
        return self.save(new, expected=task)

    def update(self, task: Task, **changes: Any) -> Task:
        """Change fields without a status change (progress, provider ids), still conditionally."""
        if task.status.terminal and set(changes) - {"outputs", "cost_cents", "deleted_at"}:
            raise TransitionConflict(f"task {task.id} is {task.status}; it does not change any more")
        new = task.model_copy(update={**changes, "updated_at": utcnow()})
        return self.save(new, expected=task)

    @abstractmethod
    def due(self, *, before: datetime, limit: int, after: str | None = None) -> tuple[builtins.list[str], str | None]:
        """Ids of non-terminal tasks due before ``before``, oldest first, and the cursor of the rest."""

    @abstractmethod
    def claim_provider_task(self, provider: str, provider_task_id: str, task_id: str) -> str:
        """Record that ``task_id`` owns the provider's task; the owner's id (``task_id`` if it won)."""


class DynamoTaskStore(TaskStore):
    """``TaskStore`` on the DynamoDB table of template.yaml."""

    def __init__(self, table_name: str, *, resource: Any = None, due: DuePolicy = default_due) -> None:
        self._table = (resource or boto3.resource("dynamodb")).Table(table_name)
        # The resource's client (de)serialises attribute values itself: pass plain values.
        self._client = self._table.meta.client
        self._due = due

    # -- items -------------------------------------------------------------------------
    def _item(self, task: Task) -> dict[str, Any]:
        data = task.model_dump(mode="json", by_alias=True, exclude_none=True)
        item: dict[str, Any] = {
            **_to_dynamo(data),
            "pk": f"TASK#{task.id}",
            "sk": "TASK",
            "created_key": f"{task.created_at.isoformat()}#{task.id}",
            "owner_status": f"{task.owner}#{task.status}",
            "owner_provider": f"{task.owner}#{task.provider}",
            "owner_status_provider": f"{task.owner}#{task.status}#{task.provider}",
        }
        due = self._due(task)
        if due is not None:
            item["due_pk"] = "DUE"
            item["due_at"] = due.isoformat()
        return item

    @staticmethod
    def _task(item: dict[str, Any]) -> Task:
        data = _from_dynamo({k: v for k, v in item.items() if k not in _INDEX_ATTRS})
        return Task.model_validate(data)

    # -- operations --------------------------------------------------------------------
    def create(self, task: Task, *, idempotency_scope: str | None = None, request_hash: str = "") -> tuple[Task, bool]:
        item = self._item(task)
        if idempotency_scope is None:
            self._table.put_item(Item=item, ConditionExpression=Attr("pk").not_exists())
            return task, True
        idem_pk = f"IDEM#{idempotency_scope}"
        expires = int((utcnow() + IDEMPOTENCY_TTL).timestamp())
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": {
                                "pk": idem_pk,
                                "sk": "IDEM",
                                "task_id": task.id,
                                "request_hash": request_hash,
                                "expires_at": expires,
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
            return task, True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
        record = self._table.get_item(Key={"pk": idem_pk, "sk": "IDEM"}, ConsistentRead=True).get("Item")
        if record is None:  # the competing writer's record expired in between: a plain conflict
            raise IdempotencyConflict("Idempotency-Key is being used by another request; retry")
        if record["request_hash"] != request_hash:
            raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
        return self.get(str(record["task_id"])), False

    def get(self, task_id: str) -> Task:
        item = self._table.get_item(Key={"pk": f"TASK#{task_id}", "sk": "TASK"}, ConsistentRead=True).get("Item")
        if item is None:
            raise TaskNotFound(f"task {task_id} not found")
        return self._task(item)

    def save(self, task: Task, *, expected: Task) -> Task:
        new = task.model_copy(update={"version": expected.version + 1})
        try:
            self._table.put_item(
                Item=self._item(new),
                ConditionExpression=Attr("version").eq(expected.version) & Attr("status").eq(str(expected.status)),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise TransitionConflict(f"task {task.id} changed concurrently") from None
            raise
        return new

    def list(
        self,
        *,
        owner: str,
        status: TaskStatus | None,
        provider: str | None,
        limit: int,
        after: PageKey | None = None,
        ascending: bool = False,
    ) -> tuple[builtins.list[Task], PageKey | None]:
        if status is not None and provider is not None:
            index, value = "ByOwnerStatusProvider", f"{owner}#{status}#{provider}"
        elif status is not None:
            index, value = "ByOwnerStatus", f"{owner}#{status}"
        elif provider is not None:
            index, value = "ByOwnerProvider", f"{owner}#{provider}"
        else:
            index, value = "ByOwner", owner
        query: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": "#k = :k",
            # ``owner`` is a DynamoDB reserved word: always go through a name placeholder.
            "ExpressionAttributeNames": {"#k": LIST_INDEXES[index]},
            "ExpressionAttributeValues": {":k": value},
            "ScanIndexForward": ascending,
            "Limit": limit,
        }
        if after:
            query["ExclusiveStartKey"] = after
        page = self._table.query(**query)
        tasks = [self._task(item) for item in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        return tasks, ({str(k): str(v) for k, v in last.items()} if last else None)

    def page_key(self, task: Task) -> PageKey:
        return {
            "pk": f"TASK#{task.id}",
            "sk": "TASK",
            "owner": task.owner,
            "created_key": f"{task.created_at.isoformat()}#{task.id}",
        }

    def due(self, *, before: datetime, limit: int, after: str | None = None) -> tuple[builtins.list[str], str | None]:
        query: dict[str, Any] = {
            "IndexName": "Due",
            "KeyConditionExpression": "due_pk = :d AND due_at < :b",
            "ExpressionAttributeValues": {":d": "DUE", ":b": before.isoformat()},
            "Limit": limit,
        }
        if after:
            query["ExclusiveStartKey"] = _decode_cursor(after)
        page = self._table.query(**query)
        last = page.get("LastEvaluatedKey")
        return [str(i["pk"]).removeprefix("TASK#") for i in page.get("Items", [])], (
            _encode_cursor(last) if last else None
        )

    def claim_provider_task(self, provider: str, provider_task_id: str, task_id: str) -> str:
        key = {"pk": f"PTASK#{provider}#{provider_task_id}", "sk": "PTASK"}
        try:
            self._table.put_item(
                Item={**key, "task_id": task_id},
                ConditionExpression=Attr("pk").not_exists() | Attr("task_id").eq(task_id),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            owner = self._table.get_item(Key=key, ConsistentRead=True).get("Item") or {}
            return str(owner.get("task_id", ""))
        return task_id


# Each listing index and its hash-key attribute (range key: ``created_key``).
LIST_INDEXES = {
    "ByOwner": "owner",
    "ByOwnerStatus": "owner_status",
    "ByOwnerProvider": "owner_provider",
    "ByOwnerStatusProvider": "owner_status_provider",
}
# Attributes that exist only for keys and indexes (``owner`` is a task field too: kept).
_INDEX_ATTRS = frozenset(
    {"pk", "sk", "list_pk", "created_key", "due_pk", "due_at", "expires_at"} | (set(LIST_INDEXES.values()) - {"owner"})
)


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(_from_dynamo(key), sort_keys=True).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise RequestInvalid("cursor is not valid; use next_cursor from a previous page", field="cursor") from None
    if not isinstance(key, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in key.items()):
        raise RequestInvalid("cursor is not valid; use next_cursor from a previous page", field="cursor")
    return key
