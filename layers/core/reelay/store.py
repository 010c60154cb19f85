"""The task store: DynamoDB, conditional writes, a short transition history.

Item layout (one table, see template.yaml ``TaskTable``):
- a task:        pk=``TASK#<id>``   sk=``TASK``: ``status``, ``version``, ``owner``, ``provider`` as
  plain attributes and every other field in ``doc``, one zlib-compressed JSON document (so a
  task's writes stay under 1 KB: one write unit each); ``created_key`` for its owner's
  newest-first listing (index ``ByOwnerCreated``: ``owner``, ``created_key``, keys only: a
  page's tasks are read from the table with ``BatchGetItem`` and filtered there, evaluating at
  most ``LIST_QUERIES`` times ``FILTERED_PAGE`` entries a page, so the index entry is written
  once, at creation); and, while reconcile must look at it (not terminal, or terminal with a
  notification still to send), ``due_pk``/``due_at`` (sparse ``Due`` index that reconcile reads
  instead of scanning, in ``DUE_SHARDS`` partitions).
- an idempotency record: pk=``IDEM#<scope>#<key>`` sk=``IDEM`` with the task id and a hash of
  the request; it expires (TTL) after ``IDEMPOTENCY_TTL``.
- a provider-task claim: pk=``PTASK#<provider>#<provider task id>`` sk=``PTASK`` with the reelay
  task id that owns it, so a lost create is never adopted by a second reelay task.
- a task's cost record: pk=``COST#<id>`` sk=``COST``, the AWS units counted for it
  (``reelay.costs``), added to with one ``UpdateItem ADD`` per invocation; in no index, under
  1 KB, so each ADD is one write unit. Every operation here counts its own units for its task.
- an owner's webhook secrets: pk=``WHSEC#<owner>`` sk=``WHSEC`` with ``entries`` (secret,
  created_at, retire_at) and a ``version`` every write is conditional on (``reelay.webhooks``).
- an owner's webhook endpoints: pk=``WHEP#<owner>`` sk=``WHEP#<endpoint id>``, and their count,
  sk=``COUNT`` (``DynamoWebhookEndpointStore``, ``reelay.webhook_endpoints``).

The due time comes from a ``DuePolicy`` (``reelay.deadlines.Deadlines.due`` in the functions).

Every write is conditional on the version read (and, for transitions, the status), so two
writers can never both win and a terminal task never moves again.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from reelay import costs, metrics
from reelay.aws import new_resource
from reelay.errors import IdempotencyConflict, RequestInvalid, TaskNotFound, TransitionConflict
from reelay.models import ALLOWED_TRANSITIONS, Task, TaskStatus, Transition, utcnow
from reelay.webhook_endpoints import WebhookEndpoint, WebhookEndpointStore
from reelay.webhooks import WebhookSecretStore

logger = Logger(child=True)

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


# A write moves a stored Due entry that passes within this long rather than keep it: kept, it
# would be found early by a reconcile run seconds later (a read, a write and a cost record),
# where this write moves it for the index's delete and put alone. The poll path lands a poll
# inside it (``reelay.polling``).
PASSING = timedelta(seconds=5)


def default_due(task: Task) -> datetime | None:
    return None if task.status.terminal else task.updated_at + DUE_AFTER[task.status]


class TaskStore(ABC):
    """Where tasks live. One implementation (DynamoDB); tests use it against moto."""

    @abstractmethod
    def create(self, task: Task, *, idempotency_scope: str | None = None, request_hash: str = "") -> tuple[Task, bool]:
        """Store a new task; with an idempotency key, return ``(existing, False)`` on a replay."""

    @abstractmethod
    def get(self, task_id: str, *, consistent: bool = True) -> Task:
        """The task, or ``TaskNotFound``. ``consistent=False``: an eventually consistent read (half
        the read units), for a reader a stale copy cannot mislead (a client's GET)."""

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
    def move_due(self, task: Task) -> None:
        """Move ``task``'s ``Due`` entry to its due time now, without a new version: a writer
        holding ``task`` still writes (reconcile found the entry early). A no-op if it changed."""

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
        saved = self.save(new, expected=task)
        # One line per state change (readable locally with POWERTOOLS_DEV), and its metric.
        logger.info(
            f"task {task.id}: {task.status} -> {to} ({reason[:200]})",
            extra={"task_id": task.id, "from": str(task.status), "to": str(to), "provider": task.provider},
        )
        metrics.task_moved(saved, task.status)
        return saved

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

    @abstractmethod
    def add_costs(self, task_id: str, counts: Mapping[str, Decimal]) -> None:
        """Add counted AWS units to the task's cost record (``reelay.costs``), atomically."""

    @abstractmethod
    def costs(self, task_ids: builtins.list[str]) -> dict[str, dict[str, Decimal]]:
        """The counted AWS units of each task (an empty record for a task with none)."""


class DynamoTaskStore(TaskStore):
    """``TaskStore`` on the DynamoDB table of template.yaml."""

    def __init__(
        self,
        table_name: str,
        *,
        resource: Any = None,
        due: DuePolicy = default_due,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._table = (resource or new_resource("dynamodb")).Table(table_name)
        # The resource's client (de)serialises attribute values itself: pass plain values.
        self._client = self._table.meta.client
        self._due = due
        self._clock = clock  # when a stored Due entry counts as still ahead

    # -- items -------------------------------------------------------------------------
    def _item(self, task: Task, due_at: str | None) -> dict[str, Any]:
        data = task.model_dump(mode="json", by_alias=True, exclude_none=True)
        plain = {name: data.pop(name) for name in PLAIN_FIELDS if name in data}
        item: dict[str, Any] = {
            **_to_dynamo(plain),
            DOC: zlib.compress(json.dumps(data, separators=(",", ":")).encode(), DOC_LEVEL),
            "pk": f"TASK#{task.id}",
            "sk": "TASK",
            "created_key": f"{task.created_at.isoformat()}#{task.id}",
        }
        if due_at is not None:
            item["due_pk"] = due_partition(task.id)
            item["due_at"] = due_at
        return item

    def _due_at(self, task: Task, stored: str | None) -> str | None:
        """The ``Due`` entry a write of ``task`` leaves: None (out of the index), or when reconcile
        should look. An entry still ahead that is no later than the new due time stays as it is:
        the key (a delete and a put in the index) moves only when the look must come sooner, or
        once the stored look has passed or is about to (within ``PASSING``); reconcile re-checks a
        task it finds due early."""
        due = self._due(task)
        if due is None:
            return None
        if stored is not None:
            kept = datetime.fromisoformat(stored)
            if self._clock() + PASSING < kept <= due:
                return stored
        return due.isoformat()

    @staticmethod
    def _task(item: dict[str, Any]) -> Task:
        plain = _from_dynamo({k: v for k, v in item.items() if k not in _INDEX_ATTRS and k != DOC})
        doc = item.get(DOC)
        # An item written before the document (every field a plain attribute) reads as it is.
        data = {**json.loads(zlib.decompress(bytes(getattr(doc, "value", doc)))), **plain} if doc else plain
        task = Task.model_validate(data)
        task.stored_due = str(item["due_at"]) if item.get("due_at") else None
        return task

    # -- operations --------------------------------------------------------------------
    def create(self, task: Task, *, idempotency_scope: str | None = None, request_hash: str = "") -> tuple[Task, bool]:
        task = task.model_copy()
        task.stored_due = self._due_at(task, None)
        item = self._item(task, task.stored_due)
        if idempotency_scope is None:
            try:
                self._table.put_item(Item=item, ConditionExpression=Attr("pk").not_exists())
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                # A deterministic id (a batch manifest's line) made before: that task, not a second.
                self._count(task.id, "ddb.PutItem", ddb_wu=_put_units(None, item))
                return self.get(task.id), False
            self._count(task.id, "ddb.PutItem", ddb_wu=_put_units(None, item))
            return task, True
        idem_pk = f"IDEM#{idempotency_scope}"
        expires = int((utcnow() + IDEMPOTENCY_TTL).timestamp())
        idem_item = {
            "pk": idem_pk,
            "sk": "IDEM",
            "task_id": task.id,
            "request_hash": request_hash,
            "expires_at": expires,
        }
        # A transaction takes two write units per KB of each item; the index writes follow as usual.
        units = 2 * (costs.write_units(costs.item_size(item)) + costs.write_units(costs.item_size(idem_item)))
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
                            "Item": idem_item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
            self._count(task.id, "ddb.TransactWriteItems", ddb_wu=units + costs.index_write_units(None, item, INDEXES))
            return task, True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
        # A replay: the new task was never stored, so its counts go to nobody (the stack's).
        record = self._table.get_item(Key={"pk": idem_pk, "sk": "IDEM"}, ConsistentRead=True).get("Item")
        if record is None:  # the competing writer's record expired in between: a plain conflict
            raise IdempotencyConflict("Idempotency-Key is being used by another request; retry")
        if record["request_hash"] != request_hash:
            raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
        return self.get(str(record["task_id"])), False

    def get(self, task_id: str, *, consistent: bool = True) -> Task:
        key = {"pk": f"TASK#{task_id}", "sk": "TASK"}
        item = self._table.get_item(Key=key, ConsistentRead=consistent).get("Item")
        self._count(task_id, "ddb.GetItem", ddb_ru=costs.read_units(costs.item_size(item or {}), consistent=consistent))
        if item is None and not consistent:
            # Just created, and not yet on the replica that answered: a stale "not found" would
            # mislead, so it is asked again, consistently.
            return self.get(task_id)
        if item is None:
            raise TaskNotFound(f"task {task_id} not found")
        return self._task(item)

    def save(self, task: Task, *, expected: Task) -> Task:
        new = task.model_copy(update={"version": expected.version + 1})
        new.stored_due = self._due_at(new, expected.stored_due)
        item = self._item(new, new.stored_due)
        before = self._item(expected, expected.stored_due)
        try:
            self._table.put_item(
                Item=item,
                ConditionExpression=Attr("version").eq(expected.version) & Attr("status").eq(str(expected.status)),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                # A failed condition still takes the write units of the item it was checked against.
                self._count(task.id, "ddb.PutItem", ddb_wu=costs.write_units(costs.item_size(before)))
                raise TransitionConflict(f"task {task.id} changed concurrently") from None
            raise
        self._count(task.id, "ddb.PutItem", ddb_wu=_put_units(before, item))
        return new

    def move_due(self, task: Task) -> None:
        due_at = self._due_at(task, None)
        update = "SET due_pk = :p, due_at = :d" if due_at else "REMOVE due_pk, due_at"
        values: dict[str, Any] = {":v": task.version}
        if due_at:
            values |= {":p": due_partition(task.id), ":d": due_at}
        try:
            self._table.update_item(
                Key={"pk": f"TASK#{task.id}", "sk": "TASK"},
                UpdateExpression=update,
                ConditionExpression="version = :v",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return  # written since: that write placed the entry
        finally:
            before = self._item(task, task.stored_due)
            units = costs.write_units(costs.item_size(before))
            units += costs.index_write_units(before, self._item(task, due_at), INDEXES)
            self._count(task.id, "ddb.UpdateItem", ddb_wu=units)

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
        query: dict[str, Any] = {
            "IndexName": LIST_INDEX.name,
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "owner"},  # a DynamoDB reserved word
            "ExpressionAttributeValues": {":o": owner},
            "ScanIndexForward": ascending,
        }
        filtered = status is not None or provider is not None
        found: builtins.list[Task] = []
        start: Any = after
        cursor: Any = None
        for _ in range(LIST_QUERIES):
            need = limit - len(found)
            if start:
                query["ExclusiveStartKey"] = start
            page = self._table.query(**query, Limit=max(need, FILTERED_PAGE) if filtered else need)
            entries = page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            # The index has keys only: the filters apply to the tasks read from the table.
            tasks = self._tasks_of([str(entry["pk"]) for entry in entries])
            matches = [
                (entry, task)
                for entry in entries
                if (task := tasks.get(str(entry["pk"]))) is not None  # a task deleted in between is left out
                and (status is None or task.status is status)
                and (provider is None or task.provider == provider)
            ]
            found += [task for _, task in matches[:need]]
            if len(found) >= limit:
                # A full page: the next one starts after its last task (unless nothing is left).
                cursor = _page_key(matches[need - 1][0]) if start or len(matches) > need else None
                break
            if not start:
                break
        else:
            cursor = start  # the evaluation cap: a shorter page, and the next starts where this stopped
        return found, ({str(k): str(v) for k, v in cursor.items()} if cursor else None)

    def _tasks_of(self, pks: builtins.list[str]) -> dict[str, Task]:
        """The tasks a listing index's page names (keys only), by key, from the table: eventually
        consistent ``BatchGetItem``s of at most 100 keys (a listing may be a moment behind, never wrong)."""
        found: dict[str, Task] = {}
        unique = list(dict.fromkeys(pks))
        for start in range(0, len(unique), 100):  # DynamoDB takes at most 100 keys a request
            keys: builtins.list[dict[str, Any]] = [{"pk": pk, "sk": "TASK"} for pk in unique[start : start + 100]]
            while keys:
                answer = self._client.batch_get_item(RequestItems={self._table.name: {"Keys": keys}})
                for item in answer.get("Responses", {}).get(self._table.name, []):
                    found[str(item["pk"])] = self._task(item)
                keys = answer.get("UnprocessedKeys", {}).get(self._table.name, {}).get("Keys", [])
        return found

    def page_key(self, task: Task) -> PageKey:
        return {
            "pk": f"TASK#{task.id}",
            "sk": "TASK",
            "owner": task.owner,
            "created_key": f"{task.created_at.isoformat()}#{task.id}",
        }

    def due(self, *, before: datetime, limit: int, after: str | None = None) -> tuple[builtins.list[str], str | None]:
        """Each ``Due`` partition in turn, oldest first within it, from one that rotates each minute
        (a run cut short by its time limit leaves a different partition's tail each time), then the
        single partition of entries written before the index was sharded."""
        if after:
            position = _decode_cursor(after)
            try:
                start, shard = int(position.pop("due_start")), int(position.pop("due_shard"))
            except (KeyError, ValueError):
                raise RequestInvalid("cursor is not a Due cursor", field="cursor") from None
        else:
            position, start, shard = {}, int(before.timestamp() // 60) % DUE_SHARDS, 0
        order = [*(f"DUE#{(start + i) % DUE_SHARDS}" for i in range(DUE_SHARDS)), LEGACY_DUE_PARTITION]
        ids: builtins.list[str] = []
        while shard < len(order) and len(ids) < limit:
            query: dict[str, Any] = {
                "IndexName": "Due",
                "KeyConditionExpression": "due_pk = :d AND due_at < :b",
                "ExpressionAttributeValues": {":d": order[shard], ":b": before.isoformat()},
                "Limit": limit - len(ids),
            }
            if position:
                query["ExclusiveStartKey"] = position
            page = self._table.query(**query)
            ids += [str(i["pk"]).removeprefix("TASK#") for i in page.get("Items", [])]
            position = dict(page.get("LastEvaluatedKey") or {})
            if not position:
                shard += 1
        if shard >= len(order):
            return ids, None
        return ids, _encode_cursor({**position, "due_start": str(start), "due_shard": str(shard)})

    def claim_provider_task(self, provider: str, provider_task_id: str, task_id: str) -> str:
        key = {"pk": f"PTASK#{provider}#{provider_task_id}", "sk": "PTASK"}
        claim = {**key, "task_id": task_id}
        try:
            self._table.put_item(
                Item=claim,
                ConditionExpression=Attr("pk").not_exists() | Attr("task_id").eq(task_id),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            self._count(task_id, "ddb.PutItem", ddb_wu=costs.write_units(costs.item_size(claim)))
            owner = self._table.get_item(Key=key, ConsistentRead=True).get("Item") or {}
            self._count(task_id, "ddb.GetItem", ddb_ru=costs.read_units(costs.item_size(owner), consistent=True))
            return str(owner.get("task_id", ""))
        self._count(task_id, "ddb.PutItem", ddb_wu=costs.write_units(costs.item_size(claim)))
        return task_id

    # -- cost accounting (reelay.costs) ------------------------------------------------------
    def _count(self, task_id: str, call: str, **units: Any) -> None:
        costs.record(task_id, call, sink=self.add_costs, **units)

    def add_costs(self, task_id: str, counts: Mapping[str, Decimal]) -> None:
        # One small item outside every index: the ADD is one write unit (counted by the caller).
        names = {f"#a{i}": name for i, name in enumerate(counts)}
        values = {f":a{i}": value for i, value in enumerate(counts.values())}
        self._table.update_item(
            Key={"pk": f"COST#{task_id}", "sk": "COST"},
            UpdateExpression="ADD " + ", ".join(f"{n} {v}" for n, v in zip(names, values, strict=True)),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def costs(self, task_ids: builtins.list[str]) -> dict[str, dict[str, Decimal]]:
        found: dict[str, dict[str, Decimal]] = {task_id: {} for task_id in task_ids}
        unique = list(found)
        for start in range(0, len(unique), 100):
            keys: builtins.list[dict[str, Any]] = [
                {"pk": f"COST#{t}", "sk": "COST"} for t in unique[start : start + 100]
            ]
            while keys:
                resp = self._client.batch_get_item(RequestItems={self._table.name: {"Keys": keys}})
                for item in resp.get("Responses", {}).get(self._table.name, []):
                    task_id = str(item["pk"]).removeprefix("COST#")
                    found[task_id] = {k: Decimal(v) for k, v in item.items() if k not in ("pk", "sk")}
                keys = resp.get("UnprocessedKeys", {}).get(self._table.name, {}).get("Keys", [])
        return found


# The listing index: owner-keyed, newest first by ``created_key``, keys only (template.yaml
# ``TaskTable``): its entry is written once, at the task's creation.
LIST_INDEX = costs.IndexSpec(name="ByOwnerCreated", keys=("owner", "created_key"), projection="KEYS_ONLY")
# A filtered listing evaluates index entries this many at a time, at most this many times a
# page: a page of rare matches is shorter (with a cursor) rather than unbounded.
FILTERED_PAGE = 100
LIST_QUERIES = 10
# The ``Due`` index's partitions: a task's entry is in one of ``DUE_SHARDS``, by its id (so no
# single partition key takes every task's due writes); entries written before the sharding are
# in ``LEGACY_DUE_PARTITION``, still read (and moved to a shard at the task's next write).
DUE_SHARDS = 8
LEGACY_DUE_PARTITION = "DUE"


def due_partition(task_id: str) -> str:
    """The ``Due`` partition of a task's entry."""
    digest = hashlib.blake2b(task_id.encode(), digest_size=2).digest()
    return f"DUE#{int.from_bytes(digest, 'big') % DUE_SHARDS}"


# Every index of the table, for the write units of a task write.
INDEXES = (LIST_INDEX, costs.IndexSpec(name="Due", keys=("due_pk", "due_at"), projection="KEYS_ONLY"))


def _page_key(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Where a listing resumes after ``entry`` (the table's and the index's keys)."""
    return {key: entry[key] for key in ("pk", "sk", "owner", "created_key")}


def _put_units(old: dict[str, Any] | None, new: dict[str, Any]) -> int:
    """A PutItem's write units: the larger of the old and new item, plus every index write."""
    size = max(costs.item_size(new), costs.item_size(old) if old else 0)
    return costs.write_units(size) + costs.index_write_units(old, new, INDEXES)


# A task item holds its fields as one zlib-compressed JSON document (``DOC``), all but
# ``PLAIN_FIELDS``: those that writes are conditional on or an index is keyed by, and what an
# operator reading the table wants to see at a glance. A task of three transitions is then
# about 850 bytes instead of 1.3 KB, so each of its writes is one write unit, not two.
DOC = "doc"
DOC_LEVEL = 6
PLAIN_FIELDS = ("status", "version", "owner", "provider")
# Attributes that exist only for keys and indexes (``owner`` is a task field too: kept).
# (The last three were the keys of listing indexes before one owner-keyed index took every filter.)
_INDEX_ATTRS = frozenset(
    {"pk", "sk", "list_pk", "created_key", "due_pk", "due_at", "expires_at"}
    | {"owner_status", "owner_provider", "owner_status_provider"}
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


class DynamoWebhookSecretStore(WebhookSecretStore):
    """Owners' webhook secrets, one item per owner in the task table (never logged, never listed)."""

    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or new_resource("dynamodb")).Table(table_name)

    @staticmethod
    def _key(owner: str) -> dict[str, str]:
        return {"pk": f"WHSEC#{owner}", "sk": "WHSEC"}

    def read(self, owner: str) -> tuple[builtins.list[dict[str, Any]], int] | None:
        item = self._table.get_item(Key=self._key(owner), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return [dict(e) for e in item.get("entries", [])], int(item.get("version", 0))

    def write(self, owner: str, entries: builtins.list[dict[str, Any]], *, expected_version: int | None) -> bool:
        condition = Attr("pk").not_exists() if expected_version is None else Attr("version").eq(expected_version)
        try:
            self._table.put_item(
                Item={**self._key(owner), "entries": entries, "version": (expected_version or 0) + 1},
                ConditionExpression=condition,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True


class DynamoWebhookEndpointStore(WebhookEndpointStore):
    """Owners' webhook endpoints in the task table, next to their webhook secrets (never logged).

    One item per endpoint, ``pk = WHEP#<owner>``, ``sk = WHEP#<endpoint id>`` (no ``TASK#`` key and
    no index attribute: never in a task list or the ``Due`` index; the owner is in the key only),
    and one counter per owner (``sk = COUNT``), changed in the same transaction as each create and
    delete, so the per-owner limit holds under concurrent creates. An owner's endpoints are one
    query of its partition.
    """

    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or new_resource("dynamodb")).Table(table_name)
        # The resource's client: it takes and gives plain Python values, as the table does.
        self._client = self._table.meta.client

    @staticmethod
    def _pk(owner: str) -> str:
        return f"WHEP#{owner}"

    def _key(self, owner: str, endpoint_id: str) -> dict[str, str]:
        return {"pk": self._pk(owner), "sk": f"WHEP#{endpoint_id}"}

    def _item(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        data = endpoint.model_dump(mode="json", exclude={"owner"}, exclude_none=True)
        return {**self._key(endpoint.owner, endpoint.id), **_to_dynamo(data)}

    @staticmethod
    def _endpoint(owner: str, item: Mapping[str, Any]) -> WebhookEndpoint:
        data = _from_dynamo({k: v for k, v in item.items() if k not in ("pk", "sk")})
        return WebhookEndpoint.model_validate({**data, "owner": owner})

    def create(self, endpoint: WebhookEndpoint, *, limit: int) -> bool:
        count_key = {"pk": self._pk(endpoint.owner), "sk": "COUNT"}
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": count_key,
                            "UpdateExpression": "ADD endpoints :one",
                            "ConditionExpression": "attribute_not_exists(endpoints) OR endpoints < :limit",
                            "ExpressionAttributeValues": {":one": 1, ":limit": limit},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table.name,
                            "Item": self._item(endpoint),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or [{}]
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                return False  # the owner has ``limit`` endpoints
            raise
        return True

    def get(self, owner: str, endpoint_id: str) -> WebhookEndpoint | None:
        item = self._table.get_item(Key=self._key(owner, endpoint_id), ConsistentRead=True).get("Item")
        return self._endpoint(owner, item) if item is not None else None

    def of_owner(self, owner: str) -> builtins.list[WebhookEndpoint]:
        page = self._table.query(
            KeyConditionExpression=Key("pk").eq(self._pk(owner)) & Key("sk").begins_with("WHEP#"),
            ConsistentRead=True,
        )
        return [self._endpoint(owner, item) for item in page.get("Items", [])]

    def save(self, endpoint: WebhookEndpoint, *, expected_version: int) -> bool:
        try:
            self._table.put_item(Item=self._item(endpoint), ConditionExpression=Attr("version").eq(expected_version))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def delete(self, owner: str, endpoint_id: str) -> bool:
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self._table.name,
                            "Key": self._key(owner, endpoint_id),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": {"pk": self._pk(owner), "sk": "COUNT"},
                            "UpdateExpression": "ADD endpoints :minus",
                            "ExpressionAttributeValues": {":minus": -1},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                return False  # no such endpoint
            raise
        return True
