"""Provider callbacks: the token first, the body only a hint, the status endpoint the truth.

No URL that arrives in a callback body is ever fetched: the receiver asks the provider's
status endpoint, with reelay's credential, and applies that answer through ``TaskTracker``.
Copying never happens here (ingest does it from a queue), so the answer is fast.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from reelay.catalog import ProviderCatalog
from reelay.errors import (
    CallbackRejected,
    ProviderError,
    ProviderRateLimited,
    ProviderTaskUnknown,
    QueueSendFailed,
    RequestInvalid,
    TransitionConflict,
)
from reelay.models import Task, TaskStatus
from reelay.store import TaskStore
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker

if TYPE_CHECKING:
    from reelay.aws import TaskQueue

logger = Logger(child=True)


class CallbackReceiver:
    """Handles ``POST /callbacks/{provider}/{task_id}?t=<token>``."""

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        tokens: CallbackTokens,
        tracker: TaskTracker,
        *,
        looks: TaskQueue | None = None,
    ) -> None:
        self._looks = looks
        self._store = store
        self._providers = providers
        self._tokens = tokens
        self._tracker = tracker

    def authentic(self, provider_name: str, task_id: str, token: str | bytes | None) -> bool:
        """Whether the token is this task's: checked first, as bytes, before anything is parsed."""
        return self._tokens.verify(provider_name, task_id, token)

    def receive(self, provider_name: str, task_id: str, token: str | bytes | None, body: bytes) -> Task:
        """Verify, then move the task by what the provider's status endpoint says."""
        if not self.authentic(provider_name, task_id, token):
            raise CallbackRejected("callback token missing or invalid")
        try:
            provider = self._providers.get(provider_name)
        except RequestInvalid:
            raise CallbackRejected("callback for a provider this stack does not have") from None
        task = self._store.get(task_id)
        if task.provider != provider_name:
            raise CallbackRejected("callback provider does not match the task")
        if task.status.terminal or task.status is TaskStatus.INGESTING:
            return task  # duplicates and late deliveries change nothing and cost no provider call
        provider_task_id = task.provider_task_id
        if provider_task_id is None:
            # The create's answer was lost but the provider used our per-task URL: the hint
            # names its task, which the status call below confirms before anything is stored.
            provider_task_id = provider.parse_callback(body).provider_task_id
            if not provider_task_id:
                return task
        try:
            status = provider.status(provider_task_id)
        except ProviderTaskUnknown:
            logger.warning("callback named a task the provider does not know", extra={"task_id": task_id})
            return task
        except ProviderError as exc:
            if (
                isinstance(exc, ProviderRateLimited)
                and task.provider_task_id is not None
                and self._look_later(task, exc)
            ):
                return task
            if task.provider_task_id is None:
                # The status check could not confirm the hint now: keep it (unconfirmed) so a held
                # create can still be settled by asking later, even if the provider never calls again.
                self._remember_hint(task, provider_task_id)
            raise
        if task.provider_task_id is None and task.status is TaskStatus.QUEUED:
            task = self._adopt(task, provider_task_id)
            if task.provider_task_id != provider_task_id:
                return task  # not ours to adopt
        return self._tracker.apply(task, status)

    def _look_later(self, task: Task, held: ProviderRateLimited) -> bool:
        """The status check was held back by reelay's own request limit (nothing was sent): the
        submit worker asks instead once the request log has room (``Submitter.look``). A 503
        would lose the news: a provider that never retries a callback (generate_task) leaves
        the task, and its governor slot, to reconcile's look minutes later. False: not queued."""
        if self._looks is None:
            return False
        try:
            self._looks.send(task.id, delay_seconds=math.ceil(held.retry_after or 1.0), kind="look")
        except QueueSendFailed:
            return False
        logger.info("status check held back by the request limit; the submit worker asks", extra={"task_id": task.id})
        return True

    def _remember_hint(self, task: Task, provider_task_id: str) -> None:
        """Keep the hint although another writer wrote the task since it was read: most often
        the submit worker holding the create whose 5xx (or silence) the callback outran. A hint
        lost here is a provider task the hold cannot find, and a second create when it ends."""
        for _ in range(5):
            try:
                self._store.update(task, callback_provider_task_id=provider_task_id)
                return
            except TransitionConflict:
                task = self._store.get(task.id)
                if task.status is not TaskStatus.QUEUED or task.provider_task_id is not None:
                    return  # settled meanwhile: the hint is not needed

    def _adopt(self, task: Task, provider_task_id: str) -> Task:
        """Adopt the provider task the callback named, unless another reelay task owns it."""
        owner = self._store.claim_provider_task(task.provider, provider_task_id, task.id)
        if owner != task.id:
            logger.warning("callback named a provider task another reelay task owns", extra={"task_id": task.id})
            return task
        try:
            return self._store.transition(
                task,
                TaskStatus.SUBMITTED,
                reason="confirmed by callback",
                provider_task_id=provider_task_id,
                create_outcome_unknown=False,
                create_hold=None,
                held_at=None,
            )
        except TransitionConflict:
            return self._store.get(task.id)
