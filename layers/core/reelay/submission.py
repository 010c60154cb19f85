"""Submitting a queued task to its provider: the one paid call, made at most once.

The money rule (DESIGN.md): a client request creates at most one provider task. Before the
create is sent, the task records ``create_sent_at`` with a conditional write, so two workers
can never both send it. When the create's outcome is unknown the task is *held* (it stays
``queued`` with ``create_outcome_unknown``):

- no answer (a timeout after sending, a dropped connection, a 504): never re-sent. The
  provider's task list or the callback that carries reelay's task id settles it; where
  neither can, reconcile fails it as ``CREATE_UNCONFIRMED`` at the provider's deadline.
- a 5xx answer: where the provider can tell reelay later (its task list, or a callback that
  names our task), held for twice the typical generation time from the answer, then re-sent
  once if nothing turned up; where it cannot (openai_videos), re-sent at most once at once, and
  the task records ``possible_duplicate_charge``.

A lost create is adopted only if the provider made it at or after our first send and no
other reelay task owns it (``TaskStore.claim_provider_task``).

An ``auto`` task fails over to its next ranked provider (``reelay.routing``) only where the
refusing provider made nothing: a refusal before the create (balance, credential, a failed safe
call, ``NoCapacity``), a create answered with a refusal or that never left, or a 5xx'd create
whose hold ended with the provider's task list showing nothing. The task then goes back on the
queue with its new provider; a held create of unknown outcome never fails over.
"""

from __future__ import annotations

import math
from datetime import timedelta
from enum import StrEnum

from aws_lambda_powertools import Logger

from reelay.aws import PollStarter
from reelay.catalog import ProviderCatalog
from reelay.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CreateServerError,
    InsufficientBalance,
    NoCapacity,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    ProviderTransientError,
    ReelayError,
    RequestInvalid,
    ResultFetchError,
    TransitionConflict,
)
from reelay.governor import Governor
from reelay.inputs import ImageInputs
from reelay.models import (
    CreateHold,
    ErrorCode,
    ImageRequest,
    Task,
    TaskKind,
    TaskStatus,
    VideoRequest,
    utcnow,
)
from reelay.providers.base import CreateResult, ImageInput, Provider, ProviderState, ProviderStatus
from reelay.routing import Router
from reelay.store import TaskStore
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater, backoff_seconds

logger = Logger(child=True)

# Errors that end a task before or at its create (no retry can fix them), and the code the
# client sees. First match wins: ContentRefused is a kind of ProviderRejectedRequest.
_PERMANENT_ERRORS: tuple[tuple[type[ReelayError], ErrorCode], ...] = (
    (RequestInvalid, ErrorCode.VALIDATION_FAILED),
    (ContentRefused, ErrorCode.CONTENT_POLICY),
    (ProviderRejectedRequest, ErrorCode.PROVIDER_REJECTED),
    (InsufficientBalance, ErrorCode.INSUFFICIENT_BALANCE),
    (ProviderAuthError, ErrorCode.PROVIDER_AUTH),
)

