"""Submitting a queued task to its provider: the one paid call, made at most once.

The money rule (DESIGN.md): a client request creates at most one provider task. Before the
create is sent, the task records ``create_sent_at`` with a conditional write, so two workers
can never both send it. If the answer is lost (``CreateOutcomeUnknown``) the task is *held*:
it stays ``queued`` with ``create_outcome_unknown`` until the provider's task list, or a
callback carrying reelay's task id, says what happened; it is never re-sent blindly.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from aws_lambda_powertools import Logger

from reelay.aws import PollStarter
from reelay.catalog import ProviderCatalog
from reelay.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    InsufficientBalance,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTransientError,
    ReelayError,
    RequestInvalid,
    ResultFetchError,
    TransitionConflict,
)
from reelay.inputs import ImageInputs
from reelay.models import ErrorCode, ImageRequest, Task, TaskKind, TaskStatus, VideoRequest, utcnow
from reelay.providers.base import CreateResult, ImageInput, Provider, ProviderState, ProviderStatus
from reelay.store import TaskStore
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater, backoff_seconds

logger = Logger(child=True)

# Errors that end a task before or at its create (no retry can fix them), and the code the
# client sees. First match wins: ContentRefused is a kind of ProviderRejectedRequest.
_PERMANENT_ERRORS: tuple[tuple[type[ReelayError], ErrorCode], ...] = (
    (RequestInvalid, ErrorCode.INVALID_INPUT),
    (ContentRefused, ErrorCode.CONTENT_POLICY),
    (ProviderRejectedRequest, ErrorCode.PROVIDER_REJECTED),
    (InsufficientBalance, ErrorCode.INSUFFICIENT_BALANCE),
    (ProviderAuthError, ErrorCode.PROVIDER_AUTH),
)

# How long a lost create is looked for in the provider's task list before reelay concludes
# the provider never made it (lists can lag a little behind creates).
LOST_CREATE_GRACE = timedelta(minutes=5)


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"
    SKIPPED = "skipped"  # not queued any more (a duplicate message) or another worker has it
    FAILED = "failed"


class Submitter:
    """Takes a queued task to its provider."""

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        tracker: TaskTracker,
        poll: PollStarter,
        *,
        tokens: CallbackTokens | None,
        callback_base_url: str | None,
        inputs: ImageInputs | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._tracker = tracker
        self._poll = poll
        self._tokens = tokens
        self._callback_base_url = callback_base_url
        self._inputs = inputs

    def submit(self, task_id: str, *, attempt: int = 0) -> SubmitOutcome:
        """Submit one task; raises ``RetryLater`` for 429s, transient failures and held creates."""
        task = self._store.get(task_id)
        if task.status is TaskStatus.SUBMITTED:
            # A redelivery after the create: make sure the poll path runs (the execution name
            # is the task id, so this starts nothing when it already runs).
            self._follow(task, self._providers.get(task.provider))
            return SubmitOutcome.SKIPPED
        if task.status is not TaskStatus.QUEUED:
            return SubmitOutcome.SKIPPED
        provider = self._providers.get(task.provider)
        if task.create_sent_at is not None:
            if not task.create_outcome_unknown and utcnow() - task.create_sent_at < _in_flight(provider):
                # Another worker's create may still be waiting for its answer: look later.
                raise RetryLater(backoff_seconds(attempt, base=5.0, cap=60.0), "a create is in flight")
            return self.recover(task, attempt=attempt)
        request = _request_of(task)
        images: list[ImageInput] = []
        try:
            if isinstance(request, ImageRequest):
                provider.validate_images(request)
                # Inputs are read before the create is claimed: a failed read is retried safely.
                images = self._inputs.load(request) if self._inputs else []
            else:
                provider.validate(request)
                provider.preflight(request)
        except (ProviderTransientError, ResultFetchError) as exc:
            raise RetryLater(_retry_seconds(exc, attempt), exc.message) from exc
        except ReelayError as exc:
            return self._fail_permanently(task, exc)
        try:
            task = self._store.update(task, create_sent_at=utcnow())
        except TransitionConflict:
            return SubmitOutcome.SKIPPED  # another worker claimed the create
        return self._create(task, provider, request, images, attempt)

    def _send(
        self, task: Task, provider: Provider, request: VideoRequest | ImageRequest, images: list[ImageInput]
    ) -> CreateResult:
        """The paid call for the task's kind."""
        if isinstance(request, ImageRequest):
            results = provider.generate_images(request, images)
            return CreateResult(
                provider_task_id=f"images:{task.id}", initial_state=ProviderState.SUCCEEDED, results=results
            )
        if task.kind is TaskKind.REMIX:
            parent = self._store.get(str(task.parent_task_id))
            return provider.remix(str(parent.provider_task_id), request)
        callback_url = None
        if provider.supports_callbacks and self._tokens and self._callback_base_url:
            callback_url = self._tokens.url(self._callback_base_url, provider.name, task.id)
        return provider.create(request, task_id=task.id, callback_url=callback_url)

    def _create(
        self,
        task: Task,
        provider: Provider,
        request: VideoRequest | ImageRequest,
        images: list[ImageInput],
        attempt: int,
    ) -> SubmitOutcome:
        try:
            result = self._send(task, provider, request, images)
        except CreateOutcomeUnknown:
            logger.warning("create outcome unknown; holding task", extra={"task_id": task.id})
            task = self._store.update(task, create_outcome_unknown=True)
            return self.recover(task, attempt=attempt)
        except ProviderTransientError as exc:
            # The provider answered 429/5xx or the request never left: no task was made, so
            # release the claim and retry from the queue.
            self._store.update(task, create_sent_at=None)
            raise RetryLater(_retry_seconds(exc, attempt), exc.message) from exc
        except ReelayError as exc:
            return self._fail_permanently(task, exc)
        task = self._store.transition(
            task,
            TaskStatus.SUBMITTED,
            reason="provider accepted",
            provider_task_id=result.provider_task_id,
            cost_cents=result.cost_cents,
            create_outcome_unknown=False,
        )
        if result.initial_state is ProviderState.SUCCEEDED:
            # Synchronous results (images): straight to ingest, through the one tracker.
            self._tracker.apply(
                task,
                ProviderStatus(
                    provider_task_id=result.provider_task_id, state=ProviderState.SUCCEEDED, results=result.results
                ),
            )
        else:
            self._follow(task, provider)
        return SubmitOutcome.SUBMITTED

    def _fail_permanently(self, task: Task, exc: ReelayError) -> SubmitOutcome:
        """End the task for an error retrying cannot fix; anything unexpected propagates."""
        code = next((code for kind, code in _PERMANENT_ERRORS if isinstance(exc, kind)), None)
        if code is None:
            raise exc
        self._tracker.fail(task, code, exc.message)
        return SubmitOutcome.FAILED

    def recover(self, task: Task, *, attempt: int = 0) -> SubmitOutcome:
        """A create was sent before but its answer is unknown: look for the provider task.

        Found: adopt it. Not found, where the provider's task list is authoritative and the
        grace period has passed: no task was made, so the claim is released and the create
        sent again. Otherwise the task stays held (``RetryLater``: look again later); without
        a task list, only the callback that carries reelay's task id can settle it.
        """
        provider = self._providers.get(task.provider)
        request = _request_of(task)
        found = provider.find_created(task.id, request) if isinstance(request, VideoRequest) else None
        if found is None:
            sent_at = task.create_sent_at or task.updated_at
            if provider.finds_lost_creates and utcnow() - sent_at > LOST_CREATE_GRACE:
                logger.info("lost create not found at the provider; sending it again", extra={"task_id": task.id})
                try:
                    self._store.update(task, create_sent_at=None, create_outcome_unknown=False)
                except TransitionConflict:
                    return SubmitOutcome.SKIPPED
                return self.submit(task.id, attempt=attempt)
            raise RetryLater(
                backoff_seconds(attempt, base=15.0, cap=LOST_CREATE_GRACE.total_seconds() / 3),
                "create outcome unknown; task held",
            )
        try:
            task = self._store.transition(
                task,
                TaskStatus.SUBMITTED,
                reason="found at provider",
                provider_task_id=found,
                create_outcome_unknown=False,
            )
        except TransitionConflict:
            return SubmitOutcome.SKIPPED
        self._follow(task, provider)
        return SubmitOutcome.SUBMITTED

    def _follow(self, task: Task, provider: Provider) -> None:
        """Start the poll path for protocols without callbacks (execution name = task id)."""
        if provider.supports_callbacks:
            return
        self._poll.start(task.id, poll_input(task, provider))


def poll_input(task: Task, provider: Provider, *, segment: int = 0, total_polls: int = 0) -> dict[str, object]:
    """The input of a poll execution: the first wait comes from the adaptive schedule."""
    from reelay.schedule import PollSchedule

    schedule = PollSchedule.for_provider(provider.config)
    return {
        "task_id": task.id,
        "polls": 0,
        "total_polls": total_polls,
        "segment": segment,
        "wait_seconds": schedule.wait(total_polls, task_id=task.id),
    }


def _in_flight(provider: Provider) -> timedelta:
    """How long a create sent by another worker may still be waiting for its answer."""
    return timedelta(seconds=2 * provider.config.timeout_seconds + 30)


def _request_of(task: Task) -> VideoRequest | ImageRequest:
    if task.kind is TaskKind.IMAGE:
        return ImageRequest.model_validate(task.request)
    return VideoRequest.model_validate(task.request)


def _retry_seconds(exc: Exception, attempt: int) -> int:
    if isinstance(exc, ProviderRateLimited) and exc.retry_after:
        return max(1, int(exc.retry_after))
    return backoff_seconds(attempt)
