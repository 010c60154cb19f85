"""The domain model: tasks, their states, requests and outputs.

Client-visible statuses follow DESIGN.md: queued → submitted → running → ingesting →
succeeded, or failed from any non-terminal state. ``ALLOWED_TRANSITIONS`` is the one
place that says which moves exist; the store refuses every other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    StringConstraints,
    model_validator,
)

# The words a value that misses a field's pattern is told, by pattern (``worded``): a 422 or a
# batch line's error says what the field takes, not the regular expression (``reelay.error_words``).
PATTERN_WORDS: dict[str, str] = {}


def worded(pattern: str, words: str) -> str:
    """``pattern``, with the words a value that misses it is told."""
    PATTERN_WORDS[pattern] = words
    return pattern


class TaskStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    INGESTING = "ingesting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: frozenset({TaskStatus.SUBMITTED, TaskStatus.RUNNING, TaskStatus.INGESTING, TaskStatus.FAILED}),
    TaskStatus.SUBMITTED: frozenset({TaskStatus.RUNNING, TaskStatus.INGESTING, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.INGESTING, TaskStatus.FAILED}),
    TaskStatus.INGESTING: frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED}),
    TaskStatus.SUCCEEDED: frozenset(),
    TaskStatus.FAILED: frozenset(),
}


class ErrorCode(StrEnum):
    """Stable error codes a failed task carries; provider failure codes map onto these."""

    CONTENT_POLICY = "CONTENT_POLICY"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    INVALID_IMAGE = "INVALID_IMAGE"
    INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
    PROVIDER_AUTH = "PROVIDER_AUTH"
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    PROVIDER_FAILED = "PROVIDER_FAILED"
    PROVIDER_TASK_LOST = "PROVIDER_TASK_LOST"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CREATE_UNCONFIRMED = "CREATE_UNCONFIRMED"
    RESULT_URL_REFUSED = "RESULT_URL_REFUSED"
    RESULT_EXPIRED = "RESULT_EXPIRED"
    RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
    RESULT_TOO_SLOW = "RESULT_TOO_SLOW"
    RESULT_NOT_MEDIA = "RESULT_NOT_MEDIA"
    INGEST_FAILED = "INGEST_FAILED"
    INTERNAL = "INTERNAL"


class CreateHold(StrEnum):
    """Why a create's outcome is unknown."""

    NO_ANSWER = "no_answer"  # sent, then timed out or the connection dropped: never re-sent
    SERVER_ERROR = "server_error"  # answered 5xx: maybe made; held, then re-sent at most once


class TaskKind(StrEnum):
    VIDEO = "video"
    REMIX = "remix"
    IMAGE = "image"


def utcnow() -> datetime:
    return datetime.now(UTC)


# The owner of tasks when the API has no client auth (one local owner). With IAM auth an owner
# is the caller's principal ARN; with JWT auth ``jwt:<issuer>#<subject>`` (see ``reelay.api``).
# A plain string, so any entry point (the API, a batch manifest's owner) can set it.
LOCAL_OWNER = "local"

# Request limits (README, "Limits"): every field is bounded, so a task item stays far under
# DynamoDB's 400 KB (tests/unit/test_limits.py builds the largest valid request).
PROMPT_MAX_CHARS = 4000  # no protocol documents a limit; reelay's own ceiling for all three
METADATA_MAX_KEYS = 32
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
METADATA_MAX_BYTES = 8 * 1024  # keys and values together, UTF-8


