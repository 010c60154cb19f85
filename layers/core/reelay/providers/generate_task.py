"""The generate_task protocol (seed 002): one sora-2-pro endpoint pair, with callbacks.

Wire format (PROVIDERS.md, /tmp/wire.md): ``POST /api/v1/generateTask/sora-2-pro`` with
``{request_type, callback_url?, provider: "official", input: {...}}`` answers
``{code, msg, data: {taskId}}``; ``GET /api/v1/statusTask/sora-2-pro?taskId=`` answers
``{code, msg, data: {taskId, state, resultJson, failCode, failMsg, ...}}`` where
``resultJson`` is a JSON *string* holding ``resultUrls``. Errors are HTTP 400/401/429/5xx with
``{code, msg}``. The seed lost its field-name column; every name lives in the constants below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from reelay.errors import ProviderProtocolError, RequestInvalid
from reelay.models import ErrorCode, VideoRequest
from reelay.providers.base import (
    CallbackHint,
    Capabilities,
    CreateResult,
    ProviderState,
    ProviderStatus,
    ResultRef,
)
from reelay.providers.http import Call, ErrorDetail, HttpProvider, as_mapping, as_progress

PROTOCOL = "generate_task"
MODEL = "sora-2-pro"
CREATE_PATH = f"/api/v1/generateTask/{MODEL}"
STATUS_PATH = f"/api/v1/statusTask/{MODEL}"
ROUTING_PROVIDER = "official"  # the seed: always send provider=official explicitly
REQUEST_TYPE_ASYNC = "async"
REQUEST_TYPE_CALLBACK = "callback"
OK_CODE = 200

# Request fields.
F_REQUEST_TYPE = "request_type"
F_CALLBACK_URL = "callback_url"
F_PROVIDER = "provider"
F_INPUT = "input"
F_PROMPT = "prompt"
F_IMAGE_URLS = "image_urls"
F_DURATION = "duration"
F_SIZE = "size"
F_RESOLUTION = "resolution"

# Response fields.
F_CODE = "code"
F_MSG = "msg"
F_DATA = "data"
F_TASK_ID = "taskId"
F_STATE = "state"
F_PROGRESS = "progress"
F_RESULT_JSON = "resultJson"
F_RESULT_URLS = "resultUrls"
F_FAIL_CODE = "failCode"
F_FAIL_MSG = "failMsg"

STATES: Mapping[str, ProviderState] = {
    "pending": ProviderState.PENDING,
    "processing": ProviderState.RUNNING,
    "success": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
}
FAIL_CODES: Mapping[str, ErrorCode] = {
    "CONTENT_VIOLATION": ErrorCode.CONTENT_POLICY,
    "INVALID_IMAGE_URL": ErrorCode.INVALID_IMAGE,
}

DURATIONS = (4, 8, 12)
DEFAULT_DURATION = 4
# Text-to-video size by (orientation, resolution).
SIZES: Mapping[tuple[str, str], str] = {
    ("portrait", "720p"): "720*1280",
    ("landscape", "720p"): "1280*720",
    ("portrait", "1080p"): "1024*1792",
    ("landscape", "1080p"): "1792*1024",
}
RESOLUTIONS = ("720p", "1080p")
DEFAULT_ORIENTATION = "portrait"
DEFAULT_RESOLUTION = "720p"


@dataclass(frozen=True)
class GenerateTaskInput:
    """A request in this protocol's terms: the ``input`` object of a create."""

    prompt: str
    duration: int
    size: str | None = None
    resolution: str | None = None
    image_url: str | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {F_PROMPT: self.prompt}
        if self.image_url is not None:
            body[F_IMAGE_URLS] = [self.image_url]
        body[F_DURATION] = self.duration
        if self.size is not None:
            body[F_SIZE] = self.size
        if self.resolution is not None:
            body[F_RESOLUTION] = self.resolution
        return body


def generate_task_input(request: VideoRequest) -> GenerateTaskInput:
    """Translate ``request`` to this protocol, or raise ``RequestInvalid`` naming the field."""
    if request.model is not None and request.model != MODEL:
        raise RequestInvalid(
            f"generate_task has one model, {MODEL!r}; got model {request.model!r} (omit `model` or use {MODEL!r})",
            field="model",
        )
    if request.watermark is not None:
        raise RequestInvalid(
            "generate_task has no watermark option; omit `watermark`",
            field="watermark",
        )
    duration = DEFAULT_DURATION if request.duration is None else request.duration
    if duration not in DURATIONS:
        raise RequestInvalid(
            f"generate_task durations are {', '.join(map(str, DURATIONS))} seconds; got {duration}",
            field="duration",
        )
    resolution = request.resolution or DEFAULT_RESOLUTION
    if request.image_url is not None:
        if request.orientation is not None:
            raise RequestInvalid(
                "generate_task takes the orientation of an image-to-video from its image; omit `orientation`",
                field="orientation",
            )
        return GenerateTaskInput(
            prompt=request.prompt, duration=duration, resolution=resolution, image_url=str(request.image_url)
        )
    size = SIZES[(request.orientation or DEFAULT_ORIENTATION, resolution)]
    return GenerateTaskInput(prompt=request.prompt, duration=duration, size=size)


