"""The poll path's polls (statemachine/poll.asl.json), for protocols without callbacks.

One poll execution per task waits on a task token; delayed SQS messages on the poll queue
are its clock (Step Functions bills each state transition, SQS a message for a fraction of
that: benchmarks/poll_cost.md). Each message ``{task_id, token, polls, errors}`` is one poll:

- the provider's final answer is applied through ``TaskTracker`` (on to ingest, or failed),
  and the execution ends with ``SendTaskSuccess``;
- a task that is still running gets the next message, delayed by the adaptive schedule,
  after a heartbeat of the token (so the execution's heartbeat timeout only fires when a
  message was lost, and a poll chain whose token is no longer awaited stops);
- a transient provider error (5xx, 429, a timeout) is polled again after a backoff, up to
  ``MAX_TRANSIENT_ERRORS`` in a row;
- an error that ends the task (credential refused, request rejected, task unknown, transient
  errors past their retries) ends the wait with ``SendTaskFailure``, named after the error's
  class; the state machine's Catch hands it to ``PollService.fail``, which records the code.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel, ConfigDict, Field

from reelay import costs, metrics
from reelay.aws import PollTokens, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import ProviderError, ProviderRateLimited, ProviderTaskUnknown, ProviderTransientError
from reelay.models import ErrorCode, Task, TaskStatus, utcnow
from reelay.observability import task_keys
from reelay.schedule import PollSchedule
from reelay.store import PASSING, TaskStore
from reelay.tracking import TaskTracker

logger = Logger(child=True)

# How long before the task's Due entry passes a poll cut to meet it lands (inside ``PASSING``,
# with room for the message's delivery).
_LAND_BEFORE = 2.0

# Transient errors in a row before the poll path gives up on a task (as the old Retry did).
MAX_TRANSIENT_ERRORS = 8

# Errors the state machine's Catch hands to ``fail``: their name -> the task's code.
_CAUGHT_CODES = {
    "ProviderAuthError": ErrorCode.PROVIDER_AUTH,
    "ProviderRejectedRequest": ErrorCode.PROVIDER_REJECTED,
    "InsufficientBalance": ErrorCode.INSUFFICIENT_BALANCE,
    "ProviderTaskUnknown": ErrorCode.PROVIDER_TASK_LOST,
    "States.Timeout": ErrorCode.DEADLINE_EXCEEDED,
}


class PollMessage(BaseModel):
    """One message on the poll queue: poll ``task_id`` now, for the execution waiting on ``token``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    task_id: str = Field(min_length=1)
    token: str = Field(min_length=1, repr=False)
    polls: int = Field(default=0, ge=0)  # polls made before this one
    errors: int = Field(default=0, ge=0)  # transient errors in a row before this one
    # The Poll state's retry number (``$$.State.RetryCount``) on a message the state machine sent,
    # with the execution's ``input`` (its ``costs``, carried by the step that started it); 0 on the
    # poll worker's own, which carry their ``costs`` themselves. A retry resends the same input, so
    # only the first message's counts are taken (if that one was never received, they are lost).
    attempt: int = Field(default=0, ge=0)