def _metadata_fits(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None:
        total = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if total > METADATA_MAX_BYTES:
            raise ValueError(f"metadata is {total} bytes in all; at most {METADATA_MAX_BYTES} (keys and values, UTF-8)")
    return value


Metadata = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=METADATA_KEY_MAX_CHARS)],
        Annotated[str, StringConstraints(max_length=METADATA_VALUE_MAX_CHARS)],
    ]
    | None,
    Field(
        max_length=METADATA_MAX_KEYS,
        description=f"Free key/value pairs echoed back: at most {METADATA_MAX_KEYS} keys of at most "
        f"{METADATA_KEY_MAX_CHARS} characters, values of at most {METADATA_VALUE_MAX_CHARS}, "
        f"{METADATA_MAX_BYTES} bytes in all.",
    ),
    AfterValidator(_metadata_fits),
]
Prompt = Annotated[
    str,
    Field(
        min_length=1,
        max_length=PROMPT_MAX_CHARS,
        # At least one non-space character, said in the schema (a whitespace-only prompt is refused).
        # Spelled out: Python's \s and JSON Schema's (ECMA-262) differ (U+001C-U+001F and U+0085 are
        # space to Python only, U+FEFF to ECMA only); either's space is space here, in both.
        pattern=worded(
            r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]",
            "must contain a character that is not white space",
        ),
        description=f"What the video shows (at most {PROMPT_MAX_CHARS} characters).",
    ),
]
URL_MAX_CHARS = 2048
# An http(s) URL with a DNS host name (a letter-led last label) or a dotted IPv4 address, an
# optional port, path and query. Narrower than RFC 3986 on purpose: every URL this pattern admits
# also parses as a pydantic ``HttpUrl``, so the schema says exactly what is accepted (no
# fragments, userinfo or IPv6 literals;
# a client image or webhook host is checked again by the fetcher's address policy anyway).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
URL_PATTERN = (
    r"^https?://(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    rf"|{_OCTET}(?:\.{_OCTET}){{3}})"
    rf"(?::{_PORT})?"
    r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"
)


def _parses_as_http_url(value: str) -> str:
    HttpUrl(value)  # a second opinion; the pattern already admits only what this accepts
    return value


WebUrl = Annotated[
    str,
    Field(
        max_length=URL_MAX_CHARS,
        pattern=worded(
            URL_PATTERN,
            "is not an http(s) URL this API takes: a DNS host name or IPv4 address, an optional port, path and "
            "query; no user name, fragment or IPv6 literal",
        ),
        description="An http(s) URL.",
    ),
    AfterValidator(_parses_as_http_url),
]

Orientation = Literal["portrait", "landscape"]
Resolution = Literal["720p", "1080p"]


class StrictBody(BaseModel):
    """Base of the API's request bodies: strict, so what the schema says is exactly what passes.

    A JSON string is not an integer and 1 is not ``true``; but ``3.0`` *is* the integer 3 in
    JSON Schema, so integral numbers are taken as integers before the strict checks.

    Each body's validator is built when its route first validates one (``defer_build``), not
    at the cold start of every function that imports this module: only the API takes bodies,
    and a request uses one route's.
    """

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers_are_integers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        return data


PREVIEWS_DESCRIPTION = (
    "Also make a thumbnail and a spritesheet of the video (the `thumbnail` and `spritesheet` variants of "
    "`GET /v1/videos/{id}/content`); videos created through `/v1/videos` always have them."
)


class VideoRequest(BaseModel):
    """What a client asks for: the body of ``POST /v1/tasks`` (and a manifest line).

    Provider-neutral; each adapter checks it against its protocol's capabilities
    (``Provider.validate``) before any paid call and translates it to its wire format.
    """

    model_config = ConfigDict(extra="forbid")

    provider: Annotated[
        str, Field(min_length=1, max_length=64, description="A configured provider, e.g. `generate_task`, or `auto`.")
    ]
    prompt: Prompt
    image_url: Annotated[WebUrl | None, Field(description="Reference image (image-to-video).")] = None
    duration: Annotated[
        int | None, Field(ge=1, le=60, description="Seconds; allowed values depend on the provider.")
    ] = None
    orientation: Annotated[Orientation | None, Field(description="portrait or landscape.")] = None
    resolution: Annotated[Resolution | None, Field(description="720p or 1080p, where the provider offers it.")] = None
    model: Annotated[
        str | None, Field(max_length=128, description="Provider model string, where the protocol has one.")
    ] = None
    pro: Annotated[bool, Field(description="Use the provider's pro model, where offered.")] = False
    watermark: Annotated[
        bool | None, Field(description="Keep the provider's watermark (default: removed where the provider allows).")
    ] = None
    webhook_url: Annotated[WebUrl | None, Field(description="Notified with a signed webhook when the task ends.")] = (
        None
    )
    metadata: Metadata = None
    previews: Annotated[bool, Field(description=PREVIEWS_DESCRIPTION)] = False


