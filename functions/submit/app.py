"""Submit worker (SQS): takes queued tasks to their provider, the paid create made once."""

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
    submitter = container.submitter
    return run_batch(
        event,
        context,
        queue=container.submit_queue,
        handle=for_each_task(lambda task_id, attempt: submitter.submit(task_id, attempt=attempt)),
        # A callback's status check that reelay's request limit held back (reelay.callbacks).
        by_kind={"look": for_each_task(lambda task_id, attempt: submitter.look(task_id, attempt=attempt))},
        reserve_seconds=container.settings.submit_record_seconds,
    )
