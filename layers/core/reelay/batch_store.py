"""The batch data layer: DynamoDB items of batches, the manifest and report objects in S3, the batch queue.

Items live in the task table (template.yaml ``TaskTable``), beside the tasks, in item
collections of their own (no index, no scan):

- a batch:           pk=``BATCH#<id>``  sk=``BATCH``  — where the manifest is, whose, its counters
- a line record:     pk=``BATCH#<id>``  sk=``LINE#<line, 10 digits>`` — the line's task id, or why
  it is invalid; a query over ``LINE#`` gives every line in input order (the report)
- a chunk record:    pk=``BATCH#<id>``  sk=``CHUNK#<index, 8 digits>`` — the chunk's line records
  are all written, and the function time it took (the batch item's ``committed`` set is what
  makes a chunk's counts count once)
- an inbox owner:    pk=``INBOX#<owner hash>`` sk=``INBOX`` — which owner ``inbox/<hash>/`` is

None of them carries the task indexes' attributes (``created_key``, ``due_pk``), so listings and
reconcile never see them.
"""

from __future__ import annotations

import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from reelay.aws import new_client, new_resource
from reelay.batches import Batch, BatchStatus, LineRecord
from reelay.errors import ManifestChanged, QueueSendFailed
from reelay.models import Task, utcnow
from reelay.store import DynamoTaskStore, _from_dynamo, _to_dynamo

_BATCH_SK = "BATCH"
_READ_BYTES = 1024 * 1024


class BatchStore(ABC):
    """Where batches, their line records and chunk markers live."""

    @abstractmethod
    def create(self, batch: Batch) -> tuple[Batch, bool]:
        """Store a new batch; ``(existing, False)`` when one of that id exists."""

    @abstractmethod
    def get(self, batch_id: str) -> Batch | None: ...

    @abstractmethod
    def start(self, batch_id: str, *, size: int) -> Batch | None:
        """Move an ``awaiting`` batch to ``running`` (its manifest arrived); None if another delivery did."""

    @abstractmethod
    def register_inbox(self, hashed: str, owner: str) -> None: ...

    @abstractmethod
    def inbox_owner(self, hashed: str) -> str | None: ...

    @abstractmethod
    def finish_split(self, batch_id: str, *, lines: int, chunks_total: int) -> Batch: ...

    @abstractmethod
    def commit_chunk(
        self, batch_id: str, index: int, *, tasks: int, invalid: int, codes: dict[str, int], seconds: float
    ) -> Batch | None:
        """Add one chunk's counts, once; None when the chunk was committed before."""

    @abstractmethod
    def chunk_seconds(self, batch_id: str) -> list[tuple[int, int, float]]:
        """``(chunk, lines, function seconds)`` of every committed chunk, in order."""

    @abstractmethod
    def put_lines(self, batch_id: str, records: list[LineRecord]) -> None: ...

    @abstractmethod
    def lines(self, batch_id: str) -> Iterator[LineRecord]:
        """Every line record, in input order."""

    @abstractmethod
    def tasks(self, task_ids: list[str]) -> dict[str, Task]: ...

    @abstractmethod
    def task_ended(self, batch_id: str, *, succeeded: bool, code: str | None, cost_cents: int) -> Batch | None: ...

    @abstractmethod
    def settle(
        self,
        batch_id: str,
        *,
        chunks: list[int],
        tasks: int,
        invalid: int,
        succeeded: int,
        failed: int,
        cost_cents: int,
        codes: dict[str, int],
    ) -> Batch:
        """Write a running batch's counters as recounted from its records (every task ended)."""

    @abstractmethod
    def mark_reporting(self, batch_id: str) -> bool:
        """Move a complete running batch to ``reporting``; True for the one writer that does."""

    @abstractmethod
    def mark_completed(self, batch_id: str, *, report_key: str, summary_key: str) -> Batch | None:
        """Move a ``reporting`` batch to ``completed``; None for a writer that was not first."""


