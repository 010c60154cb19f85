"""The API's answers as models: the one definition of each response shape.

The HTTP API builds its bodies from these models (and declares them in its OpenAPI
document), the CLI and the web page parse answers into them, and the tests assert on them.
Requests are in ``reelay.models`` (``VideoRequest``, ``ImageRequest``, ``RemixRequest``,
``UploadRequest``); this module holds only what the API answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reelay.costs import TaskCost
from reelay.models import Routing, TaskKind, TaskStatus, UploadTicket
from reelay.providers.base import AccountInfo, Capabilities


class _AnswerOfOtherRoutes(BaseModel):
    """Base of the answers that a task's create and read do not give (errors, lists, batches,
    providers, secrets): each is built on the first answer that needs it (``defer_build``), not
    at the API's cold start. ``TaskView`` and what it holds are built at import."""

    model_config = ConfigDict(defer_build=True)


class ErrorInfo(_AnswerOfOtherRoutes):
    """What went wrong: a stable ``code`` (see the README's error table), a human ``message``."""

    code: str = Field(description="Stable error code, e.g. VALIDATION_FAILED or RESULT_EXPIRED.")
    message: str
    details: Any | None = Field(default=None, description="Field-level details of a validation failure.")


class ErrorBody(_AnswerOfOtherRoutes):
    """Every error answer of the API: ``{"error": {"code", "message", "details"?}}``."""

    error: ErrorInfo


class TaskErrorView(BaseModel):
    """Why a task failed: the same codes as the API's errors, where they mean the same."""

    code: str
    message: str


class OutputView(BaseModel):
    """One result in the results bucket, with a short-lived presigned ``url`` to fetch it."""

    s3_uri: str
    bytes: int
    sha256: str
    content_type: str
    url: str | None = Field(default=None, description="Presigned GET (SigV4), valid for a short while.")


class WebhookAttemptView(BaseModel):
    """One delivery attempt of the task's webhook."""

    at: datetime
    status: int | None = Field(default=None, description="The receiver's HTTP status; null when it did not answer.")
    error: str | None = Field(default=None, description="Why there was no answer (or why the URL was refused).")
    next_at: datetime | None = Field(default=None, description="When the next attempt is due, while retrying.")


class WebhookView(BaseModel):
    """The task's webhook: its ``webhook-id`` (the same on every attempt), outcome and attempts."""

    id: str
    outcome: str = Field(description="pending, retrying, delivered, gone (410), refused (unsafe URL) or exhausted.")
    attempts: list[WebhookAttemptView] = Field(default_factory=list)


class EndpointDeliveryView(WebhookView):
    """The task's OpenAI-style event to one of your webhook endpoints (``id``: the event's id)."""

    endpoint_id: str


class WebhookSecretList(_AnswerOfOtherRoutes):
    """Your webhook signing secrets, newest first: two during a rotation's overlap, else one."""

    secrets: list[str] = Field(description="Standard Webhooks secrets (whsec_...); verify with any of them.")


class TaskView(BaseModel):
    """A task as the API shows it: no internal bookkeeping."""

    model_config = ConfigDict(use_enum_values=False)

    id: str
    provider: str
    kind: TaskKind
    status: TaskStatus
    progress: int = Field(ge=0, le=100)
    prompt: str | None = None
    provider_task_id: str | None = None
    parent_task_id: str | None = None
    created_at: datetime
    updated_at: datetime
    error: TaskErrorView | None = None
    outputs: list[OutputView] = Field(default_factory=list)
    cost_cents: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    request: dict[str, Any] = Field(default_factory=dict)
    routing: Routing | None = Field(
        default=None, description="For `provider: auto`: why `provider` serves the task, and any failovers."
    )
    batch_id: str | None = Field(default=None, description="The batch (S3 manifest) the task came from, if any.")
    cost: TaskCost | None = Field(
        default=None,
        description="What the task cost so far: the provider's charge and reelay's own AWS operations "
        "(on `GET /v1/tasks/{id}`; not in lists).",
    )
    webhook: WebhookView | None = Field(default=None, description="Deliveries of webhook_url, when the task has one.")
    webhook_endpoints: list[EndpointDeliveryView] | None = Field(
        default=None,
        description="Deliveries of the video.completed / video.failed event to your webhook endpoints "
        "(/v1/webhook_endpoints), once the task has ended and an endpoint was subscribed.",
    )