# Where clients' input images are uploaded in the results bucket (POST /v1/uploads), one prefix
# per owner; ``ImageRequest.image_keys`` may name keys under the caller's own only.
UPLOADS_ROOT = "uploads/"

ImageSize = Annotated[
    str,
    Field(
        pattern=worded(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$", "must be WIDTHxHEIGHT in pixels, such as 1024x1024"),
        description="WxH, e.g. 1024x1024",
    ),
]
S3Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=worded(
            r"^[A-Za-z0-9!_*'()/ -]+(\.[A-Za-z0-9!_*'()/ -]+)*$",
            "is not a key this API gives (POST /v1/uploads): letters, digits, space and !_*'()/- in parts "
            "joined by single dots",
        ),
    ),
]


class ImageRequest(BaseModel):
    """The body of ``POST /v1/images``: text-to-image, or an edit of the given images."""

    # Built on first use (image tasks only), like the request bodies (``StrictBody``).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    provider: Annotated[str, Field(min_length=1, max_length=64)]
    prompt: Prompt
    n: Annotated[int, Field(ge=1, le=4, description="How many images (1-4).")] = 1
    size: ImageSize | None = None
    model: Annotated[str | None, Field(max_length=128)] = None
    image_urls: Annotated[list[WebUrl], Field(max_length=4, description="Images to edit, by URL.")] = Field(
        default_factory=list
    )
    image_keys: Annotated[
        list[S3Key], Field(max_length=4, description="Images to edit, as keys of the results bucket.")
    ] = Field(default_factory=list)
    webhook_url: WebUrl | None = None
    metadata: Metadata = None


class RemixRequest(StrictBody):
    """The body of ``POST /v1/tasks/{id}/remix``: a new video derived from a finished one."""

    prompt: Prompt
    model: Annotated[str | None, Field(max_length=128)] = None
    webhook_url: WebUrl | None = None
    metadata: Metadata = None


class TaskError(BaseModel):
    code: ErrorCode
    message: str


class Output(BaseModel):
    """One result copied into the results bucket."""

    key: str
    s3_uri: str
    bytes: int
    sha256: str
    content_type: str


class OutputUpload(BaseModel):
    """Where one output's copy stands, so a later attempt resumes it instead of starting over.

    ``upload_id`` is the open multipart upload (None for a single PUT); ``parts_done`` is the
    last part known complete (the next attempt asks S3's ListParts, so this is a hint); the
    source's ``ETag`` and length tell whether it changed in between. ``bytes``/``sha256`` are
    set once every byte is uploaded; ``completed`` once the object exists.
    """

    index: int
    key: str
    content_type: str
    part_bytes: int
    upload_id: str | None = None
    source_etag: str | None = None
    source_length: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    completed: bool = False


class IngestState(BaseModel):
    """Ingest bookkeeping on a task: open uploads, and the failure counts that decide when to give up."""

    started_at: datetime
    uploads: list[OutputUpload] = Field(default_factory=list)
    gone_count: int = 0
    first_gone_at: datetime | None = None
    slow_count: int = 0


class UploadRequest(StrictBody):
    """The body of ``POST /v1/uploads``: what the client is about to upload."""

    content_type: Annotated[
        Literal["image/png", "image/jpeg", "image/webp"], Field(description="The image's media type.")
    ]
    bytes: Annotated[int, Field(ge=1, le=10 * 1024 * 1024, description="Exact size in bytes (at most 10 MiB).")]


class BatchUploadRequest(StrictBody):
    """The body of ``POST /v1/batches``: the manifest the client is about to upload."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            pattern=worded(
                r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$",
                "must be letters, digits and ._- in /-separated parts, each starting with a letter or digit",
            ),
            description="The manifest's name (its report is reports/<name>.jsonl); without .jsonl.",
        ),
    ]
    bytes: Annotated[int, Field(ge=1, le=5 * 1024**3, description="Exact size in bytes (a single PUT: at most 5 GiB).")]
    md5: Annotated[
        str,
        Field(
            pattern=worded(r"^[0-9a-f]{32}$", "must be the file's MD5 in 32 lowercase hex digits"),
            description="MD5 of the file, hex (signed into the PUT).",
        ),
    ]


class UploadTicket(BaseModel):
    """The answer of ``POST /v1/uploads``: a presigned PUT under the caller's own uploads prefix."""

    model_config = ConfigDict(defer_build=True)  # built on that route's first answer
    key: str
    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str]
    expires_at: datetime


