"""The sorahk protocol (seed 000): wrapped answers with business codes, balance and pricing.

Every answer is ``{"code", "message", "data"}`` and the *body* code is the truth (200 ok,
401 unauthorized, 1001 bad parameters, 1012 insufficient balance, 500 server error), read
before the HTTP status. No callbacks: tasks take the poll path. ``preflight`` compares the
estimated price with the balance (both cached briefly) before any paid create, and
``find_created`` walks the task list to find a task whose create answer was lost.

Price rule (``estimate_cost_cents``): the pricing's ``normal_price`` / ``pro_price`` is the
price of a 10-second video (the default duration) and scales linearly with duration, rounded
up to a whole cent: a 15 s normal video at 3 costs 5, a 25 s pro video at 30 costs 75.
The provider's ``data.cost`` of the create is what is recorded; the estimate only gates.

``model`` is accepted as "sora-2" (normal) or "sora-2-pro" (pro), the names the provider
sells; anything else is refused, and "sora-2" with ``pro`` is a contradiction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from urllib.parse import quote

import httpx
from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reelay.errors import InsufficientBalance, ProviderError, ProviderProtocolError, RequestInvalid
from reelay.models import ErrorCode, VideoRequest, utcnow
from reelay.providers.base import (
    AccountInfo,
    Capabilities,
    CreateResult,
    ProviderConfig,
    ProviderState,
    ProviderStatus,
    ResultRef,
)
from reelay.providers.http import Call, ErrorDetail, HttpProvider, RequestGate, as_int, as_mapping, as_progress

logger = Logger(child=True)

PROTOCOL = "sorahk"
CREATE_PATH = "/create"
TASK_PATH = "/tasks/{task_id}"
TASKS_PATH = "/tasks"
BALANCE_PATH = "/balance"
PRICING_PATH = "/pricing"

# Business codes in the body.
CODE_OK = 200
CODE_UNAUTHORIZED = 401
CODE_NOT_FOUND = 404
CODE_BAD_PARAMETERS = 1001
CODE_INSUFFICIENT_BALANCE = 1012
CODE_SERVER_ERROR = 500

# Request fields.
F_PROMPT = "prompt"
F_IMAGE_URL = "image_url"
F_IS_PRO = "is_pro"
F_DURATION = "duration"
F_RESOLUTION = "resolution"
F_QUALITY = "quality"
F_REMOVE_WATERMARK = "remove_watermark"

# Response fields.
F_CODE = "code"
F_MESSAGE = "message"
F_DATA = "data"
F_TASK_ID = "task_id"
F_STATUS = "status"
F_COST = "cost"
F_PROGRESS = "progress"
F_VIDEO_URL = "video_url"
F_ERROR_MSG = "error_msg"
F_CREATED_AT = "created_at"
F_BALANCE = "balance"
# Where a page of the task list may keep its tasks (the shape is undocumented).
LIST_KEYS = ("tasks", "items", "list", "records", "data", "rows", "results")
TASK_ID_KEYS = (F_TASK_ID, "id", "taskId")

STATES: Mapping[str, ProviderState] = {
    "pending": ProviderState.PENDING,
    "processing": ProviderState.RUNNING,
    "completed": ProviderState.SUCCEEDED,
    "failed": ProviderState.FAILED,
}
# Words of a content-policy refusal in ``error_msg`` (the seed's example is Chinese).
CONTENT_POLICY_MARKERS = (
    "违反",
    "违规",
    "政策",
    "审核",
    "敏感",
    "content policy",
    "content-policy",
    "policy",
    "violat",
    "moderation",
    "nsfw",
    "guideline",
)

ORIENTATION_TO_RESOLUTION: Mapping[str, str] = {"portrait": "vertical", "landscape": "horizontal"}
DEFAULT_ORIENTATION = "portrait"
QUALITY_NORMAL = "normal"
QUALITY_HIGH = "high"
NORMAL_DURATIONS = (10, 15)
PRO_DURATIONS = (10, 15, 25)
DEFAULT_DURATION = 10
PRICED_SECONDS = 10  # pricing is per 10-second video (see estimate_cost_cents)
MODELS: Mapping[str, bool] = {"sora-2": False, "sora-2-pro": True}  # model name -> is_pro

CACHE_SECONDS = 30.0
FIND_PAGES = 5
FIND_PAGE_SIZE = 50
# The provider's creation times have one-second resolution and its clock may differ a little.
CLOCK_SLACK = timedelta(seconds=5)


@dataclass(frozen=True)
class SorahkVideo:
    """A request in this protocol's terms: the body of ``POST /create``."""

    prompt: str
    is_pro: bool
    duration: int
    resolution: str
    quality: str
    remove_watermark: bool
    image_url: str | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {F_PROMPT: self.prompt}
        if self.image_url is not None:
            body[F_IMAGE_URL] = self.image_url
        body.update(
            {
                F_IS_PRO: self.is_pro,
                F_DURATION: self.duration,
                F_RESOLUTION: self.resolution,
                F_QUALITY: self.quality,
                F_REMOVE_WATERMARK: self.remove_watermark,
            }
        )
        return body


