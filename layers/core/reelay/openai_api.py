"""The OpenAI-Videos-shaped front door: ``/v1/videos``, so the official ``openai`` SDK works against reelay.

``OpenAI(base_url="<api>/v1", api_key=<reelay API key>)`` is all a client needs. The routes are
a Powertools ``Router`` included into the API's resolver (``reelay.api``); they are the same
tasks as ``/v1/tasks`` (a video's id is its task id), created through the same ``TaskService``
(validated before anything is stored or paid for, idempotent, owner-scoped):

- ``POST /v1/videos`` (multipart, as the SDK sends it, or JSON): ``prompt``, ``model``,
  ``seconds``, ``size``, and an optional ``input_reference`` image file, stored under the
  caller's own uploads and handed to the provider as a presigned URL (image-to-video).
  ``model`` picks the provider through ``reelay.models_map``; no capable provider is a 400.
- ``GET /v1/videos/{id}``, ``GET /v1/videos?after=&limit=&order=``, ``DELETE /v1/videos/{id}``
  (deletes the stored outputs and previews, marks the task deleted),
  ``POST /v1/videos/{id}/remix`` (to the parent's provider; 400 where it cannot remix),
  ``GET /v1/videos/{id}/content?variant=video|thumbnail|spritesheet`` (from reelay's S3 copy:
  inline up to ``INLINE_MAX_BYTES``, else a 302 to a presigned URL; a missing variant is a 404).

Answers are OpenAI's objects (``OpenAIVideo``, built by ``video_object``, which a
``video.completed`` webhook can carry too) and errors are OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the statuses the SDK maps to its
exceptions (400 ``BadRequestError``, 401 ``AuthenticationError``, 404 ``NotFoundError``, 409
``ConflictError``). A route-level middleware maps reelay's exceptions once, so these routes
never answer in reelay's own error shape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from pydantic import BaseModel, ConfigDict, ValidationError

from reelay.aws import ResultBucket
from reelay.bodies import MAX_JSON_DEPTH, json_depth
from reelay.catalog import ProviderCatalog
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
    WebhookEndpointNotFound,
)
from reelay.fetch_policy import sniff_media
from reelay.media import PREVIEW_TYPE, VARIANTS, preview_key
from reelay.models import RemixRequest, Task, TaskKind, TaskStatus, utcnow
from reelay.models_map import DEFAULT_MODEL, ModelMap, VideoAsk, size_of
from reelay.store import TaskStore
from reelay.tasks import TaskService, uploads_prefix

logger = Logger(child=True)

PREFIX = "/v1/videos"
MAX_JSON_BYTES = 256 * 1024

# An input_reference comes inside the request, which API Gateway base64-encodes into the Lambda
# event, and Lambda takes an event of at most 6 MB: 4 MiB of image (and the form's other fields)
# is 5.7 MB so encoded. A larger image can be an image_url of POST /v1/tasks.
MAX_REFERENCE_BYTES = 4 * 1024 * 1024
MAX_MULTIPART_BYTES = MAX_REFERENCE_BYTES + 64 * 1024
INLINE_MAX_BYTES = 4 * 1024 * 1024  # under Lambda's 6 MB answer once base64-encoded
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_TASK_ID = re.compile(r"^tsk_[0-9a-f]{28}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$")
_IMAGE_STAND_IN = "https://uploads.invalid/input_reference.png"
_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})

OpenAIStatus = Literal["queued", "in_progress", "completed", "failed"]
_STATUS: Mapping[TaskStatus, OpenAIStatus] = {
    TaskStatus.QUEUED: "queued",
    TaskStatus.SUBMITTED: "queued",
    TaskStatus.RUNNING: "in_progress",
    TaskStatus.INGESTING: "in_progress",
    TaskStatus.SUCCEEDED: "completed",
    TaskStatus.FAILED: "failed",
}


# Every OpenAI-shaped route: the videos here, the webhook endpoints in ``reelay.webhook_endpoints``.
OPENAI_PREFIXES = (PREFIX, "/v1/webhook_endpoints", "/v1/webhook_event_types")


def is_openai_path(path: str) -> bool:
    """Whether a request path is one of the OpenAI-shaped routes (they read their own bodies and errors)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in OPENAI_PREFIXES)


