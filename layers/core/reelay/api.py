"""The client HTTP API: Powertools' HTTP API resolver with validation and OpenAPI.

Routes parse into models, make one call into ``TaskService`` for the caller's *owner* and
return the answer's model (``reelay.contract``), which the OpenAPI document declares along with
every error answer. Error bodies are built in one place (``error_body``), always
``{"error": {"code", "message", "details"?}}``; domain exceptions map to statuses once, in
``build_app``; bad input is a 4xx, never a 5xx. Request bodies are checked for size, media
type, encoding and nesting depth before anything parses them (``JsonApiResolver``).

The request models are built at cold start from the configured providers
(``reelay.variants``), so the document names the providers and each one's options.
"""

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from reelay import error_words
from reelay.apikeys import api_key_owner
from reelay.bodies import MAX_JSON_DEPTH, json_depth
from reelay.contract import (
    BatchTicket,
    BatchView,
    ErrorBody,
    ErrorInfo,
    ProviderList,
    TaskPage,
    TaskView,
    UploadTicket,
    WebhookSecretList,
)
from reelay.errors import (
    ApiKeyRejected,
    ConfigurationError,
    IdempotencyConflict,
    ReelayError,
    RequestInvalid,
    TaskNotFound,
    TaskNotRemixable,
    TransitionConflict,
    UploadNotFound,
)
from reelay.fetch_policy import public_url_refusal
from reelay.models import (
    LOCAL_OWNER,
    BatchUploadRequest,
    ImageRequest,
    Metadata,
    Prompt,
    RemixRequest,
    StrictBody,
    Task,
    TaskStatus,
    UploadRequest,
    VideoRequest,
    WebUrl,
    worded,
)
from reelay.openai_api import VideoService, is_openai_path, openai_error, openai_router
from reelay.providers.base import ProviderConfig
from reelay.tasks import TaskService

if TYPE_CHECKING:
    from reelay.batches import BatchService
from reelay.variants import image_body, remix_models, video_body
from reelay.webhook_endpoints import WebhookEndpoints
from reelay.webhook_endpoints_api import webhook_endpoints_router
from reelay.webhooks import WebhookSecrets, image_url_type, webhook_url_refusal, webhook_url_type

logger = Logger(child=True)
M = TypeVar("M", bound=BaseModel)

# Request limits (README, "Limits"): larger inputs go through uploads.
MAX_BODY_BYTES = 256 * 1024

TaskId = Annotated[
    str,
    Path(
        pattern=worded(r"^tsk_[0-9a-f]{28}$", "is not a task id (tsk_ and 28 hex digits)"),
        description="A task id (tsk_...)",
    ),
]
BatchId = Annotated[
    str,
    Path(
        pattern=worded(r"^bat_[0-9a-f]{28}$", "is not a batch id (bat_ and 28 hex digits)"),
        description="A batch id (bat_...)",
    ),
]
# Visible ASCII without spaces at either end: exactly what survives HTTP header handling.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="idempotency-key",
        min_length=1,
        max_length=255,
        pattern=worded(
            r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$", "must be visible ASCII characters (spaces between them)"
        ),
        description="Makes retries safe: same key and body give the same task; same key, other body is 409.",
    ),
]


# ----------------------------------------------------------------- owners


def owner_of(event: Mapping[str, Any]) -> str:
    """Who owns what this request creates or reads, from API Gateway v2's authorizer context.

    IAM auth: the caller's principal ARN (``authorizer.iam.userArn``). JWT auth:
    ``jwt:<iss>#<sub>`` from the verified claims (``authorizer.jwt.claims``). API keys: the key's
    owner from the Lambda authorizer's context (``authorizer.lambda``; ``ApiKeyRejected`` for a
    key it rejected, see ``reelay.apikeys``). No client auth: the one local owner. A plain
    string, so other entry points (a batch manifest) can set it.
    """
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    keyed = api_key_owner(authorizer)
    if keyed is not None:
        return keyed
    iam = authorizer.get("iam") or {}
    if iam.get("userArn"):
        return str(iam["userArn"])
    jwt = authorizer.get("jwt")
    if jwt is not None:
        claims = jwt.get("claims") or {}
        return f"jwt:{claims.get('iss', '')}#{claims.get('sub', '')}"
    return LOCAL_OWNER


