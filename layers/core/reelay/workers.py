"""Running SQS-triggered workers (submit, ingest) with partial batch failures.

A worker handles one task id at a time. ``RetryLater`` makes the message visible again
after a backoff (``ChangeMessageVisibility``) instead of waiting out the queue's long
visibility timeout; any other exception is a plain failure, redelivered by SQS and, after
``maxReceiveCount``, parked in the DLQ. A message that can never succeed (no task id) is
dropped with an error log rather than retried.

Powertools' batch module imports its pydantic parser models (SQS, Kinesis, DynamoDB streams,
Kafka), for type hints only, when pydantic is already imported: a good part of a cold start.
So each SQS handler (``functions/<name>/app.py``) imports the batch types before anything of
reelay, and this module imports the batch processor only in ``run_batch``;
``tests/unit/test_cold_start.py`` checks that the models stay unimported.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from reelay import costs

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from reelay.aws import TaskQueue

logger = Logger(child=True)


class RetryLater(Exception):
    """The step should be retried from the queue after ``seconds`` (429s, brief outages)."""

    def __init__(self, seconds: int, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds
        self.reason = reason


def backoff_seconds(attempt: int, *, base: float = 5.0, cap: float = 300.0, rng: random.Random | None = None) -> int:
    """Exponential backoff with full jitter: uniform in [base, min(cap, base * 2**attempt)]."""
    high = min(cap, base * (2 ** max(0, attempt)))
    return max(1, int((rng or random).uniform(base, max(base, high))))


def run_batch(
    event: dict[str, Any],
    context: Any,
    *,
    queue: TaskQueue,
    handle: Callable[[str, int], object],
    reserve_seconds: float = 0.0,
    retries_are_expected: bool = False,
    by_kind: Mapping[str, Callable[[str, int], object]] | None = None,
) -> PartialItemFailureResponse:
    """Handle each record's task id with ``handle(task_id, attempt)``; report failed items.

    A message with a ``kind`` (``TaskQueue.send(..., kind=...)``) goes to ``by_kind[kind]``
    instead; one of a kind this worker does not know is dropped with an error.

    A record is only started while at least ``reserve_seconds`` of the invocation are left
    (the most one record can take); the rest go back to the queue at once, so a batch never
    runs past the function's timeout. With ``retries_are_expected`` (the notify worker, whose
    messages wait out webhook retries) a batch whose every record failed is still a partial
    response, not a failed invocation (no Lambda error for an expected retry).
    """
    # Here, not at the top: the modules that only raise ``RetryLater`` (the tracker's notify
    # hook in the callback and poll functions, reconcile's submitter) need no batch processor.
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    def record_handler(record: SQSRecord) -> None:
        try:
            body = json.loads(record.body)
            task_id = str(body["task_id"])
            kind = body.get("kind")
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.error("dropping a message without a task id", extra={"message_id": record.message_id})
            return
        step = handle if kind is None else (by_kind or {}).get(str(kind))
        if step is None:
            logger.error("dropping a message of a kind this worker does not handle", extra={"task_id": task_id})
            return
        attempt = int(record.attributes.approximate_receive_count or 1) - 1
        # Lambda's queue poller received this message and deletes it: at most two SQS requests per record.
        costs.record(task_id, None, sqs_requests=2)
        if reserve_seconds and context is not None and context.get_remaining_time_in_millis() < reserve_seconds * 1000:
            queue.retry_later(record.receipt_handle, 0)
            raise RetryLater(0, "not enough time left in this invocation")
        try:
            with costs.received(task_id, body):
                step(task_id, attempt)
        except RetryLater as retry:
            logger.info("retrying later", extra={"task_id": task_id, "seconds": retry.seconds, "reason": retry.reason})
            queue.retry_later(record.receipt_handle, retry.seconds)
            raise
        except Exception:
            # The batch processor only marks the item failed: say why, or retries are silent.
            logger.exception("task step failed; the message will be retried", extra={"task_id": task_id})
            raise

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=not retries_are_expected)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
