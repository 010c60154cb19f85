"""The batch function's SQS loop: each record one message for ``BatchRunner.handle``, failures partial."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from reelay.batches import BatchRunner

logger = Logger(child=True)


def run_batch_messages(event: dict[str, Any], context: Any, *, runner: BatchRunner) -> PartialItemFailureResponse:
    """Handle every record; a failed one comes back (and, after ``maxReceiveCount``, parks in the DLQ)."""

    def seconds_left() -> float:
        return context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0

    def record_handler(record: SQSRecord) -> None:
        try:
            message = json.loads(record.body)
        except ValueError:
            logger.error("dropping a batch message that is not JSON", extra={"message_id": record.message_id})
            return
        if not isinstance(message, dict):
            logger.error("dropping a batch message that is not an object", extra={"message_id": record.message_id})
            return
        try:
            runner.handle(message, seconds_left=seconds_left)
        except Exception:
            logger.exception("batch message failed; it will be retried", extra={"kind": message.get("kind")})
            raise

    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
