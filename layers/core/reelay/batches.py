"""Batches: a JSON Lines manifest put under the results bucket's ``inbox/`` becomes one task per line.

The flow (every step a message on the batch queue, handled by the batch function):

1. *Object created* (S3 → EventBridge → batch queue): the manifest's owner comes from its key
   (``inbox_owner``), the batch is created conditionally with an id derived from
   (bucket, key, ETag) — so a second delivery of the event, or the same content put again,
   finds the batch and does nothing — and the object is *split*: read once as a stream,
   counting lines (nothing is parsed), into chunks of at most ``chunk_lines`` lines or
   ``chunk_bytes`` bytes, each one message carrying its byte range and first line number. A
   split that runs short of time sends the rest of itself as a continuation message.
2. *Chunk*: the worker reads its byte range (``If-Match`` the batch's ETag), checks each line
   exactly as ``POST /v1/tasks`` checks a body (``reelay.api.refuse_body``, the configured
   providers' request shapes, ``TaskService.create``), and creates its task with a
   deterministic id (batch, line) by a conditional write: a re-delivered chunk creates nothing
   new. Each line gets a line record (task id, or the reason it is invalid); the chunk then
   commits its counts once (one conditional write adding its index to the batch's set).
3. *Task ended* (``BatchProgress.task_ended``, a ``TaskTracker`` ``on_terminal`` hook, in
   whichever function ended the task): the batch's counters move; the write that finds every
   chunk committed and every task ended moves the batch to ``reporting`` (conditionally, so
   once) and queues the report.
4. *Report*: one line per input line in input order, from the line records (a query, not a
   scan) and the tasks (batch reads), then the summary; the batch is ``completed`` and the
   ``on_batch_completed`` hooks run (the one place a batch's completion is announced).

Owners and keys: ``inbox/<name>.jsonl`` belongs to the local owner (the one owner of a stack
without client auth, and whoever can write to the bucket directly); another owner's inbox is
``inbox/<sha256(owner)[:32]>/`` (``POST /v1/batches`` registers it and presigns the PUT). The
report lands at ``reports/<same path>.jsonl`` and the summary at ``reports/<same path>.summary.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from reelay.errors import ManifestChanged, RequestInvalid, TaskNotFound
from reelay.models import LOCAL_OWNER, Task, VideoRequest, utcnow

if TYPE_CHECKING:
    from reelay.aws import ResultBucket
    from reelay.batch_store import BatchQueue, BatchStore, ManifestObjects
    from reelay.contract import BatchTicket, BatchView
    from reelay.models import BatchUploadRequest
    from reelay.providers.base import ProviderConfig
    from reelay.tasks import TaskService

logger = Logger(child=True)

INBOX_ROOT = "inbox/"
REPORTS_ROOT = "reports/"
MANIFEST_SUFFIX = ".jsonl"
# A manifest line is a request body: the API's body limit holds for it too (reelay.api).
MAX_LINE_BYTES = 256 * 1024
CLIENT_ID_MAX_CHARS = 256
_OWNER_HASH = re.compile(r"^[0-9a-f]{32}$")


def owner_hash(owner: str) -> str:
    """The owner's key segment: a hash, so no ARN or subject appears in object keys."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


def inbox_prefix(owner: str) -> str:
    """Where ``owner`` puts manifests: ``inbox/`` for the local owner, ``inbox/<hash>/`` for another."""
    return INBOX_ROOT if owner == LOCAL_OWNER else f"{INBOX_ROOT}{owner_hash(owner)}/"


def batch_id_of(bucket: str, key: str, etag: str) -> str:
    """The batch of one manifest object *and content*: the same put again is the same batch."""
    digest = hashlib.sha256(f"{bucket}\0{key}\0{etag.strip(chr(34))}".encode()).hexdigest()
    return f"bat_{digest[:28]}"


def line_task_id(batch: Batch, line: int) -> str:
    """A line's task id: time-ordered like every task id, and the same for every delivery."""
    millis = int(batch.created_at.timestamp() * 1000)
    return f"tsk_{millis:012x}{hashlib.sha256(f'{batch.id}#{line}'.encode()).hexdigest()[:16]}"


class BatchStatus(StrEnum):
    AWAITING = "awaiting"  # announced by POST /v1/batches; its manifest has not arrived yet
    RUNNING = "running"  # being split, tasks being made or running
    REPORTING = "reporting"  # every task ended; the report is being written
    COMPLETED = "completed"  # report and summary written


