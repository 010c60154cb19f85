"""The governor's state in DynamoDB: slots, request logs, the waiting line (boto3 lives here only).

Items share the task table (keys never collide with a task's ``TASK#``; they carry none of the
index attributes, so they cost no index writes). Every write is a single-item conditional write:
moto's DynamoDB transactions are not isolated under concurrency, and none is needed.

======================================  ==================================================
item                                    what it holds
======================================  ==================================================
``GOV#<p>#SLOTS`` / ``SLOT#<nnnn>``     one concurrency slot: ``holder`` (a task id) and
                                        ``lease_until`` while taken; absent or without a
                                        holder when free (items are made on first use)
``GOV#<p>#RATE`` / ``SHARD#<k>``        one shard of the request log: ``log`` (the send
                                        times granted, oldest first), ``v`` (version),
                                        ``not_before`` and ``penalty_until`` after a 429
``GOV#<p>#WAIT`` / ``<class>#<vtime>#<task>``  a task waiting for a slot; read in key order,
                                        which is the fair order (``reelay.governor``)
``GOV#<p>#WAITING`` / ``<task>``        that task's place in the line (so it queues once)
``GOV#<p>#FLOWS`` / ``<flow>``          a flow's (batch's or owner's) last virtual time;
                                        ``#clock<class>`` that of the last task let in
======================================  ==================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from reelay import costs
from reelay.aws import new_resource


@dataclass(frozen=True)
class Slot:
    """A taken slot: its number, the task holding it, and until when its lease runs."""

    index: int
    holder: str
    lease_until: float


@dataclass(frozen=True)
class RateShard:
    """One shard of a provider's request log, as read (``version`` 0: never written)."""

    index: int
    log: tuple[float, ...] = ()
    version: int = 0
    not_before: float = 0.0
    penalty_until: float = 0.0


@dataclass(frozen=True)
class WaitEntry:
    """A task in the waiting line; ``place`` is its sort key (class, virtual time, task id)."""

    task_id: str
    place: str


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float, Decimal)) else default