class TaskPage(_AnswerOfOtherRoutes):
    """A page of tasks, newest first; ``next_cursor`` fetches the next one."""

    tasks: list[TaskView]
    next_cursor: str | None = None


class ProviderView(_AnswerOfOtherRoutes):
    """A configured provider: its protocol, what it can do and, where it has them, live account data."""

    name: str
    protocol: str
    capabilities: Capabilities
    account: AccountInfo | None = None
    account_error: ErrorInfo | None = None


class ProviderList(_AnswerOfOtherRoutes):
    providers: list[ProviderView]


class BatchTicket(_AnswerOfOtherRoutes):
    """The answer of ``POST /v1/batches``: a presigned PUT of a manifest into your inbox.

    The MD5 is signed in, so the batch id is known before the upload: follow it with
    ``GET /v1/batches/{batch_id}`` at once (``awaiting`` until the manifest has arrived).
    """

    batch_id: str
    key: str = Field(description="Where the manifest goes: inbox/<name>.jsonl, or inbox/<your hash>/<name>.jsonl.")
    report_key: str = Field(description="Where the report will land (the summary beside it, .summary.json).")
    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str]
    expires_at: datetime


class BatchView(_AnswerOfOtherRoutes):
    """A batch's progress: its lines, tasks made, ended and running, and where its report is."""

    id: str
    status: Literal["awaiting", "running", "reporting", "completed"] = Field(
        description="awaiting (the manifest has not arrived), running, reporting, completed"
    )
    manifest: str = Field(description="s3:// URI of the manifest object.")
    name: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    split_done: bool = Field(description="Whether every line has been counted (lines is then final).")
    lines: int | None = Field(default=None, description="Lines of the manifest, once it has been read through.")
    tasks: int = Field(description="Valid lines so far: one task each.")
    invalid: int = Field(description="Invalid lines so far (each in the report with its reason).")
    succeeded: int
    failed: int
    running: int = Field(description="Tasks made that have not ended.")
    cost_cents: int = Field(description="Provider cost of the ended tasks, where the provider reports one.")
    by_code: dict[str, int] = Field(default_factory=dict, description="Failed tasks and invalid lines by error code.")
    report: str | None = Field(default=None, description="s3:// URI of the report, once completed.")
    summary: str | None = None


class BatchReportLine(_AnswerOfOtherRoutes):
    """One line of a batch report (``reports/<name>.jsonl``), in input order."""

    line: int = Field(description="1-based line number in the manifest.")
    id: str | int | None = Field(default=None, description="The line's client id, if it gave one.")
    task_id: str | None = None
    status: str = Field(description="The task's final status, or `invalid` for a line that made no task.")
    outputs: list[str] | None = Field(default=None, description="s3:// URIs of the task's outputs.")
    error: TaskErrorView | None = None


class BatchSummary(_AnswerOfOtherRoutes):
    """The summary beside a report (``reports/<name>.summary.json``)."""

    batch_id: str
    manifest: str
    report: str
    lines: int = Field(description="Lines in the report (blank manifest lines are none).")
    by_status: dict[str, int]
    by_code: dict[str, int]
    cost_cents: int = Field(description="Total provider cost of the batch's tasks.")
    created_at: datetime
    ended_at: datetime = Field(description="When the batch's last task ended.")
    wall_seconds: float = Field(description="From the manifest's arrival to its last task's end.")


__all__ = [
    "BatchReportLine",
    "BatchSummary",
    "BatchTicket",
    "BatchView",
    "ErrorBody",
    "ErrorInfo",
    "OutputView",
    "ProviderList",
    "ProviderView",
    "Routing",
    "TaskCost",
    "TaskErrorView",
    "TaskPage",
    "TaskView",
    "UploadTicket",
    "WebhookAttemptView",
    "WebhookSecretList",
    "WebhookView",
]
