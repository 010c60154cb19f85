"""Reconcile: drive every overdue task forward by asking the provider (DESIGN.md: every task ends).

The reconcile function runs on an EventBridge schedule. It reads the sparse ``Due`` index
(never a scan) for tasks whose due time (``reelay.deadlines``) has passed, and for each:

==========================  =====================================================================
task                        what reconcile does
==========================  =====================================================================
queued, waiting for a slot  nothing (the governor's line lets it in), except for an ``auto`` task
                            that has waited longer than its provider's capacity wait: out of the
                            line, on to its next provider (``capacity_failover``); while tasks
                            wait, every run first frees the slots of tasks that ended without
                            freeing them, then lets tasks in. Never sent, it has not reached the
                            provider: the look restarts its deadline (so does one of a task just
                            let in)
queued, never sent          its submit message was lost: the submit message is sent again
queued, create held         the submit worker looks again (the provider's list; a 5xx'd create
                            is re-sent once after its hold): the submit message is sent again
submitted / running,        the callback never came (or was refused): the provider's status
callback protocol           endpoint is asked and the answer applied (on to ingest, or failed)
submitted / running,        the poll execution died: a fresh one is started
poll protocol
ingesting                   the ingest stalled: the ingest message is sent again; past the
                            ingest deadline the task fails ``INGEST_FAILED``
succeeded / failed,         its notify message was lost: sent again (``reelay.notify``)
event or webhook pending
past the provider's         asked once more; then failed: ``DEADLINE_EXCEEDED`` (a provider
deadline                    task exists: a charge is likely), or ``CREATE_UNCONFIRMED`` for a
                            held create nothing could settle (a charge may exist); a last look
                            that cannot be made (429, 5xx) is put off to the next run, for up
                            to ``LAST_LOOK_GRACE``, so a made result is not failed unseen
==========================  =====================================================================

A task found in the index before its due time (a write keeps an entry still ahead rather than
move it later) is only moved to its due time (``not_due_yet``), except a running poll-path
task, which gets its look at once (``poll_alive``: as cheap as the move, and its
next due time is further on). Each look is recorded on the
task (``reconciled_at``), which moves its due time on. A run
stops taking tasks when its time is nearly up (keeping time for the cost items its looks leave
to write), logs what it fixed, and returns the counts.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from reelay import costs, metrics
from reelay.aws import TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.deadlines import Deadlines, notification_pending
from reelay.errors import (
    ProviderError,
    ProviderTaskUnknown,
    ProviderTransientError,
    ReelayError,
    RequestInvalid,
    TaskNotFound,
    TransitionConflict,
)
from reelay.governor import Governor, in_flight_statuses
from reelay.models import ErrorCode, Task, TaskStatus, utcnow
from reelay.store import TaskStore
from reelay.submission import Submitter
from reelay.tracking import TaskTracker

logger = Logger(child=True)

# How long past its deadline a task's last look may be put off while the provider cannot be
# asked (429s, 5xx): after that it fails DEADLINE_EXCEEDED without the look.
LAST_LOOK_GRACE = timedelta(minutes=15)

PAGE = 100
# Time a run keeps in hand when it stops taking tasks (one task's look takes a status call).
RESERVE_SECONDS = 45.0


class Reconciler:
    """The reconcile function's logic."""

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        tracker: TaskTracker,
        submitter: Submitter,
        deadlines: Deadlines,
        *,
        submit_queue: TaskQueue,
        ingest_queue: TaskQueue,
        notify_queue: TaskQueue | None = None,
        clock: Callable[[], datetime] = utcnow,
        governor: Governor | None = None,
    ) -> None:
        self._governor = governor
        self._store = store
        self._providers = providers
        self._tracker = tracker
        self._submitter = submitter
        self._deadlines = deadlines
        self._submit = submit_queue
        self._ingest = ingest_queue
        self._notify = notify_queue
        self._clock = clock

    def run(self, *, seconds_left: Callable[[], float] = lambda: 3600.0) -> dict[str, int]:
        """One pass over the tasks due now; ``{action: count}`` of what it did.

        Its provider calls are background work for the governor: they take only request times
        free now, never queueing ahead of callbacks and creates (a refused look is retried at
        the task's next due time).
        """
        if self._governor is None:
            return self._run(seconds_left)
        with self._governor.background():
            return self._run(seconds_left)

    def _run(self, seconds_left: Callable[[], float]) -> dict[str, int]:
        now = self._clock()
        counts: Counter[str] = Counter()
        if self._governor is not None:
            counts.update(self._sweep_slots(self._governor))
        cursor: str | None = None
        seen: set[str] = set()
        started: float | None = None

        def time_for_another() -> bool:
            # After the run, the invocation's cost ledger writes one item per task looked at
            # (``reelay.costs``), where each look made two or more table calls: the run keeps half
            # the time it has spent looking for those writes, besides RESERVE_SECONDS.
            nonlocal started
            left = seconds_left()
            if started is None:
                started = left
            return left > RESERVE_SECONDS + max(0.0, started - left) / 2

        while time_for_another():
            ids, cursor = self._store.due(before=now, limit=PAGE, after=cursor)
            for task_id in ids:
                if task_id in seen:
                    continue
                seen.add(task_id)
                if not time_for_another():
                    counts["left_for_next_run"] += 1
                    continue
                counts[self._reconcile_safely(task_id)] += 1
            if cursor is None:
                break
        fixed = {k: v for k, v in sorted(counts.items())}
        logger.info("reconcile run", extra={"due": len(seen), "actions": fixed})
        metrics.reconcile_fixed(fixed)
        return fixed

    def _reconcile_safely(self, task_id: str) -> str:
        with costs.working_on(task_id):  # its calls that name no task (an execution's status) are its own
            return self._reconcile_one(task_id)

    def _reconcile_one(self, task_id: str) -> str:
        try:
            task = self._store.get(task_id)
            due = self._deadlines.due(task)
            if due is not None and self._clock() < due and not self._looks_early(task):
                # Its entry was left early (a write keeps an entry still ahead rather than move
                # it later: ``DynamoTaskStore``): nothing to do yet but move it to when it is due,
                # without a new version (a submit worker mid-create still records its answer).
                self._store.move_due(task)
                return "not_due_yet"
            return self.reconcile(task)
        except ProviderError as exc:
            # The provider is down or refusing: look again at the next due time.
            logger.warning("reconcile could not ask the provider", extra={"task_id": task_id, "error": exc.code})
            self._looked(task_id)
            return "provider_unavailable"
        except ReelayError as exc:
            logger.warning("reconcile skipped a task", extra={"task_id": task_id, "error": exc.code})
            return "skipped"

    def _looks_early(self, task: Task) -> bool:
        """Whether a task found before its due time is looked at now rather than moved.

        A running poll-path task: its look (is the execution alive?) is a Step Functions read, no
        provider request, and records the look with one write, as the move would. The look puts
        its next due time 2 x typical from now, where the move would put it at the due time of
        its last write, often only seconds ahead, to be found early again by the next run. (Not a
        task just submitted: its execution may not have started yet, and the look would start a
        second one.)
        """
        if task.status is not TaskStatus.RUNNING:
            return False
        try:
            return not self._providers.get(task.provider).supports_callbacks
        except RequestInvalid:
            return True  # a provider no longer configured: its look fails the task

    def reconcile(self, task: Task) -> str:
        """Drive one task forward; the name of what was done."""
        if task.status.terminal:
            return self._renotify(task)
        now = self._clock()
        try:
            provider = self._providers.get(task.provider)
        except RequestInvalid:
            self._tracker.fail(
                task, ErrorCode.PROVIDER_FAILED, f"provider {task.provider} is no longer configured in this stack"
            )
            return "provider_gone"
        if task.status is TaskStatus.INGESTING:
            return self._ingesting(task, now)
        waiting = let_in = False
        if task.status is TaskStatus.QUEUED and self._governor is not None and task.create_sent_at is None:
            waiting = self._governor.is_waiting(task)
            let_in = not waiting and task.first_create_sent_at is None and self._governor.holds_slot(task)
        # A task never sent that waits in the governor's line, or was just let in, has not
        # reached the provider: its deadline starts again from this look (``Task.clock_start``),
        # so a line longer than a deadline fails none of it.
        unsent = task.first_create_sent_at is None and (waiting or let_in)
        found = {"line_seen_at": now} if unsent else {}
        if now >= self._deadlines.deadline(task) and not unsent:
            return self._past_deadline(task)
        if task.status is TaskStatus.QUEUED:
            if waiting and self._governor is not None:
                if self._submitter.fail_over_waiting(task, self._governor):
                    # An ``auto`` task past its provider's capacity wait: on to its next provider.
                    self._submit.send(task.id)
                    return "capacity_failover"
                # In the governor's line: a freed slot (or this run's sweep) sends it; no resend.
                self._looked(task.id, **found)
                return "waiting_for_slot"
            # The look is recorded before the message goes: a submit worker that takes the
            # message at once must not find its claim beaten by this write.
            self._looked(task.id, **found)
            self._submit.send(task.id)
            return "submit_resent" if task.create_sent_at is None else "held_create_rechecked"
        if provider.supports_callbacks:
            return self._check_status(task)
        if not self._submitter.poll_running(task):
            self._submitter.restart_poll(self._looked(task.id))
            return "poll_restarted"
        self._looked(task.id)
        return "poll_alive"

    def _renotify(self, task: Task) -> str:
        """A terminal task still due: its notify message was lost (or never sent); send it again."""
        if self._notify is None or not notification_pending(task):
            return "already_terminal"
        # The look moves the task's due time on (``reelay.notify.notify_due``); ``save`` keeps
        # the terminal ``updated_at``. A lost race means the notify worker wrote: nothing to do.
        with contextlib.suppress(TransitionConflict):
            self._store.save(
                task.model_copy(update={"reconciled_at": self._clock(), "reconcile_count": task.reconcile_count + 1}),
                expected=task,
            )
            self._notify.send(task.id)
            return "notify_resent"
        return "already_terminal"

    def _sweep_slots(self, governor: Governor) -> Counter[str]:
        """Free the slots of tasks that ended without freeing them (or vanished), then let the
        next waiting tasks in: the fallback for a release or a dispatch that was lost."""
        counts: Counter[str] = Counter()

        def in_flight(task_id: str) -> bool:
            try:
                return self._store.get(task_id).status in in_flight_statuses()
            except TaskNotFound:
                return False

        for provider in governor.governed_providers:
            try:
                freed = governor.sweep(provider, in_flight)
            except ReelayError as exc:
                logger.warning("slot sweep failed", extra={"provider": provider, "error": exc.code})
                continue
            if freed:
                counts["slot_freed"] += freed
        return counts

    def _check_status(self, task: Task) -> str:
        """A callback that never came: ask the status endpoint and apply what it says."""
        provider = self._providers.get(task.provider)
        try:
            status = provider.status(str(task.provider_task_id))
        except ProviderTaskUnknown:
            self._tracker.fail(
                task,
                ErrorCode.PROVIDER_TASK_LOST,
                f"provider {provider.name} no longer knows task {task.provider_task_id}",
            )
            return "provider_task_lost"
        after = self._tracker.apply(task, status)
        if after.status is not task.status:
            return f"callback_missed_{after.status.value}"
        self._looked(task.id)
        return "status_checked"

    def _past_deadline(self, task: Task) -> str:
        if self._governor is None:
            return self._end_at_deadline(task)
        with self._governor.background(False):  # the last look waits its turn like any other
            return self._end_at_deadline(task)

    def _end_at_deadline(self, task: Task) -> str:
        provider = self._providers.get(task.provider)
        seconds = int(provider.config.deadline_seconds)
        if task.status is TaskStatus.QUEUED:
            if task.create_sent_at is None and task.create_attempts == 0:
                self._tracker.fail(
                    task,
                    ErrorCode.DEADLINE_EXCEEDED,
                    f"the task was never sent to {provider.name} within its {seconds} s deadline; no charge",
                )
                return "deadline_never_sent"
            outcome = self._submitter.recover(task, final=True)
            return f"held_create_{outcome.value}"
        if task.provider_task_id:
            # One last look: a result that is ready is still copied.
            try:
                after = self._tracker.apply(task, provider.status(task.provider_task_id))
                if after.status is not task.status and after.status is TaskStatus.INGESTING:
                    return "deadline_result_found"
                task = after
            except ProviderTransientError:
                # The look could not be made (a 429, a 5xx, no request time left in the window):
                # failing now could lose a result the provider made. Look again at the next due
                # time, for up to LAST_LOOK_GRACE past the deadline.
                if self._clock() < self._deadlines.deadline(task) + LAST_LOOK_GRACE:
                    self._looked(task.id)
                    return "deadline_look_deferred"
            except ProviderError:
                pass  # the provider answered, unusably (an unknown task, a bad answer): fail it
        self._tracker.fail(
            task,
            ErrorCode.DEADLINE_EXCEEDED,
            f"{provider.name} did not finish task {task.provider_task_id} within {seconds} s; the provider "
            f"made the task, so a charge is likely: ask {provider.name} about it",
        )
        return "deadline_exceeded"

    def _ingesting(self, task: Task, now: datetime) -> str:
        if now >= self._deadlines.ingest_deadline(task):
            self._tracker.fail(
                task,
                ErrorCode.INGEST_FAILED,
                f"copying the results did not finish within {int(self._deadlines.ingest_give_up.total_seconds())} s; "
                "the provider's result may still be downloadable from it",
            )
            return "ingest_deadline"
        self._looked(task.id)
        self._ingest.send(task.id)
        return "ingest_resent"

    def _looked(self, task_id: str, **found: Any) -> Task:
        """Record the look (and what it ``found``), which moves the task's due time on."""
        for _ in range(3):
            task = self._store.get(task_id)
            if task.status.terminal:
                return task
            try:
                return self._store.update(
                    task, reconciled_at=self._clock(), reconcile_count=task.reconcile_count + 1, **found
                )
            except TransitionConflict:
                continue
        return self._store.get(task_id)
