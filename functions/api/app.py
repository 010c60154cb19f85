"""Client API (/v1/*): the Powertools HTTP resolver of reelay.api."""

import os

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.api import build_app
from reelay.bootstrap import Container

logger = Logger()
tracer = Tracer()
container = Container.from_environ(os.environ)
app = build_app(lambda: container.tasks)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