def _task_of_place(place: str) -> str:
    """The task a place in the line (``<class>#<vtime>#<task>``) is for."""
    return place.rsplit("#", 1)[-1]


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class GovernorStore:
    """Single-item conditional reads and writes of the governor's items."""

    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or new_resource("dynamodb")).Table(table_name)

    # -- slots -------------------------------------------------------------------------------

    def _counted(self, task_id: str | None, call: str) -> Any:
        """The table, after counting ``call`` for ``task_id`` (``reelay.costs``): a call that names
        a task (its slot, its place in the line) is that task's; the provider-wide ones (the
        request log, the line's head, the clocks) are the stack's, as reconcile's Due query is.
        The governor's items are small (under 1 KB) and in no index: one unit each."""
        if task_id is not None:
            if call == "ddb.GetItem":
                costs.record(task_id, call, ddb_ru=1)
            else:
                costs.record(task_id, call, ddb_wu=1)
        return self._table

    def slots(self, provider: str) -> list[Slot]:
        """Every taken slot of ``provider`` (one query)."""
        taken = []
        for item in self._query(f"GOV#{provider}#SLOTS"):
            if item.get("holder"):
                index = int(str(item["sk"]).removeprefix("SLOT#"))
                taken.append(Slot(index, str(item["holder"]), _number(item.get("lease_until"))))
        return taken

    def take_slot(self, provider: str, index: int, task_id: str, *, now: float, lease_until: float) -> bool:
        """Make ``task_id`` the holder of slot ``index`` if it is free (or its lease ran out)."""
        try:
            self._counted(task_id, "ddb.UpdateItem").update_item(
                Key={"pk": f"GOV#{provider}#SLOTS", "sk": f"SLOT#{index:04d}"},
                UpdateExpression="SET holder = :t, lease_until = :l, taken_at = :n",
                ConditionExpression=Attr("holder").not_exists() | Attr("lease_until").lt(Decimal(str(now))),
                ExpressionAttributeValues={
                    ":t": task_id,
                    ":l": Decimal(str(round(lease_until, 3))),
                    ":n": Decimal(str(round(now, 3))),
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def free_slot(self, provider: str, index: int, task_id: str) -> bool:
        """Free slot ``index`` if ``task_id`` still holds it."""
        try:
            self._counted(task_id, "ddb.UpdateItem").update_item(
                Key={"pk": f"GOV#{provider}#SLOTS", "sk": f"SLOT#{index:04d}"},
                UpdateExpression="REMOVE holder, lease_until, taken_at",
                ConditionExpression=Attr("holder").eq(task_id),
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    # -- request log -------------------------------------------------------------------------

    def rate_shards(self, provider: str) -> dict[int, RateShard]:
        """The written shards of ``provider``'s request log (one query)."""
        shards = {}
        for item in self._query(f"GOV#{provider}#RATE"):
            index = int(str(item["sk"]).removeprefix("SHARD#"))
            shards[index] = RateShard(
                index=index,
                log=tuple(float(t) for t in item.get("log") or ()),
                version=int(item.get("v", 0)),
                not_before=_number(item.get("not_before")),
                penalty_until=_number(item.get("penalty_until")),
            )
        return shards

    def write_rate_shard(self, provider: str, shard: RateShard, log: Sequence[float]) -> bool:
        """Replace the shard's log with ``log`` if nobody wrote it since ``shard`` was read."""
        condition = Attr("v").not_exists() if shard.version == 0 else Attr("v").eq(shard.version)
        try:
            self._counted(None, "ddb.UpdateItem").update_item(
                Key={"pk": f"GOV#{provider}#RATE", "sk": f"SHARD#{shard.index:03d}"},
                UpdateExpression="SET #log = :log, v = :v",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#log": "log"},
                ExpressionAttributeValues={
                    ":log": [Decimal(str(round(t, 3))) for t in log],
                    ":v": shard.version + 1,
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def penalize(self, provider: str, shard_index: int, *, not_before: float, penalty_until: float) -> None:
        """After a 429: no request before ``not_before``, a lower rate until ``penalty_until``.

        Only ever moves the times later, whoever writes last.
        """
        key = {"pk": f"GOV#{provider}#RATE", "sk": f"SHARD#{shard_index:03d}"}
        for attribute, value in (("not_before", not_before), ("penalty_until", penalty_until)):
            try:
                self._counted(None, "ddb.UpdateItem").update_item(
                    Key=key,
                    UpdateExpression=f"SET {attribute} = :t, v = if_not_exists(v, :zero) + :one",
                    ConditionExpression=Attr(attribute).not_exists() | Attr(attribute).lt(Decimal(str(value))),
                    ExpressionAttributeValues={":t": Decimal(str(round(value, 3))), ":zero": 0, ":one": 1},
                )
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise

    # -- the waiting line --------------------------------------------------------------------

    def place_of(self, provider: str, task_id: str) -> str | None:
        """The place ``task_id`` was given in the line, or None when it never queued (or left)."""
        item = self._counted(task_id, "ddb.GetItem").get_item(
            Key={"pk": f"GOV#{provider}#WAITING", "sk": task_id}, ConsistentRead=True
        )
        place = (item.get("Item") or {}).get("place")
        return str(place) if place else None

    def mark_place(self, provider: str, task_id: str, place: str) -> str:
        """Record ``task_id``'s place unless it has one; the place it has now."""
        try:
            self._counted(task_id, "ddb.PutItem").put_item(
                Item={"pk": f"GOV#{provider}#WAITING", "sk": task_id, "place": place},
                ConditionExpression=Attr("pk").not_exists(),
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            return self.place_of(provider, task_id) or place
        return place

    def forget_place(self, provider: str, task_id: str) -> None:
        self._counted(task_id, "ddb.DeleteItem").delete_item(Key={"pk": f"GOV#{provider}#WAITING", "sk": task_id})

    def put_waiting(self, provider: str, entry: WaitEntry) -> None:
        self._counted(entry.task_id, "ddb.PutItem").put_item(
            Item={"pk": f"GOV#{provider}#WAIT", "sk": entry.place, "task_id": entry.task_id}
        )

    def put_places(self, provider: str, entries: Sequence[WaitEntry]) -> None:
        """Give each of many new tasks its place and its entry in the line, in batched writes
        (25 items a request). A task cut short between its two items has a place and no entry:
        ``Governor.is_waiting`` says no, reconcile sends it its submit message, and the submit
        worker puts its entry in the line."""
        for entry in entries:
            costs.record(entry.task_id, "ddb.BatchWriteItem", ddb_wu=2)
        with self._table.batch_writer() as batch:
            for entry in entries:
                batch.put_item(Item={"pk": f"GOV#{provider}#WAITING", "sk": entry.task_id, "place": entry.place})
            for entry in entries:
                batch.put_item(Item={"pk": f"GOV#{provider}#WAIT", "sk": entry.place, "task_id": entry.task_id})

    def is_in_line(self, provider: str, place: str) -> bool:
        item = self._counted(_task_of_place(place), "ddb.GetItem").get_item(
            Key={"pk": f"GOV#{provider}#WAIT", "sk": place}, ConsistentRead=True
        )
        return "Item" in item

    def head(self, provider: str, count: int) -> list[WaitEntry]:
        """The first ``count`` tasks of the line, in order."""
        answer = self._counted(None, "ddb.Query").query(
            KeyConditionExpression=Key("pk").eq(f"GOV#{provider}#WAIT"), Limit=count, ConsistentRead=True
        )
        return [WaitEntry(str(i["task_id"]), str(i["sk"])) for i in answer.get("Items", [])]

    def take_from_line(self, provider: str, place: str) -> bool:
        """Remove the entry at ``place``; True only for the one caller that removed it."""
        try:
            self._counted(_task_of_place(place), "ddb.DeleteItem").delete_item(
                Key={"pk": f"GOV#{provider}#WAIT", "sk": place}, ConditionExpression=Attr("pk").exists()
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def waiting_count(self, provider: str) -> int:
        """How many tasks wait (a count query, paged)."""
        total, start = 0, None
        while True:
            kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(f"GOV#{provider}#WAIT"), "Select": "COUNT"}
            if start:
                kwargs["ExclusiveStartKey"] = start
            answer = self._counted(None, "ddb.Query").query(**kwargs)
            total += int(answer.get("Count", 0))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return total

    # -- flows (fair order) ------------------------------------------------------------------

    def flow_times(self, provider: str, flow: str, clock_key: str) -> tuple[float | None, float]:
        """The flow's last virtual time (None: a new flow) and its class's clock."""
        keys = [{"pk": f"GOV#{provider}#FLOWS", "sk": flow}, {"pk": f"GOV#{provider}#FLOWS", "sk": clock_key}]
        found = {str(i["sk"]): i for i in self._batch_get(keys)}
        last = found.get(flow, {}).get("last")
        clock = _number(found.get(clock_key, {}).get("last"))
        return (None if last is None else float(last)), clock

    def advance_flow(self, provider: str, flow: str, *, expected: float | None, to: float) -> bool:
        """Move the flow's last virtual time from ``expected`` to ``to`` (conditional)."""
        condition = Attr("last").not_exists() if expected is None else Attr("last").eq(Decimal(str(expected)))
        try:
            self._counted(None, "ddb.UpdateItem").update_item(
                Key={"pk": f"GOV#{provider}#FLOWS", "sk": flow},
                UpdateExpression="SET #last = :to",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#last": "last"},
                ExpressionAttributeValues={":to": Decimal(str(to))},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def advance_clock(self, provider: str, clock_key: str, to: float) -> None:
        """Move a class's clock forward to ``to`` (never back)."""
        try:
            self._counted(None, "ddb.UpdateItem").update_item(
                Key={"pk": f"GOV#{provider}#FLOWS", "sk": clock_key},
                UpdateExpression="SET #last = :to",
                ConditionExpression=Attr("last").not_exists() | Attr("last").lt(Decimal(str(to))),
                ExpressionAttributeNames={"#last": "last"},
                ExpressionAttributeValues={":to": Decimal(str(to))},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    # -- helpers -----------------------------------------------------------------------------

    def _query(self, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start = None
        while True:
            kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(pk), "ConsistentRead": True}
            if start:
                kwargs["ExclusiveStartKey"] = start
            answer = self._counted(None, "ddb.Query").query(**kwargs)
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if not start:
                return items

    def _batch_get(self, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        client = self._table.meta.client
        answer = client.batch_get_item(RequestItems={self._table.name: {"Keys": keys, "ConsistentRead": True}})
        return list(answer.get("Responses", {}).get(self._table.name, []))
