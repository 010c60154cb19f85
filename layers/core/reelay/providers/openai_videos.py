"""The openai_videos protocol (seed 001): OpenAI-Videos-shaped tasks, remix and images.

The licence goes raw in ``Authorization`` (no prefix: ``auth_prefix`` ""). A video's options
are suffixes of its model string, ``sora_video2`` plus ``portrait``/``landscape``, ``hd``,
``15s``/``25s`` and ``pro`` joined with ``-`` (the seed's examples:
``sora_video2-landscape-hd``, ``sora_video2-hd-portrait-15s``).

Model rules (PROVIDERS.md's reading of the seed): at most one orientation, at most one
duration (no suffix means 10 s), ``hd`` never with ``25s``; ``hd`` is reelay's 1080p and its
absence 720p. A request's fields compose the model; an explicit ``model`` is parsed by the
same rules and must agree with every field the request also sets (its missing suffixes
mean the protocol's defaults: portrait, 720p, 10 s, not pro). The legacy ``sora_video``
takes no suffixes. There is no image-to-video: ``image_url`` is refused.

A finished video's bytes are at ``{base}/v1/videos/{id}/content``, which needs the licence:
``result_headers`` gives it for this provider's own origin only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from reelay.errors import ProviderProtocolError, RequestInvalid
from reelay.models import ErrorCode, ImageRequest, VideoRequest
from reelay.providers.base import (
    Capabilities,
    CreateResult,
    ImageInput,
    ProviderState,
    ProviderStatus,
    ResultRef,
)
from reelay.providers.http import Call, ErrorDetail, FormPart, HttpProvider, as_mapping, as_progress

PROTOCOL = "openai_videos"
VIDEOS_PATH = "/v1/videos"
VIDEO_PATH = "/v1/videos/{video_id}"
REMIX_PATH = "/v1/videos/{video_id}/remix"
CONTENT_PATH = "/v1/videos/{video_id}/content"
IMAGE_GENERATIONS_PATH = "/v1/images/generations"
IMAGE_EDITS_PATH = "/v1/images/edits"

# Request fields.
F_PROMPT = "prompt"
F_MODEL = "model"
F_WATERMARK = "watermark"
F_N = "n"
F_SIZE = "size"
F_IMAGE_FILES = "image[]"

# Response fields.
F_ID = "id"
F_STATUS = "status"
F_PROGRESS = "progress"
F_ERROR = "error"
F_CODE = "code"
F_MESSAGE = "message"
F_TYPE = "type"
F_DATA = "data"
F_URL = "url"
ID_KEYS = (F_ID, "video_id", "task_id")

STATES: Mapping[str, ProviderState] = {
    "queued": ProviderState.PENDING,
    "in_progress": ProviderState.RUNNING,
    "completed": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
}
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation", "moderation_blocked", "content_filter"})
VIDEO_CONTENT_TYPE = "video/mp4"

# Models and their suffixes.
VIDEO_MODEL = "sora_video2"
LEGACY_VIDEO_MODEL = "sora_video"
IMAGE_MODEL = "sora_image"
SEPARATOR = "-"
ORIENTATION_SUFFIXES: Mapping[str, str] = {"portrait": "portrait", "landscape": "landscape"}
HD_SUFFIX = "hd"
PRO_SUFFIX = "pro"
DURATION_SUFFIXES: Mapping[int, str] = {15: "15s", 25: "25s"}  # 10 s is the default: no suffix
DURATIONS = (10, 15, 25)
DEFAULT_DURATION = 10
DEFAULT_ORIENTATION = "portrait"
HD_MAX_DURATION = 15

IMAGE_COUNT_RANGE = (1, 4)
SIZE_PATTERN = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")


@dataclass(frozen=True)
class VideoModel:
    """A ``sora_video2`` model's options; ``name`` renders the wire string."""

    orientation: str | None = None
    hd: bool = False
    duration: int = DEFAULT_DURATION
    pro: bool = False

    @property
    def name(self) -> str:
        suffixes = [ORIENTATION_SUFFIXES[self.orientation]] if self.orientation else []
        if self.hd:
            suffixes.append(HD_SUFFIX)
        if self.duration in DURATION_SUFFIXES:
            suffixes.append(DURATION_SUFFIXES[self.duration])
        if self.pro:
            suffixes.append(PRO_SUFFIX)
        return SEPARATOR.join([VIDEO_MODEL, *suffixes])


