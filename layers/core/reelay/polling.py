"""One step of the poll state machine (statemachine/poll.asl.json), for protocols without callbacks.

``PollService.poll`` asks the provider's status endpoint, applies the answer through
``TaskTracker`` and tells the state machine what to do next: ``wait`` (with the next wait
from the adaptive schedule), ``done``, or ``continued`` (after ``max_polls`` polls it starts a
fresh execution, so no execution nears the 25,000-event history limit). Transient provider
errors propagate as typed exceptions so the state machine's ``Retry`` can route them by name.

Cost: each poll counts the state transitions it makes (Wait, Poll, Decide, and the final
Succeed state when the execution ends); a poll that raises counts one (the Retry, or the Catch
whose RecordFailure and Failed states ``fail`` counts with the cycle's Wait).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from reelay import costs, metrics
from reelay.aws import PollStarter
from reelay.catalog import ProviderCatalog
from reelay.errors import ProviderTaskUnknown, TransitionConflict
from reelay.models import ErrorCode, Task, TaskStatus, utcnow
from reelay.schedule import PollSchedule
from reelay.store import TaskStore
from reelay.tracking import TaskTracker

logger = Logger(child=True)

# Errors the state machine's Catch hands to ``fail``: their class name -> the task's code.
_CAUGHT_CODES = {
    "ProviderAuthError": ErrorCode.PROVIDER_AUTH,
    "ProviderRejectedRequest": ErrorCode.PROVIDER_REJECTED,
    "InsufficientBalance": ErrorCode.INSUFFICIENT_BALANCE,
    "ProviderTaskUnknown": ErrorCode.PROVIDER_TASK_LOST,
    "States.Timeout": ErrorCode.DEADLINE_EXCEEDED,
}


class PollService:
    """The poll function's logic."""

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        tracker: TaskTracker,
        starter: PollStarter,
        *,
        max_polls: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._providers = providers
        self._tracker = tracker
        self._starter = starter
        self._max_polls = max_polls
        self._clock = clock

    def poll(self, event: dict[str, Any]) -> dict[str, Any]:
        """One poll: ``wait`` (with ``wait_seconds``), ``done`` or ``continued``."""
        try:
            state = self._poll(event)
        except Exception:
            costs.record(str(event.get("task_id") or "") or None, None, sfn_transitions=1)
            raise
        ends = state["outcome"] in ("done", "continued")
        costs.record(state["task_id"], None, sfn_transitions=4 if ends else 3)
        return state

    def _poll(self, event: dict[str, Any]) -> dict[str, Any]:
        task = self._store.get(str(event["task_id"]))
        polls = int(event.get("polls", 0)) + 1
        total = int(event.get("total_polls", 0)) + 1
        segment = int(event.get("segment", 0))
        state = {"task_id": task.id, "polls": polls, "total_polls": total, "segment": segment}
        if _settled(task):
            return _done(task, state)
        provider = self._providers.get(task.provider)
        now = self._clock()
        if now - task.clock_start > timedelta(seconds=provider.config.deadline_seconds):
            task = self._tracker.fail(
                task,
                ErrorCode.DEADLINE_EXCEEDED,
                f"no result from {provider.name} within {int(provider.config.deadline_seconds)} s",
            )
            return _done(task, state)
        if task.provider_task_id is None:
            raise ProviderTaskUnknown("the task has no provider task id to poll", provider=provider.name)
        status = provider.status(task.provider_task_id)
        task = self._tracker.apply(task, status)
        if _settled(task):
            return _done(task, state)
        elapsed = (now - _submitted_at(task)).total_seconds()
        wait = PollSchedule.for_provider(provider.config).wait(
            total, task_id=task.id, elapsed=elapsed, progress=status.progress
        )
        state |= {"wait_seconds": wait, "progress": task.progress}
        if polls >= self._max_polls:
            next_state = state | {"polls": 0, "segment": segment + 1}
            arn = str(event.get("state_machine_arn") or "") or None
            name = f"{task.id}-{segment + 1}"
            self._starter.start(name, next_state, state_machine_arn=arn)
            with contextlib.suppress(TransitionConflict):  # reconcile reads it to find a dead execution
                self._store.update(task, poll_execution=name)
            logger.info("poll continued in a fresh execution", extra={"task_id": task.id, "segment": segment + 1})
            return state | {"outcome": "continued"}
        return state | {"outcome": "wait"}

    def fail(self, event: dict[str, Any]) -> dict[str, Any]:
        """The state machine's Catch: record why the poll path gave up on the task."""
        task = self._store.get(str(event["task_id"]))
        error = event.get("error") or {}
        name = str(error.get("Error", "Unknown"))
        message = _cause_message(error.get("Cause"))
        code = _CAUGHT_CODES.get(name, ErrorCode.PROVIDER_FAILED)
        task = self._tracker.fail(task, code, message or f"polling failed: {name}")
        # RecordFailure and Failed, and the Wait of the failed cycle (or the UnexpectedOutcome Pass).
        costs.record(task.id, None, sfn_transitions=3)
        metrics.polls_done(task.provider, int(event.get("total_polls") or 0))
        return {"task_id": task.id, "status": str(task.status), "outcome": "done"}


def _done(task: Task, state: dict[str, Any]) -> dict[str, Any]:
    metrics.polls_done(task.provider, int(state["total_polls"]))
    return state | {"outcome": "done", "status": str(task.status)}


def _settled(task: Task) -> bool:
    return task.status.terminal or task.status is TaskStatus.INGESTING


def _submitted_at(task: Task) -> datetime:
    for entry in task.history:
        if entry.to_status is TaskStatus.SUBMITTED:
            return entry.at
    return task.created_at


def _cause_message(cause: Any) -> str:
    """The ``errorMessage`` of a Lambda error cause, never its stack trace."""
    if not cause:
        return ""
    try:
        data = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause)[:500]
    return str(data.get("errorMessage", ""))[:500] if isinstance(data, dict) else ""
