"""One poll of the poll state machine (statemachine/poll.asl.json): action "poll" or "fail"."""

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
    if event.get("action") == "fail":
        return container.poller.fail(event)
    return container.poller.poll(event)
