"""Ingest worker (SQS): streams a task's results into S3 and marks it succeeded."""

import os

# The answer's type, imported first (before reelay imports pydantic): Powertools' batch module then
# skips its pydantic parser models, which it builds only for type hints (reelay.workers).
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.observability import for_each_task, observed
from reelay.workers import run_batch

container = Container.from_environ(os.environ)


@observed()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    handle = for_each_task(container.ingest.ingest_with_retry)
    return run_batch(event, context, queue=container.ingest_queue, handle=handle)