# ----------------------------------------------------------------- OpenAI's objects


class _OpenAIObject(BaseModel):
    """Base of OpenAI's objects: each is built on the first answer that needs it (``defer_build``),
    not at the API's cold start (its first request may well be one of reelay's own routes)."""

    model_config = ConfigDict(defer_build=True)


class OpenAIVideoError(_OpenAIObject):
    code: str
    message: str


class OpenAIVideo(_OpenAIObject):
    """OpenAI's ``Video`` object for one reelay task."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: OpenAIStatus
    progress: int
    prompt: str | None = None
    seconds: str
    size: str
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None  # reelay keeps results: they do not expire
    error: OpenAIVideoError | None = None
    remixed_from_video_id: str | None = None


class OpenAIVideoList(_OpenAIObject):
    object: Literal["list"] = "list"
    data: list[OpenAIVideo]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class OpenAIVideoDeleted(_OpenAIObject):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class OpenAIErrorInfo(_OpenAIObject):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(_OpenAIObject):
    """OpenAI's error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    error: OpenAIErrorInfo


def openai_error(status: int, message: str, *, code: str | None, param: str | None = None) -> Response[str]:
    """An error answer in OpenAI's shape (``type`` as OpenAI names it for the status)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = OpenAIErrorBody(error=OpenAIErrorInfo(message=message, type=kind, param=param, code=code))
    return Response(status, content_type="application/json", body=body.model_dump_json())


def _unix(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


def video_object(task: Task, catalog: ProviderCatalog | None = None) -> OpenAIVideo:
    """OpenAI's video object for ``task`` (also the payload of an OpenAI-style ``video.completed`` event)."""
    request = task.request
    model_text = str(request.get("model") or "")
    pro = bool(request.get("pro")) or "pro" in model_text.split("-")
    seconds = request.get("duration")
    if seconds is None and catalog is not None:
        try:
            seconds = catalog.get(task.provider).capabilities().default_duration
        except RequestInvalid:  # the provider is no longer configured
            seconds = None
    finished = task.entered(task.status) if task.status.terminal else None
    return OpenAIVideo(
        id=task.id,
        model="sora-2-pro" if pro else DEFAULT_MODEL,
        status=_STATUS[task.status],
        progress=100 if task.status is TaskStatus.SUCCEEDED else max(0, min(100, task.progress)),
        prompt=str(request.get("prompt") or "") or None,
        seconds=str(seconds or ""),
        size=size_of(request.get("orientation"), request.get("resolution")),
        created_at=int(task.created_at.timestamp()),
        completed_at=_unix(finished),
        error=OpenAIVideoError(code=task.error.code.value, message=task.error.message) if task.error else None,
        remixed_from_video_id=task.parent_task_id if task.kind is TaskKind.REMIX else None,
    )


# ----------------------------------------------------------------- requests


@dataclass(frozen=True)
class InputImage:
    """The ``input_reference`` file of a create."""

    content: bytes
    content_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class CreateForm:
    """A parsed ``POST /v1/videos`` body."""

    prompt: str
    model: str
    seconds: int | None
    size: str | None
    image: InputImage | None

    def fingerprint(self) -> dict[str, Any]:
        """What an Idempotency-Key replay must match: the parsed fields and the image's hash."""
        return {
            "openai": {
                "prompt": self.prompt,
                "model": self.model,
                "seconds": self.seconds,
                "size": self.size,
                "image_sha256": self.image.sha256 if self.image else None,
            }
        }


def _body_bytes(event: Mapping[str, Any], limit: int, hint: str = "") -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        if len(body) > limit * 4 // 3 + 4:
            raise _TooLarge(limit, hint)
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise RequestInvalid("request body is not valid base64") from None
    else:
        raw = str(body).encode("utf-8", "surrogateescape")
    if len(raw) > limit:
        raise _TooLarge(limit, hint)
    return raw


class _TooLarge(RequestInvalid):
    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, limit: int, hint: str = "") -> None:
        super().__init__(f"request body is larger than {limit // 1024} KB{hint}")