class Batch(BaseModel):
    """A manifest being run: where it is, whose it is, and its counters (updated atomically)."""

    id: str
    owner: str
    bucket: str
    key: str
    name: str  # the manifest's path under the owner's inbox, without .jsonl
    etag: str
    size: int
    status: BatchStatus = BatchStatus.RUNNING
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None  # when its last task ended (the batch's wall time ends here)
    completed_at: datetime | None = None  # when the report was written
    split_done: bool = False
    lines: int | None = None  # physical lines of the manifest, once the split is done
    chunks_total: int | None = None
    chunks_done: int = 0
    tasks: int = 0  # valid lines (each one task)
    invalid: int = 0
    ended: int = 0
    succeeded: int = 0
    failed: int = 0
    cost_cents: int = 0
    codes: dict[str, int] = Field(default_factory=dict)
    committed: set[int] = Field(default_factory=set)  # indexes of the chunks whose counts are in
    # When the check rewrote the counters from the records, every task having ended; a task's
    # count that arrives after it is not added again (``BatchStore.task_ended``).
    recounted_at: datetime | None = None
    report_key: str | None = None
    summary_key: str | None = None

    @property
    def all_chunks_committed(self) -> bool:
        """Every line is a task or a recorded invalid line (the manifest is accepted)."""
        return self.split_done and self.chunks_total is not None and self.chunks_done >= self.chunks_total

    @property
    def all_ended(self) -> bool:
        return self.all_chunks_committed and self.ended >= self.tasks

    @property
    def report_path(self) -> str:
        return f"{REPORTS_ROOT}{self.key.removeprefix(INBOX_ROOT).removesuffix(MANIFEST_SUFFIX)}"


class LineRecord(BaseModel):
    """What became of one manifest line: its task, or why it is invalid."""

    line: int
    client_id: str | int | None = None
    task_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Chunk:
    """A contiguous run of manifest lines: bytes ``[start, end)`` (``end`` -1: to the object's end),
    the 1-based number of its first line and how many lines it holds."""

    index: int
    start: int
    end: int
    first_line: int
    lines: int

    def message(self, batch_id: str) -> dict[str, Any]:
        return {"kind": "chunk", "batch_id": batch_id, **self.__dict__}


BatchCompletedHook = Callable[[Batch], None]


# ----------------------------------------------------------------- reading lines


def read_lines(
    pieces: Iterable[bytes], *, offset: int, first_line: int, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, int, int, bytes | None]]:
    """``(line number, start, end, content)`` for each line of a byte stream starting at ``offset``.

    ``end`` is past the line's newline. ``content`` (without the newline, nor a ``\\r``) is None
    for a line longer than ``max_bytes``: its bytes are skipped, never held, so one giant line
    cannot exhaust memory.
    """
    line, start, held, too_long = first_line, offset, bytearray(), False
    position = offset
    for piece in pieces:
        view = memoryview(piece)
        cursor = 0
        while cursor < len(view):
            newline = piece.find(b"\n", cursor)
            stop = len(view) if newline < 0 else newline
            if not too_long:
                held += view[cursor:stop]
                if len(held) > max_bytes:
                    too_long, held = True, bytearray()
            position += stop - cursor
            if newline < 0:
                break
            position += 1
            yield line, start, position, None if too_long else bytes(held).removesuffix(b"\r")
            line, start, held, too_long = line + 1, position, bytearray(), False
            cursor = newline + 1
    if position > start:  # a last line without a newline
        yield line, start, position, None if too_long else bytes(held).removesuffix(b"\r")


# ----------------------------------------------------------------- the batch run


