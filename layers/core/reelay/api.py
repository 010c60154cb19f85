"""The client HTTP API: Powertools' HTTP API resolver with validation and OpenAPI.

Routes parse into models (``VideoRequest``), make one call into ``TaskService`` and map
the result. Domain exceptions map to HTTP answers in one place (``_error``), always as
``{"error": {"code", "message", "details"?}}``; bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query

from reelay.contract import ProviderList, TaskPage
from reelay.errors import ConfigurationError, IdempotencyConflict, ReelayError, RequestInvalid, TaskNotFound
from reelay.models import ImageRequest, RemixRequest, Task, TaskStatus, UploadRequest, VideoRequest
from reelay.tasks import TaskService

logger = Logger(child=True)

TaskId = Annotated[str, Path(pattern=r"^tsk_[0-9a-f]{28}$", description="A task id (tsk_...)")]


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(status_code=int(status), content_type="application/json", body=body, headers=headers)


def _error(status: int, code: str, message: str, details: Any = None) -> Response[dict[str, Any]]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return _json(status, {"error": error})


def _accepted(service: TaskService, task: Task, created: bool) -> Response[dict[str, Any]]:
    """202 with the task; ``Idempotent-Replayed`` says whether an Idempotency-Key replayed it."""
    headers = {"Location": f"/v1/tasks/{task.id}", "Idempotent-Replayed": str(not created).lower()}
    return _json(HTTPStatus.ACCEPTED, service.view(task).model_dump(mode="json"), headers)


def _caller(event: dict[str, Any]) -> str:
    """Who is calling, for scoping idempotency keys (IAM principal or JWT subject)."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    iam = authorizer.get("iam") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    return str(iam.get("userArn") or claims.get("sub") or "anonymous")


class JsonApiResolver(APIGatewayHttpResolver):
    """The HTTP API resolver, refusing bodies that are not UTF-8 JSON before anything parses them.

    Powertools' validation would otherwise try to parse a multipart body or decode bytes that
    are not UTF-8 and fail with a 500; a client's bad body must be a 4xx.
    """

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        refusal = _refuse_body(event)
        if refusal is not None:
            status, code, message = refusal
            return {
                "statusCode": status,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"error": {"code": code, "message": message}}),
                "isBase64Encoded": False,
            }
        return super().resolve(event, context)


def _refuse_body(event: Mapping[str, Any]) -> tuple[int, str, str] | None:
    body = event.get("body")
    if not body:
        return None
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return 415, "UNSUPPORTED_MEDIA_TYPE", f"request body must be application/json, not {media[:100]}"
    try:
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8", "surrogatepass")
        raw.decode("utf-8")
    except (binascii.Error, UnicodeError):
        return 400, "MALFORMED_JSON", "request body is not valid UTF-8 JSON"
    return None


