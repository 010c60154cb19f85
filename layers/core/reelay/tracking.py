"""Applies what a provider's status endpoint said to a task, and ends tasks: the one place for both.

Callbacks, the poll function and reconcile all end here, so a duplicate, late or
out-of-order report changes nothing: progress only grows, a terminal task never moves,
and only the writer that wins the move to ``ingesting`` enqueues the ingest.

The one terminal path: every ``succeeded`` and every ``failed`` is written by
``TaskTracker.succeed`` or ``TaskTracker.fail`` (both through ``_finish``), and each
``on_terminal`` hook runs once, by the writer that won the terminal write. Notifications,
the governor's slot release and cost accounting hang off it. ``on_provider_final`` hooks run
once too, for the writer that moved the task to ``ingesting`` (the governor frees the slot
there, as the provider task is no longer in flight).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools import Logger

from reelay.aws import TaskQueue
from reelay.errors import QueueSendFailed, TransitionConflict
from reelay.models import ErrorCode, Output, Task, TaskError, TaskStatus
from reelay.providers.base import ProviderState, ProviderStatus
from reelay.store import TaskStore

logger = Logger(child=True)

_ATTEMPTS = 8

TerminalHook = Callable[[Task], None]


class TaskTracker:
    """Moves tasks forward from provider status reports, under concurrency, and ends them."""

    def __init__(
        self,
        store: TaskStore,
        ingest_queue: TaskQueue,
        *,
        on_terminal: Sequence[TerminalHook] = (),
        on_provider_final: Sequence[TerminalHook] = (),
    ) -> None:
        self._store = store
        self._ingest = ingest_queue
        self._on_terminal = tuple(on_terminal)
        # Run once the provider reported success (the task moved to ``ingesting``): the provider
        # task is no longer in flight (the governor frees its slot before the copy ends).
        self._on_provider_final = tuple(on_provider_final)

    def apply(
        self,
        task: Task,
        status: ProviderStatus,
        *,
        writes_progress: Callable[[Task], bool] | None = None,
        before_ingest: TerminalHook | None = None,
    ) -> Task:
        """Apply ``status`` to ``task``; returns the task as it now stands.

        ``before_ingest`` runs once this call moved the task to ``ingesting``, just before the
        ingest message (the poll path ends its execution there, so the message carries that
        step's whole cost: reelay.costs).

        A report that only moves the progress is written only when ``writes_progress`` says so of
        the task as stored (the poll path, ``PollSchedule.writes_progress``: at most one progress
        write per typical time, however far it moved, and none once the end is predicted
        to be near; near a task's end polls come seconds apart, and each would rewrite the item).
        Without it, every change is written. Anything else (a status, a provider id) is always
        written.
        """
        for _ in range(_ATTEMPTS):
            try:
                return self._apply_once(task, status, writes_progress, before_ingest)
            except TransitionConflict:
                task = self._store.get(task.id)
        return task

    def fail(self, task: Task, code: ErrorCode, message: str, **changes: Any) -> Task:
        """Fail a non-terminal task with a stable code (no-op once terminal)."""
        error = TaskError(code=code, message=message[:1000])
        return self._finish(task, TaskStatus.FAILED, reason=code.value, error=error, **changes)

    def succeed(self, task: Task, outputs: list[Output]) -> Task:
        """Mark an ``ingesting`` task succeeded with its copied outputs (no-op once terminal)."""
        return self._finish(task, TaskStatus.SUCCEEDED, reason="results copied", outputs=outputs, progress=100)

    def _finish(self, task: Task, to: TaskStatus, *, reason: str, **changes: Any) -> Task:
        """The one terminal write; the hooks run once, for the writer that won it."""
        for _ in range(_ATTEMPTS):
            if task.status.terminal:
                return task
            if to is TaskStatus.SUCCEEDED and task.status is not TaskStatus.INGESTING:
                raise TransitionConflict(f"task {task.id} is {task.status}; only an ingesting task succeeds")
            try:
                task = self._store.transition(task, to, reason=reason, **changes)
            except TransitionConflict:
                task = self._store.get(task.id)
                continue
            logger.info(
                "task ended",
                extra={"task_id": task.id, "status": str(task.status), "code": task.error.code if task.error else None},
            )
            self._run_hooks(self._on_terminal, task)
            return task
        return task

    @staticmethod
    def _run_hooks(hooks: Sequence[TerminalHook], task: Task) -> None:
        for hook in hooks:
            try:
                hook(task)
            except Exception:  # a hook's failure must not undo or repeat the write it follows
                logger.exception("task hook failed", extra={"task_id": task.id})

    def _apply_once(
        self,
        task: Task,
        status: ProviderStatus,
        writes_progress: Callable[[Task], bool] | None,
        before_ingest: TerminalHook | None = None,
    ) -> Task:
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
            # The hooks (the governor's slot) before the message: the ingest message is the step's
            # last word on the task, so it carries the step's whole cost (reelay.costs).
            self._run_hooks(self._on_provider_final, task)
            if before_ingest is not None:
                before_ingest(task)
            try:
                self._ingest.send(task.id)
            except QueueSendFailed:
                # The task is ingesting: reconcile sends the ingest again once it is due.
                logger.warning("ingest message not sent; reconcile will send it", extra={"task_id": task.id})
            logger.info("task ready for ingest", extra={"task_id": task.id, "results": len(status.results)})
            return task
        if status.state is ProviderState.FAILED:
            code = status.error_code or ErrorCode.PROVIDER_FAILED
            message = status.error_message or "the provider reported the task as failed"
            return self.fail(task, code, message, **changes)
        progress = max(task.progress, min(99, status.progress or 0))
        if status.state is ProviderState.RUNNING and task.status in (TaskStatus.QUEUED, TaskStatus.SUBMITTED):
            return self._store.transition(
                task, TaskStatus.RUNNING, reason="provider running", progress=progress, **changes
            )
        if changes or (progress != task.progress and (writes_progress is None or writes_progress(task))):
            return self._store.update(task, progress=progress, **changes)
        return task