def sorahk_video(request: VideoRequest) -> SorahkVideo:
    """Translate ``request`` to this protocol, or raise ``RequestInvalid`` naming the field."""
    is_pro = request.pro
    if request.model is not None:
        if request.model not in MODELS:
            raise RequestInvalid(
                f"sorahk models are {', '.join(map(repr, MODELS))}; got {request.model!r} "
                "(or omit `model` and use `pro`)",
                field="model",
            )
        if request.pro and not MODELS[request.model]:
            raise RequestInvalid("model 'sora-2' is the normal model but `pro` is true", field="model")
        is_pro = MODELS[request.model]
    allowed = PRO_DURATIONS if is_pro else NORMAL_DURATIONS
    duration = DEFAULT_DURATION if request.duration is None else request.duration
    if duration not in allowed:
        mode = "pro" if is_pro else "normal (without pro)"
        hint = "; 25 s needs pro" if duration in PRO_DURATIONS else ""
        raise RequestInvalid(
            f"sorahk {mode} durations are {', '.join(map(str, allowed))} seconds; got {duration}{hint}",
            field="duration",
        )
    if is_pro and request.resolution == "720p":
        raise RequestInvalid(
            "sorahk pro videos are always high quality (1080p); omit `resolution` or use 1080p", field="resolution"
        )
    quality = QUALITY_HIGH if is_pro or request.resolution == "1080p" else QUALITY_NORMAL
    return SorahkVideo(
        prompt=request.prompt,
        is_pro=is_pro,
        duration=duration,
        resolution=ORIENTATION_TO_RESOLUTION[request.orientation or DEFAULT_ORIENTATION],
        quality=quality,
        remove_watermark=not request.watermark if request.watermark is not None else True,
        image_url=str(request.image_url) if request.image_url is not None else None,
    )


class SorahkPricing(BaseModel):
    """``GET /pricing``: cents per 10-second video, normal and pro."""

    model_config = ConfigDict(extra="ignore")

    normal_price: int | float = Field(ge=0)
    pro_price: int | float = Field(ge=0)
    currency: str | None = None
    unit: str | None = None


def estimate_cost_cents(pricing: SorahkPricing, request: VideoRequest) -> int:
    """The price of ``request`` in cents: the 10-second price scaled by duration, rounded up."""
    video = sorahk_video(request)
    price = pricing.pro_price if video.is_pro else pricing.normal_price
    return math.ceil(Fraction(str(price)) * video.duration / PRICED_SECONDS)