class BatchRunner:
    """The batch function's work: splitting manifests, running chunks, writing reports."""

    def __init__(
        self,
        store: BatchStore,
        objects: ManifestObjects,
        queue: BatchQueue,
        tasks: Callable[[], TaskService],
        providers: Sequence[ProviderConfig],
        *,
        chunk_lines: int = 100,
        chunk_bytes: int = 4 * 1024 * 1024,
        check_seconds: int = 300,
        on_batch_completed: Sequence[BatchCompletedHook] = (),
    ) -> None:
        self._store = store
        self._objects = objects
        self._queue = queue
        self._tasks = tasks
        self._providers = tuple(providers)
        self._chunk_lines = chunk_lines
        self._chunk_bytes = chunk_bytes
        self._check_seconds = check_seconds
        self._on_completed = tuple(on_batch_completed)
        self._body: TypeAdapter[Any] | None = None
        self._shapes: Any = None  # the type ``_body`` validates (``video_body``'s union)

    # -- dispatch -------------------------------------------------------------------------
    def handle(self, message: dict[str, Any], *, seconds_left: Callable[[], float]) -> None:
        """Handle one batch-queue message (an S3 event from EventBridge, or one of ours)."""
        kind = message.get("kind")
        if kind == "chunk":
            self.run_chunk(str(message["batch_id"]), Chunk(**{k: int(message[k]) for k in _CHUNK_FIELDS}))
        elif kind == "split":
            self.split(
                str(message["batch_id"]),
                offset=int(message["offset"]),
                line=int(message["line"]),
                chunk=int(message["chunk"]),
                seconds_left=seconds_left,
            )
        elif kind == "report":
            self.write_report(str(message["batch_id"]))
        elif kind == "check":
            self.check(str(message["batch_id"]))
        elif message.get("source") == "aws.s3" and message.get("detail-type") == "Object Created":
            detail = message.get("detail") or {}
            self.manifest_created(
                str((detail.get("bucket") or {}).get("name", "")),
                str((detail.get("object") or {}).get("key", "")),
                seconds_left=seconds_left,
            )
        else:
            logger.error("dropping a batch message of no known kind", extra={"kind": kind})

    # -- 1. a manifest arrives --------------------------------------------------------------
    def manifest_created(self, bucket: str, key: str, *, seconds_left: Callable[[], float]) -> Batch | None:
        """Make the batch of a new manifest object (once) and start splitting it."""
        if bucket != self._objects.bucket or not key.startswith(INBOX_ROOT) or not key.endswith(MANIFEST_SUFFIX):
            logger.warning("not a manifest of this stack's inbox; ignored", extra={"key": key[:300]})
            return None
        owner, name = self._owner_and_name(key)
        if owner is None:
            logger.warning("manifest under an inbox prefix no owner registered; ignored", extra={"key": key[:300]})
            return None
        head = self._objects.head(key)
        if head is None and unquote_plus(key) != key:  # a key that came URL-encoded (S3's own notifications)
            key = unquote_plus(key)
            head = self._objects.head(key)
        if head is None:
            logger.warning("manifest is gone; ignored", extra={"key": key[:300]})
            return None
        etag, size = head
        now = utcnow()
        batch = Batch(
            id=batch_id_of(bucket, key, etag),
            owner=owner,
            bucket=bucket,
            key=key,
            name=name,
            etag=etag,
            size=size,
            created_at=now,
            updated_at=now,
        )
        batch, created = self._store.create(batch)
        if not created and batch.status is BatchStatus.AWAITING:
            # Announced by POST /v1/batches: the first delivery of its upload starts it.
            started = self._store.start(batch.id, size=size)
            batch, created = started or batch, started is not None
        if not created:
            logger.info("manifest delivered again: nothing new", extra={"batch_id": batch.id})
            return batch
        logger.info("batch accepted", extra={"batch_id": batch.id, "key": key[:300], "bytes": size})
        self.split(batch.id, offset=0, line=1, chunk=0, seconds_left=seconds_left, batch=batch)
        return batch

    def _owner_and_name(self, key: str) -> tuple[str | None, str]:
        rest = key.removeprefix(INBOX_ROOT).removesuffix(MANIFEST_SUFFIX)
        first, _, tail = rest.partition("/")
        if tail and _OWNER_HASH.match(first):
            registered = self._store.inbox_owner(first)
            if registered is not None:
                return registered, tail
            return None, tail
        return LOCAL_OWNER, rest

    # -- 1b. splitting --------------------------------------------------------------------
    def split(
        self,
        batch_id: str,
        *,
        offset: int,
        line: int,
        chunk: int,
        seconds_left: Callable[[], float],
        batch: Batch | None = None,
    ) -> None:
        """Cut the manifest from ``offset`` into chunk messages; continue in a new message when short of time."""
        batch = batch or self._store.get(batch_id)
        if batch is None or batch.split_done:
            return
        pending: list[dict[str, Any]] = []
        start, first, count = offset, line, 0
        next_line = line
        try:
            for number, _, end, _ in read_lines(
                self._objects.stream(batch.key, batch.etag, start=offset), offset=offset, first_line=line
            ):
                count += 1
                next_line = number + 1
                if count >= self._chunk_lines or end - start >= self._chunk_bytes:
                    pending.append(Chunk(chunk, start, end, first, count).message(batch.id))
                    chunk, start, first, count = chunk + 1, end, number + 1, 0
                    if len(pending) >= 10:
                        self._queue.send_many(pending)
                        pending = []
                    if seconds_left() < _SPLIT_RESERVE_SECONDS:
                        self._queue.send_many(pending)
                        self._queue.send_many(
                            [{"kind": "split", "batch_id": batch.id, "offset": start, "line": first, "chunk": chunk}]
                        )
                        logger.info("split continues in a new message", extra={"batch_id": batch.id, "offset": start})
                        return
        except ManifestChanged:
            logger.warning("manifest changed while it was split; the batch ends here", extra={"batch_id": batch.id})
        if count:  # the last chunk runs to the end of the object
            pending.append(Chunk(chunk, start, -1, first, count).message(batch.id))
            chunk += 1
        self._queue.send_many(pending)
        batch = self._store.finish_split(batch.id, lines=next_line - 1, chunks_total=chunk)
        logger.info("batch split", extra={"batch_id": batch.id, "lines": batch.lines, "chunks": chunk})
        self._queue.send_many([{"kind": "check", "batch_id": batch.id}], delay_seconds=self._check_seconds)
        self._maybe_complete(batch)

    # -- 2. a chunk -------------------------------------------------------------------------
    def run_chunk(self, batch_id: str, chunk: Chunk) -> None:
        """Make the tasks of one chunk's lines (idempotent), record every line, commit the counts once."""
        began = time.perf_counter()
        batch = self._store.get(batch_id)
        if batch is None or chunk.index in batch.committed:
            return
        records: list[LineRecord] = []
        made: list[Task] = []  # the tasks this run made, sent on together
        end = chunk.end if chunk.end >= 0 else None
        stream = self._objects.stream(batch.key, batch.etag, start=chunk.start, end=end)
        try:
            for number, _, _, content in read_lines(stream, offset=chunk.start, first_line=chunk.first_line):
                if number >= chunk.first_line + chunk.lines:
                    break
                if content is not None and not content.strip():
                    continue  # a blank line is no request
                records.append(self._line(batch, number, content, made))
        except ManifestChanged:
            done = {r.line for r in records}
            records += [
                LineRecord(
                    line=n,
                    error_code=RequestInvalid.code,
                    error_message="the manifest object changed while its lines were read; put it again",
                )
                for n in range(chunk.first_line, chunk.first_line + chunk.lines)
                if n not in done
            ]
        # A run cut short before this leaves its new tasks queued with no message and no place:
        # the chunk's redelivery finds them made (nothing to send); reconcile sends them on.
        self._tasks().dispatch_many(made)
        self._store.put_lines(batch.id, records)
        valid = sum(1 for r in records if r.task_id)
        codes: dict[str, int] = {}
        for record in records:
            if record.error_code:
                codes[record.error_code] = codes.get(record.error_code, 0) + 1
        seconds = time.perf_counter() - began
        committed = self._store.commit_chunk(
            batch.id, chunk.index, tasks=valid, invalid=len(records) - valid, codes=codes, seconds=seconds
        )
        logger.info(
            "chunk done",
            extra={
                "batch_id": batch.id,
                "chunk": chunk.index,
                "lines": len(records),
                "invalid": len(records) - valid,
                "seconds": round(seconds, 3),
            },
        )
        if committed is not None:
            self._maybe_complete(committed)

    def _line(self, batch: Batch, number: int, content: bytes | None, made: list[Task]) -> LineRecord:
        """One line checked as ``POST /v1/tasks`` checks a body, and its task made (or found)."""
        from reelay.api import refuse_body

        if content is None:
            return _invalid(number, None, "PAYLOAD_TOO_LARGE", f"the line is longer than {MAX_LINE_BYTES // 1024} KB")
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return _invalid(number, None, "MALFORMED_JSON", "the line is not valid UTF-8 JSON")
        refusal = refuse_body({"body": text, "headers": {"content-type": "application/json"}})
        if refusal is not None:
            return _invalid(number, None, refusal[1], refusal[2])
        data = json.loads(text)
        if not isinstance(data, dict):
            return _invalid(number, None, RequestInvalid.code, "a manifest line must be a JSON object (a task request)")
        client_id = data.pop("id", None)
        if client_id is not None and (
            isinstance(client_id, bool)
            or not isinstance(client_id, str | int)
            or (isinstance(client_id, str) and not 1 <= len(client_id) <= CLIENT_ID_MAX_CHARS)
        ):
            return _invalid(
                number, None, RequestInvalid.code, f"id: a string of 1-{CLIENT_ID_MAX_CHARS} characters or an integer"
            )
        try:
            shaped = self._body_type().validate_python(data)
            request = VideoRequest.model_validate(shaped.model_dump(exclude_none=True))
        except ValidationError as exc:
            from reelay import error_words

            problems = "; ".join(
                f"{error_words.field_name(e.get('loc', ()), whole='line')}: "
                f"{error_words.message(e, body_type=self._shapes)}"
                for e in exc.errors()[:20]
            )
            return _invalid(number, client_id, RequestInvalid.code, f"request is invalid: {problems}"[:2000])
        try:
            task, created = self._tasks().create(
                request,
                owner=batch.owner,
                task_id=line_task_id(batch, number),
                batch_id=batch.id,
                batch_line=number,
                dispatch=False,
            )
        except RequestInvalid as exc:
            prefix = f"{exc.field}: " if exc.field and not exc.message.startswith(exc.field) else ""
            return _invalid(number, client_id, exc.code, (prefix + exc.message)[:2000])
        if created:
            made.append(task)
        return LineRecord(line=number, client_id=client_id, task_id=task.id)

    def _body_type(self) -> TypeAdapter[Any]:
        if self._body is None:
            from reelay.variants import video_body

            self._shapes = video_body(self._providers) if self._providers else VideoRequest
            self._body = TypeAdapter(self._shapes)
        return self._body

    # -- 3b. the check: counters recounted from the records ---------------------------------
    def check(self, batch_id: str) -> Batch | None:
        """Recount a running batch from its records, so a lost count cannot keep it open.

        The counters are fast but best effort (a terminal hook that failed, an update lost): every
        ``check_seconds`` after its split, a running batch is recounted from what cannot be lost —
        the chunk records, the line records and the tasks themselves (batch reads, no scan). Once
        every task has ended the recount is written and the batch completes; until then the check
        comes back.
        """
        batch = self._store.get(batch_id)
        if batch is None or batch.status is BatchStatus.COMPLETED:
            return batch
        if batch.status is BatchStatus.REPORTING:
            self._queue.send_many([{"kind": "report", "batch_id": batch.id}])  # lost or failed: again
            return batch
        committed = self._store.chunk_seconds(batch_id)
        if batch.all_ended or not batch.split_done or len(committed) < (batch.chunks_total or 0):
            self._maybe_complete(batch)
            self._queue.send_many([{"kind": "check", "batch_id": batch.id}], delay_seconds=self._check_seconds)
            return batch
        tasks = invalid = ended = succeeded = failed = cost = 0
        codes: dict[str, int] = {}
        for record, task in self._lines_and_tasks(batch_id):
            code = record.error_code
            if not record.task_id:
                invalid += 1
            else:
                tasks += 1
                if task is None or not task.status.terminal:
                    continue
                ended += 1
                succeeded += task.error is None
                failed += task.error is not None
                cost += task.cost_cents or 0
                code = task.error.code.value if task.error else None
            if code:
                codes[code] = codes.get(code, 0) + 1
        if ended < tasks:
            logger.info("batch still running at its check", extra={"batch_id": batch.id, "running": tasks - ended})
            self._queue.send_many([{"kind": "check", "batch_id": batch.id}], delay_seconds=self._check_seconds)
            return batch
        if (ended, tasks, invalid) != (batch.ended, batch.tasks, batch.invalid):
            logger.warning(
                "batch counters recounted",
                extra={"batch_id": batch.id, "ended": [batch.ended, ended], "tasks": [batch.tasks, tasks]},
            )
        settled = self._store.settle(
            batch.id,
            chunks=[index for index, _, _ in committed],
            tasks=tasks,
            invalid=invalid,
            succeeded=succeeded,
            failed=failed,
            cost_cents=cost,
            codes=codes,
        )
        self._maybe_complete(settled)
        return settled

    # -- 3/4. completion and the report ----------------------------------------------------
    def _lines_and_tasks(self, batch_id: str) -> Iterator[tuple[LineRecord, Task | None]]:
        """Every line record in input order, with its task (read 100 at a time), if it has one."""
        records = self._store.lines(batch_id)
        while page := list(itertools.islice(records, 100)):
            found = self._store.tasks([r.task_id for r in page if r.task_id])
            for record in page:
                yield record, found.get(record.task_id) if record.task_id else None

    def _maybe_complete(self, batch: Batch) -> None:
        BatchProgress(self._store, self._queue).maybe_complete(batch)

    def write_report(self, batch_id: str) -> Batch | None:
        """Write the report and the summary of a batch whose tasks have all ended; then it is completed."""
        from reelay.contract import BatchReportLine, BatchSummary, TaskErrorView

        batch = self._store.get(batch_id)
        if batch is None or batch.status is not BatchStatus.REPORTING:
            return batch
        by_status: dict[str, int] = {}
        by_code: dict[str, int] = {}
        cost = 0

        def entries() -> Iterator[bytes]:
            nonlocal cost
            for record, task in self._lines_and_tasks(batch_id):
                if record.task_id and task is not None:
                    entry = BatchReportLine(
                        line=record.line,
                        id=record.client_id,
                        task_id=task.id,
                        status=task.status.value,
                        outputs=[o.s3_uri for o in task.outputs],
                        error=TaskErrorView(code=task.error.code.value, message=task.error.message)
                        if task.error
                        else None,
                    )
                    cost += task.cost_cents or 0
                else:
                    entry = BatchReportLine(
                        line=record.line,
                        id=record.client_id,
                        status="invalid",
                        error=TaskErrorView(
                            code=record.error_code or "INTERNAL",
                            message=record.error_message or "the line's task is missing",
                        ),
                    )
                by_status[entry.status] = by_status.get(entry.status, 0) + 1
                if entry.error is not None:
                    by_code[entry.error.code] = by_code.get(entry.error.code, 0) + 1
                yield entry.model_dump_json(exclude_none=True).encode() + b"\n"

        report_key = f"{batch.report_path}{MANIFEST_SUFFIX}"
        summary_key = f"{batch.report_path}.summary.json"
        self._objects.put_lines(report_key, entries(), content_type="application/x-ndjson")
        ended_at = batch.ended_at or utcnow()
        summary = BatchSummary(
            batch_id=batch.id,
            manifest=f"s3://{batch.bucket}/{batch.key}",
            report=f"s3://{batch.bucket}/{report_key}",
            lines=sum(by_status.values()),
            by_status=by_status,
            by_code=by_code,
            cost_cents=cost,
            created_at=batch.created_at,
            ended_at=ended_at,
            wall_seconds=round((ended_at - batch.created_at).total_seconds(), 3),
        )
        self._objects.put_lines(
            summary_key, [summary.model_dump_json(indent=2).encode() + b"\n"], content_type="application/json"
        )
        done = self._store.mark_completed(batch.id, report_key=report_key, summary_key=summary_key)
        if done is None:  # a second report writer (a re-queued report): the first announced it
            return self._store.get(batch.id)
        logger.info("batch completed", extra={"batch_id": batch.id, "by_status": by_status, "report": report_key})
        for hook in self._on_completed:
            try:
                hook(done)
            except Exception:  # a hook's failure must not undo the report
                logger.exception("batch completed hook failed", extra={"batch_id": batch.id})
        return done


