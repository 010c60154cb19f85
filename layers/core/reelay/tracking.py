"""Applies what a provider's status endpoint said to a task: the one place that does it.

Callbacks, the poll function and reconcile all end here, so a duplicate, late or
out-of-order report changes nothing: progress only grows, a terminal task never moves,
and only the writer that wins the move to ``ingesting`` enqueues the ingest.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from reelay.aws import TaskQueue
from reelay.errors import TransitionConflict
from reelay.models import ErrorCode, Task, TaskError, TaskStatus
from reelay.providers.base import ProviderState, ProviderStatus
from reelay.store import TaskStore

logger = Logger(child=True)

_ATTEMPTS = 8


class TaskTracker:
    """Moves tasks forward from provider status reports, under concurrency."""

    def __init__(self, store: TaskStore, ingest_queue: TaskQueue) -> None:
        self._store = store
        self._ingest = ingest_queue

    def apply(self, task: Task, status: ProviderStatus) -> Task:
        """Apply ``status`` to ``task``; returns the task as it now stands."""
        for _ in range(_ATTEMPTS):
            try:
                return self._apply_once(task, status)
            except TransitionConflict:
                task = self._store.get(task.id)
        return task

    def fail(self, task: Task, code: ErrorCode, message: str) -> Task:
        """Fail a non-terminal task with a stable code (no-op once terminal)."""
        for _ in range(_ATTEMPTS):
            if task.status.terminal:
                return task
            try:
                return self._store.transition(
                    task, TaskStatus.FAILED, reason=code.value, error=TaskError(code=code, message=message[:1000])
                )
            except TransitionConflict:
                task = self._store.get(task.id)
        return task

    def _apply_once(self, task: Task, status: ProviderStatus) -> Task:
        if task.status.terminal or task.status is TaskStatus.INGESTING:
            return task
        changes: dict[str, object] = {}
        if task.provider_task_id is None:
            changes["provider_task_id"] = status.provider_task_id
        if status.state is ProviderState.SUCCEEDED:
            if not status.results:
                return self.fail(task, ErrorCode.PROVIDER_FAILED, "the provider reported success without a result URL")
            task = self._store.transition(
                task,
                TaskStatus.INGESTING,
                reason="provider succeeded",
                progress=100,
                result_urls=[r.url for r in status.results],
                **changes,
            )
            self._ingest.send(task.id)
            logger.info("task ready for ingest", extra={"task_id": task.id, "results": len(status.results)})
            return task
        if status.state is ProviderState.FAILED:
            code = status.error_code or ErrorCode.PROVIDER_FAILED
            message = status.error_message or "the provider reported the task as failed"
            return self._store.transition(
                task,
                TaskStatus.FAILED,
                reason=code.value,
                error=TaskError(code=code, message=message[:1000]),
                **changes,
            )
        progress = max(task.progress, min(99, status.progress or 0))
        if status.state is ProviderState.RUNNING and task.status in (TaskStatus.QUEUED, TaskStatus.SUBMITTED):
            return self._store.transition(
                task, TaskStatus.RUNNING, reason="provider running", progress=progress, **changes
            )
        if progress != task.progress or changes:
            return self._store.update(task, progress=progress, **changes)
        return task
