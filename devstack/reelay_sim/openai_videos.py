"""The openai_videos protocol (seed ``001``), served under ``/openai/sora``.

The credential is the raw ``Authorization`` value (no ``Bearer``; ``Bearer <licence>`` is refused).
Errors are ``{"error": {"message", "type", "code", "param"}}`` with the HTTP status. Choices the seed
leaves open, decided here:

- Models: ``sora_video`` (legacy, no suffixes: portrait, 10 s) and ``sora_video2`` with suffixes
  joined by ``-`` in any order: at most one of ``portrait``/``landscape``, at most one of
  ``15s``/``25s``, ``hd`` and ``pro`` at most once each, never ``hd`` with ``25s``. Anything else
  (including ``sora_image`` on a video endpoint) is a 400 ``invalid_model``. Defaults: portrait,
  10 s, standard definition. The video object's ``size``: 720x1280 / 1280x720, hd 1024x1792 /
  1792x1024; ``seconds`` is a string ("10", "15", "25").
- ``POST /v1/videos`` takes ``prompt`` and ``model`` (required), ``watermark`` (boolean, default
  false) and ``size`` ("WxH", optional: picks the orientation when the model names none).
- Status words: queued -> in_progress -> completed | failed; ``error`` is null unless failed,
  then ``{"code", "message"}`` with code ``content_policy_violation``, ``invalid_image`` or
  ``generation_failed``.
- Remix needs ``prompt`` and ``model`` and a *completed* parent of the same key (else 400; an
  unknown parent is a 404). The remix is a new task with ``remixed_from_video_id``.
- Content: 404 for an unknown video, 409 ``video_not_ready`` while it is not completed (also
  when it failed). Video results are not served under ``/files`` (API only, with the licence).
- Images (multipart or urlencoded form; JSON is a 400): ``model`` must be ``sora_image``, ``n``
  1-4 (default 1), ``size`` "WxH" chooses the aspect ratio (1:1, 3:2, 2:3); edits take one or
  more ``image[]`` (or ``image``) files that must be PNG, JPEG or WebP, and without ``size`` keep
  a PNG input's aspect. Refusals are 400 ``content_policy_violation``; ``[sim:fail]`` is a 500.
- Chat completions: ``messages`` (non-empty) and ``model`` (``sora_image`` or a video model);
  the last user message's text is the prompt. The answer is immediate: an image model answers
  ``![image](<png url>)``, a video model ``[video](<mp4 url>)`` for a completed task whose file is
  public under ``/files/openai_videos/``. ``stream: true`` sends the same as SSE chunks.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Request, Response

from reelay_sim import media
from reelay_sim.protocol import (
    ProtocolHandler,
    Route,
    directives,
    generation_seconds,
    new_id,
    plan_outcome,
    refused,
    retry_after_header,
)
from reelay_sim.state import (
    CONTENT_POLICY,
    FAILED,
    GENERATION_FAILED,
    INVALID_IMAGE,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Outcome,
    Task,
)
from reelay_sim.web import BadRequest, json_response, read_json_object, sse_response, video_response

IMAGE_MODEL = "sora_image"
STATES = {PENDING: "queued", RUNNING: "in_progress", SUCCEEDED: "completed", FAILED: "failed"}
FAIL_CODES = {
    CONTENT_POLICY: "content_policy_violation",
    INVALID_IMAGE: "invalid_image",
    GENERATION_FAILED: "generation_failed",
}
FAIL_MESSAGES = {
    CONTENT_POLICY: "Your request was blocked by our content policy.",
    INVALID_IMAGE: "The input image could not be processed.",
    GENERATION_FAILED: "Video generation failed. Please try again.",
}
ERROR_TYPES = {401: "invalid_request_error", 429: "requests"}
ERROR_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded"}
ERROR_MESSAGES = {
    401: "Invalid licence: set the Authorization header to your licence",
    404: "Not found",
    429: "Rate limit reached, please retry later",
}
REFUSAL = "Your request was rejected as a result of our safety system."
MAX_IMAGES = 4
MAX_UPLOAD = 10 * 1024 * 1024


class BadModel(BadRequest):
    """A model string the provider does not know (a 400 ``invalid_model``)."""


@dataclass(frozen=True)
class VideoModel:
    """A parsed video model string."""

    name: str
    orientation: str | None
    seconds: int
    hd: bool
    pro: bool

    def size(self, orientation: str) -> str:
        if self.hd:
            return "1024x1792" if orientation == "portrait" else "1792x1024"
        return "720x1280" if orientation == "portrait" else "1280x720"


def parse_model(model: Any) -> VideoModel:
    """Check a video model string against the seed's rules; ``BadModel`` when it breaks one."""
    if not isinstance(model, str) or not model:
        raise BadModel("model is required")
    if model == "sora_video":
        return VideoModel(model, None, 10, hd=False, pro=False)
    if model == IMAGE_MODEL:
        raise BadModel("sora_image is an image model; use /v1/images/generations")
    base, *suffixes = model.split("-")
    if base != "sora_video2":
        raise BadModel(f"unknown model {model!r}")
    known = {"portrait", "landscape", "hd", "15s", "25s", "pro"}
    unknown = [s for s in suffixes if s not in known]
    if unknown:
        raise BadModel(f"unknown model option {unknown[0]!r} in {model!r}")
    if len(set(suffixes)) != len(suffixes):
        raise BadModel(f"repeated model option in {model!r}")
    orientations = [s for s in suffixes if s in ("portrait", "landscape")]
    durations = [s for s in suffixes if s in ("15s", "25s")]
    if len(orientations) > 1:
        raise BadModel(f"{model!r} names two orientations")
    if len(durations) > 1:
        raise BadModel(f"{model!r} names two durations")
    if "hd" in suffixes and "25s" in suffixes:
        raise BadModel("hd is not available for 25s videos")
    seconds = int(durations[0][:-1]) if durations else 10
    return VideoModel(model, orientations[0] if orientations else None, seconds, "hd" in suffixes, "pro" in suffixes)