def _check_hd_duration(model: VideoModel, field: str) -> None:
    if model.hd and model.duration > HD_MAX_DURATION:
        raise RequestInvalid(
            f"openai_videos has no 1080p (hd) for {model.duration} s videos; hd is for 10 or 15 s",
            field=field,
        )


def parse_video_model(model: str) -> VideoModel:
    """Parse a ``sora_video2[-suffix...]`` string by the protocol's rules (``RequestInvalid`` if not)."""
    base, *suffixes = model.strip().split(SEPARATOR)
    if base == IMAGE_MODEL:
        raise RequestInvalid(f"{IMAGE_MODEL!r} makes images, not videos", field="model")
    if base == LEGACY_VIDEO_MODEL and not suffixes:
        return VideoModel()
    if base != VIDEO_MODEL:
        raise RequestInvalid(
            f"openai_videos video models are {VIDEO_MODEL!r} with suffixes, or {LEGACY_VIDEO_MODEL!r}; got {model!r}",
            field="model",
        )
    orientation: str | None = None
    duration: int | None = None
    hd = pro = False
    seen: set[str] = set()
    by_duration = {suffix: seconds for seconds, suffix in DURATION_SUFFIXES.items()}
    allowed = [*ORIENTATION_SUFFIXES.values(), HD_SUFFIX, *DURATION_SUFFIXES.values(), PRO_SUFFIX]
    for suffix in suffixes:
        if suffix in seen:
            raise RequestInvalid(f"model {model!r} repeats {suffix!r}", field="model")
        seen.add(suffix)
        if suffix in ORIENTATION_SUFFIXES.values():
            if orientation is not None:
                raise RequestInvalid(f"model {model!r} has two orientations; use one", field="model")
            orientation = suffix
        elif suffix in by_duration:
            if duration is not None:
                raise RequestInvalid(f"model {model!r} has two durations; use one", field="model")
            duration = by_duration[suffix]
        elif suffix == HD_SUFFIX:
            hd = True
        elif suffix == PRO_SUFFIX:
            pro = True
        else:
            raise RequestInvalid(
                f"model {model!r}: unknown suffix {suffix!r}; suffixes are {', '.join(allowed)}", field="model"
            )
    parsed = VideoModel(orientation=orientation, hd=hd, duration=duration or DEFAULT_DURATION, pro=pro)
    _check_hd_duration(parsed, "model")
    return parsed


def video_model(request: VideoRequest) -> str:
    """The model string for ``request``, or ``RequestInvalid`` naming the field at fault."""
    if request.image_url is not None:
        raise RequestInvalid(
            "openai_videos cannot make a video from an image; omit `image_url` or choose another provider",
            field="image_url",
        )
    if request.duration is not None and request.duration not in DURATIONS:
        raise RequestInvalid(
            f"openai_videos durations are {', '.join(map(str, DURATIONS))} seconds; got {request.duration}",
            field="duration",
        )
    if request.model is None:
        composed = VideoModel(
            orientation=request.orientation,
            hd=request.resolution == "1080p",
            duration=request.duration or DEFAULT_DURATION,
            pro=request.pro,
        )
        _check_hd_duration(composed, "resolution")
        return composed.name
    parsed = parse_video_model(request.model)
    conflicts = []
    if request.orientation is not None and request.orientation != (parsed.orientation or DEFAULT_ORIENTATION):
        conflicts.append(f"orientation {request.orientation}")
    if request.resolution is not None and (request.resolution == "1080p") != parsed.hd:
        conflicts.append(f"resolution {request.resolution}")
    if request.duration is not None and request.duration != parsed.duration:
        conflicts.append(f"duration {request.duration}")
    if request.pro and not parsed.pro:
        conflicts.append("pro")
    if conflicts:
        raise RequestInvalid(
            f"model {request.model!r} contradicts {', '.join(conflicts)}; set the model or those fields, not both",
            field="model",
        )
    return request.model.strip()