_CHUNK_FIELDS = ("index", "start", "end", "first_line", "lines")
# A split stops while this much of the invocation is left and continues in a new message.
_SPLIT_RESERVE_SECONDS = 30.0


def _invalid(line: int, client_id: str | int | None, code: str, message: str) -> LineRecord:
    return LineRecord(line=line, client_id=client_id, error_code=code, error_message=message)


# ----------------------------------------------------------------- progress (the terminal hook)


class BatchProgress:
    """Moves a batch's counters when one of its tasks ends, and detects the batch's end once.

    ``task_ended`` is a ``TaskTracker`` ``on_terminal`` hook (``reelay.bootstrap``): it runs in
    whichever function wrote the task's terminal state, once per task. It only writes counters
    and, when the batch is complete, queues the report, so it is cheap in any function.
    """

    def __init__(self, store: BatchStore, queue: BatchQueue) -> None:
        self._store = store
        self._queue = queue

    def task_ended(self, task: Task) -> None:
        if not task.batch_id:
            return
        batch = self._store.task_ended(
            task.batch_id,
            succeeded=task.error is None,
            code=task.error.code.value if task.error else None,
            cost_cents=task.cost_cents or 0,
        )
        if batch is not None:
            self.maybe_complete(batch)

    def maybe_complete(self, batch: Batch) -> None:
        """When every chunk is in and every task ended: move to ``reporting`` (one writer wins) and queue the report."""
        if batch.status is not BatchStatus.RUNNING or not batch.all_ended:
            return
        if self._store.mark_reporting(batch.id):
            self._queue.send_many([{"kind": "report", "batch_id": batch.id}])
            logger.info("every task of the batch ended; report queued", extra={"batch_id": batch.id})


