"""HTTP API Lambda authorizer for ClientAuth=APIKEY (simple responses): reelay.apikeys."""

import os

from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.observability import observed

container = Container.from_environ(os.environ)


@observed(http=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return container.authorizer.decide(event)