def parse_create(event: Mapping[str, Any]) -> CreateForm:
    """``POST /v1/videos``'s fields from a multipart or JSON body; ``RequestInvalid`` naming the field."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type", "application/json")
    media = content_type.split(";")[0].strip().lower()
    fields: dict[str, str] = {}
    image: InputImage | None = None
    if media == "multipart/form-data":
        raw = _body_bytes(
            event, MAX_MULTIPART_BYTES, f" (an input_reference of at most {MAX_REFERENCE_BYTES // 1024**2} MiB)"
        )
        # Here, not at the top: only a multipart create parses MIME (email.policy is large).
        from email import policy
        from email.parser import BytesParser

        document = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        if not document.is_multipart():
            raise RequestInvalid("the multipart body has no parts (is the boundary right?)")
        for part in document.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or name not in _FIELDS:
                raise RequestInvalid(f"unknown field {name!r}; fields: {', '.join(sorted(_FIELDS))}", field=str(name))
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            if name == "input_reference":
                image = _image(data, part.get_content_type())
            else:
                try:
                    fields[name] = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise RequestInvalid(f"{name} is not UTF-8 text", field=name) from None
    elif media == "application/json" or media.endswith("+json"):
        parsed = json_object(event)
        unknown = sorted(set(parsed) - _FIELDS)
        if unknown:
            raise RequestInvalid(f"unknown field {unknown[0]!r}", field=unknown[0])
        if parsed.get("input_reference") is not None:
            raise RequestInvalid(
                "input_reference must be an uploaded image file (multipart/form-data)", field="input_reference"
            )
        for name, value in parsed.items():
            if value is None or name == "input_reference":
                continue
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise RequestInvalid(f"{name} must be a string", field=name)
            fields[name] = str(value)
    else:
        raise RequestInvalid(f"request body must be multipart/form-data or application/json, not {media[:80]}")
    prompt = fields.get("prompt", "")
    if not prompt.strip():
        raise RequestInvalid("prompt is required", field="prompt")
    seconds = fields.get("seconds")
    if seconds is not None and not re.fullmatch(r"[1-9][0-9]?", seconds.strip()):
        raise RequestInvalid(f"seconds must be a whole number of seconds, not {seconds[:20]!r}", field="seconds")
    model = fields.get("model") or DEFAULT_MODEL
    if len(model) > 128:
        raise RequestInvalid("model is longer than 128 characters", field="model")
    return CreateForm(
        prompt=prompt,
        model=model,
        seconds=int(seconds) if seconds is not None else None,
        size=fields.get("size") or None,
        image=image,
    )


def _image(data: bytes, declared: str) -> InputImage:
    if not data:
        raise RequestInvalid("input_reference is empty", field="input_reference")
    if len(data) > MAX_REFERENCE_BYTES:
        raise RequestInvalid(
            f"input_reference is larger than {MAX_REFERENCE_BYTES // 1024**2} MiB, the most a request carries through "
            "API Gateway into Lambda; give a larger image as image_url on POST /v1/tasks",
            field="input_reference",
        )
    kind = sniff_media(data[:64])
    if kind not in IMAGE_TYPES:
        raise RequestInvalid(
            f"input_reference must be a PNG, JPEG or WebP image (got {declared or 'unknown'})",
            field="input_reference",
        )
    return InputImage(content=data, content_type=kind)


def json_object(event: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON object body (empty: ``{}``), its depth checked before the parser recurses (see ``reelay.bodies``)."""
    raw = _body_bytes(event, MAX_JSON_BYTES)
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise RequestInvalid(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:  # UnicodeDecodeError too
        raise RequestInvalid("request body is not valid UTF-8 JSON") from None
    if not isinstance(parsed, dict):
        raise RequestInvalid("request body must be a JSON object")
    return parsed


def parse_json_prompt(event: Mapping[str, Any]) -> str:
    """The ``prompt`` of a remix body (JSON, as the SDK sends it)."""
    parsed = json_object(event)
    if not isinstance(parsed.get("prompt"), str) or not parsed["prompt"].strip():
        raise RequestInvalid("prompt is required", field="prompt")
    unknown = sorted(set(parsed) - {"prompt"})
    if unknown:
        raise RequestInvalid(f"unknown field {unknown[0]!r}", field=unknown[0])
    return str(parsed["prompt"])


# ----------------------------------------------------------------- the service


@dataclass(frozen=True)
class Content:
    """A variant to answer: its bytes (small ones) or a presigned URL to redirect to."""

    content_type: str
    data: bytes | None = None
    url: str | None = None


class VideoService:
    """The OpenAI routes' operations over reelay's tasks (owner-scoped, as ``TaskService``)."""

    def __init__(
        self,
        tasks: TaskService,
        store: TaskStore,
        bucket: ResultBucket,
        catalog: ProviderCatalog,
        models: ModelMap,
        *,
        input_url_ttl_seconds: int = 6 * 3600,
        presign_ttl_seconds: int = 900,
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ) -> None:
        self._tasks = tasks
        self._store = store
        self._bucket = bucket
        self._catalog = catalog
        self._models = models
        self._input_ttl = input_url_ttl_seconds
        self._presign_ttl = presign_ttl_seconds
        self._inline_max = inline_max_bytes

    def view(self, task: Task) -> OpenAIVideo:
        return video_object(task, self._catalog)

    def create(self, form: CreateForm, *, owner: str, idempotency_key: str | None) -> tuple[Task, bool]:
        """Route, store and enqueue one video (at most one provider create, as every task)."""
        ask = VideoAsk(prompt=form.prompt, model=form.model, seconds=form.seconds, size=form.size)
        # Routing first: an impossible request is refused before the image is even stored
        # (with a stand-in URL: capability checks only ask whether there is an image).
        self._models.route(ask if form.image is None else _with_image(ask, _IMAGE_STAND_IN))
        if form.image is not None:
            ask = _with_image(ask, self._store_image(form.image, owner))
        route = self._models.route(ask)
        request = route.request.model_copy(update={"previews": True})  # OpenAI's clients ask for variants
        return self._tasks.create(
            request,
            owner=owner,
            idempotency_key=idempotency_key,
            fingerprint=form.fingerprint(),
            image_url_is_ours=form.image is not None,
        )

    def _store_image(self, image: InputImage, owner: str) -> str:
        """Put the image under the owner's uploads (same bytes, same key) and presign it for the provider."""
        key = f"{uploads_prefix(owner)}ref-{image.sha256[:40]}{IMAGE_TYPES[image.content_type]}"
        checksum = base64.b64encode(hashlib.sha256(image.content).digest()).decode()
        self._bucket.put(
            key, image.content, content_type=image.content_type, metadata={"source": "input_reference"},
            checksum_sha256=checksum,
        )  # fmt: skip
        return self._bucket.presigned_get(key, self._input_ttl)

    def get(self, video_id: str, *, owner: str, consistent: bool = True) -> Task:
        """The owner's video; a deleted one, an image task or another owner's is ``TaskNotFound``."""
        if not _TASK_ID.fullmatch(video_id):
            raise TaskNotFound(f"video {video_id[:64]} not found")
        try:
            task = self._tasks.get(video_id, owner=owner, consistent=consistent)
        except TaskNotFound:
            raise TaskNotFound(f"video {video_id} not found") from None  # OpenAI's word, on every route
        if task.deleted_at is not None or task.kind is TaskKind.IMAGE:
            raise TaskNotFound(f"video {video_id} not found")
        return task

    def list(
        self, *, owner: str, after: str | None, limit: int, ascending: bool
    ) -> tuple[list[Task], bool]:  # fmt: skip
        """A page of the owner's videos after the video ``after``; and whether more follow."""
        start = self._store.page_key(self.get(after, owner=owner)) if after else None
        found: list[Task] = []
        more = True
        for _ in range(10):  # deleted and image tasks are skipped; a few reads fill a page
            page, start = self._store.list(
                owner=owner, status=None, provider=None, limit=limit + 1, after=start, ascending=ascending
            )
            found += [t for t in page if t.deleted_at is None and t.kind is not TaskKind.IMAGE]
            if len(found) > limit or start is None:
                more = len(found) > limit
                break
        return found[:limit], more

    def delete(self, video_id: str, *, owner: str) -> Task:
        """Delete a finished video's stored outputs and previews; the task is then marked deleted."""
        task = self.get(video_id, owner=owner)
        if not task.status.terminal:
            raise _NotFinished(f"video {video_id} is {_STATUS[task.status]}; only a completed or failed one is deleted")
        for key in [o.key for o in task.outputs] + [preview_key(task.id, v) for v in VARIANTS]:
            self._bucket.delete(key)
        for _ in range(_DELETE_ATTEMPTS - 1):
            try:
                return self._store.update(task, outputs=[], deleted_at=utcnow())
            except TransitionConflict:
                # Written meanwhile (the notifier records a just-finished task's event): read again.
                task = self.get(video_id, owner=owner)
        return self._store.update(task, outputs=[], deleted_at=utcnow())

    def remix(self, video_id: str, prompt: str, *, owner: str, idempotency_key: str | None) -> tuple[Task, bool]:
        """A remix through the parent's provider (``TaskNotRemixable`` where it cannot)."""
        self.get(video_id, owner=owner)
        try:
            request = RemixRequest(prompt=prompt)
        except ValidationError as exc:
            from reelay import error_words

            raise RequestInvalid(f"prompt: {error_words.message(exc.errors()[0])}", field="prompt") from None
        return self._tasks.remix(video_id, request, owner=owner, idempotency_key=idempotency_key)

    def content(self, video_id: str, variant: str, *, owner: str) -> Content:
        """A variant of a completed video from reelay's own copy."""
        task = self.get(video_id, owner=owner)
        if task.status is not TaskStatus.SUCCEEDED:
            raise TaskNotFound(f"video {video_id} is {_STATUS[task.status]}: it has no content")
        if variant == "video":
            output = next((o for o in task.outputs if o.content_type.startswith("video/")), None)
            if output is None:
                raise TaskNotFound(f"video {video_id} has no video output")
            key, content_type = output.key, output.content_type
        else:
            key, content_type = preview_key(task.id, variant), PREVIEW_TYPE
        head = self._bucket.head(key)
        if head is None:
            raise TaskNotFound(f"video {video_id} has no {variant}")
        size = int(head.get("ContentLength", 0))
        if size <= self._inline_max:
            return Content(content_type=content_type, data=self._bucket.read_range(key, max(1, size)) if size else b"")
        return Content(content_type=content_type, url=self._bucket.presigned_get(key, self._presign_ttl))


_DELETE_ATTEMPTS = 5


class _NotFinished(RequestInvalid):
    code = "VIDEO_NOT_FINISHED"


def _with_image(ask: VideoAsk, url: str) -> VideoAsk:
    return VideoAsk(prompt=ask.prompt, model=ask.model, seconds=ask.seconds, size=ask.size, image_url=url)


# ----------------------------------------------------------------- errors (the one place for these routes)


def openai_errors(app: Any, next_middleware: NextMiddleware) -> Response[Any]:
    """Each reelay exception to OpenAI's error shape and a status the SDK maps to its exceptions
    (the route middleware of every OpenAI-shaped route, the webhook endpoints' too)."""
    try:
        return next_middleware(app)
    except ApiKeyRejected as exc:
        return openai_error(401, exc.message, code="invalid_api_key")
    except _TooLarge as exc:
        return openai_error(413, exc.message, code="payload_too_large")
    except RequestInvalid as exc:  # NoRouteForModel too: a 400 naming what is possible
        return openai_error(400, exc.message, code=exc.code.lower(), param=exc.field)
    except TaskNotRemixable as exc:
        return openai_error(400, exc.message, code="not_remixable", param="video_id")
    except (TaskNotFound, UploadNotFound, WebhookEndpointNotFound) as exc:
        return openai_error(404, exc.message, code="not_found")
    except IdempotencyConflict as exc:
        return openai_error(409, exc.message, code="idempotency_conflict")
    except TransitionConflict as exc:
        # The task changed under this request's write (a worker moved it on meanwhile): nothing was
        # written by it; the client may read the task again and retry.
        return openai_error(409, exc.message, code="conflict")
    except ConfigurationError as exc:
        logger.error("configuration error", extra={"error": exc.message})
        return openai_error(503, exc.message, code=exc.code.lower())
    except ReelayError as exc:
        logger.exception("unhandled reelay error")
        return openai_error(502, exc.message, code=exc.code.lower())


# ----------------------------------------------------------------- the routes


def openai_router(videos: Callable[[], VideoService], owner: Callable[[], str]) -> Router:
    """The ``/v1/videos`` routes, to include into the API resolver (``app.include_router``)."""
    router = Router()
    guarded: list[Any] = [openai_errors]

    def event() -> Mapping[str, Any]:
        return router.current_event.raw_event

    def idempotency_key() -> str | None:
        value = router.current_event.headers.get("idempotency-key")
        if value is None:
            return None
        if not _IDEMPOTENCY_KEY.fullmatch(value):
            raise RequestInvalid("Idempotency-Key must be 1-255 visible ASCII characters", field="Idempotency-Key")
        return value

    def video(task: Task, status: int = 200, *, created: bool | None = None) -> Response[str]:
        headers = {} if created is None else {"Idempotent-Replayed": str(not created).lower()}
        body = videos().view(task).model_dump_json()
        return Response(status, content_type="application/json", body=body, headers=headers)

    @router.post(PREFIX, middlewares=guarded, include_in_schema=False)
    def create_video() -> Response[str]:
        form = parse_create(event())
        task, created = videos().create(form, owner=owner(), idempotency_key=idempotency_key())
        return video(task, created=created)

    @router.get(PREFIX, middlewares=guarded, include_in_schema=False)
    def list_videos() -> Response[str]:
        query = router.current_event.query_string_parameters or {}
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise RequestInvalid("order must be asc or desc", field="order")
        limit_text = query.get("limit", "20")
        if not re.fullmatch(r"[0-9]{1,3}", limit_text) or not 1 <= int(limit_text) <= 100:
            raise RequestInvalid("limit must be 1 to 100", field="limit")
        service = videos()
        found, more = service.list(
            owner=owner(), after=query.get("after") or None, limit=int(limit_text), ascending=order == "asc"
        )
        page = OpenAIVideoList(
            data=[service.view(t) for t in found],
            first_id=found[0].id if found else None,
            last_id=found[-1].id if found else None,
            has_more=more,
        )
        return Response(200, content_type="application/json", body=page.model_dump_json())

    @router.get(f"{PREFIX}/<video_id>", middlewares=guarded, include_in_schema=False)
    def get_video(video_id: str) -> Response[str]:
        return video(videos().get(video_id, owner=owner(), consistent=False))

    @router.delete(f"{PREFIX}/<video_id>", middlewares=guarded, include_in_schema=False)
    def delete_video(video_id: str) -> Response[str]:
        task = videos().delete(video_id, owner=owner())
        return Response(200, content_type="application/json", body=OpenAIVideoDeleted(id=task.id).model_dump_json())

    @router.post(f"{PREFIX}/<video_id>/remix", middlewares=guarded, include_in_schema=False)
    def remix_video(video_id: str) -> Response[str]:
        prompt = parse_json_prompt(event())
        task, created = videos().remix(video_id, prompt, owner=owner(), idempotency_key=idempotency_key())
        return video(task, created=created)

    @router.get(f"{PREFIX}/<video_id>/content", middlewares=guarded, include_in_schema=False)
    def video_content(video_id: str):  # type: ignore[no-untyped-def]  # no return type: bytes skip validation
        variant = (router.current_event.query_string_parameters or {}).get("variant", "video")
        if variant not in ("video", *VARIANTS):
            raise RequestInvalid("variant must be video, thumbnail or spritesheet", field="variant")
        found = videos().content(video_id, variant, owner=owner())
        if found.url is not None:
            return Response(302, headers={"Location": found.url}, body="")
        return Response(200, content_type=found.content_type, body=found.data or b"")

    return router


__all__ = [
    "OpenAIErrorBody",
    "OpenAIVideo",
    "OpenAIVideoDeleted",
    "OpenAIVideoList",
    "VideoService",
    "is_openai_path",
    "json_object",
    "openai_error",
    "openai_errors",
    "openai_router",
    "parse_create",
    "video_object",
]