class GenerateTaskProvider(HttpProvider):
    """A provider speaking generate_task: callbacks when reelay has a URL, polling otherwise."""

    protocol = PROTOCOL
    supports_callbacks = True

    def capabilities(self) -> Capabilities:
        """Durations 4/8/12 s; text-to-video by size, image-to-video by resolution."""
        return Capabilities(
            protocol=PROTOCOL,
            callbacks=True,
            modes=["text-to-video", "image-to-video"],
            durations=list(DURATIONS),
            default_duration=DEFAULT_DURATION,
            resolutions=list(RESOLUTIONS),
            sizes=sorted(set(SIZES.values())),
            pro=True,
            notes=[
                f"always the {MODEL} model; `pro` changes nothing",
                "text-to-video: orientation + resolution choose the size (default portrait 720p)",
                "image-to-video: resolution 720p or 1080p; the image sets the orientation",
                "no watermark option",
                "result URLs expire after 15 days",
            ],
        )

    def validate(self, request: VideoRequest) -> None:
        """Raise ``RequestInvalid`` for anything generate_task cannot do."""
        generate_task_input(request)

    def create(self, request: VideoRequest, *, task_id: str, callback_url: str | None) -> CreateResult:
        """Create a sora-2-pro task: in callback mode when ``callback_url`` is given."""
        body: dict[str, Any] = {}
        if callback_url:
            body[F_REQUEST_TYPE] = REQUEST_TYPE_CALLBACK
            body[F_CALLBACK_URL] = callback_url
        else:
            body[F_REQUEST_TYPE] = REQUEST_TYPE_ASYNC
        body[F_PROVIDER] = ROUTING_PROVIDER
        body[F_INPUT] = generate_task_input(request).wire()
        payload = self._request(Call("POST", CREATE_PATH, safe=False), json_body=body)
        provider_task_id = as_mapping(as_mapping(payload).get(F_DATA)).get(F_TASK_ID)
        if not isinstance(provider_task_id, str) or not provider_task_id:
            raise ProviderProtocolError(
                f"provider {self.name} accepted the create but its answer has no {F_DATA}.{F_TASK_ID}",
                provider=self.name,
            )
        return CreateResult(provider_task_id=provider_task_id)

    def status(self, provider_task_id: str) -> ProviderStatus:
        """Ask the status endpoint; ``resultJson`` is parsed a second time."""
        payload = self._request(
            Call("GET", STATUS_PATH, safe=True, task_id=provider_task_id), params={F_TASK_ID: provider_task_id}
        )
        data = as_mapping(as_mapping(payload).get(F_DATA))
        if not data:
            raise ProviderProtocolError(
                f"provider {self.name} answered the status of {provider_task_id} without {F_DATA}", provider=self.name
            )
        raw_state = data.get(F_STATE)
        state = STATES.get(raw_state) if isinstance(raw_state, str) else None
        if state is None:
            raise ProviderProtocolError(
                f"provider {self.name} reported an unknown state {raw_state!r} for task {provider_task_id}",
                provider=self.name,
            )
        results: list[ResultRef] = []
        error_code: ErrorCode | None = None
        error_message: str | None = None
        if state is ProviderState.SUCCEEDED:
            results = [ResultRef(url=url) for url in self._result_urls(data.get(F_RESULT_JSON))]
        elif state is ProviderState.FAILED:
            fail_code = data.get(F_FAIL_CODE)
            error_code = FAIL_CODES.get(str(fail_code), ErrorCode.PROVIDER_FAILED)
            message = data.get(F_FAIL_MSG) or fail_code
            error_message = self.scrub(str(message)) if message else None
        return ProviderStatus(
            provider_task_id=str(data.get(F_TASK_ID) or provider_task_id),
            state=state,
            progress=100 if state is ProviderState.SUCCEEDED else as_progress(data.get(F_PROGRESS)),
            results=results,
            error_code=error_code,
            error_message=error_message,
            raw_state=raw_state,
        )

    def parse_callback(self, body: bytes) -> CallbackHint:
        """What a callback claims, wrapped ``{code, msg, data}`` or flat; garbage is an empty hint."""
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError, TypeError):
            return CallbackHint()
        data = as_mapping(document)
        if isinstance(data.get(F_DATA), Mapping):
            data = data[F_DATA]
        task_id = data.get(F_TASK_ID)
        state = data.get(F_STATE)
        return CallbackHint(
            provider_task_id=task_id if isinstance(task_id, str) and task_id else None,
            claimed_state=state if isinstance(state, str) and state else None,
        )

    # ----------------------------------------------------------------- wire details

    def _error_detail(self, payload: Mapping[str, Any]) -> ErrorDetail:
        code, message = payload.get(F_CODE), payload.get(F_MSG)
        return ErrorDetail(
            str(code) if code is not None else None, message if isinstance(message, str) and message else None
        )

    def _check_body(self, response: httpx.Response, payload: Any, call: Call) -> None:
        # A 2xx answer may still carry an error code in its body: trust the body then.
        code = as_mapping(payload).get(F_CODE)
        if response.is_success and isinstance(code, int) and not isinstance(code, bool) and code != OK_CODE:
            raise self._error_for_status(code, self._detail(payload), call, response)

    def _result_urls(self, result_json: Any) -> list[str]:
        """``resultUrls`` from ``resultJson``: a JSON string (parsed again) or, tolerated, an object."""
        document = result_json
        if isinstance(result_json, str):
            try:
                document = json.loads(result_json)
            except ValueError as exc:
                raise ProviderProtocolError(
                    f"provider {self.name} sent a {F_RESULT_JSON} that is not JSON", provider=self.name
                ) from exc
        urls = as_mapping(document).get(F_RESULT_URLS)
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list):
            return []
        return [url for url in urls if isinstance(url, str) and url]
