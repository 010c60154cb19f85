"""Submit worker (SQS): takes queued tasks to their provider, the paid create made once."""

import os

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.workers import run_batch

logger = Logger()
tracer = Tracer()
container = Container.from_environ(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    submitter = container.submitter
    return run_batch(
        event,
        context,
        queue=container.submit_queue,
        handle=lambda task_id, attempt: submitter.submit(task_id, attempt=attempt),
        reserve_seconds=container.settings.submit_record_seconds,
    )