# A create answered 5xx is sent at most this many times in all.
MAX_CREATES = 2
# The longest backoff after a 429 without Retry-After.
RATE_LIMITED_CAP_SECONDS = 60.0
# A held-back status check of a callback task is tried this many times from the queue, then
# left to reconcile.
LOOK_ATTEMPTS = 5


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"
    SKIPPED = "skipped"  # not queued any more (a duplicate message) or another worker has it
    HELD = "held"  # the create's outcome is unknown; reconcile looks again later
    FAILED = "failed"
    WAITING = "waiting"  # no free slot at the provider: in the governor's line, still queued
    LOOKED = "looked"  # a look message: the task's status was asked and applied


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
        router: Router | None = None,
        governor: Governor | None = None,
    ) -> None:
        self._governor = governor
        self._store = store
        self._providers = providers
        self._tracker = tracker
        self._poll = poll
        self._tokens = tokens
        self._callback_base_url = callback_base_url
        self._inputs = inputs
        self._router = router or Router(providers)

    def submit(self, task_id: str, *, attempt: int = 0) -> SubmitOutcome:
        """Submit one task; ``HELD`` when its create's outcome is unknown (reconcile looks again).

        Raises ``RetryLater`` for 429s, transient failures and a create still in flight.
        """
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
            if not task.create_outcome_unknown:
                if utcnow() - task.create_sent_at < _in_flight(provider):
                    # Another worker's create may still be waiting for its answer: look later.
                    raise RetryLater(backoff_seconds(attempt, base=5.0, cap=60.0), "a create is in flight")
                # The worker that sent it died before recording the answer: nobody knows it.
                task = self._hold(task, CreateHold.NO_ANSWER)
            return self.recover(task) if task.status is TaskStatus.QUEUED else SubmitOutcome.SKIPPED
        request = _request_of(task)
        images: list[ImageInput] = []
        if self._governor is not None and not self._governor.admit(task):
            # No slot free: the task waits in the governor's line (still queued, its message
            # done with); the task that frees a slot sends its message again.
            return SubmitOutcome.WAITING
        try:
            if isinstance(request, ImageRequest):
                provider.validate_images(request)
                # Inputs are read before the create is claimed: a failed read is retried safely.
                images = self._inputs.load(request) if self._inputs else []
            else:
                provider.validate(request)
                provider.preflight(request)
        except (ProviderTransientError, ResultFetchError) as exc:
            self._fail_over(task, exc)
            raise RetryLater(_retry_seconds(exc, attempt), exc.message) from exc
        except ReelayError as exc:
            self._fail_over(task, exc)
            return self._fail_permanently(task, exc)
        claimed = self._claim_create(task)
        if claimed is None:
            return SubmitOutcome.SKIPPED  # another worker claimed the create, or it moved on
        return self._create(claimed, provider, request, images, attempt)

    def _claim_create(self, task: Task) -> Task | None:
        """Mark the create sent, conditionally; None when another worker claimed it first.

        A conflicting write that claimed nothing (reconcile recording a look) is not a claim:
        re-read and try again.
        """
        for _ in range(5):
            now = utcnow()
            try:
                return self._store.update(
                    task,
                    create_sent_at=now,
                    first_create_sent_at=task.first_create_sent_at or now,
                    create_attempts=task.create_attempts + 1,
                )
            except TransitionConflict:
                task = self._store.get(task.id)
                if task.status is not TaskStatus.QUEUED or task.create_sent_at is not None:
                    return None
        return None

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
        except CreateServerError as exc:
            return self._answered_server_error(task, provider, exc, attempt)
        except CreateOutcomeUnknown:
            logger.warning("create outcome unknown; holding task", extra={"task_id": task.id})
            task = self._hold(task, CreateHold.NO_ANSWER)
            return self.recover(task) if task.status is TaskStatus.QUEUED else SubmitOutcome.SUBMITTED
        except ProviderTransientError as exc:
            # The provider answered 429 or the request never left: no task was made, so
            # release the claim (this send does not count) and retry from the queue.
            first = task.first_create_sent_at if task.create_attempts > 1 else None
            self._update_own_create(
                task, create_sent_at=None, create_attempts=task.create_attempts - 1, first_create_sent_at=first
            )
            self._fail_over(self._store.get(task.id), exc)
            raise RetryLater(_retry_seconds(exc, attempt), exc.message) from exc
        except ReelayError as exc:
            self._fail_over(task, exc, refused_create=True)
            return self._fail_permanently(task, exc)
        return self._accept(task, provider, result)

    def _accept(self, task: Task, provider: Provider, result: CreateResult) -> SubmitOutcome:
        """Record the provider's task; a callback that adopted it meanwhile changes nothing."""
        self._store.claim_provider_task(provider.name, result.provider_task_id, task.id)
        sent = task.create_sent_at
        for _ in range(5):
            try:
                task = self._store.transition(
                    task,
                    TaskStatus.SUBMITTED,
                    reason="provider accepted",
                    provider_task_id=result.provider_task_id,
                    cost_cents=result.cost_cents,
                    create_outcome_unknown=False,
                    create_hold=None,
                    held_at=None,
                    poll_execution=None if provider.supports_callbacks else task.id,
                )
                break
            except TransitionConflict:
                current = self._store.get(task.id)
                if current.status is not TaskStatus.QUEUED or current.create_sent_at != sent:
                    return self._adopted_meanwhile(task.id, result)
                # Another writer that took nothing (reconcile's look) wrote in between: the
                # answer is still this create's, so it is recorded on the task as it is now.
                task = current
        else:
            return self._adopted_meanwhile(task.id, result)
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

    def _adopted_meanwhile(self, task_id: str, result: CreateResult) -> SubmitOutcome:
        """The submit lost its write to a callback that adopted the same provider task: keep the cost."""
        current = self._store.get(task_id)
        if current.provider_task_id != result.provider_task_id:
            logger.error(
                "the task moved on with another provider task while its create was answered",
                extra={"task_id": task_id, "status": str(current.status)},
            )
            return SubmitOutcome.SKIPPED
        if current.cost_cents is None and result.cost_cents is not None:
            for _ in range(3):
                try:
                    self._store.update(current, cost_cents=result.cost_cents)
                    break
                except TransitionConflict:
                    current = self._store.get(task_id)
        return SubmitOutcome.SUBMITTED

    def _answered_server_error(
        self, task: Task, provider: Provider, exc: CreateServerError, attempt: int
    ) -> SubmitOutcome:
        """A 5xx: maybe made. Hold where the provider can tell later; else re-send at most once."""
        if self._can_tell_later(provider):
            logger.warning("create answered 5xx; holding task", extra={"task_id": task.id})
            task = self._hold(task, CreateHold.SERVER_ERROR)
            return self.recover(task) if task.status is TaskStatus.QUEUED else SubmitOutcome.SUBMITTED
        if task.create_attempts >= MAX_CREATES:
            return self._unconfirmed(
                task,
                provider,
                f"{task.create_attempts} creates sent to {provider.name} were answered with a server error and "
                f"{provider.name} has no way to tell whether it made them; a charge may exist for up to "
                f"{task.create_attempts} tasks: ask {provider.name} about tasks created since "
                f"{(task.first_create_sent_at or task.created_at).isoformat()}",
            )
        logger.warning("create answered 5xx; re-sending once (a second charge is possible)", extra={"task_id": task.id})
        self._update_own_create(task, create_sent_at=None, possible_duplicate_charge=True)
        raise RetryLater(_retry_seconds(exc, attempt), exc.message) from exc

    def _can_tell_later(self, provider: Provider) -> bool:
        """Whether the provider can later say what became of a create: its task list, or a callback."""
        return provider.finds_lost_creates or (
            provider.supports_callbacks and self._tokens is not None and bool(self._callback_base_url)
        )

    def _update_own_create(self, task: Task, **changes: object) -> None:
        """Record what became of this worker's create, although another writer (reconcile's
        look, a callback) may have written the task since it was read: re-read and retry while
        the task is still queued with this very create claimed."""
        sent = task.create_sent_at
        for _ in range(5):
            try:
                self._store.update(task, **changes)
                return
            except TransitionConflict:
                task = self._store.get(task.id)
                if task.status is not TaskStatus.QUEUED or task.create_sent_at != sent:
                    return  # adopted meanwhile, or no longer this create's claim

    def _hold(self, task: Task, hold: CreateHold) -> Task:
        """Mark the create's outcome unknown. A callback may have adopted the task meanwhile:
        then the task is returned as it now stands (no longer queued), unheld."""
        for _ in range(3):
            try:
                return self._store.update(task, create_outcome_unknown=True, create_hold=hold, held_at=utcnow())
            except TransitionConflict:
                task = self._store.get(task.id)
                if task.status is not TaskStatus.QUEUED:
                    return task
        return task

    def fail_over_waiting(self, task: Task, governor: Governor) -> bool:
        """An ``auto`` task that has waited in its provider's line for a slot longer than the
        provider's ``capacity_wait_seconds`` leaves the line and fails over (``NoCapacity``, before
        any paid call) to its next capable provider. False where it stays: it named its provider,
        no candidate is left, it has not waited that long, or a freed slot is letting it in."""
        if task.routing is None or task.create_sent_at is not None:
            return False
        config = self._providers.get(task.provider).config
        since = max([task.created_at, *(f.at for f in task.routing.failovers)])
        waited = (utcnow() - since).total_seconds()
        exc = NoCapacity(
            f"no free slot at {task.provider} after {waited:.0f} s in its line "
            f"(its {config.max_in_flight} tasks in flight are busy)",
            provider=task.provider,
            waited_seconds=waited,
        )
        if waited < config.capacity_wait_seconds or self._router.fail_over(task, exc) is None:
            return False
        if not governor.leave(task):
            return False
        try:
            self._fail_over(task, exc)
        except RetryLater:  # moved to the next provider: the caller sends its submit message
            logger.info("failed over for capacity", extra={"task_id": task.id, "provider": task.provider})
            return True
        return False  # written meanwhile (claimed or adopted): out of the line, its next look sees it

    def _fail_over(self, task: Task, exc: Exception, *, refused_create: bool = False, unmade: bool = False) -> None:
        """Move an ``auto`` task to its next provider where ``exc`` proves nothing was made, and
        send it back to the queue (``RetryLater``); return where it does not fail over.

        ``refused_create``: this worker's create was answered with a refusal, so it does not
        count as a create sent (as a 429 does not). ``unmade``: the caller knows nothing was
        made although ``exc`` alone does not say so (a 5xx'd create the task list does not show).
        """
        if not isinstance(exc, ReelayError):
            return
        sent = task.create_sent_at
        for _ in range(5):
            if task.status is not TaskStatus.QUEUED or task.create_sent_at != sent:
                return  # adopted or claimed meanwhile: not this worker's to move
            decision = self._router.fail_over(task, exc, unmade=unmade)
            if decision is None:
                return
            following, routing = decision
            attempts = task.create_attempts - 1 if refused_create else task.create_attempts
            provider = self._providers.get(following)
            try:
                self._store.update(
                    task,
                    provider=provider.name,
                    protocol=provider.protocol,
                    routing=routing,
                    create_sent_at=None,
                    create_attempts=attempts,
                    first_create_sent_at=task.first_create_sent_at if attempts else None,
                    create_outcome_unknown=False,
                    create_hold=None,
                    held_at=None,
                    callback_provider_task_id=None,
                )
            except TransitionConflict:
                task = self._store.get(task.id)  # a look by reconcile, say: read again and retry
                continue
            logger.warning(
                "provider refused before anything was made; failing over",
                extra={"task_id": task.id, "from": task.provider, "to": provider.name, "error": exc.code},
            )
            raise RetryLater(0, f"failed over from {task.provider} to {provider.name}") from exc

    def _fail_permanently(self, task: Task, exc: ReelayError) -> SubmitOutcome:
        """End the task for an error retrying cannot fix; anything unexpected propagates."""
        code = next((code for kind, code in _PERMANENT_ERRORS if isinstance(exc, kind)), None)
        if code is None:
            raise exc
        self._tracker.fail(task, code, exc.message)
        return SubmitOutcome.FAILED

    def recover(self, task: Task, *, final: bool = False) -> SubmitOutcome:
        """A create was sent but its outcome is unknown: look for the provider task, or hold.

        Found (a callback's hint the status endpoint confirms, or a task in the provider's list
        created at or after our first send, owned by no other reelay task): adopted. A 5xx'd
        create still within its hold (twice the typical generation time since its answer)
        raises ``RetryLater`` until the hold ends, then is sent once more. A create the
        provider's task list shows no trace of after the hold is failed as
        ``CREATE_UNCONFIRMED`` (no charge is likely).
        Otherwise the task stays held (``HELD``) until reconcile looks again; with ``final``
        (the provider's deadline has passed) it is failed as ``CREATE_UNCONFIRMED``. A held
        create is never re-sent blindly.
        """
        provider = self._providers.get(task.provider)
        request = _request_of(task)
        if task.callback_provider_task_id:
            settled = self._confirm_callback_hint(task, provider, task.callback_provider_task_id, final=final)
            if settled is not None:
                return settled
        if isinstance(request, VideoRequest) and provider.finds_lost_creates:
            since = task.first_create_sent_at or task.created_at
            for candidate in provider.find_created(task.id, request, since=since):
                if self._store.claim_provider_task(provider.name, candidate, task.id) == task.id:
                    return self._adopt(task, provider, candidate)
        sent_at = task.create_sent_at or task.updated_at
        held_for = utcnow() - max(sent_at, task.held_at or sent_at)
        held_long_enough = held_for >= _hold_time(provider)
        may_resend = not final and task.create_hold is CreateHold.SERVER_ERROR and task.create_attempts < MAX_CREATES
        if may_resend and not held_long_enough:
            # Come back when the hold ends, to look once more and then send it again.
            wait = (_hold_time(provider) - held_for).total_seconds()
            raise RetryLater(max(1, int(wait) + 1), "a 5xx'd create is held")
        if may_resend and provider.finds_lost_creates and isinstance(request, VideoRequest):
            # The provider's own list shows nothing was made: an `auto` task tries its next provider.
            unmade = CreateServerError(
                f"{provider.name} answered the create with a server error and its task list shows no task for it",
                provider=provider.name,
            )
            self._fail_over(task, unmade, unmade=True)
        if may_resend:
            logger.info("nothing turned up for a 5xx'd create; sending it once more", extra={"task_id": task.id})
            try:
                self._store.update(
                    task, create_sent_at=None, create_outcome_unknown=False, create_hold=None, held_at=None
                )
            except TransitionConflict:
                return SubmitOutcome.SKIPPED
            return self.submit(task.id)
        if held_long_enough and provider.finds_lost_creates and isinstance(request, VideoRequest):
            return self._unconfirmed(
                task,
                provider,
                f"the create sent to {provider.name} at {sent_at.isoformat()} got no usable answer, and "
                f"{provider.name}'s task list shows no task for it; no charge is likely, but check "
                f"{provider.name}'s task list if in doubt",
            )
        if final:
            return self._unconfirmed(
                task,
                provider,
                f"the create sent to {provider.name} at {sent_at.isoformat()} got no usable answer and no task "
                f"turned up (no callback named this task) before the deadline; a charge may exist: ask "
                f"{provider.name} about tasks created around that time for this prompt",
            )
        return SubmitOutcome.HELD

    def _confirm_callback_hint(self, task: Task, provider: Provider, hint: str, *, final: bool) -> SubmitOutcome | None:
        """Ask the status endpoint about the task a callback named; adopt it if it is ours."""
        try:
            status = provider.status(hint)
        except ProviderTaskUnknown:
            try:
                self._store.update(task, callback_provider_task_id=None)
            except TransitionConflict:
                # Written while the status was asked (a hold, a newer hint, an adoption): the next
                # look starts from what the task is then, not from this stale read.
                if final:
                    return SubmitOutcome.SKIPPED
                raise RetryLater(1, "the task changed while a callback's hint was checked") from None
            return None
        except ProviderError:
            # Cannot ask now. A callback named this task, so it likely exists: never re-send
            # while that may be so; at the deadline the task fails as unconfirmed.
            return None if final else SubmitOutcome.HELD
        if self._store.claim_provider_task(provider.name, hint, task.id) != task.id:
            return None
        outcome = self._adopt(task, provider, hint)
        if outcome is SubmitOutcome.SUBMITTED:
            self._tracker.apply(self._store.get(task.id), status)
        return outcome

    def _adopt(self, task: Task, provider: Provider, provider_task_id: str) -> SubmitOutcome:
        try:
            task = self._store.transition(
                task,
                TaskStatus.SUBMITTED,
                reason="found at provider",
                provider_task_id=provider_task_id,
                create_outcome_unknown=False,
                create_hold=None,
                held_at=None,
                poll_execution=None if provider.supports_callbacks else task.id,
            )
        except TransitionConflict:
            return SubmitOutcome.SKIPPED
        self._follow(task, provider)
        return SubmitOutcome.SUBMITTED

    def _unconfirmed(self, task: Task, provider: Provider, message: str) -> SubmitOutcome:
        logger.warning("create could not be confirmed; failing task", extra={"task_id": task.id})
        self._tracker.fail(task, ErrorCode.CREATE_UNCONFIRMED, message)
        return SubmitOutcome.FAILED

    def poll_running(self, task: Task) -> bool:
        """Whether the task's poll execution still runs (always True on the callback path)."""
        provider = self._providers.get(task.provider)
        return provider.supports_callbacks or self._poll.is_running(task.poll_execution or task.id)

    def restart_poll(self, task: Task) -> Task:
        """Start a fresh poll execution for a task whose execution died (reconcile)."""
        provider = self._providers.get(task.provider)
        segment = _segment_of(task.poll_execution or task.id) + 1
        name = f"{task.id}-{segment}"
        task = self._store.update(task, poll_execution=name)
        self._poll.start(name, poll_input(task, provider))
        return task

    def look(self, task_id: str, *, attempt: int = 0) -> SubmitOutcome:
        """Ask a callback task's status and apply it (its slot is freed when it is final): a
        ``look`` message, sent by a callback whose status check reelay's request limit held
        back (``CallbackReceiver``). A task no longer waiting on its provider is skipped.

        Waits for the request log like any read; a 429 or an answer that did not come is tried
        again from the queue a few times, then left to reconcile, which looks at every task
        overdue for its state.
        """
        task = self._store.get(task_id)
        if task.status not in (TaskStatus.SUBMITTED, TaskStatus.RUNNING) or not task.provider_task_id:
            return SubmitOutcome.SKIPPED
        provider = self._providers.get(task.provider)
        try:
            status = provider.status(str(task.provider_task_id))
        except ProviderTaskUnknown:
            logger.warning("the provider does not know this task; reconcile settles it", extra={"task_id": task.id})
            return SubmitOutcome.SKIPPED
        except ProviderTransientError as exc:
            if attempt >= LOOK_ATTEMPTS:
                logger.warning(
                    "status check not made; reconcile looks when the task is due", extra={"task_id": task.id}
                )
                return SubmitOutcome.SKIPPED
            raise RetryLater(_look_retry_seconds(exc, attempt), exc.message) from exc
        except ProviderError as exc:
            logger.warning(
                "status check failed; reconcile looks when the task is due",
                extra={"task_id": task.id, "code": exc.code},
            )
            return SubmitOutcome.SKIPPED
        self._tracker.apply(task, status)
        return SubmitOutcome.LOOKED

    def _follow(self, task: Task, provider: Provider) -> None:
        """Start the poll path for protocols without callbacks (the execution name makes it start once)."""
        if provider.supports_callbacks:
            return
        self._poll.start(task.poll_execution or task.id, poll_input(task, provider))


