"""One poll of the poll state machine (statemachine/poll.asl.json): action "poll" or "fail"."""

import os

from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.observability import observed

container = Container.from_environ(os.environ)


@observed()
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    if event.get("action") == "fail":
        return container.poller.fail(event)
    return container.poller.poll(event)