class OpenAIVideosProvider(HttpProvider):
    """A provider speaking openai_videos: video tasks, remix and synchronous images."""

    protocol = PROTOCOL
    supports_callbacks = False

    def is_content_refusal(self, detail: ErrorDetail) -> bool:
        return str(detail.code or "").lower() in CONTENT_POLICY_CODES

    def capabilities(self) -> Capabilities:
        """10/15/25 s text-to-video, remix and images; options are model suffixes."""
        return Capabilities(
            protocol=PROTOCOL,
            callbacks=False,
            modes=["text-to-video", "remix", "images"],
            durations=list(DURATIONS),
            default_duration=DEFAULT_DURATION,
            resolutions=["720p", "1080p"],
            pro=True,
            notes=[
                f"model: {VIDEO_MODEL} with suffixes portrait|landscape, hd, 15s|25s, pro (composed from the fields)",
                "1080p is the hd suffix, never with 25 s",
                "no image-to-video",
                "watermark off unless `watermark` is true",
                "images: n 1-4, size WxH",
            ],
        )

    def validate(self, request: VideoRequest) -> None:
        """Raise ``RequestInvalid`` for anything openai_videos cannot do."""
        video_model(request)

    def create(self, request: VideoRequest, *, task_id: str, callback_url: str | None) -> CreateResult:
        """Create a video task (paid) with the composed model."""
        body = {
            F_PROMPT: request.prompt,
            F_MODEL: video_model(request),
            F_WATERMARK: bool(request.watermark),
        }
        payload = self._request(Call("POST", VIDEOS_PATH, safe=False), json_body=body)
        return self._created(payload)

    def remix(self, parent_provider_task_id: str, request: VideoRequest) -> CreateResult:
        """Create a new task from a finished video (paid), with ``request``'s prompt and model.

        The model follows the same rules as a create (composed from the fields, or an
        explicit ``model`` that agrees with them).
        """
        body = {F_PROMPT: request.prompt, F_MODEL: video_model(request)}
        path = REMIX_PATH.format(video_id=quote(parent_provider_task_id, safe=""))
        payload = self._request(Call("POST", path, safe=False, task_id=parent_provider_task_id), json_body=body)
        return self._created(payload)

    def status(self, provider_task_id: str) -> ProviderStatus:
        """Ask ``GET /v1/videos/{id}``; a completed video's result is its content URL."""
        path = VIDEO_PATH.format(video_id=quote(provider_task_id, safe=""))
        video = as_mapping(self._request(Call("GET", path, safe=True, task_id=provider_task_id)))
        raw_state = video.get(F_STATUS)
        state = STATES.get(raw_state) if isinstance(raw_state, str) else None
        if state is None:
            raise ProviderProtocolError(
                f"provider {self.name} reported an unknown status {raw_state!r} for video {provider_task_id}",
                provider=self.name,
            )
        video_id = _video_id(video) or provider_task_id
        results: list[ResultRef] = []
        error_code: ErrorCode | None = None
        error_message: str | None = None
        if state is ProviderState.SUCCEEDED:
            results = [ResultRef(url=self.content_url(video_id), content_type=VIDEO_CONTENT_TYPE)]
        elif state is ProviderState.FAILED:
            error_code, error_message = self._failure(video.get(F_ERROR))
        return ProviderStatus(
            provider_task_id=video_id,
            state=state,
            progress=100 if state is ProviderState.SUCCEEDED else as_progress(video.get(F_PROGRESS)),
            results=results,
            error_code=error_code,
            error_message=error_message,
            raw_state=raw_state,
        )

    def content_url(self, provider_task_id: str) -> str:
        """Where a finished video's bytes are (needs the licence: see ``result_headers``)."""
        return self.base_url + CONTENT_PATH.format(video_id=quote(provider_task_id, safe=""))

    def result_headers(self, url: str) -> dict[str, str]:
        """The licence for this provider's own origin (one of its requests); nothing for any other host."""
        return self.download_headers(url)

    # ----------------------------------------------------------------- images

    def validate_images(self, request: ImageRequest) -> None:
        """Raise ``RequestInvalid`` for an image request the protocol cannot do (n 1-4, size WxH)."""
        if request.model is not None and request.model != IMAGE_MODEL:
            raise RequestInvalid(
                f"openai_videos makes images with model {IMAGE_MODEL!r}; got {request.model!r}", field="model"
            )
        low, high = IMAGE_COUNT_RANGE
        if isinstance(request.n, bool) or not low <= request.n <= high:
            raise RequestInvalid(f"n must be a whole number from {low} to {high}; got {request.n!r}", field="n")
        if request.size is not None and not SIZE_PATTERN.match(request.size):
            raise RequestInvalid(
                f"size must be WIDTHxHEIGHT in positive whole pixels, e.g. 1024x1024; got {request.size!r}",
                field="size",
            )

    def generate_images(self, request: ImageRequest, images: list[ImageInput]) -> list[ResultRef]:
        """Make images synchronously (paid): generations, or edits of ``images`` when given."""
        self.validate_images(request)
        for image in images:
            if not image.content:
                raise RequestInvalid(f"image {image.filename!r} is empty", field="images")
        # Fields as multipart parts without a filename: the seed asks for multipart/form-data.
        form: list[FormPart] = [
            (F_PROMPT, (None, request.prompt)),
            (F_MODEL, (None, IMAGE_MODEL)),
            (F_N, (None, str(request.n))),
        ]
        if request.size is not None:
            form.append((F_SIZE, (None, request.size)))
        path = IMAGE_GENERATIONS_PATH
        if images:
            path = IMAGE_EDITS_PATH
            form.extend((F_IMAGE_FILES, (image.filename, image.content, image.content_type)) for image in images)
        payload = self._request(Call("POST", path, safe=False), files=form)
        entries = as_mapping(payload).get(F_DATA)
        urls = [as_mapping(entry).get(F_URL) for entry in entries] if isinstance(entries, list) else []
        results = [ResultRef(url=url) for url in urls if isinstance(url, str) and url]
        if not results:
            raise ProviderProtocolError(f"provider {self.name} answered {path} without image URLs", provider=self.name)
        return results

    # ----------------------------------------------------------------- wire details

    def _error_detail(self, payload: Mapping[str, Any]) -> ErrorDetail:
        error = payload.get(F_ERROR)
        if isinstance(error, Mapping):
            code, message = error.get(F_CODE) or error.get(F_TYPE), error.get(F_MESSAGE)
            return ErrorDetail(
                str(code) if code is not None else None, message if isinstance(message, str) and message else None
            )
        return super()._error_detail(payload)

    def _created(self, payload: Any) -> CreateResult:
        video = as_mapping(payload)
        video_id = _video_id(video)
        if video_id is None:
            raise ProviderProtocolError(
                f"provider {self.name} accepted the video but its answer has no {F_ID}", provider=self.name
            )
        raw_state = video.get(F_STATUS)
        state = STATES.get(raw_state) if isinstance(raw_state, str) else None
        return CreateResult(provider_task_id=video_id, initial_state=state or ProviderState.PENDING)

    def _failure(self, error: Any) -> tuple[ErrorCode, str | None]:
        if isinstance(error, Mapping):
            code, message = error.get(F_CODE), error.get(F_MESSAGE)
        else:
            code, message = None, error
        mapped = ErrorCode.CONTENT_POLICY if str(code).lower() in CONTENT_POLICY_CODES else ErrorCode.PROVIDER_FAILED
        text = message if isinstance(message, str) and message else (str(code) if code else None)
        return mapped, self.scrub(text) if text else None


def _video_id(video: Mapping[str, Any]) -> str | None:
    for key in ID_KEYS:
        value = video.get(key)
        if isinstance(value, str) and value:
            return value
    return None
