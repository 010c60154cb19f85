"""Ingest worker (SQS): streams a task's results into S3 and marks it succeeded."""

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
    return run_batch(event, context, queue=container.ingest_queue, handle=container.ingest.ingest_with_retry)
