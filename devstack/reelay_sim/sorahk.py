"""The sorahk protocol (seed ``000``), served under ``/sorahk/v1``.

Every answer is wrapped ``{"code", "message", "data"}``. Choices the seed leaves open, decided here:

- HTTP status: 200 for success and for the business errors 1001 (bad parameters) and 1012
  (insufficient balance); 401, 404, 429 and 5xx travel as both the HTTP status and the body code.
  Success messages are the seed's ``操作成功``; error messages are English.
- ``duration`` is a JSON number with an integral value (10, 15, and 25 for pro; default 10);
  ``is_pro`` and ``remove_watermark`` must be booleans; ``resolution`` defaults to ``horizontal``
  and ``quality`` to ``normal`` (``high`` for pro). Unknown fields are ignored.
- Cost in cents: ``ceil(price * duration / 10)`` with price ``normal_price`` or ``pro_price``
  (defaults 3 and 30: a normal 10 s video costs 3, a pro 25 s one 75). The cost is deducted from
  the ``balance`` knob at create; a create costing more than the balance is a 1012. Failed tasks
  are not refunded.
- Task ids are UUIDs. A task belongs to the key that made it; ``GET /tasks`` lists that key's
  tasks newest first, ``page`` from 1, ``page_size`` 1-100 (default 20), ``status`` one of the
  four words; anything else is a 1001.
- Status object: ``video_url`` only when completed, ``error_msg`` only when failed,
  ``completed_at`` only when completed (like the seed's examples); times ISO 8601 UTC with ``Z``.
- The content-policy ``error_msg`` is the seed's own refusal text (Chinese, it mentions
  违反 ... 相关规定); the others are English.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from reelay_sim.protocol import (
    ProtocolHandler,
    Route,
    bearer,
    check_image_urls,
    generation_seconds,
    is_http_url,
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

OK_MESSAGE = "操作成功"
STATES = {PENDING: "pending", RUNNING: "processing", SUCCEEDED: "completed", FAILED: "failed"}
FAIL_MESSAGES = {
    CONTENT_POLICY: "此内容可能违反关于裸露、性内容或色情内容的相关规定。",
    INVALID_IMAGE: "Failed to download image_url: the image cannot be accessed",
    GENERATION_FAILED: "Video generation failed due to an internal error, please retry",
}
ERROR_MESSAGES = {
    401: "Unauthorized: API key invalid or disabled",
    404: "task not found",
    429: "Too many requests",
    1001: "Invalid parameters",
    1012: "Insufficient balance",
}
BODY_ONLY = frozenset({1001, 1012})
NORMAL_DURATIONS = (10, 15)
PRO_DURATIONS = (10, 15, 25)
MAX_PAGE_SIZE = 100


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SoraHK(ProtocolHandler):
    """``/create``, ``/tasks/{id}``, ``/tasks``, ``/balance``, ``/pricing``."""

    name = "sorahk"
    prefix = "/sorahk/v1"

    def routes(self) -> list[Route]:
        return [
            Route("POST", "/create", "create", self.create),
            Route("GET", "/tasks/<task_id>", "status", self.status),
            Route("GET", "/tasks", "list", self.list_tasks),
            Route("GET", "/balance", "balance", self.balance),
            Route("GET", "/pricing", "pricing", self.pricing),
        ]

    def credential(self, request: Request) -> str | None:
        return bearer(request)

    def error(
        self, status: int, message: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> Response:
        text = message or ERROR_MESSAGES.get(status, "Internal server error")
        http = 200 if status in BODY_ONLY else status
        body = {"code": status, "message": text, "data": None}
        return json_response(body, http, retry_after_header(http, retry_after))

    @staticmethod
    def ok(data: Any) -> Response:
        return json_response({"code": 200, "message": OK_MESSAGE, "data": data})

    # --- endpoints -----------------------------------------------------------------------------

    def create(self, request: Request, key: str) -> Response:
        try:
            params = self._validate(read_json_object(request))
        except BadRequest as exc:
            return self.error(1001, str(exc))
        knobs = self.knobs
        image_url = params.get("image_url")
        image_error = check_image_urls([image_url]) if knobs.fetch_images and image_url else None
        prompt = params.pop("prompt")
        state = self.ctx.state
        with state.lock:
            price = knobs.pro_price if params["is_pro"] else knobs.normal_price
            cost = math.ceil(price * params["duration"] / 10)
            if knobs.balance < cost:
                return self.error(1012, f"Insufficient balance: this task costs {cost}, balance is {knobs.balance}")
            fault = self.create_fault(prompt)
            refusal = self.create_refusal(fault)
            if refusal is not None:
                return refusal
            fail = state.take_fail_next(self.name)
            if fail and not knobs.fail_next_accepted:
                return self.error(500, "Internal server error")
            knobs.balance -= cost
            params["cost"] = cost
            task = self.start_task(
                Task(
                    protocol=self.name,
                    id=self._task_id(),
                    key=key,
                    prompt=prompt,
                    params=params,
                    generation_seconds=generation_seconds(knobs, prompt),
                    outcome=plan_outcome(knobs, prompt, image_error=image_error),
                )
            )
        self.hang(fault)
        if fail or fault.accepted_error is not None:
            return self.error(fault.accepted_error or 500, "Internal server error")
        return self.ok({"task_id": task.id, "status": "pending", "cost": cost})

    def status(self, request: Request, key: str, task_id: str) -> Response:
        task = self.ctx.state.task(self.name, task_id)
        if task is None or task.key != key:
            return self.error(404, "task not found")
        return self.status_refusal(task) or self.ok(self.render(task))

    def list_tasks(self, request: Request, key: str) -> Response:
        try:
            page = self._int_arg(request, "page", 1, minimum=1)
            page_size = self._int_arg(request, "page_size", 20, minimum=1)
        except BadRequest as exc:
            return self.error(1001, str(exc))
        if page_size > MAX_PAGE_SIZE:
            return self.error(1001, f"page_size must be at most {MAX_PAGE_SIZE}")
        wanted = request.args.get("status") or None
        if wanted is not None and wanted not in STATES.values():
            return self.error(1001, f"status must be one of {', '.join(STATES.values())}")
        state = self.ctx.state
        with state.lock:
            state.advance()
            mine = [t for t in state.tasks[self.name].values() if t.key == key]
            rendered = [self.render(t) for t in reversed(mine) if wanted is None or STATES[t.state] == wanted]
        start = (page - 1) * page_size
        return self.ok(
            {"tasks": rendered[start : start + page_size], "total": len(rendered), "page": page, "page_size": page_size}
        )

    def balance(self, request: Request, key: str) -> Response:
        return self.ok({"balance": self.knobs.balance})

    def pricing(self, request: Request, key: str) -> Response:
        knobs = self.knobs
        return self.ok(
            {"normal_price": knobs.normal_price, "pro_price": knobs.pro_price, "currency": "USD", "unit": "cents"}
        )

    # --- wire shapes ---------------------------------------------------------------------------

    def render(self, task: Task) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": task.id,
            "status": STATES[task.state],
            "progress": task.progress,
            "prompt": task.prompt,
            "is_pro": task.params["is_pro"],
            "created_at": _iso(task.created_at),
        }
        if task.state == SUCCEEDED:
            data["video_url"] = self.ctx.file_url(self.name, f"{task.id}.mp4")
            data["completed_at"] = _iso(task.completed_at or task.created_at)
        elif task.state == FAILED:
            kind = task.outcome.kind or GENERATION_FAILED
            data["error_msg"] = task.outcome.message or FAIL_MESSAGES.get(kind, FAIL_MESSAGES[GENERATION_FAILED])
        return data

    # --- validation ----------------------------------------------------------------------------

    @staticmethod
    def _task_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def _int_arg(request: Request, name: str, default: int, *, minimum: int) -> int:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise BadRequest(f"{name} must be an integer") from exc
        if value < minimum:
            raise BadRequest(f"{name} must be at least {minimum}")
        return value

    @staticmethod
    def _validate(body: dict[str, Any]) -> dict[str, Any]:
        """The create body checked like the provider does; the fields kept for the task."""
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("prompt is required")
        image_url = body.get("image_url")
        if image_url is not None and not is_http_url(image_url):
            raise BadRequest("image_url must be an http(s) URL")
        is_pro = body.get("is_pro", False)
        if not isinstance(is_pro, bool):
            raise BadRequest("is_pro must be a boolean")
        duration = body.get("duration", 10)
        allowed = PRO_DURATIONS if is_pro else NORMAL_DURATIONS
        integral = isinstance(duration, int | float) and not isinstance(duration, bool) and float(duration).is_integer()
        if not integral or int(duration) not in allowed:
            mode = "pro mode: 10, 15 or 25" if is_pro else "normal mode: 10 or 15"
            raise BadRequest(f"invalid duration {duration!r}: {mode}")
        resolution = body.get("resolution", "horizontal")
        if resolution not in ("horizontal", "vertical"):
            raise BadRequest("resolution must be horizontal or vertical")
        quality = body.get("quality", "high" if is_pro else "normal")
        if quality not in ("normal", "high"):
            raise BadRequest("quality must be normal or high")
        remove_watermark = body.get("remove_watermark", True)
        if not isinstance(remove_watermark, bool):
            raise BadRequest("remove_watermark must be a boolean")
        return {
            "prompt": prompt,
            "image_url": image_url,
            "is_pro": is_pro,
            "duration": int(duration),
            "resolution": resolution,
            "quality": "high" if is_pro else quality,
            "remove_watermark": remove_watermark,
            "mode": "image-to-video" if image_url else "text-to-video",
        }