def poll_input(task: Task, provider: Provider) -> dict[str, object]:
    """The input of a poll execution: the first wait, the deadline and the heartbeat (reelay.polling)."""
    from reelay.schedule import PollSchedule

    schedule = PollSchedule.for_provider(provider.config)
    deadline = task.clock_start + timedelta(seconds=provider.config.deadline_seconds)
    return {
        "task_id": task.id,
        "wait_seconds": schedule.wait(0, task_id=task.id),
        "timeout_seconds": max(1, int((deadline - utcnow()).total_seconds())),
        "heartbeat_seconds": schedule.heartbeat_seconds,
    }


def _segment_of(execution_name: str) -> int:
    """The restart number of a poll execution: ``<task id>-<n>`` (reconcile restarted it n times), or 0."""
    _, _, suffix = execution_name.rpartition("-")
    return int(suffix) if suffix.isdigit() else 0


def _hold_time(provider: Provider) -> timedelta:
    """How long a held create waits for the provider's list or callback: twice the typical time."""
    return timedelta(seconds=2 * provider.config.typical_seconds)


def _in_flight(provider: Provider) -> timedelta:
    """How long a create sent by another worker may still be waiting for its answer."""
    return timedelta(seconds=2 * provider.config.timeout_seconds + 30)


def _request_of(task: Task) -> VideoRequest | ImageRequest:
    if task.kind is TaskKind.IMAGE:
        return ImageRequest.model_validate(task.request)
    return VideoRequest.model_validate(task.request)


def _look_retry_seconds(exc: Exception, attempt: int) -> int:
    """When a held-back status check is tried again: as soon as the request log has room."""
    if isinstance(exc, ProviderRateLimited) and exc.retry_after:
        return max(1, math.ceil(exc.retry_after))
    return _retry_seconds(exc, attempt)


def _retry_seconds(exc: Exception, attempt: int) -> int:
    """How long a message waits before it is tried again after ``exc``."""
    if isinstance(exc, ProviderRateLimited):
        if exc.retry_after:
            return max(1, int(exc.retry_after))
        # A rate or concurrency limit frees up within a minute: waiting longer only leaves the
        # provider idle and brings the task nearer its deadline.
        return backoff_seconds(attempt, base=2.0, cap=RATE_LIMITED_CAP_SECONDS)
    return backoff_seconds(attempt)
