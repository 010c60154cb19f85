"""Notify worker (SQS): each ended task's EventBridge event, then its webhook's next attempt (reelay.notify)."""

import os

# The answer's type, imported first (before reelay imports pydantic): Powertools' batch module then
# skips its pydantic parser models, which it builds only for type hints (reelay.workers).
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.observability import for_each_task, observed
from reelay.workers import run_batch

container = Container.from_environ(os.environ)

# The most one record takes: a PutEvents, a webhook POST (connect 5 s + 10 s) and three writes.
RECORD_SECONDS = 30.0


@observed()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    notifier = container.notifier
    return run_batch(
        event,
        context,
        queue=container.notify_queue,
        handle=for_each_task(lambda task_id, attempt: notifier.notify(task_id, attempt)),
        reserve_seconds=RECORD_SECONDS,
        retries_are_expected=True,
    )
