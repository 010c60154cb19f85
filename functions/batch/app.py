"""Batch worker (SQS): manifest arrivals (S3 via EventBridge), their chunks and their reports."""

import os

# The answer's type, imported first (before reelay imports pydantic): Powertools' batch module then
# skips its pydantic parser models, which it builds only for type hints (reelay.workers).
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.batch_worker import run_batch_messages
from reelay.bootstrap import Container
from reelay.observability import observed

container = Container.from_environ(os.environ)


@observed()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    return run_batch_messages(event, context, runner=container.batch_runner)
