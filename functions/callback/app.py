"""Provider callbacks: POST /callbacks/{provider}/{task_id}?t=<token> (reelay.callbacks)."""

import os

from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.bootstrap import Container
from reelay.callback_api import build_callback_app
from reelay.observability import observed

container = Container.from_environ(os.environ)
app = build_callback_app(lambda: container.callbacks)


@observed(http=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