class Transition(BaseModel):
    from_status: TaskStatus | None = Field(default=None, alias="from")
    to_status: TaskStatus = Field(alias="to")
    at: datetime
    reason: str = ""

    model_config = ConfigDict(populate_by_name=True)


class RouteCandidate(BaseModel):
    """A provider that can serve an ``auto`` request, with what ranked it (``reelay.routing``)."""

    provider: str
    priority: int | None = Field(default=None, description="REELAY_<NAME>_PRIORITY (lower first); null: unset.")
    free_capacity: int | None = Field(default=None, description="Free slots when ranked; null: unknown.")
    price_cents: int | None = Field(default=None, description="The provider's quote, where asked (ties only).")


class Failover(BaseModel):
    """A provider that refused an ``auto`` task before anything was made, and why."""

    provider: str
    code: str
    message: str
    at: datetime


class Routing(BaseModel):
    """Why an ``auto`` task is served by its ``provider``: the ranked candidates and any failovers."""

    requested: str = Field(description="What the request named: `auto`.")
    candidates: list[RouteCandidate] = Field(description="The capable providers, in the order they are tried.")
    reason: str = Field(description="Why the task's provider serves it, in words.")
    failovers: list[Failover] = Field(default_factory=list)


class WebhookOutcome(StrEnum):
    """Where a task's webhook stands (``Task.notify.webhook``)."""

    PENDING = "pending"  # not attempted yet
    RETRYING = "retrying"  # attempted, failed; another attempt is due at ``next_at``
    DELIVERED = "delivered"  # a 2xx answer
    GONE = "gone"  # the receiver answered 410: never again
    REFUSED = "refused"  # the URL failed the fetcher's address checks: nothing was sent
    EXHAUSTED = "exhausted"  # every attempt of the schedule failed

    @property
    def final(self) -> bool:
        return self not in (WebhookOutcome.PENDING, WebhookOutcome.RETRYING)


class WebhookAttempt(BaseModel):
    """One delivery attempt: when, the HTTP status (None: no answer), and the next attempt while retrying."""

    at: datetime
    status: int | None = None
    error: str | None = None
    next_at: datetime | None = None


class WebhookDelivery(BaseModel):
    """A task's webhook: its stable ``webhook-id``, its outcome and every attempt (at most the schedule's).

    With ``endpoint_id``: the delivery of the task's OpenAI-style event to one of the owner's
    webhook endpoints (``reelay.webhook_endpoints``); ``id`` is then the event's id.
    """

    id: str
    endpoint_id: str | None = None
    outcome: WebhookOutcome = WebhookOutcome.PENDING
    attempts: list[WebhookAttempt] = Field(default_factory=list)
    # When the next attempt may start (while retrying).
    next_at: datetime | None = None


class NotifyState(BaseModel):
    """What was told about a terminal task: its EventBridge event and its webhook (``reelay.notify``)."""

    event_sent_at: datetime | None = None
    webhook: WebhookDelivery | None = None
    # The OpenAI-style event's deliveries, one per webhook endpoint of the owner subscribed to it,
    # looked up once at the first claim (None: not looked up yet; a record from before endpoints
    # existed reads as none).
    endpoints: list[WebhookDelivery] | None = None
    # While a notify worker puts the event or makes a webhook attempt: its claim, so two copies
    # of the message never both tell (``reelay.notify``).
    lease_until: datetime | None = None

    def settled(self, *, has_webhook: bool) -> bool:
        """Whether nothing is left to tell: the event is out, the webhook (if any) and every endpoint
        delivery final."""
        if self.event_sent_at is None:
            return False
        if any(not d.outcome.final for d in self.endpoints or ()):
            return False
        return not has_webhook or (self.webhook is not None and self.webhook.outcome.final)

    def pending_deliveries(self) -> list[WebhookDelivery]:
        """The endpoint deliveries not final yet."""
        return [d for d in self.endpoints or () if not d.outcome.final]