# ----------------------------------------------------------------- error bodies (the one place)


def error_body(code: str, message: str, details: Any = None) -> str:
    """The JSON of every error answer of this API."""
    return ErrorBody(error=ErrorInfo(code=code, message=message, details=details or None)).model_dump_json(
        exclude_none=True
    )


def _error(status: int, code: str, message: str, details: Any = None) -> Response[str]:
    """An error answer: the body is serialised already, so no route's answer model applies to it."""
    return Response(status_code=int(status), content_type="application/json", body=error_body(code, message, details))


_ERROR_STATUSES: dict[int, str] = {
    400: "MALFORMED_JSON: the body is not valid UTF-8 JSON",
    404: "NOT_FOUND: no such task or batch (or not yours), "
    "or UPLOAD_NOT_FOUND: an image key that is not one of your uploads",
    409: "IDEMPOTENCY_CONFLICT: the Idempotency-Key was used with another body, or NOT_REMIXABLE",
    413: f"PAYLOAD_TOO_LARGE: the body is larger than {MAX_BODY_BYTES // 1024} KB",
    415: "UNSUPPORTED_MEDIA_TYPE: the body is not application/json",
    422: "VALIDATION_FAILED: the request is invalid, with field-level details (a route without parameters never)",
}


def _responses(success: int, model: type[BaseModel], description: str, *errors: int) -> dict[int, Any]:
    """A route's declared answers: its model on success, ``ErrorBody`` on each of its errors."""
    declared: dict[int, Any] = {
        success: {"description": description, "content": {"application/json": {"model": model}}}
    }
    for status in errors:
        declared[status] = {
            "description": _ERROR_STATUSES[status],
            "content": {"application/json": {"model": ErrorBody}},
        }
    return declared


_BODY_ERRORS = (400, 413, 415, 422)


# ----------------------------------------------------------------- the resolver


class JsonApiResolver(APIGatewayHttpResolver):
    """The HTTP API resolver, refusing bodies before anything parses them.

    Powertools' validation would otherwise try to parse a multipart body, decode bytes that
    are not UTF-8, or recurse through JSON nested thousands deep, and fail with a 500.

    The Swagger UI route (``swagger_on_first_request``) is registered when it is first asked
    for: Powertools' ``enable_swagger`` imports the models of the OpenAPI document, a large
    part of a cold start that no other route needs.
    """

    _swagger: tuple[str, dict[str, Any]] | None = None

    def swagger_on_first_request(self, path: str, **options: Any) -> None:
        """``enable_swagger(path=path, **options)`` on the first request to ``path``."""
        self._swagger = (path, options)

    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        path = str(event.get("rawPath") or "")
        if self._swagger is not None and path == self._swagger[0]:
            docs_path, options = self._swagger
            self._swagger = None
            self.enable_swagger(path=docs_path, **options)
        try:
            owner_of(event)  # a rejected API key is a 401 before anything else
        except ApiKeyRejected as exc:
            if is_openai_path(path):
                answer = openai_error(401, exc.message, code="invalid_api_key")
                return {"statusCode": 401, "headers": {"Content-Type": "application/json"}, "body": answer.body}
            return {
                "statusCode": 401,
                "headers": {"Content-Type": "application/json"},
                "body": error_body(exc.code, exc.message),
            }
        # The OpenAI routes read their own bodies (multipart too) and answer in OpenAI's shape.
        refusal = None if is_openai_path(path) else refuse_body(event)
        if refusal is not None:
            status, code, message = refusal
            return {
                "statusCode": status,
                "headers": {"Content-Type": "application/json"},
                "body": error_body(code, message),
                "isBase64Encoded": False,
            }
        return super().resolve(event, context)