class PollService:
    """The poll function's logic."""

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        tracker: TaskTracker,
        queue: TaskQueue,
        tokens: PollTokens,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        record_seconds: float = 0.0,
    ) -> None:
        self._store = store
        self._providers = providers
        self._tracker = tracker
        self._queue = queue
        self._tokens = tokens
        self._clock = clock
        self._rng = rng or random.Random()
        self._record_seconds = record_seconds

    def handle_batch(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        """An SQS batch of poll messages; a message that raised comes back (partial failures).

        A message is only started while the most one can take (``record_seconds``) is left in
        the invocation; the rest are made visible again at once, so a batch of slow status
        calls never runs past the function's timeout.
        """

        def record_handler(record: SQSRecord) -> None:
            try:
                body = json.loads(record.body)  # parsed once: the message, and the counts it carries
                message = PollMessage.model_validate(body)
            except ValueError:  # not JSON, or not a poll message (ValidationError is a ValueError)
                logger.error("dropping a poll message without a task id and token", extra={"id": record.message_id})
                return
            # Each record's logs carry its task id, and its task shares the invocation's cost, the
            # records put back unstarted included (the invocation received them).
            with task_keys(message.task_id):
                if context is not None and context.get_remaining_time_in_millis() < self._record_seconds * 1000:
                    self._queue.retry_later(record.receipt_handle, 0)
                    raise TimeoutError("not enough time left in this invocation for another poll")
                carrier = body.get("input", body) if message.attempt == 0 else {}
                with costs.received(message.task_id, carrier):
                    self.poll(message)

        # Every record failing is still a partial answer (each comes back on its own), not an error.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )

    def poll(self, message: PollMessage) -> str:
        """One poll; what became of the chain: ``done``, ``next``, ``failed`` or ``stopped``."""
        task = self._store.get(message.task_id)
        if _settled(task):
            return self._done(message, task)
        provider = self._providers.get(task.provider)
        now = self._clock()
        deadline = int(provider.config.deadline_seconds)
        if now - task.clock_start > timedelta(seconds=deadline):
            task = self._tracker.fail(
                task, ErrorCode.DEADLINE_EXCEEDED, f"no result from {provider.name} within {deadline} s"
            )
            return self._done(message, task)
        schedule = PollSchedule.for_provider(provider.config)
        try:
            if task.provider_task_id is None:
                raise ProviderTaskUnknown("the task has no provider task id to poll", provider=provider.name)
            status = provider.status(task.provider_task_id)
        except ProviderTransientError as exc:
            errors = message.errors + 1
            if errors >= MAX_TRANSIENT_ERRORS:
                return self._failed(message, task, exc)
            retry_after = exc.retry_after if isinstance(exc, ProviderRateLimited) else None
            wait = schedule.retry_wait(errors, retry_after=retry_after, unit=self._rng.random())
            logger.info("provider status failed; polling again", extra={"task_id": task.id, "error": exc.code})
            return self._next(message.model_copy(update={"errors": errors}), wait)
        except ProviderError as exc:
            return self._failed(message, task, exc)
        ended: list[str] = []
        unended: list[Exception] = []

        def end_execution(ready: Task) -> None:
            # The execution ends before the ingest message goes: that message then carries this
            # poll's whole cost, the SendTaskSuccess included (reelay.costs). A failure to end it
            # is raised once the message is out: the poll comes back, finds the task settled
            # and ends the execution then.
            try:
                ended.append(self._done(message, ready))
            except Exception as exc:
                unended.append(exc)

        elapsed = (now - _submitted_at(task)).total_seconds()
        task = self._tracker.apply(
            task,
            status,
            writes_progress=lambda stored: (
                _entry_passing(stored, now)
                or schedule.writes_progress(
                    since_write=(now - stored.updated_at).total_seconds(), elapsed=elapsed, progress=status.progress
                )
            ),
            before_ingest=end_execution,
        )
        if unended:
            raise unended[0]
        if ended:
            return ended[0]
        if _settled(task):
            return self._done(message, task)
        polls = message.polls + 1
        wait = _meeting_entry(
            task, now, schedule.wait(polls, task_id=task.id, elapsed=elapsed, progress=status.progress)
        )
        return self._next(message.model_copy(update={"polls": polls, "errors": 0}), wait)

    def fail(self, event: dict[str, Any]) -> dict[str, Any]:
        """The state machine's Catch: record why the poll path gave up on the task."""
        task = self._store.get(str(event["task_id"]))
        error = event.get("error") or {}
        task = self._record_failure(task, str(error.get("Error", "Unknown")), _cause_message(error.get("Cause")))
        # Cost: the execution entered Poll, RecordFailure and Failed, and Poll's own first message
        # was the state machine's SQS SendMessage (reelay.costs).
        costs.record(task.id, None, sfn_transitions=3)
        costs.record(task.id, "sqs.SendMessage", sqs_requests=1)
        return {"task_id": task.id, "status": str(task.status), "outcome": "done"}

    def _next(self, message: PollMessage, wait: int) -> str:
        if not self._tokens.heartbeat(message.token):
            # Its execution ended or a heartbeat timeout replaced this chain: stop it.
            logger.info("poll chain stopped: its execution no longer waits", extra={"task_id": message.task_id})
            return "stopped"
        self._queue.send(
            message.task_id, delay_seconds=wait, token=message.token, polls=message.polls, errors=message.errors
        )
        return "next"

    def _done(self, message: PollMessage, task: Task) -> str:
        if not self._tokens.succeed(message.token, {"task_id": task.id, "status": str(task.status)}):
            logger.info("poll execution already ended", extra={"task_id": task.id})
            return "done"
        # Cost: the execution's one state (Poll) ends here; its polls were SQS messages, the first
        # sent by the state itself (its SQS integration), the others by the poll worker (reelay.costs).
        costs.record(task.id, None, sfn_transitions=1)
        costs.record(task.id, "sqs.SendMessage", sqs_requests=1)
        metrics.polls_done(task.provider, message.polls + 1)
        return "done"

    def _failed(self, message: PollMessage, task: Task, exc: ProviderError) -> str:
        name = type(exc).__name__
        if not self._tokens.fail(message.token, error=name, cause=exc.message):
            # No execution waits to record it: record it here (the one terminal path either way).
            self._record_failure(task, name, exc.message)
        return "failed"

    def _record_failure(self, task: Task, name: str, message: str) -> Task:
        code = _CAUGHT_CODES.get(name, ErrorCode.PROVIDER_FAILED)
        return self._tracker.fail(task, code, message or f"polling failed: {name}")


def _entry_passing(task: Task, now: datetime) -> bool:
    """Whether the task's ``Due`` entry has passed or is about to: a poll that moves its progress
    then writes it, and the write moves the entry on (``reelay.store.PASSING``).

    A write keeps an entry still ahead (``DynamoTaskStore``), so the entry the task was created
    with (twice the typical time) passes while a long task still runs. The write that moves it
    on costs its index a delete and a put; left for reconcile, the same move costs a read, the
    write and the run's cost record for the task.
    """
    return task.stored_due is not None and datetime.fromisoformat(task.stored_due) <= now + PASSING


def _meeting_entry(task: Task, now: datetime, wait: int) -> int:
    """``wait``, cut to land just before the task's ``Due`` entry passes if it passes before then.

    That poll writes (``_entry_passing``) and moves the entry on before any reconcile run can find
    a live task early. It takes the place of the poll it moves forward: the waits after it follow
    from it.
    """
    if task.stored_due is None:
        return wait
    land = (datetime.fromisoformat(task.stored_due) - now).total_seconds() - _LAND_BEFORE
    if (PASSING.total_seconds() - _LAND_BEFORE) < land < wait:
        return math.floor(land)
    return wait


def _settled(task: Task) -> bool:
    return task.status.terminal or task.status is TaskStatus.INGESTING


def _submitted_at(task: Task) -> datetime:
    for entry in task.history:
        if entry.to_status is TaskStatus.SUBMITTED:
            return entry.at
    return task.created_at


def _cause_message(cause: Any) -> str:
    """The ``errorMessage`` of a Lambda error cause (never its stack trace), or a plain cause."""
    if not cause:
        return ""
    try:
        data = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause)[:500]
    return str(data.get("errorMessage", ""))[:500] if isinstance(data, dict) else ""