# ----------------------------------------------------------------- the API's side


class BatchService:
    """What the API offers: a presigned PUT into the caller's inbox, and a batch's progress."""

    def __init__(self, store: BatchStore, bucket: ResultBucket, *, upload_ttl_seconds: int = 900) -> None:
        self._store = store
        self._bucket = bucket
        self._ttl = upload_ttl_seconds

    def ticket(self, request: BatchUploadRequest, *, owner: str) -> BatchTicket:
        """A presigned PUT of the manifest into the owner's inbox, with its MD5 signed in.

        With the MD5 fixed, the object's ETag is known (single PUT, SSE-S3), so the batch id is
        known before the upload: the client follows ``GET /v1/batches/{batch_id}`` at once.
        """
        import base64

        from reelay.contract import BatchTicket

        prefix = inbox_prefix(owner)
        if owner != LOCAL_OWNER:
            self._store.register_inbox(owner_hash(owner), owner)
        key = f"{prefix}{request.name}{MANIFEST_SUFFIX}"
        ttl = self._bucket.presign_ttl(self._ttl)
        md5_b64 = base64.b64encode(bytes.fromhex(request.md5)).decode()
        headers = {
            "Content-Type": "application/x-ndjson",
            "Content-Length": str(request.bytes),
            "Content-MD5": md5_b64,
        }
        now = utcnow()
        batch_id = batch_id_of(self._bucket.name, key, request.md5)
        announced = Batch(
            id=batch_id,
            owner=owner,
            bucket=self._bucket.name,
            key=key,
            name=request.name,
            etag=request.md5,
            size=request.bytes,
            status=BatchStatus.AWAITING,
            created_at=now,
            updated_at=now,
        )
        self._store.create(announced)  # GET /v1/batches/{id} answers at once (awaiting)
        url = self._bucket.presigned_put(
            key,
            content_type=headers["Content-Type"],
            content_length=request.bytes,
            ttl_seconds=ttl,
            content_md5=md5_b64,
        )
        return BatchTicket(
            batch_id=batch_id,
            key=key,
            report_key=f"{REPORTS_ROOT}{key.removeprefix(INBOX_ROOT).removesuffix(MANIFEST_SUFFIX)}{MANIFEST_SUFFIX}",
            url=url,
            headers=headers,
            expires_at=utcnow() + timedelta(seconds=ttl),
        )

    def get(self, batch_id: str, *, owner: str) -> Batch:
        batch = self._store.get(batch_id)
        if batch is None or batch.owner != owner:
            raise TaskNotFound(f"batch {batch_id} not found")
        return batch

    def view(self, batch: Batch) -> BatchView:
        from reelay.contract import BatchView

        return BatchView(
            id=batch.id,
            status=batch.status.value,
            manifest=f"s3://{batch.bucket}/{batch.key}",
            name=batch.name,
            created_at=batch.created_at,
            updated_at=batch.updated_at,
            completed_at=batch.completed_at,
            split_done=batch.split_done,
            lines=batch.lines,
            tasks=batch.tasks,
            invalid=batch.invalid,
            succeeded=batch.succeeded,
            failed=batch.failed,
            running=max(0, batch.tasks - batch.ended),
            cost_cents=batch.cost_cents,
            by_code=batch.codes,
            report=f"s3://{batch.bucket}/{batch.report_key}" if batch.report_key else None,
            summary=f"s3://{batch.bucket}/{batch.summary_key}" if batch.summary_key else None,
        )