def build_app(tasks: Callable[[], TaskService]) -> APIGatewayHttpResolver:
    """The resolver; ``tasks`` gives the service (built lazily, once)."""
    app = JsonApiResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[dict[str, Any]]:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "MALFORMED_JSON", "request body is not valid JSON")
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": str(e.get("msg", ""))}
            for e in errors
        ]
        return _error(
            422,
            "VALIDATION_FAILED",
            "request is invalid: " + "; ".join(f"{d['field']}: {d['message']}" for d in details),
            details,
        )

    @app.exception_handler(RequestInvalid)
    def _request_invalid(exc: RequestInvalid) -> Response[dict[str, Any]]:
        details = [{"field": exc.field, "message": exc.message}] if exc.field else None
        return _error(422, exc.code, exc.message, details)

    @app.exception_handler(TaskNotFound)
    def _not_found(exc: TaskNotFound) -> Response[dict[str, Any]]:
        return _error(404, exc.code, exc.message)

    @app.exception_handler(NotFoundError)
    def _no_route(exc: NotFoundError) -> Response[dict[str, Any]]:
        return _error(404, "NOT_FOUND", "no such route")

    @app.exception_handler(IdempotencyConflict)
    def _conflict(exc: IdempotencyConflict) -> Response[dict[str, Any]]:
        return _error(409, exc.code, exc.message)

    @app.exception_handler(ConfigurationError)
    def _misconfigured(exc: ConfigurationError) -> Response[dict[str, Any]]:
        logger.error("configuration error", extra={"error": exc.message})
        return _error(503, exc.code, exc.message)

    @app.exception_handler(ReelayError)
    def _reelay(exc: ReelayError) -> Response[dict[str, Any]]:
        logger.exception("unhandled reelay error")
        return _error(502, exc.code, exc.message)

    @app.get("/v1/openapi.json", summary="This API's OpenAPI document")
    def openapi() -> Response[dict[str, Any]]:
        return _json(200, json.loads(app.get_openapi_json_schema(title="reelay", version="1")))

    @app.post(
        "/v1/tasks",
        summary="Request a video",
        description="Validated against the provider's capabilities before anything is stored or paid for. "
        "An Idempotency-Key makes a retry safe: same key and body give the same task; same key, other body is 409.",
        responses={
            202: {"description": "Accepted: the task"},
            400: {"description": "Malformed JSON"},
            409: {"description": "Idempotency-Key reused with another body"},
            422: {"description": "Invalid request, with field-level details"},
        },
    )
    def create_task(
        request: VideoRequest,
        idempotency_key: Annotated[
            str | None, Header(alias="idempotency-key", min_length=1, max_length=255, description="Makes retries safe")
        ] = None,
    ) -> Response[dict[str, Any]]:
        service = tasks()
        task, created = service.create(
            request, caller=_caller(app.current_event.raw_event), idempotency_key=idempotency_key
        )
        return _accepted(service, task, created)

    @app.get(
        "/v1/tasks/<task_id>",
        summary="A task, with presigned URLs of its outputs",
        responses={200: {"description": "The task"}, 404: {"description": "No such task"}},
    )
    def get_task(task_id: TaskId) -> Response[dict[str, Any]]:
        service = tasks()
        return _json(200, service.view(service.get(task_id)).model_dump(mode="json"))

    @app.get("/v1/tasks", summary="Tasks, newest first, with cursor paging")
    def list_tasks(
        status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
        provider: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(min_length=1, max_length=2048)] = None,
    ) -> Response[dict[str, Any]]:
        service = tasks()
        found, next_cursor = service.list(status=status, provider=provider, limit=limit, cursor=cursor)
        page = TaskPage(tasks=[service.view(t) for t in found], next_cursor=next_cursor)
        return _json(200, page.model_dump(mode="json"))

    @app.post(
        "/v1/tasks/<task_id>/remix",
        summary="Remix a succeeded video into a new task linked to its parent",
        responses={
            202: {"description": "Accepted: the new task"},
            404: {"description": "No such task"},
            422: {"description": "The parent cannot be remixed"},
        },
    )
    def remix_task(
        task_id: TaskId,
        remix: RemixRequest,
        idempotency_key: Annotated[str | None, Header(alias="idempotency-key", min_length=1, max_length=255)] = None,
    ) -> Response[dict[str, Any]]:
        service = tasks()
        task, created = service.remix(
            task_id, remix, caller=_caller(app.current_event.raw_event), idempotency_key=idempotency_key
        )
        return _accepted(service, task, created)

    @app.post(
        "/v1/images",
        summary="Generate or edit images (synchronous at the provider; outputs still land in S3)",
        responses={202: {"description": "Accepted: the task"}, 422: {"description": "Invalid request"}},
    )
    def create_images(
        request: ImageRequest,
        idempotency_key: Annotated[str | None, Header(alias="idempotency-key", min_length=1, max_length=255)] = None,
    ) -> Response[dict[str, Any]]:
        service = tasks()
        task, created = service.images(
            request, caller=_caller(app.current_event.raw_event), idempotency_key=idempotency_key
        )
        return _accepted(service, task, created)

    @app.post(
        "/v1/uploads",
        summary="A presigned PUT for an input image, under your own uploads prefix (use its key in image_keys)",
        responses={201: {"description": "The upload: key, url, method, headers, expires_at"}},
    )
    def create_upload(request: UploadRequest) -> Response[dict[str, Any]]:
        ticket = tasks().upload(request, caller=_caller(app.current_event.raw_event))
        return _json(HTTPStatus.CREATED, ticket.model_dump(mode="json"))

    @app.get("/v1/providers", summary="Configured providers: protocol, capabilities, live balance and pricing")
    def list_providers() -> Response[dict[str, Any]]:
        return _json(200, ProviderList(providers=tasks().providers()).model_dump(mode="json"))

    return app
