"""Reconcile (EventBridge schedule): drives every overdue task forward (reelay.reconcile)."""

import os

from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.observability import observed

container = Container.from_environ(os.environ)


@observed()
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    seconds_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
    return container.reconciler.run(seconds_left=seconds_left)
