"""reelay's exception hierarchy, documented in one place.

Adapters translate low-level failures (httpx, botocore) into these at the boundary
(``raise ... from exc``); handlers map them to HTTP answers or task states once.
Step Functions routes on the class *name* of errors raised by the poll function, so
renaming a transient error class is a template change too.

    ReelayError
    ├── RequestInvalid            the client's request cannot succeed (HTTP 422)
    ├── TaskNotFound              no such task, or another owner's (HTTP 404)
    ├── UploadNotFound            an image key that is not one of the caller's uploads (HTTP 404)
    ├── TaskNotRemixable          the parent task cannot be remixed (not a succeeded video of a remix provider; 409)
    ├── NoRouteForModel           no configured provider serves this OpenAI model, duration and size (HTTP 400)
    ├── ApiKeyRejected            the API key is missing, malformed, unknown or revoked (HTTP 401)
    ├── ApiKeyNotFound            no API key of that id (``reelay keys revoke``; 404 locally)
    ├── IdempotencyConflict       same Idempotency-Key, other body (HTTP 409)
    ├── TransitionConflict        a conditional state write lost (another writer won)
    ├── ConfigurationError        the stack is mis-configured (bad env, provider credential refused)
    ├── CallbackRejected          a callback whose token is wrong or missing (HTTP 401)
    ├── QueueSendFailed           a message could not be put on a queue (reconcile sends it again)
    ├── ManifestChanged           a batch manifest's object changed (another ETag) while it was read
    ├── ProviderError             anything a provider answered or failed to answer
    │   ├── ProviderTransientError        5xx, connection refused, read timeout on a safe call: retry
    │   │   ├── ProviderRateLimited       429: back off and retry, never fail the task
    │   │   └── NoCapacity                no slot or request token after waiting (governor): an auto task fails over
    │   ├── ProviderAuthError             401: reelay's credential refused (a ConfigurationError too)
    │   ├── ProviderRejectedRequest       400 / body code 1001: the request's fault, with the provider's message
    │   │   └── ContentRefused            the provider refused the prompt on content-policy grounds
    │   ├── InsufficientBalance           body code 1012 or balance below price
    │   ├── ProviderTaskUnknown           the provider does not know the task id
    │   ├── ProviderProtocolError         an answer reelay cannot parse
    │   └── CreateOutcomeUnknown          a create was sent but its answer was lost: never resend blindly
    │       └── CreateServerError         the create was answered 5xx: maybe made; held, or re-sent once
    └── ResultError               copying a result failed
        ├── UnsafeResultUrl               a result URL on a private/loopback host (SSRF guard)
        └── ResultFetchError              the download failed or was truncated (retryable)
"""

from __future__ import annotations

from typing import Any


class ReelayError(Exception):
    """Base of every error reelay raises on purpose."""

    code: str = "INTERNAL"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class RequestInvalid(ReelayError):
    """The client asked for something that cannot succeed; raised before any paid call."""

    code = "VALIDATION_FAILED"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.field = field


class TaskNotFound(ReelayError):
    """No such task for this owner: another owner's task is the very same answer."""

    code = "NOT_FOUND"


class WebhookEndpointNotFound(ReelayError):
    """No such webhook endpoint, or another owner's (``reelay.webhook_endpoints``)."""

    code = "NOT_FOUND"


class UploadNotFound(ReelayError):
    """An ``image_keys`` entry that is not one of the caller's own, existing uploads."""

    code = "UPLOAD_NOT_FOUND"
    field = "image_keys"


class TaskNotRemixable(ReelayError):
    """The parent exists but cannot be remixed in its state or by its provider (a conflict, 409)."""

    code = "NOT_REMIXABLE"


class NoRouteForModel(RequestInvalid):
    """No configured provider can serve this OpenAI model, duration and size (HTTP 400, OpenAI's shape)."""

    code = "NO_ROUTE"


class ApiKeyRejected(ReelayError):
    """The request's API key is missing, malformed, unknown or revoked (HTTP 401)."""

    code = "INVALID_API_KEY"


class ApiKeyNotFound(ReelayError):
    """No API key of that id (HTTP 404)."""

    code = "NOT_FOUND"


class IdempotencyConflict(ReelayError):
    code = "IDEMPOTENCY_CONFLICT"


class TransitionConflict(ReelayError):
    """A conditional write on the task lost: its state or version was not the expected one."""

    code = "CONFLICT"


class ConfigurationError(ReelayError):
    code = "CONFIGURATION_ERROR"


class CallbackRejected(ReelayError):
    code = "UNAUTHORIZED"


class QueueSendFailed(ReelayError):
    """SQS did not take a message; the task's due time makes reconcile send it again."""

    code = "QUEUE_UNAVAILABLE"


class ManifestChanged(ReelayError):
    """The manifest object no longer has the batch's ETag: its remaining lines cannot be read."""

    code = "MANIFEST_CHANGED"


class ProviderError(ReelayError):
    """A provider failed or refused; ``provider`` names the configured provider."""

    code = "PROVIDER_ERROR"

    def __init__(self, message: str, *, provider: str, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.provider = provider


class ProviderTransientError(ProviderError):
    code = "PROVIDER_UNAVAILABLE"


class ProviderRateLimited(ProviderTransientError):
    code = "PROVIDER_RATE_LIMITED"

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class NoCapacity(ProviderTransientError):
    """The provider has no free capacity for reelay (slots or request tokens) after ``waited_seconds``.

    Raised before any paid call by whatever guards a provider's limits (the governor). A task
    that named its provider is retried later, as for any transient error; an ``auto`` task fails
    over to the next ranked provider (``reelay.routing``).
    """

    code = "PROVIDER_AT_CAPACITY"

    def __init__(
        self, message: str, *, provider: str, waited_seconds: float = 0.0, retry_after: float | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.waited_seconds = waited_seconds
        self.retry_after = retry_after


class ProviderAuthError(ProviderError, ConfigurationError):
    code = "PROVIDER_AUTH"


class ProviderRejectedRequest(ProviderError):
    code = "PROVIDER_REJECTED"


class ContentRefused(ProviderRejectedRequest):
    code = "CONTENT_POLICY"


class InsufficientBalance(ProviderError):
    code = "INSUFFICIENT_BALANCE"


class ProviderTaskUnknown(ProviderError):
    code = "PROVIDER_TASK_UNKNOWN"


class ProviderProtocolError(ProviderError):
    code = "PROVIDER_PROTOCOL"


class CreateOutcomeUnknown(ProviderError):
    """The create request was sent but no answer came back: the provider may have a task."""

    code = "CREATE_OUTCOME_UNKNOWN"


class CreateServerError(CreateOutcomeUnknown):
    """The create was answered with a 5xx: the provider may or may not have made the task.

    Unlike a lost answer, the provider did answer, so a re-send is allowed once where nothing
    can tell reelay later (see ``submission``); where its task list or a callback can, the
    task is held first.
    """

    code = "CREATE_SERVER_ERROR"


class ResultError(ReelayError):
    code = "INGEST_FAILED"


class UnsafeResultUrl(ResultError):
    code = "RESULT_URL_REFUSED"


class ResultFetchError(ResultError):
    code = "RESULT_FETCH_FAILED"
