"""The generate_task protocol (seed ``002``), served under ``/generate-task``.

Wire format as agreed in wire.md. Choices the seed leaves open, decided here:

- ``request_type`` is required (``async`` | ``callback``); ``callback_url`` must be an http(s) URL
  when it is ``callback`` (an ``async`` task never calls back, even with a URL).
- ``provider`` may be omitted (recorded as absent); any value but ``official`` is a 400.
- ``input.duration`` is required and must be the JSON integer 4, 8 or 12.
- Text-to-video takes ``size`` (default ``720*1280``) and refuses ``resolution``; image-to-video
  (a non-empty ``image_urls`` list of 1-10 http(s) URLs) takes ``resolution`` (default ``720p``)
  and refuses ``size``.
- Status words: pending -> processing -> success | failed. ``resultJson`` only on success,
  ``failCode``/``failMsg`` only on failure; ``completeTime``/``costTime`` are null until the end.
  Failure codes: ``CONTENT_VIOLATION``, ``INVALID_IMAGE_URL``, ``GENERATION_FAILED`` (generic).
- Tasks belong to the key that created them: another key's task id is a 404.
- Rate limit: every authenticated request (create and status) counts against the key's
  ``rate_limit_per_minute`` sliding 60 s window; refused requests do not count. ``Retry-After``
  says when the oldest counted request leaves the window. A create while ``max_concurrent``
  tasks of the key are unfinished is a 429 whose ``Retry-After`` is when the first is due.
  Both are counted per key (``SimState.limit_counts``: 429s of each kind, the most unfinished
  tasks and the most accepted requests in one window), in ``GET /_sim/counters`` as ``limits``.
- Callbacks: POSTed JSON, the status response's wrapped shape (see ``callbacks.py``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from werkzeug.wrappers import Request, Response

from reelay_sim.protocol import (
    ProtocolHandler,
    Route,
    bearer,
    check_image_urls,
    generation_seconds,
    is_http_url,
    new_id,
    plan_outcome,
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
    Task,
)
from reelay_sim.web import BadRequest, json_response, read_json_object

MODEL = "sora-2-pro"
DURATIONS = (4, 8, 12)
SIZES = ("720*1280", "1280*720", "1024*1792", "1792*1024")
RESOLUTIONS = ("720p", "1080p")
MAX_IMAGES = 10

STATES = {PENDING: "pending", RUNNING: "processing", SUCCEEDED: "success", FAILED: "failed"}
FAIL_CODES = {
    CONTENT_POLICY: "CONTENT_VIOLATION",
    INVALID_IMAGE: "INVALID_IMAGE_URL",
    GENERATION_FAILED: "GENERATION_FAILED",
}
FAIL_MESSAGES = {
    CONTENT_POLICY: "Content violates safety guidelines",
    INVALID_IMAGE: "Cannot access provided image URL",
    GENERATION_FAILED: "Video generation failed, please try again",
}
ERROR_MESSAGES = {
    400: "Invalid parameters",
    401: "Invalid or missing API Key",
    404: "task not found",
    429: "Rate limit exceeded",
}


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


class GenerateTask(ProtocolHandler):
    """``POST .../generateTask/sora-2-pro`` and ``GET .../statusTask/sora-2-pro``."""

    name = "generate_task"
    prefix = "/generate-task"
    callbacks = True

    def routes(self) -> list[Route]:
        return [
            Route("POST", f"/api/v1/generateTask/{MODEL}", "create", self.create),
            Route("GET", f"/api/v1/statusTask/{MODEL}", "status", self.status),
        ]

    def credential(self, request: Request) -> str | None:
        return bearer(request)

    def error(
        self, status: int, message: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> Response:
        text = message or ERROR_MESSAGES.get(status, "Internal server error")
        return json_response({"code": status, "msg": text}, status, retry_after_header(status, retry_after))

    def before(self, request: Request, key: str, kind: str) -> Response | None:
        wait = self.ctx.state.take_rate(self.name, key, self.knobs.rate_limit_per_minute)
        if wait:
            return self.error(429, "Rate limit exceeded", retry_after=wait)
        return None

    # --- endpoints -----------------------------------------------------------------------------

    def create(self, request: Request, key: str) -> Response:
        try:
            params = self._validate(read_json_object(request))
        except BadRequest as exc:
            return self.error(400, str(exc))
        knobs = self.knobs
        image_urls: list[str] = params.get("image_urls") or []
        image_error = check_image_urls(image_urls) if knobs.fetch_images and image_urls else None
        prompt = params.pop("prompt")
        state = self.ctx.state
        with state.lock:
            if state.active_count(self.name, key) >= knobs.max_concurrent:
                state.note_concurrency_refusal(self.name, key)
                wait = state.earliest_finish(self.name, key)
                return self.error(429, f"Concurrent task limit exceeded ({knobs.max_concurrent})", retry_after=wait)
            fault = self.create_fault(prompt)
            refusal = self.create_refusal(fault)
            if refusal is not None:
                return refusal
            fail = state.take_fail_next(self.name)
            if fail and not knobs.fail_next_accepted:
                return self.error(500, "Internal server error")
            task = self.start_task(
                Task(
                    protocol=self.name,
                    id=new_id("gt_"),
                    key=key,
                    prompt=prompt,
                    params=params,
                    generation_seconds=generation_seconds(knobs, prompt),
                    outcome=plan_outcome(knobs, prompt, image_error=image_error),
                    callback_url=params["callback_url"] if params["request_type"] == "callback" else None,
                )
            )
            state.note_in_flight(self.name, key)
        self.hang(fault)
        if fail or fault.accepted_error is not None:
            return self.error(fault.accepted_error or 500, "Internal server error")
        return json_response({"code": 200, "msg": "success", "data": {"taskId": task.id}})

    def status(self, request: Request, key: str) -> Response:
        task_id = request.args.get("taskId", "").strip()
        if not task_id:
            return self.error(400, "taskId is required")
        task = self.ctx.state.task(self.name, task_id)
        if task is None or task.key != key:
            return self.error(404, "task not found")
        return self.status_refusal(task) or json_response(self.wrap(self.render(task)))

    # --- wire shapes ---------------------------------------------------------------------------

    def render(self, task: Task) -> dict[str, Any]:
        return self.render_with(task, self.knobs.status_result_url or self.ctx.file_url(self.name, f"{task.id}.mp4"))

    def render_with(self, task: Task, result_url: str) -> dict[str, Any]:
        """The status ``data`` object, with ``result_url`` as the result on success."""
        created, completed = _ms(task.created_at), _ms(task.completed_at)
        data: dict[str, Any] = {
            "taskId": task.id,
            "state": STATES[task.state],
            "progress": task.progress,
            "createTime": created,
            "completeTime": completed,
            "costTime": None if completed is None or created is None else completed - created,
        }
        if task.state == SUCCEEDED:
            data["resultJson"] = json.dumps({"resultUrls": [result_url]})
        elif task.state == FAILED:
            kind = task.outcome.kind or GENERATION_FAILED
            data["failCode"] = task.outcome.code or FAIL_CODES.get(kind, FAIL_CODES[GENERATION_FAILED])
            data["failMsg"] = task.outcome.message or FAIL_MESSAGES.get(kind, FAIL_MESSAGES[GENERATION_FAILED])
        return data

    @staticmethod
    def wrap(data: dict[str, Any]) -> dict[str, Any]:
        return {"code": 200, "msg": "success", "data": data}

    def callback_body(self, task: Task, result_url: str | None = None) -> dict[str, Any]:
        """What a callback for ``task`` carries (``result_url`` overrides the real one)."""
        real = self.knobs.status_result_url or self.ctx.file_url(self.name, f"{task.id}.mp4")
        return self.wrap(self.render_with(task, result_url or real))

    def stale_body(self, task: Task) -> dict[str, Any]:
        """An out-of-date 'processing' callback for a task that has already ended."""
        stale = dataclasses.replace(task, state=RUNNING, progress=50, completed_at=None)
        return self.wrap(self.render(stale))

    # --- validation ----------------------------------------------------------------------------

    @staticmethod
    def _validate(body: dict[str, Any]) -> dict[str, Any]:
        """The create body checked like the provider does; the fields kept for the task."""
        request_type = body.get("request_type")
        if request_type not in ("async", "callback"):
            raise BadRequest("request_type must be 'async' or 'callback'")
        callback_url = body.get("callback_url")
        if request_type == "callback" and not is_http_url(callback_url):
            raise BadRequest("callback_url is required when request_type is 'callback'")
        provider = body.get("provider")
        if provider is not None and provider != "official":
            raise BadRequest("provider must be 'official'")
        payload = body.get("input")
        if not isinstance(payload, dict):
            raise BadRequest("input is required")
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("input.prompt is required")
        duration = payload.get("duration")
        if duration is None:
            raise BadRequest("input.duration is required for provider official (4, 8 or 12)")
        if isinstance(duration, bool) or not isinstance(duration, int) or duration not in DURATIONS:
            raise BadRequest(f"input.duration must be 4, 8 or 12, got {duration!r}")
        params: dict[str, Any] = {
            "prompt": prompt,
            "request_type": request_type,
            "callback_url": callback_url,
            "provider": provider,
            "duration": duration,
        }
        image_urls = payload.get("image_urls")
        if image_urls is not None and image_urls != []:
            if not isinstance(image_urls, list) or not all(is_http_url(u) for u in image_urls):
                raise BadRequest("input.image_urls must be a list of http(s) URLs")
            if len(image_urls) > MAX_IMAGES:
                raise BadRequest(f"input.image_urls takes at most {MAX_IMAGES} images")
            if "size" in payload:
                raise BadRequest("input.size is for text-to-video; image-to-video takes input.resolution")
            resolution = payload.get("resolution", "720p")
            if resolution not in RESOLUTIONS:
                raise BadRequest(f"input.resolution must be 720p or 1080p, got {resolution!r}")
            params.update(mode="image-to-video", image_urls=list(image_urls), resolution=resolution)
        else:
            if "resolution" in payload:
                raise BadRequest("input.resolution is for image-to-video; text-to-video takes input.size")
            size = payload.get("size", "720*1280")
            if size not in SIZES:
                raise BadRequest(f"input.size must be one of {', '.join(SIZES)}, got {size!r}")
            params.update(mode="text-to-video", size=size)
        return params
