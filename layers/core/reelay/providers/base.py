"""The one small interface every provider protocol implements.

A *protocol* is a wire format (sorahk, openai_videos, generate_task); a *provider* is a
configured instance of one: a name, a base URL and a credential (``ProviderConfig``).
Adapters hold only their wire format; shared HTTP behaviour lives in ``http.HttpProvider``.
Every adapter raises only ``reelay.errors`` exceptions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from reelay.errors import ConfigurationError, RequestInvalid
from reelay.models import ErrorCode, ImageRequest, VideoRequest


class ProviderState(StrEnum):
    """A provider's task state, normalised across protocols."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


MAX_CONNECT_SECONDS = 5.0
# How long a provider key read from Secrets Manager is kept before it is read again.
KEY_TTL_SECONDS = 300


def read_secret(arn: str) -> str:
    """A Secrets Manager secret's string, through Powertools' cache (kept ``KEY_TTL_SECONDS``)."""
    # Imported lazily: only the AWS path needs it, and it keeps cold start small.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn, max_age=KEY_TTL_SECONDS)
    return value if isinstance(value, str) else value.decode()


def secret_keys(arn: str) -> dict[str, str]:
    """The provider keys secret (a JSON object of name -> key), through Powertools' cache."""
    import json

    try:
        data = json.loads(read_secret(arn) or "{}")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ConfigurationError("provider keys secret is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


class ProviderConfig(BaseModel):
    """A configured provider. ``api_key`` is a secret: never logged, never sent to another host."""

    model_config = ConfigDict(frozen=True)

    name: str
    protocol: str
    base_url: str
    api_key: SecretStr
    # Where the key is when ``api_key`` is empty: a Secrets Manager secret holding a JSON object
    # ``{"<provider name>": "<key>", ...}`` (REELAY_PROVIDER_KEYS_SECRET_ARN), read on first use.
    api_key_secret_arn: str | None = None
    # How the credential is sent: header name and a prefix ("Bearer " for most; "" for openai_videos).
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    timeout_seconds: float = 20.0
    # Typical generation time, the first wait of the adaptive poll schedule.
    typical_seconds: float = 180.0
    # How long a task may take before reelay gives up (poll deadline).
    deadline_seconds: float = 3 * 3600.0
    # Routing order for ``provider: auto`` (REELAY_<NAME>_PRIORITY, lower first; None: unset, last).
    priority: int | None = None
    # How long an ``auto`` task waits in this provider's line for a slot before it fails over to
    # its next provider (REELAY_<NAME>_CAPACITY_WAIT_SECONDS; reconcile checks at its looks).
    capacity_wait_seconds: float = Field(default=300.0, ge=0)

    # The governor's limits for this provider key (``reelay.governor``); None or 0: no limit.
    max_in_flight: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)

    @field_validator("max_in_flight", "requests_per_minute", mode="before")
    @classmethod
    def _zero_is_no_limit(cls, value: Any) -> Any:
        return None if value in (0, "0", "") else value

    def key(self) -> str:
        """The credential. From the keys secret it is read when first needed (not at cold start)
        and kept ``KEY_TTL_SECONDS`` by Powertools' cache, so a key filled in or rotated after a
        deploy is picked up within that time, without a redeploy."""
        configured = self.api_key.get_secret_value()
        if configured or not self.api_key_secret_arn:
            return configured
        return secret_keys(self.api_key_secret_arn).get(self.name, "")

    @property
    def connect_seconds(self) -> float:
        """Connect quickly or not at all: a provider that cannot be reached is retried later."""
        return min(self.timeout_seconds, MAX_CONNECT_SECONDS)

    @property
    def call_seconds(self) -> float:
        """The longest one call to this provider can take (connect, then the answer)."""
        return self.connect_seconds + self.timeout_seconds


class ResultRef(BaseModel):
    """A result the provider made. ``url`` may be a CDN link or a provider endpoint."""

    url: str
    content_type: str | None = None


class ProviderStatus(BaseModel):
    """What a provider's status endpoint said about one task."""

    provider_task_id: str
    state: ProviderState
    progress: int | None = None
    results: list[ResultRef] = Field(default_factory=list)
    error_code: ErrorCode | None = None
    error_message: str | None = None
    raw_state: str | None = None