class DynamoBatchStore(BatchStore):
    """``BatchStore`` on the task table."""

    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or new_resource("dynamodb")).Table(table_name)
        self._client = self._table.meta.client

    @staticmethod
    def _key(batch_id: str, sk: str = _BATCH_SK) -> dict[str, str]:
        return {"pk": f"BATCH#{batch_id}", "sk": sk}

    @staticmethod
    def _batch(item: dict[str, Any]) -> Batch:
        data = _from_dynamo({k: v for k, v in item.items() if k not in ("pk", "sk")})
        data["owner"] = data.pop("batch_owner")
        data["committed"] = {int(i) for i in data.get("committed") or ()}
        return Batch.model_validate(data)

    def create(self, batch: Batch) -> tuple[Batch, bool]:
        data = batch.model_dump(mode="json", exclude_none=True, exclude={"committed"})
        data["batch_owner"] = data.pop("owner")
        try:
            self._table.put_item(
                Item={**_to_dynamo(data), **self._key(batch.id)}, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            existing = self.get(batch.id)
            if existing is None:  # pragma: no cover - a batch is never deleted
                raise
            return existing, False
        return batch, True

    def get(self, batch_id: str) -> Batch | None:
        item = self._table.get_item(Key=self._key(batch_id), ConsistentRead=True).get("Item")
        return self._batch(item) if item else None

    def start(self, batch_id: str, *, size: int) -> Batch | None:
        now = utcnow().isoformat()
        try:
            response = self._update(
                batch_id,
                "SET #status = :running, created_at = :now, updated_at = :now, #size = :size",
                {"#status": "status", "#size": "size"},
                {
                    ":running": BatchStatus.RUNNING.value,
                    ":awaiting": BatchStatus.AWAITING.value,
                    ":now": now,
                    ":size": size,
                },
                ConditionExpression="#status = :awaiting",
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return self._batch(response["Attributes"])

    def register_inbox(self, hashed: str, owner: str) -> None:
        self._table.put_item(Item={"pk": f"INBOX#{hashed}", "sk": "INBOX", "inbox_owner": owner})

    def inbox_owner(self, hashed: str) -> str | None:
        item = self._table.get_item(Key={"pk": f"INBOX#{hashed}", "sk": "INBOX"}, ConsistentRead=True).get("Item")
        return str(item["inbox_owner"]) if item else None

    def _update(self, batch_id: str, expression: str, names: dict[str, str], values: dict[str, Any], **kw: Any) -> Any:
        return self._table.update_item(
            Key=self._key(batch_id),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            **kw,
        )

    def finish_split(self, batch_id: str, *, lines: int, chunks_total: int) -> Batch:
        response = self._update(
            batch_id,
            "SET split_done = :t, #lines = :l, chunks_total = :c, updated_at = :now",
            {"#lines": "lines"},
            {":t": True, ":l": lines, ":c": chunks_total, ":now": utcnow().isoformat()},
            ConditionExpression="attribute_exists(pk)",
            ReturnValues="ALL_NEW",
        )
        return self._batch(response["Attributes"])

    def commit_chunk(
        self, batch_id: str, index: int, *, tasks: int, invalid: int, codes: dict[str, int], seconds: float
    ) -> Batch | None:
        # One conditional write on the batch item: the chunk's index joins the committed set and
        # its counts are added, or (already in the set) nothing happens. (No transaction: one
        # item suffices, and moto copies every table for each transaction.)
        names, values, sets = _code_increments(codes)
        names |= {"#tasks": "tasks"}
        values |= {
            ":one": 1,
            ":tasks": tasks,
            ":invalid": invalid,
            ":index": index,
            ":indexes": {index},
            ":now": utcnow().isoformat(),
        }
        expression = "ADD chunks_done :one, #tasks :tasks, invalid :invalid, committed :indexes SET " + ", ".join(
            [*sets, "updated_at = :now"]
        )
        # First the chunk record: every line record of the chunk is written (the check counts on
        # it), with the function time the chunk took (a plain put: the same on a re-run).
        self._table.put_item(
            Item={
                **self._key(batch_id, f"CHUNK#{index:08d}"),
                "lines": tasks + invalid,
                "seconds": Decimal(str(round(seconds, 4))),
            }
        )
        try:
            response = self._update(
                batch_id,
                expression,
                names,
                values,
                ConditionExpression="attribute_exists(pk) AND NOT contains(committed, :index)",
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return None  # committed before: this chunk's counts are in already
        return self._batch(response["Attributes"])

    def chunk_seconds(self, batch_id: str) -> list[tuple[int, int, float]]:
        return [
            (int(str(item["sk"]).removeprefix("CHUNK#")), int(item["lines"]), float(item["seconds"]))
            for item in self._query(batch_id, "CHUNK#")
        ]

    def put_lines(self, batch_id: str, records: list[LineRecord]) -> None:
        # Unconditional and the same for every attempt: a re-run chunk writes the same items.
        with self._table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as writer:
            for record in records:
                item = record.model_dump(mode="json", exclude_none=True)
                writer.put_item(Item={**item, **self._key(batch_id, f"LINE#{record.line:010d}")})

    def lines(self, batch_id: str) -> Iterator[LineRecord]:
        for item in self._query(batch_id, "LINE#"):
            yield LineRecord.model_validate(_from_dynamo({k: v for k, v in item.items() if k not in ("pk", "sk")}))

    def _query(self, batch_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": f"BATCH#{batch_id}", ":prefix": prefix},
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**query)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def tasks(self, task_ids: list[str]) -> dict[str, Task]:
        found: dict[str, Task] = {}
        for start in range(0, len(task_ids), 100):
            keys = [{"pk": f"TASK#{t}", "sk": "TASK"} for t in dict.fromkeys(task_ids[start : start + 100])]
            request: dict[str, Any] = {self._table.name: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = self._table.meta.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table.name, []):
                    task = DynamoTaskStore._task(item)
                    found[task.id] = task
                request = response.get("UnprocessedKeys") or {}
        return found

    def task_ended(self, batch_id: str, *, succeeded: bool, code: str | None, cost_cents: int) -> Batch | None:
        names, values, sets = _code_increments({code: 1} if code else {})
        values |= {":one": 1, ":cost": cost_cents, ":now": utcnow().isoformat()}
        names |= {"#cost": "cost_cents"}
        outcome = "succeeded" if succeeded else "failed"
        expression = f"ADD ended :one, {outcome} :one, #cost :cost SET " + ", ".join([*sets, "updated_at = :now"])
        # After the check's recount (which ran once every task had ended) a task's count is already
        # in the counters: one that arrives later (its hook ran after the recount read it) is not added.
        try:
            response = self._update(
                batch_id,
                expression,
                names,
                values,
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(recounted_at)",
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return self._batch(response["Attributes"])

    def settle(
        self,
        batch_id: str,
        *,
        chunks: list[int],
        tasks: int,
        invalid: int,
        succeeded: int,
        failed: int,
        cost_cents: int,
        codes: dict[str, int],
    ) -> Batch:
        values: dict[str, Any] = {
            ":chunks": len(chunks),
            ":tasks": tasks,
            ":invalid": invalid,
            ":ended": succeeded + failed,
            ":succeeded": succeeded,
            ":failed": failed,
            ":cost": cost_cents,
            ":codes": codes,
            ":now": utcnow().isoformat(),
            ":running": BatchStatus.RUNNING.value,
        }
        sets = (
            "chunks_done = :chunks, #tasks = :tasks, invalid = :invalid, ended = :ended, succeeded = :succeeded, "
            "failed = :failed, cost_cents = :cost, codes = :codes, updated_at = :now, recounted_at = :now"
        )
        if chunks:
            values[":committed"] = set(chunks)
            sets += ", committed = :committed"
        response = self._update(
            batch_id,
            "SET " + sets,
            {"#tasks": "tasks", "#status": "status"},
            values,
            ConditionExpression="#status = :running",
            ReturnValues="ALL_NEW",
        )
        return self._batch(response["Attributes"])

    def mark_reporting(self, batch_id: str) -> bool:
        try:
            self._update(
                batch_id,
                "SET #status = :reporting, ended_at = :now, updated_at = :now",
                {"#status": "status", "#tasks": "tasks"},
                {
                    ":running": BatchStatus.RUNNING.value,
                    ":reporting": BatchStatus.REPORTING.value,
                    ":t": True,
                    ":now": utcnow().isoformat(),
                },
                # Every chunk committed and every task ended, compared in the write itself.
                ConditionExpression="#status = :running AND split_done = :t AND chunks_done = chunks_total "
                "AND ended >= #tasks",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def mark_completed(self, batch_id: str, *, report_key: str, summary_key: str) -> Batch | None:
        now = utcnow().isoformat()
        try:
            response = self._update(
                batch_id,
                "SET #status = :completed, completed_at = :now, updated_at = :now, report_key = :r, summary_key = :s",
                {"#status": "status"},
                {
                    ":completed": BatchStatus.COMPLETED.value,
                    ":reporting": BatchStatus.REPORTING.value,
                    ":now": now,
                    ":r": report_key,
                    ":s": summary_key,
                },
                ConditionExpression="#status = :reporting",
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None  # another report writer completed it first
            raise
        return self._batch(response["Attributes"])


def _code_increments(codes: dict[str, int]) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    names: dict[str, str] = {}
    values: dict[str, Any] = {":zero": 0} if codes else {}
    sets: list[str] = []
    for i, (code, count) in enumerate(sorted(codes.items())):
        names[f"#c{i}"] = code
        values[f":c{i}"] = count
        sets.append(f"codes.#c{i} = if_not_exists(codes.#c{i}, :zero) + :c{i}")
    if codes:
        names["#codes"] = "codes"
        sets = [s.replace("codes.", "#codes.") for s in sets]
    return names, values, sets


class ManifestObjects:
    """Manifests and reports in the results bucket: ranged streaming reads, whole-object writes."""

    def __init__(self, bucket: str, *, client: Any = None) -> None:
        self.bucket = bucket
        self._s3 = client or new_client("s3")

    def head(self, key: str) -> tuple[str, int] | None:
        """``(ETag without quotes, size)``, or None when there is no such object."""
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return str(head["ETag"]).strip('"'), int(head["ContentLength"])

    def stream(self, key: str, etag: str, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of ``key`` as it was at ``etag``; ``ManifestChanged`` if it is not any more."""
        if end is not None and end <= start:
            return
        span = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key, Range=span, IfMatch=f'"{etag}"')
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("InvalidRange", "416"):
                return  # nothing at or after ``start`` (an empty manifest, or its end)
            if code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise ManifestChanged(f"{key} is no longer the object of ETag {etag}") from exc
            raise
        body = response["Body"]
        try:
            yield from body.iter_chunks(_READ_BYTES)
        finally:
            body.close()

    def put_lines(self, key: str, pieces: Iterable[bytes], *, content_type: str) -> None:
        """Write ``key`` from a stream of pieces (spooled to disk past 8 MiB; multipart when large)."""
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
            for piece in pieces:
                spool.write(piece)
            spool.seek(0)
            self._s3.upload_fileobj(spool, self.bucket, key, ExtraArgs={"ContentType": content_type})


class BatchQueue:
    """The batch queue: chunk, split and report messages (JSON objects), sent ten at a time."""

    def __init__(self, queue_url: str, *, client: Any = None) -> None:
        self.url = queue_url
        self._sqs = client or new_client("sqs")

    def send_many(self, bodies: list[dict[str, Any]], *, delay_seconds: int = 0) -> None:
        delay = max(0, min(900, delay_seconds))
        for start in range(0, len(bodies), 10):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(body, separators=(",", ":")), "DelaySeconds": delay}
                for i, body in enumerate(bodies[start : start + 10])
            ]
            for _ in range(3):
                try:
                    failed = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries).get("Failed") or []
                except (ClientError, BotoCoreError) as exc:
                    raise QueueSendFailed(f"could not queue batch messages: {type(exc).__name__}") from exc
                retry = {f["Id"] for f in failed}
                entries = [e for e in entries if e["Id"] in retry]
                if not entries:
                    break
            if entries:
                raise QueueSendFailed(f"SQS refused {len(entries)} batch messages")
