"""Client API (/v1/*): the Powertools HTTP resolver of reelay.api."""

import os

from aws_lambda_powertools.utilities.typing import LambdaContext

from reelay.api import build_app
from reelay.bootstrap import Container
from reelay.observability import observed

container = Container.from_environ(os.environ)
app = build_app(
    lambda: container.tasks,
    container.settings.providers,
    lambda: container.batches,
    webhook_secrets=lambda: container.webhook_secrets,
    webhook_hosts=container.settings.allowed_webhook_hosts,
    image_hosts=container.settings.allowed_result_hosts,
    videos=lambda: container.openai_videos,
    webhook_endpoints=lambda: container.webhook_endpoints,
)


@observed(http=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