def _png_aspect(data: bytes) -> str | None:
    if media.sniff_image(data) != "png" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return "1:1" if width == height else ("3:2" if width > height else "2:3")


class OpenAIVideos(ProtocolHandler):
    """Videos (create, status, remix, content), images (generations, edits) and chat."""

    name = "openai_videos"
    prefix = "/openai/sora"

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/v1/videos", "create", self.create),
            Route("GET", "/v1/videos/<video_id>", "status", self.status),
            Route("POST", "/v1/videos/<video_id>/remix", "remix", self.remix),
            Route("GET", "/v1/videos/<video_id>/content", "content", self.content),
            Route("POST", "/v1/images/generations", "images", self.image_generations),
            Route("POST", "/v1/images/edits", "images", self.image_edits),
            Route("POST", "/v1/chat/completions", "chat", self.chat),
        ]

    def credential(self, request: Request) -> str | None:
        return request.headers.get("Authorization", "").strip() or None

    def error(
        self, status: int, message: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> Response:
        kind = "server_error" if status >= 500 else ERROR_TYPES.get(status, "invalid_request_error")
        body = {
            "error": {
                "message": message or ERROR_MESSAGES.get(status, "The server had an error processing your request."),
                "type": kind,
                "code": code or ERROR_CODES.get(status, "internal_error" if status >= 500 else "invalid_request"),
                "param": None,
            }
        }
        return json_response(body, status, retry_after_header(status, retry_after))

    # --- videos --------------------------------------------------------------------------------

    def create(self, request: Request, key: str) -> Response:
        try:
            body = read_json_object(request)
            prompt = self._prompt(body.get("prompt"))
            model = parse_model(body.get("model"))
            watermark = body.get("watermark", False)
            if not isinstance(watermark, bool):
                raise BadRequest("watermark must be a boolean")
            orientation = model.orientation or self._orientation(body.get("size"))
        except BadModel as exc:
            return self.error(400, str(exc), "invalid_model")
        except BadRequest as exc:
            return self.error(400, str(exc))
        params = {"model": model.name, "watermark": watermark, "orientation": orientation}
        return self._start(key, prompt, model, params, remixed_from=None)

    def remix(self, request: Request, key: str, video_id: str) -> Response:
        parent = self._own(video_id, key)
        if parent is None:
            return self.error(404, f"video {video_id} not found")
        try:
            body = read_json_object(request)
            prompt = self._prompt(body.get("prompt"))
            model = parse_model(body.get("model"))
        except BadModel as exc:
            return self.error(400, str(exc), "invalid_model")
        except BadRequest as exc:
            return self.error(400, str(exc))
        if parent.state != SUCCEEDED:
            return self.error(400, f"video {video_id} is not completed (status {STATES[parent.state]})")
        orientation = model.orientation or parent.params.get("orientation") or "portrait"
        params = {"model": model.name, "watermark": parent.params.get("watermark", False), "orientation": orientation}
        return self._start(key, prompt, model, params, remixed_from=parent.id)

    def _start(
        self, key: str, prompt: str, model: VideoModel, params: dict[str, Any], remixed_from: str | None
    ) -> Response:
        knobs = self.knobs
        params.update(seconds=model.seconds, hd=model.hd, pro=model.pro, size=model.size(params["orientation"]))
        state = self.ctx.state
        fault = self.create_fault(prompt)
        refusal = self.create_refusal(fault)
        if refusal is not None:
            return refusal
        with state.lock:
            fail = state.take_fail_next(self.name)
            if fail and not knobs.fail_next_accepted:
                return self.error(500)
            task = self.start_task(
                Task(
                    protocol=self.name,
                    id=new_id("video_"),
                    key=key,
                    prompt=prompt,
                    params=params,
                    generation_seconds=generation_seconds(knobs, prompt),
                    outcome=plan_outcome(knobs, prompt),
                    public=False,
                    remixed_from=remixed_from,
                )
            )
            # The create answer always shows the job as just queued, even when it ends at once.
            answer = self.render(dataclasses.replace(task, state=PENDING, progress=0, completed_at=None))
        self.hang(fault)
        if fail or fault.accepted_error is not None:
            return self.error(fault.accepted_error or 500)
        return json_response(answer)

    def status(self, request: Request, key: str, video_id: str) -> Response:
        task = self._own(video_id, key)
        if task is None:
            return self.error(404, f"video {video_id} not found")
        return self.status_refusal(task) or json_response(self.render(task))

    def content(self, request: Request, key: str, video_id: str) -> Response:
        task = self._own(video_id, key)
        if task is None:
            return self.error(404, f"video {video_id} not found")
        if task.state != SUCCEEDED or task.video_bytes is None:
            return self.error(409, f"video {video_id} is {STATES[task.state]}, not completed", "video_not_ready")
        fault = self.download_fault(task)
        if fault.gone:
            return self.error(404, f"content of video {video_id} not found")
        return video_response(
            request,
            task.seed,
            task.video_bytes,
            self.knobs,
            self.ctx.stop,
            truncate=fault.truncate,
            bytes_per_second=fault.bytes_per_second,
        )

    def render(self, task: Task) -> dict[str, Any]:
        error = None
        if task.state == FAILED:
            kind = task.outcome.kind or GENERATION_FAILED
            error = {
                "code": task.outcome.code or FAIL_CODES.get(kind, FAIL_CODES[GENERATION_FAILED]),
                "message": task.outcome.message or FAIL_MESSAGES.get(kind, FAIL_MESSAGES[GENERATION_FAILED]),
            }
        return {
            "id": task.id,
            "object": "video",
            "model": task.params["model"],
            "status": STATES[task.state],
            "progress": task.progress,
            "created_at": int(task.created_at),
            "completed_at": None if task.completed_at is None else int(task.completed_at),
            "seconds": str(task.params["seconds"]),
            "size": task.params["size"],
            "remixed_from_video_id": task.remixed_from,
            "error": error,
        }

    # --- images --------------------------------------------------------------------------------

    def image_generations(self, request: Request, key: str) -> Response:
        return self._images(request, uploads=None)

    def image_edits(self, request: Request, key: str) -> Response:
        uploads = request.files.getlist("image[]") + request.files.getlist("image")
        return self._images(request, uploads=uploads)

    def _images(self, request: Request, uploads: list[FileStorage] | None) -> Response:
        try:
            if request.mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
                raise BadRequest("send the request as multipart/form-data")
            form = request.form
            prompt = self._prompt(form.get("prompt"))
            if form.get("model") != IMAGE_MODEL:
                raise BadRequest(f"model must be {IMAGE_MODEL}, got {form.get('model')!r}")
            count = self._count(form.get("n"))
            size = form.get("size") or None
            aspect = media.aspect_for(size) if size else "1:1"
            if uploads is not None:
                aspect = self._check_uploads(uploads) if size is None else aspect
        except (BadRequest, ValueError) as exc:
            return self.error(400, str(exc))
        if refused(self.knobs, prompt):
            return self.error(400, REFUSAL, "content_policy_violation")
        if "fail" in directives(prompt):
            return self.error(500, "Image generation failed.")
        urls = self._make_images(count, aspect)
        return json_response({"created": int(time.time()), "data": [{"url": url} for url in urls]})

    @staticmethod
    def _count(raw: str | None) -> int:
        if raw in (None, ""):
            return 1
        try:
            count = int(raw)
        except ValueError as exc:
            raise BadRequest(f"n must be an integer from 1 to {MAX_IMAGES}") from exc
        if not 1 <= count <= MAX_IMAGES:
            raise BadRequest(f"n must be from 1 to {MAX_IMAGES}, got {count}")
        return count

    @staticmethod
    def _check_uploads(uploads: list[FileStorage]) -> str:
        """Check uploaded images; the aspect ratio of the first one (1:1 when unknown)."""
        if not uploads:
            raise BadRequest("image[] is required: one or more image files")
        aspect = None
        for upload in uploads:
            data = upload.stream.read(MAX_UPLOAD + 1)
            if len(data) > MAX_UPLOAD:
                raise BadRequest(f"image {upload.filename!r} is larger than 10 MB")
            if media.sniff_image(data) is None:
                raise BadRequest(f"image {upload.filename!r} is not a PNG, JPEG or WebP")
            aspect = aspect or _png_aspect(data)
        return aspect or "1:1"

    def _make_images(self, count: int, aspect: str) -> list[str]:
        ids = [new_id("img_") for _ in range(count)]
        with self.ctx.state.lock:
            for image_id in ids:
                self.ctx.state.images[image_id] = aspect
        return [self.ctx.file_url("images", f"{image_id}.png") for image_id in ids]

    # --- chat ----------------------------------------------------------------------------------

    def chat(self, request: Request, key: str) -> Response:
        try:
            body = read_json_object(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise BadRequest("messages must be a non-empty array of message objects")
            model_name = body.get("model")
            video = None if model_name == IMAGE_MODEL else parse_model(model_name)
            stream = body.get("stream", False)
            if not isinstance(stream, bool):
                raise BadRequest("stream must be a boolean")
            prompt = self._prompt(self._last_user_text(messages))
        except BadModel as exc:
            return self.error(400, str(exc), "invalid_model")
        except BadRequest as exc:
            return self.error(400, str(exc))
        if refused(self.knobs, prompt):
            return self.error(400, REFUSAL, "content_policy_violation")
        if "fail" in directives(prompt):
            return self.error(500, "Generation failed.")
        if video is None:
            content = f"![image]({self._make_images(1, '1:1')[0]})"
        else:
            content = f"[video]({self._chat_video(key, prompt, video)})"
        completion_id = new_id("chatcmpl-")
        created = int(time.time())
        if not stream:
            return json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model_name,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        return sse_response(
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "Generating... 100%\n\n"}),
                chunk({"content": content}),
                chunk({}, "stop"),
            ]
        )

    def _chat_video(self, key: str, prompt: str, model: VideoModel) -> str:
        orientation = model.orientation or "portrait"
        params = {
            "model": model.name,
            "watermark": False,
            "orientation": orientation,
            "seconds": model.seconds,
            "hd": model.hd,
            "pro": model.pro,
            "size": model.size(orientation),
            "via": "chat",
        }
        task = Task(
            protocol=self.name,
            id=new_id("video_"),
            key=key,
            prompt=prompt,
            params=params,
            generation_seconds=0.0,
            outcome=Outcome(),
        )
        self.start_task(task)
        return self.ctx.file_url(self.name, f"{task.id}.mp4")

    # --- helpers -------------------------------------------------------------------------------

    def _own(self, video_id: str, key: str) -> Task | None:
        task = self.ctx.state.task(self.name, video_id)
        return task if task is not None and task.key == key else None

    @staticmethod
    def _prompt(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise BadRequest("prompt is required")
        return value

    @staticmethod
    def _orientation(size: Any) -> str:
        if size is None:
            return "portrait"
        if not isinstance(size, str):
            raise BadRequest("size must look like 1280x720")
        try:
            width, height = media.parse_size(size)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        return "landscape" if width > height else "portrait"

    @staticmethod
    def _last_user_text(messages: list[dict[str, Any]]) -> str:
        for message in reversed(messages):
            if message.get("role", "user") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
                )
        return ""