class Task(BaseModel):
    """A task as stored. ``version`` increases with every write; writes are conditional on it."""

    # Its ``Due`` entry as the store read or wrote it (ISO time; None: in no index). Not a field:
    # the store's bookkeeping, kept across ``model_copy`` so a write knows the entry it replaces.
    _stored_due: str | None = PrivateAttr(default=None)

    @property
    def stored_due(self) -> str | None:
        return self._stored_due

    @stored_due.setter
    def stored_due(self, value: str | None) -> None:
        self._stored_due = value

    id: str
    # Who the task belongs to: reads, lists, remixes and idempotency keys are scoped to it.
    owner: str = LOCAL_OWNER
    provider: str
    protocol: str
    kind: TaskKind = TaskKind.VIDEO
    status: TaskStatus = TaskStatus.QUEUED
    progress: int = 0
    request: dict[str, Any]
    provider_task_id: str | None = None
    parent_task_id: str | None = None
    created_at: datetime
    updated_at: datetime
    error: TaskError | None = None
    outputs: list[Output] = Field(default_factory=list)
    result_urls: list[str] = Field(default_factory=list)
    cost_cents: int | None = None
    webhook_url: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = None
    # Set for a task made from a line of an S3 batch manifest: the batch and the 1-based line.
    # A task without a batch is interactive (the governor serves it ahead of batch tasks).
    batch_id: str | None = None
    batch_line: int | None = None
    # Set for a task that asked for ``provider: auto`` (``reelay.routing``): ``provider`` is the
    # one serving it; this says why, and which refused it before anything was made.
    routing: Routing | None = None
    # Set when the owner deleted the task's stored outputs (DELETE /v1/videos/{id}); it is then
    # gone from the OpenAI routes, while /v1/tasks still shows its record without outputs.
    deleted_at: datetime | None = None
    version: int = 0
    history: list[Transition] = Field(default_factory=list)
    # Money rule bookkeeping: when a create was (first) sent, how many were sent, and whether
    # the last one's outcome is unknown ("held"), why, and since when (the hold runs from the
    # moment the create's answer, or its lack, was known: a slow 5xx leaves the provider's
    # callback the whole hold to come).
    create_sent_at: datetime | None = None
    first_create_sent_at: datetime | None = None
    create_attempts: int = 0
    create_outcome_unknown: bool = False
    create_hold: CreateHold | None = None
    held_at: datetime | None = None
    # A provider task id named by a token-verified callback whose status check failed: a hint,
    # confirmed with the status endpoint before a held create adopts it.
    callback_provider_task_id: str | None = None
    # A create answered 5xx was re-sent where nothing could tell reelay whether it was made.
    possible_duplicate_charge: bool = False
    # The poll path's current Step Functions execution (reconcile restarts a dead one).
    poll_execution: str | None = None
    # Reconcile's last look and how many it took (its due time moves on from the last look).
    reconciled_at: datetime | None = None
    reconcile_count: int = 0
    # Reconcile's last look that found the task, never sent, in the governor's line for a slot.
    line_seen_at: datetime | None = None
    # Ingest progress: open uploads and failure counts (see ``IngestState``).
    ingest: IngestState | None = None
    # Notifications of a terminal task (event, webhook): written by the notify worker only.
    notify: NotifyState | None = None

    @property
    def clock_start(self) -> datetime:
        """When the provider's clock started for this task: its first create; before that, its
        creation, or the last time reconcile found it waiting in the governor's line (a task
        waiting for a slot has not reached the provider: a long line does not run its deadline)."""
        if self.first_create_sent_at is not None:
            return self.first_create_sent_at
        return max(self.created_at, self.line_seen_at or self.created_at)

    def entered(self, status: TaskStatus) -> datetime | None:
        """When the task last moved to ``status`` (from its history), if it did."""
        return next((entry.at for entry in reversed(self.history) if entry.to_status is status), None)
