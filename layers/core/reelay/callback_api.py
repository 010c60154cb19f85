"""The callback route's HTTP mapping: 401 before anything else, a fast 2xx otherwise.

Nothing of the request is parsed or decoded before its token has passed: the token is taken
from the raw query string and compared as bytes (a token that is not ASCII is a 401, not an
exception), and the body, which may be anything, is turned into bytes only afterwards, and
only read by the receiver when it needs the hint. Error bodies are built here, in one place
(``_error``), as the API's are: ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from reelay.bodies import MAX_JSON_DEPTH, json_depth
from reelay.callbacks import CallbackReceiver
from reelay.errors import CallbackRejected, ProviderError, TaskNotFound

logger = Logger(child=True)

MAX_CALLBACK_BYTES = 256 * 1024


def _error(status: int, code: str, message: str) -> Response:
    # Here, not at the top: the API's answer models are only needed for an error.
    from reelay.contract import ErrorBody, ErrorInfo

    body = ErrorBody(error=ErrorInfo(code=code, message=message)).model_dump_json(exclude_none=True)
    return Response(status_code=status, content_type="application/json", body=body)


def _ok(body: dict[str, Any]) -> Response:
    return Response(status_code=200, content_type="application/json", body=json.dumps(body))


def callback_token(event: Mapping[str, Any]) -> bytes | None:
    """The ``t`` parameter as bytes, from the raw query string (never decoded to text first)."""
    raw = event.get("rawQueryString")
    if isinstance(raw, str):
        try:
            values = parse_qs(raw.encode("latin-1"), keep_blank_values=True).get(b"t")
        except (UnicodeEncodeError, ValueError):
            return None
        return values[0] if values else None
    value = (event.get("queryStringParameters") or {}).get("t")
    if not isinstance(value, str):
        return None
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        return None


def callback_body(event: Mapping[str, Any]) -> bytes:
    """The body as bytes, whatever it holds (binary bodies arrive base64-encoded)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body)
        except (binascii.Error, ValueError):
            return b""
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else b""


def build_callback_app(receiver: Callable[[], CallbackReceiver]) -> APIGatewayHttpResolver:
    # Not in debug mode (POWERTOOLS_DEV turns it on): it would print each event, token included.
    app = APIGatewayHttpResolver(debug=False)

    @app.post("/callbacks/<provider>/<task_id>")
    def callback(provider: str, task_id: str) -> Response:
        event = app.current_event.raw_event
        token = callback_token(event)
        service = receiver()
        if not service.authentic(provider, task_id, token):
            return _error(401, CallbackRejected.code, "invalid callback token")
        body = callback_body(event)
        if len(body) > MAX_CALLBACK_BYTES:
            return _error(413, "PAYLOAD_TOO_LARGE", "callback body too large")
        if json_depth(body) > MAX_JSON_DEPTH:
            return _error(422, "VALIDATION_FAILED", f"callback body is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            task = service.receive(provider, task_id, token, body)
        except CallbackRejected:
            return _error(401, CallbackRejected.code, "invalid callback token")
        except TaskNotFound:
            return _error(404, TaskNotFound.code, "no such task")
        except ProviderError as exc:
            # The provider's status endpoint did not answer: ask the provider to deliver again.
            logger.warning("status check failed during callback", extra={"task_id": task_id, "code": exc.code})
            return _error(503, exc.code, "status check failed; retry")
        return _ok({"received": True, "status": task.status.value})

    @app.not_found
    def _no_route(exc: Exception) -> Response:
        return _error(404, "NOT_FOUND", "no such route")

    return app
