"""The poll function: a batch of poll messages (SQS), or the poll state machine's RecordFailure."""

import os

# The answer's type, imported first (before reelay imports pydantic): Powertools' batch module then
# skips its pydantic parser models, which it builds only for type hints (reelay.workers).
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.observability import observed

container = Container.from_environ(os.environ)


@observed()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse | dict:
    if event.get("action") == "fail":
        return container.poller.fail(event)
    return container.poller.handle_batch(event, context)