class CreateResult(BaseModel):
    provider_task_id: str
    cost_cents: int | None = None
    initial_state: ProviderState = ProviderState.PENDING
    # Synchronous protocols (images) return their results with the create.
    results: list[ResultRef] = Field(default_factory=list)


class CallbackHint(BaseModel):
    """What a callback body *claims*. Never acted on: the status endpoint is the truth."""

    provider_task_id: str | None = None
    claimed_state: str | None = None


class Capabilities(BaseModel):
    """What a provider can do, shown by ``GET /v1/providers``."""

    protocol: str
    callbacks: bool
    modes: list[str]  # e.g. ["text-to-video", "image-to-video", "remix", "images"]
    durations: list[int]
    default_duration: int
    orientations: list[str] = Field(default_factory=lambda: ["portrait", "landscape"])
    resolutions: list[str] = Field(default_factory=list)
    sizes: list[str] = Field(default_factory=list)
    pro: bool = False
    notes: list[str] = Field(default_factory=list)


class AccountInfo(BaseModel):
    """Live balance and pricing, where the protocol has them (amounts in cents)."""

    balance_cents: int | None = None
    pricing: dict[str, Any] | None = None
    currency: str | None = None


class ImageInput(BaseModel):
    """An image sent to a provider for an edit (read by reelay from S3 or a checked URL)."""

    filename: str
    content: bytes
    content_type: str


class Provider(ABC):
    """A configured provider of one protocol."""

    protocol: str
    supports_callbacks: bool = False
    # True when ``find_created`` can search the provider's own task list: then a create that
    # failed ambiguously (5xx after sending) is looked for instead of re-sent.
    finds_lost_creates: bool = False

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """Static description of what this protocol can do."""

    @abstractmethod
    def validate(self, request: VideoRequest) -> None:
        """Raise ``RequestInvalid`` (with ``field``) for anything the provider cannot do.

        Called before a task is stored and again before the paid create; no network.
        """

    @abstractmethod
    def create(self, request: VideoRequest, *, task_id: str, callback_url: str | None) -> CreateResult:
        """Create the provider task (a paid call). Never retried blindly by callers.

        Raises ``CreateOutcomeUnknown`` when the request was sent but its answer was lost.
        """

    @abstractmethod
    def status(self, provider_task_id: str) -> ProviderStatus:
        """Ask the provider's status endpoint: the only truth about a task."""

    def preflight(self, request: VideoRequest) -> None:
        """Checks before a paid create that need the provider (e.g. balance vs price)."""

    def quote_cents(self, request: VideoRequest) -> int | None:
        """What ``request`` would cost in cents, where the protocol prices it (routing's tie-break)."""
        return None

    def parse_callback(self, body: bytes) -> CallbackHint:
        """Read what a callback claims, leniently; an unreadable body is an empty hint."""
        return CallbackHint()

    def find_created(self, task_id: str, request: VideoRequest, *, since: datetime) -> list[str]:
        """Provider tasks that may be a create whose answer was lost, oldest first.

        Only tasks the provider created at or after ``since`` (when reelay first sent the
        create; the adapter allows for the provider's clock) and matching ``request``. The
        caller adopts the first one no other reelay task owns.
        """
        return []

    def result_headers(self, url: str) -> dict[str, str]:
        """Headers to fetch a result URL: the credential only for this provider's own host."""
        return {}

    def account(self) -> AccountInfo | None:
        """Live balance and pricing, where the protocol has them."""
        return None

    def remix(self, parent_provider_task_id: str, request: VideoRequest) -> CreateResult:
        """Create a video derived from a finished one (a paid call), where the protocol can."""
        raise RequestInvalid(f"provider {self.name} ({self.protocol}) cannot remix videos", field="provider")

    def validate_images(self, request: ImageRequest) -> None:
        """Raise ``RequestInvalid`` for an image request this provider cannot do; no network."""
        raise RequestInvalid(f"provider {self.name} ({self.protocol}) cannot generate images", field="provider")

    def generate_images(self, request: ImageRequest, images: list[ImageInput]) -> list[ResultRef]:
        """Generate (or, with ``images``, edit) images synchronously; the results to copy."""
        raise RequestInvalid(f"provider {self.name} ({self.protocol}) cannot generate images", field="provider")

    def close(self) -> None:
        """Release connections."""