def refuse_body(event: Mapping[str, Any]) -> tuple[int, str, str] | None:
    """Why the request's body is refused (status, code, message), or None to go on."""
    body = event.get("body")
    if not body:
        return None
    if not isinstance(body, str):
        return 400, "MALFORMED_JSON", "request body is not valid UTF-8 JSON"
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    media = str(headers.get("content-type", "application/json")).split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return 415, "UNSUPPORTED_MEDIA_TYPE", f"request body must be application/json, not {media[:100]}"
    # Cheap bound first: base64 is 4/3 of the bytes, a str at least one byte a character.
    if len(body) > (MAX_BODY_BYTES * 4 // 3 + 4 if event.get("isBase64Encoded") else 4 * MAX_BODY_BYTES):
        return 413, "PAYLOAD_TOO_LARGE", _too_large()
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body.encode("utf-8")
        raw.decode("utf-8")
    except (binascii.Error, UnicodeError):
        return 400, "MALFORMED_JSON", "request body is not valid UTF-8 JSON"
    if len(raw) > MAX_BODY_BYTES:
        return 413, "PAYLOAD_TOO_LARGE", _too_large()
    if json_depth(raw) > MAX_JSON_DEPTH:
        return 422, "VALIDATION_FAILED", f"request body is nested deeper than {MAX_JSON_DEPTH} levels"
    # Shallow now, so parsing cannot recurse far. Python's parser takes what JSON does not
    # (NaN, Infinity) and strings no store can write (an escaped lone surrogate): refuse both.
    try:
        parsed = json.loads(raw, parse_constant=_no_constant)
        _encodable(parsed)
    except (ValueError, UnicodeError):
        return 400, "MALFORMED_JSON", "request body is not valid JSON (or holds an unpaired surrogate escape)"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encodable(value: Any) -> None:
    """Raise ``UnicodeError`` for a string that is not valid Unicode (UTF-8 cannot hold it)."""
    stack = [value]
    while stack:  # a loop, not recursion, though the depth is bounded already
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item


def _too_large() -> str:
    return f"request body is larger than {MAX_BODY_BYTES // 1024} KB; send large inputs through POST /v1/uploads"


# ----------------------------------------------------------------- the app


def build_app(
    tasks: Callable[[], TaskService],
    providers: Sequence[ProviderConfig] | None = None,
    batches: Callable[[], "BatchService"] | None = None,
    *,
    webhook_secrets: Callable[[], WebhookSecrets] | None = None,
    webhook_hosts: frozenset[str] = frozenset(),
    image_hosts: frozenset[str] = frozenset(),
    videos: Callable[[], VideoService] | None = None,
    webhook_endpoints: Callable[[], WebhookEndpoints] | None = None,
) -> APIGatewayHttpResolver:
    """The resolver; ``tasks`` (and ``batches``) give the services (built lazily, once),
    ``webhook_secrets`` the owners' secrets.

    ``providers`` (the stack's configured providers) shape the request bodies and the document;
    without them the bodies are the provider-neutral models and the adapters alone validate.
    ``webhook_hosts`` (``REELAY_ALLOWED_WEBHOOK_HOSTS``) widen ``webhook_url`` in those shapes,
    ``image_hosts`` (``REELAY_ALLOWED_RESULT_HOSTS``) ``image_url`` and ``image_urls``.
    ``videos`` adds the OpenAI-shaped ``/v1/videos`` routes (``reelay.openai_api``),
    ``webhook_endpoints`` OpenAI's ``/v1/webhook_endpoints`` (``reelay.webhook_endpoints``).
    """
    # Never Powertools' debug mode, which POWERTOOLS_DEV (``reelay dev``'s readable logs) turns
    # on: it prints every event, the caller's Authorization header included, and answers an
    # unhandled error with its traceback.
    app = JsonApiResolver(enable_validation=True, debug=False)
    VideoBody: Any = VideoRequest
    ImageBody: Any = ImageRequest
    RemixBody: Any = _remix_body(None)
    ProviderName: Any = Annotated[str, Field(min_length=1, max_length=64)]
    if providers is not None:
        webhook_url = webhook_url_type(webhook_hosts)
        image_url = image_url_type(image_hosts)
        VideoBody = video_body(providers, webhook_url=webhook_url, image_url=image_url)
        ImageBody = image_body(providers, webhook_url=webhook_url, image_url=image_url)
        RemixBody = _remix_body(remix_models(providers), webhook_url=webhook_url)
        names = tuple(p.name for p in providers)
        if names:
            ProviderName = Literal[names]

    def owner() -> str:
        return owner_of(app.current_event.raw_event)

    def accepted(service: TaskService, task: Task, created: bool) -> Response[TaskView]:
        """202 with the task; ``Idempotent-Replayed`` says whether an Idempotency-Key replayed it."""
        headers = {"Location": f"/v1/tasks/{task.id}", "Idempotent-Replayed": str(not created).lower()}
        return Response(HTTPStatus.ACCEPTED, content_type="application/json", body=service.view(task), headers=headers)

    # -- errors: each domain exception to its status, once ----------------------------------
    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[str]:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "MALFORMED_JSON", "request body is not valid JSON")
        details = [{"field": error_words.field_name(e.get("loc", ())), "message": _message(e)} for e in errors]
        message = "request is invalid: " + "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return _error(422, "VALIDATION_FAILED", message[:2000], details[:20])

    # A URL its field refuses is told why in words, not by the pattern it missed.
    url_refusals: dict[str, Callable[[str], str | None]] = {
        "webhook_url": lambda url: webhook_url_refusal(url, webhook_hosts),
        "image_url": lambda url: public_url_refusal(url, image_hosts),
        "image_urls": lambda url: public_url_refusal(url, image_hosts),
    }

    def _message(error: Any) -> str:
        return error_words.message(error, body_type=VideoBody, url_refusals=url_refusals)

    @app.exception_handler(RequestInvalid)
    def _request_invalid(exc: RequestInvalid) -> Response[str]:
        details = [{"field": exc.field, "message": exc.message}] if exc.field else None
        return _error(422, exc.code, exc.message, details)

    @app.exception_handler(TaskNotFound)
    def _not_found(exc: TaskNotFound) -> Response[str]:
        return _error(404, exc.code, exc.message)

    @app.exception_handler(UploadNotFound)
    def _upload_not_found(exc: UploadNotFound) -> Response[str]:
        return _error(404, exc.code, exc.message, [{"field": "image_keys", "message": exc.message}])

    @app.exception_handler(NotFoundError)
    def _no_route(exc: NotFoundError) -> Response[str]:
        return _error(404, "NOT_FOUND", "no such route")

    @app.exception_handler(ApiKeyRejected)
    def _key_rejected(exc: ApiKeyRejected) -> Response[str]:
        return _error(401, exc.code, exc.message)

    @app.exception_handler(IdempotencyConflict)
    def _conflict(exc: IdempotencyConflict) -> Response[str]:
        return _error(409, exc.code, exc.message)

    @app.exception_handler(TransitionConflict)
    def _moved_meanwhile(exc: TransitionConflict) -> Response[str]:
        # The task changed under this request's write (a worker moved it on meanwhile): nothing was
        # written by it; the client may read the task again and retry.
        return _error(409, exc.code, exc.message)

    @app.exception_handler(TaskNotRemixable)
    def _not_remixable(exc: TaskNotRemixable) -> Response[str]:
        return _error(409, exc.code, exc.message)

    @app.exception_handler(ConfigurationError)
    def _misconfigured(exc: ConfigurationError) -> Response[str]:
        logger.error("configuration error", extra={"error": exc.message})
        return _error(503, exc.code, exc.message)

    @app.exception_handler(ReelayError)
    def _reelay(exc: ReelayError) -> Response[str]:
        logger.exception("unhandled reelay error")
        return _error(502, exc.code, exc.message)

    # -- routes -------------------------------------------------------------------------------
    @app.get(
        "/v1/openapi.json",
        operation_id="openapi_document",
        summary="This API's OpenAPI document",
        responses=_responses(200, OpenApiDocument, "The OpenAPI document", 422),
    )
    def openapi() -> Response[dict[str, Any]]:
        return Response(200, content_type="application/json", body=json.loads(app.get_openapi_json_schema(**_DOC)))

    @app.post(
        "/v1/tasks",
        operation_id="create_task",
        summary="Request a video",
        description="Validated against the provider's capabilities before anything is stored or paid for: "
        "the body is one of the shapes below, one per provider and option set. " + _IDEMPOTENCY_NOTE,
        responses=_responses(202, TaskView, "Accepted: the task (queued)", *_BODY_ERRORS, 409),
    )
    def create_task(
        request: Annotated[VideoBody, Body(description="What to make, with which provider")],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskView]:
        service = tasks()
        video = _neutral(VideoRequest, request)
        task, created = service.create(video, owner=owner(), idempotency_key=idempotency_key)
        return accepted(service, task, created)

    @app.get(
        "/v1/tasks/<task_id>",
        operation_id="get_task",
        summary="One of your tasks, with presigned URLs of its outputs",
        responses=_responses(200, TaskView, "The task", 404, 422),
    )
    def get_task(task_id: TaskId) -> Response[TaskView]:
        service = tasks()
        task = service.get(task_id, owner=owner(), consistent=False)  # a stale copy only shows
        return Response(200, content_type="application/json", body=service.view(task, with_cost=True))

    @app.get(
        "/v1/tasks",
        operation_id="list_tasks",
        summary="Your tasks, newest first, with cursor paging",
        responses=_responses(200, TaskPage, "A page of tasks", 422),
    )
    def list_tasks(
        status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
        provider: Annotated[ProviderName | None, Query(description="Only tasks of this provider")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
        cursor: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=2048,
                pattern=worded(
                    r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$", "is not a cursor this API gave: pass next_cursor as it came"
                ),
                description="next_cursor of the previous page of the same query (signed: another is 422)",
            ),
        ] = None,
    ) -> Response[TaskPage]:
        service = tasks()
        found, next_cursor = service.list(owner=owner(), status=status, provider=provider, limit=limit, cursor=cursor)
        page = TaskPage(tasks=[service.view(t) for t in found], next_cursor=next_cursor)
        return Response(200, content_type="application/json", body=page)

    @app.post(
        "/v1/tasks/<task_id>/remix",
        operation_id="remix_task",
        summary="Remix one of your succeeded videos into a new task linked to its parent",
        description="Only a succeeded video of a provider that can remix (openai_videos); otherwise 409. "
        + _IDEMPOTENCY_NOTE,
        responses=_responses(202, TaskView, "Accepted: the new task", *_BODY_ERRORS, 404, 409),
    )
    def remix_task(
        task_id: TaskId,
        remix: Annotated[RemixBody, Body(description="The new prompt (and model)")],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskView]:
        service = tasks()
        request = _neutral(RemixRequest, remix)
        task, created = service.remix(task_id, request, owner=owner(), idempotency_key=idempotency_key)
        return accepted(service, task, created)

    @app.post(
        "/v1/images",
        operation_id="create_images",
        summary="Generate or edit images (synchronous at the provider; outputs still land in S3)",
        description="`image_keys` must be your own uploads (POST /v1/uploads); another key is 404. "
        + _IDEMPOTENCY_NOTE,
        responses=_responses(202, TaskView, "Accepted: the task", *_BODY_ERRORS, 404, 409),
    )
    def create_images(
        request: Annotated[ImageBody, Body(description="What to make, with which provider")],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[TaskView]:
        service = tasks()
        images = _neutral(ImageRequest, request)
        task, created = service.images(images, owner=owner(), idempotency_key=idempotency_key)
        return accepted(service, task, created)

    @app.post(
        "/v1/uploads",
        operation_id="create_upload",
        summary="A presigned PUT for an input image, under your own uploads prefix (use its key in image_keys)",
        responses=_responses(201, UploadTicket, "The upload: key, url, method, headers, expires_at", *_BODY_ERRORS),
    )
    def create_upload(request: UploadRequest) -> Response[UploadTicket]:
        ticket = tasks().upload(request, owner=owner())
        return Response(HTTPStatus.CREATED, content_type="application/json", body=ticket)

    @app.get(
        "/v1/providers",
        operation_id="list_providers",
        summary="Configured providers: protocol, capabilities, live balance and pricing",
        responses=_responses(200, ProviderList, "The providers", 422),
    )
    def list_providers() -> Response[ProviderList]:
        return Response(200, content_type="application/json", body=ProviderList(providers=tasks().providers()))

    def secrets() -> WebhookSecrets:
        if webhook_secrets is None:
            raise ConfigurationError("webhook secrets are not configured in this function")
        return webhook_secrets()

    @app.get(
        "/v1/webhook-secret",
        operation_id="get_webhook_secret",
        summary="Your webhook signing secrets, newest first (made on first use)",
        description="Verify reelay's webhooks (Standard Webhooks) with any of them: during a rotation's "
        "overlap two are valid and every webhook carries a signature for each.",
        responses=_responses(200, WebhookSecretList, "Your valid secrets, newest first", 422),
    )
    def get_webhook_secret() -> Response[WebhookSecretList]:
        body = WebhookSecretList(secrets=secrets().valid(owner()))
        return Response(200, content_type="application/json", body=body)

    @app.post(
        "/v1/webhook-secret/rotate",
        operation_id="rotate_webhook_secret",
        summary="Add a new webhook secret; the previous one stays valid for the overlap window",
        responses=_responses(200, WebhookSecretList, "Your valid secrets, newest first (the new one first)", 422),
    )
    def rotate_webhook_secret() -> Response[WebhookSecretList]:
        body = WebhookSecretList(secrets=secrets().rotate(owner()))
        return Response(200, content_type="application/json", body=body)

    def batch_service() -> "BatchService":
        if batches is None:
            raise ConfigurationError("batches are not configured in this function")
        return batches()

    @app.post(
        "/v1/batches",
        operation_id="create_batch",
        summary="A presigned PUT of a JSON Lines manifest into your inbox; follow it at /v1/batches/{batch_id}",
        description="Each line of the manifest is a `POST /v1/tasks` body, plus an optional client `id`. "
        "The report lands at `report_key` when every task has ended.",
        responses=_responses(201, BatchTicket, "The upload: batch_id, key, url, method, headers", *_BODY_ERRORS),
    )
    def create_batch(request: BatchUploadRequest) -> Response[BatchTicket]:
        ticket = batch_service().ticket(request, owner=owner())
        return Response(HTTPStatus.CREATED, content_type="application/json", body=ticket)

    @app.get(
        "/v1/batches/<batch_id>",
        operation_id="get_batch",
        summary="One of your batches: lines, tasks made, ended and running, and its report",
        responses=_responses(200, BatchView, "The batch", 404, 422),
    )
    def get_batch(batch_id: BatchId) -> Response[BatchView]:
        service = batch_service()
        return Response(200, content_type="application/json", body=service.view(service.get(batch_id, owner=owner())))

    if videos is not None:
        app.include_router(openai_router(videos, owner))
    if webhook_endpoints is not None:
        app.include_router(webhook_endpoints_router(webhook_endpoints, owner))
    app.swagger_on_first_request("/v1/docs", **_DOC)
    return app


class OpenApiDocument(BaseModel):
    """An OpenAPI document (any JSON object)."""

    model_config = ConfigDict(extra="allow")


_DOC: dict[str, Any] = {
    "title": "reelay",
    "version": "1",
    "description": "AI video generation across providers, results landed in your S3 bucket. "
    "Every task belongs to its caller (IAM principal, JWT issuer and subject, or the one local owner). "
    "Errors are {error: {code, message, details?}}; the README's error table lists every code.",
}
_IDEMPOTENCY_NOTE = "An Idempotency-Key makes a retry safe: same key and body give the same task; other body is 409."


def _neutral(model: type[M], body: BaseModel) -> M:
    """The provider-neutral request of a shape-validated body (what the rest of reelay takes)."""
    try:
        return model.model_validate(body.model_dump(exclude_none=True))
    except ValidationError as exc:  # a shape admits only neutral requests: a 422, never a 500, if not
        raise RequestInvalid(f"request is invalid: {exc.errors()[0].get('msg', '')}") from exc


def _remix_body(models: tuple[str, ...] | None, *, webhook_url: Any = None) -> type[BaseModel]:
    """``RemixRequest`` as the API takes it: the model, when remix providers are known, from their list."""
    model_type: Any = Literal[models] | None if models else str | None  # type: ignore[valid-type]
    return create_model(
        "RemixBody",
        __base__=StrictBody,
        __doc__=RemixRequest.__doc__,
        prompt=(Prompt, ...),
        model=(model_type, Field(default=None, description="A video model of the parent's provider.")),
        webhook_url=((webhook_url or WebUrl) | None, None),
        metadata=(Metadata, None),
    )
