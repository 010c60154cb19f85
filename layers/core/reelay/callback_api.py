"""The callback route's HTTP mapping: 401 before anything else, a fast 2xx otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from reelay.callbacks import CallbackReceiver
from reelay.errors import CallbackRejected, ProviderError, TaskNotFound

logger = Logger(child=True)


def _json(status: int, body: dict[str, object]) -> Response:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body))


def build_callback_app(receiver: Callable[[], CallbackReceiver]) -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()

    @app.post("/callbacks/<provider>/<task_id>")
    def callback(provider: str, task_id: str) -> Response:
        token = (app.current_event.query_string_parameters or {}).get("t")
        body = app.current_event.decoded_body or ""
        try:
            task = receiver().receive(provider, task_id, token, body.encode() if isinstance(body, str) else body)
        except CallbackRejected:
            return _json(401, {"error": {"code": "UNAUTHORIZED", "message": "invalid callback token"}})
        except TaskNotFound:
            return _json(404, {"error": {"code": "NOT_FOUND", "message": "no such task"}})
        except ProviderError as exc:
            # The provider's status endpoint did not answer: ask the provider to deliver again.
            logger.warning("status check failed during callback", extra={"task_id": task_id, "code": exc.code})
            return _json(503, {"error": {"code": exc.code, "message": "status check failed; retry"}})
        return _json(200, {"received": True, "status": task.status.value})

    return app
