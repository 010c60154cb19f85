"""Reconcile (EventBridge schedule): drives every overdue task forward (reelay.reconcile)."""

import os

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container

logger = Logger()
tracer = Tracer()
container = Container.from_environ(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    seconds_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    return container.reconciler.run(seconds_left=seconds_left)