class SorahkTask(BaseModel):
    """One task as the task list or the task endpoint describes it (parsed leniently)."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    status: str | None = None
    progress: int | None = None
    prompt: str | None = None
    video_url: str | None = None
    error_msg: str | None = None
    is_pro: bool | None = None
    duration: int | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None

    @field_validator("progress", "duration", mode="before")
    @classmethod
    def _lenient_int(cls, value: Any) -> int | None:
        return as_int(value)

    @field_validator("is_pro", mode="before")
    @classmethod
    def _lenient_bool(cls, value: Any) -> bool | None:
        return value if isinstance(value, bool) else None

    @field_validator("created_at", "completed_at", mode="before")
    @classmethod
    def _lenient_time(cls, value: Any) -> datetime | None:
        return _timestamp(value)

    @field_validator("status", "prompt", "video_url", "error_msg", mode="before")
    @classmethod
    def _lenient_text(cls, value: Any) -> str | None:
        return value if isinstance(value, str) and value else None


def is_content_policy(message: str | None) -> bool:
    """Whether a failure message reads as a content-policy refusal (English or Chinese)."""
    text = (message or "").lower()
    return any(marker in text for marker in CONTENT_POLICY_MARKERS)


class SorahkProvider(HttpProvider):
    """A provider speaking sorahk: poll path, balance-checked creates."""

    protocol = PROTOCOL
    supports_callbacks = False
    finds_lost_creates = True

    def __init__(
        self,
        config: ProviderConfig,
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = utcnow,
        cache_seconds: float = CACHE_SECONDS,
        gate: RequestGate | None = None,
    ) -> None:
        super().__init__(config, client=client, transport=transport, gate=gate)
        self._clock = clock
        self._cache_for = timedelta(seconds=cache_seconds)
        self._balance: tuple[datetime, int] | None = None
        self._pricing: tuple[datetime, SorahkPricing] | None = None

    def capabilities(self) -> Capabilities:
        """Normal 10/15 s, pro 10/15/25 s; text- and image-to-video."""
        return Capabilities(
            protocol=PROTOCOL,
            callbacks=False,
            modes=["text-to-video", "image-to-video"],
            durations=list(PRO_DURATIONS),
            default_duration=DEFAULT_DURATION,
            resolutions=["720p", "1080p"],
            pro=True,
            notes=[
                "durations: normal 10 or 15 s, pro 10, 15 or 25 s",
                "1080p is the provider's high quality; pro is always high quality",
                "model: 'sora-2' or 'sora-2-pro' (the same as `pro`)",
                "watermark removed unless `watermark` is true",
                "price: pricing per 10 s video, scaled by duration; checked against the balance before creating",
            ],
        )

    def validate(self, request: VideoRequest) -> None:
        """Raise ``RequestInvalid`` for anything sorahk cannot do."""
        sorahk_video(request)

    # ----------------------------------------------------------------- money

    def preflight(self, request: VideoRequest) -> None:
        """Refuse a create the balance cannot pay for, before it is sent."""
        needed = estimate_cost_cents(self.pricing(), request)
        balance = self.balance_cents()
        if balance < needed:
            # Fail on fresh figures only: a top-up must not wait out the cache.
            needed = estimate_cost_cents(self.pricing(fresh=True), request)
            balance = self.balance_cents(fresh=True)
        if balance < needed:
            raise InsufficientBalance(
                f"provider {self.name}: this video needs {needed} cents, balance {balance}", provider=self.name
            )

    def quote_cents(self, request: VideoRequest) -> int | None:
        """The price of ``request`` from the (briefly cached) pricing."""
        return estimate_cost_cents(self.pricing(), request)

    def balance_cents(self, *, fresh: bool = False) -> int:
        """The account balance in cents, cached for a short while unless ``fresh``."""
        now = self._clock()
        if not fresh and self._balance is not None and now - self._balance[0] < self._cache_for:
            return self._balance[1]
        data = self._data(self._request(Call("GET", BALANCE_PATH, safe=True)), BALANCE_PATH)
        balance = as_int(data.get(F_BALANCE))
        if balance is None:
            raise ProviderProtocolError(f"provider {self.name} answered a balance without a number", provider=self.name)
        self._balance = (now, balance)
        return balance

    def pricing(self, *, fresh: bool = False) -> SorahkPricing:
        """Prices in cents, cached for a short while unless ``fresh``."""
        now = self._clock()
        if not fresh and self._pricing is not None and now - self._pricing[0] < self._cache_for:
            return self._pricing[1]
        data = self._data(self._request(Call("GET", PRICING_PATH, safe=True)), PRICING_PATH)
        try:
            pricing = SorahkPricing.model_validate(data)
        except ValidationError as exc:
            raise ProviderProtocolError(
                f"provider {self.name} answered pricing reelay cannot read", provider=self.name
            ) from exc
        self._pricing = (now, pricing)
        return pricing

    def account(self) -> AccountInfo:
        """Live balance and pricing (cents)."""
        pricing = self.pricing()
        return AccountInfo(
            balance_cents=self.balance_cents(),
            pricing={"normal_price": pricing.normal_price, "pro_price": pricing.pro_price, "unit": pricing.unit},
            currency=pricing.currency,
        )

    # ----------------------------------------------------------------- tasks

    def create(self, request: VideoRequest, *, task_id: str, callback_url: str | None) -> CreateResult:
        """Create the task (paid); ``cost_cents`` is the provider's ``data.cost``."""
        body = sorahk_video(request).wire()
        try:
            payload = self._request(Call("POST", CREATE_PATH, safe=False), json_body=body)
        except InsufficientBalance:
            self._balance = None  # the cached balance was wrong: ask again next time
            raise
        data = self._data(payload, CREATE_PATH)
        provider_task_id = self._task_id(data)
        if provider_task_id is None:
            raise ProviderProtocolError(
                f"provider {self.name} accepted the create but its answer has no {F_DATA}.{F_TASK_ID}",
                provider=self.name,
            )
        cost = as_int(data.get(F_COST))
        if cost is not None and self._balance is not None:
            self._balance = (self._balance[0], self._balance[1] - cost)
        raw_state = data.get(F_STATUS)
        return CreateResult(
            provider_task_id=provider_task_id,
            cost_cents=cost,
            initial_state=STATES.get(raw_state, ProviderState.PENDING)
            if isinstance(raw_state, str)
            else ProviderState.PENDING,
        )

    def status(self, provider_task_id: str) -> ProviderStatus:
        """Ask ``GET /tasks/{id}``; a failure's ``error_msg`` is read for a content refusal."""
        path = TASK_PATH.format(task_id=quote(provider_task_id, safe=""))
        payload = self._request(Call("GET", path, safe=True, task_id=provider_task_id))
        data = dict(self._data(payload, path))
        data.setdefault(F_TASK_ID, provider_task_id)
        task = self._parse_task(data)
        if task is None:
            raise ProviderProtocolError(
                f"provider {self.name} answered the status of {provider_task_id} in a shape reelay cannot read",
                provider=self.name,
            )
        state = STATES.get(task.status or "")
        if state is None:
            raise ProviderProtocolError(
                f"provider {self.name} reported an unknown status {task.status!r} for task {provider_task_id}",
                provider=self.name,
            )
        results: list[ResultRef] = []
        error_code: ErrorCode | None = None
        error_message: str | None = None
        if state is ProviderState.SUCCEEDED and task.video_url:
            results = [ResultRef(url=task.video_url, content_type="video/mp4")]
        if state is ProviderState.FAILED:
            error_code = ErrorCode.CONTENT_POLICY if is_content_policy(task.error_msg) else ErrorCode.PROVIDER_FAILED
            error_message = self.scrub(task.error_msg) if task.error_msg else None
        return ProviderStatus(
            provider_task_id=task.task_id,
            state=state,
            progress=100 if state is ProviderState.SUCCEEDED else as_progress(task.progress),
            results=results,
            error_code=error_code,
            error_message=error_message,
            raw_state=task.status,
        )

    def list_tasks(self, page: int = 1, page_size: int = 20, status: str | None = None) -> list[SorahkTask]:
        """One page of the account's tasks, newest first as the provider orders them.

        The page's shape is undocumented: a list, or an object keeping the list under one
        of ``LIST_KEYS`` (nested once more is fine); entries without a task id are skipped.
        """
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        if status is not None:
            params["status"] = status
        payload = self._request(Call("GET", TASKS_PATH, safe=True), params=params)
        body = as_mapping(payload)
        entries = _task_list(body.get(F_DATA) if F_DATA in body else payload)
        return [task for task in (self._parse_task(entry) for entry in entries) if task is not None]

    def find_created(self, task_id: str, request: VideoRequest, *, since: datetime) -> list[str]:
        """Tasks in the account's list with the same prompt (and ``is_pro``/``duration`` where the
        list shows them) created at or after ``since``, oldest first.

        The list carries neither reelay's task id nor a client reference, so the creation time
        is what tells our create from an older request for the same prompt: a task created
        before our create was sent is never ours. ``CLOCK_SLACK`` allows for the provider's
        one-second timestamps and a small clock difference. A task without a creation time
        cannot be told apart and is never adopted.
        """
        video = sorahk_video(request)
        earliest = since - CLOCK_SLACK
        matches: list[SorahkTask] = []
        for page in range(1, FIND_PAGES + 1):
            tasks = self.list_tasks(page=page, page_size=FIND_PAGE_SIZE)
            matches.extend(task for task in tasks if _matches(task, video, earliest))
            too_old = any(t.created_at is not None and t.created_at < earliest for t in tasks)
            if len(tasks) < FIND_PAGE_SIZE or too_old:
                break
        if len(matches) > 1:
            logger.info(
                "several provider tasks may be a lost create",
                extra={"provider": self.name, "task_id": task_id, "matches": len(matches)},
            )
        return [t.task_id for t in sorted(matches, key=lambda t: t.created_at or earliest)]

    # ----------------------------------------------------------------- wire details

    def _error_detail(self, payload: Mapping[str, Any]) -> ErrorDetail:
        code, message = payload.get(F_CODE), payload.get(F_MESSAGE)
        return ErrorDetail(
            str(code) if code is not None else None, message if isinstance(message, str) and message else None
        )

    def _check_body(self, response: httpx.Response, payload: Any, call: Call) -> None:
        # The business code in the body comes first; the HTTP status only when there is none.
        self._business_error(as_mapping(payload), call, response)

    def _business_error(self, body: Mapping[str, Any], call: Call, response: httpx.Response | None) -> None:
        code = body.get(F_CODE)
        if isinstance(code, bool) or not isinstance(code, int) or code == CODE_OK:
            return
        detail = self._detail(body)
        error: ProviderError
        if code == CODE_INSUFFICIENT_BALANCE:
            error = InsufficientBalance(
                f"provider {self.name} reports insufficient balance (code {code})"
                + (f": {detail.message}" if detail.message else ""),
                provider=self.name,
            )
        elif code == CODE_UNAUTHORIZED:
            error = self._auth_error(code, detail)
        elif code == CODE_BAD_PARAMETERS:
            error = self._error_for_status(400, detail, call, response)
        elif 400 <= code <= 599:  # 404, 429, 500 and the like mean what HTTP means by them
            error = self._error_for_status(code, detail, call, response)
        else:
            error = ProviderProtocolError(
                f"provider {self.name} answered {call.label} with unknown code {code}"
                + (f": {detail.message}" if detail.message else ""),
                provider=self.name,
            )
        raise error

    def _data(self, payload: Any, path: str) -> Mapping[str, Any]:
        data = as_mapping(payload).get(F_DATA)
        if not isinstance(data, Mapping):
            raise ProviderProtocolError(
                f"provider {self.name} answered {path} without a {F_DATA} object", provider=self.name
            )
        return data

    @staticmethod
    def _task_id(data: Mapping[str, Any]) -> str | None:
        for key in TASK_ID_KEYS:
            value = data.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                return str(value)
        return None

    def _parse_task(self, entry: Any) -> SorahkTask | None:
        data = as_mapping(entry)
        task_id = self._task_id(data)
        if task_id is None:
            return None
        try:
            return SorahkTask.model_validate({**data, F_TASK_ID: task_id})
        except ValidationError:
            return None


def _timestamp(value: Any) -> datetime | None:
    """An aware datetime from ISO 8601 text (naive read as UTC) or Unix seconds/milliseconds."""
    when: datetime | None = None
    if isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            number = as_int(value)
            return _timestamp(number) if number is not None else None
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        seconds = value / 1000 if value > 1e11 else value
        try:
            when = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _task_list(data: Any, depth: int = 0) -> list[Any]:
    """The list of tasks in a page, wherever it is kept."""
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping) and depth < 2:
        for key in LIST_KEYS:
            if key in data:
                found = _task_list(data[key], depth + 1)
                if found:
                    return found
    return []


def _matches(task: SorahkTask, video: SorahkVideo, earliest: datetime) -> bool:
    if (task.prompt or "").strip() != video.prompt.strip():
        return False
    if task.is_pro is not None and task.is_pro != video.is_pro:
        return False
    if task.duration is not None and task.duration != video.duration:
        return False
    return task.created_at is not None and task.created_at >= earliest
