"""Telling the world a task ended: one EventBridge event per terminal task, and its webhook.

The path, and why nothing is lost:

1. **The one terminal path.** ``TaskTracker``'s ``on_terminal`` hook ``NotifyHook`` (registered in
   ``bootstrap``) puts ``{"task_id"}`` on the notify queue, once, for the writer that won the
   terminal write. The terminal write itself keeps the task in the sparse ``Due`` index while its
   notification is not settled (``reelay.deadlines.notify_due``: ``NOTIFY_GRACE`` after it), so a
   crash between the write and the send, or a send that fails, is covered: reconcile finds the
   task due and sends the message again (``Reconciler``: ``notify_resent``).
2. **The notify worker** (``Notifier``, ``functions/notify``) first claims the task's notification:
   one conditional write of ``notify.lease_until`` (``LEASE``, longer than the notify function's
   timeout), so two copies of the message (a resend by reconcile, an SQS redelivery) never both
   tell; a copy that finds a live claim comes back when it ends. Under the claim it puts the event
   — source ``reelay``, detail-type ``Task Succeeded`` / ``Task Failed``, detail the task as the
   API shows it without presigned URLs (``task_data``) — if ``notify.event_sent_at`` is not set,
   makes the webhook's attempt if one is due, and records both in one write that also clears the
   claim (and takes the task out of the ``Due`` index once nothing is left to tell). Only a crash
   between ``PutEvents`` and that record can repeat an event (after the claim ends); EventBridge's
   own delivery is at-least-once too.
3. **The webhook** (``reelay.webhooks``): each attempt is signed and POSTed under the claim, then
   recorded in ``notify.webhook.attempts`` (``at``, ``status``, ``next_at``). A failed attempt
   returns the message to the queue until ``next_at`` (``ChangeMessageVisibility``, at most 12 h
   at a time: a longer wait takes a second look, which sends nothing). The message is the timer
   and the ``Due`` index (``next_at`` + ``NOTIFY_GRACE``) the safety net, so no scheduler, table
   scan or extra state machine is needed for waits longer than SQS's 15-minute delay.

Log points (for metrics and alarms): ``"event put"``; ``"webhook attempt"`` with ``outcome``
(``delivered``, ``retrying``, ``gone``, ``refused``, ``exhausted``), ``attempt`` and ``status``;
and ``"webhook exhausted"`` at WARNING when every attempt of the schedule failed.

``emit_batch_completed`` puts the ``Batch Completed`` event for the batch flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from reelay import metrics
from reelay.aws import EventBus, EventPublishFailed, TaskQueue
from reelay.deadlines import NOTIFY_GRACE, notification_pending, notify_due
from reelay.errors import QueueSendFailed, TransitionConflict
from reelay.models import NotifyState, Task, TaskStatus, WebhookDelivery, WebhookOutcome, utcnow

__all__ = ["NOTIFY_GRACE", "Notifier", "NotifyHook", "emit_batch_completed", "notification_pending", "notify_due"]
from reelay.store import TaskStore
from reelay.webhooks import RetrySchedule, WebhookSender, task_data, webhook_id
from reelay.workers import RetryLater, backoff_seconds

logger = Logger(child=True)

DETAIL_TYPES = {TaskStatus.SUCCEEDED: "Task Succeeded", TaskStatus.FAILED: "Task Failed"}
BATCH_COMPLETED = "Batch Completed"
# An attempt's claim: longer than the notify function's timeout, so a live attempt keeps it.
LEASE = timedelta(seconds=150)
_WRITE_ATTEMPTS = 8


class NotifyHook:
    """The ``on_terminal`` hook: the task's notify message, sent once by the terminal writer."""

    def __init__(self, queue: TaskQueue) -> None:
        self._queue = queue

    def __call__(self, task: Task) -> None:
        try:
            self._queue.send(task.id)
        except QueueSendFailed:
            # The terminal write left the task due: reconcile sends the message again.
            logger.warning("notify message not sent; reconcile will send it", extra={"task_id": task.id})


class Notifier:
    """The notify worker's logic: the task's event, then its webhook's next attempt."""

    def __init__(
        self,
        store: TaskStore,
        bus: EventBus,
        sender: WebhookSender,
        schedule: RetrySchedule,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._bus = bus
        self._sender = sender
        self._schedule = schedule
        self._clock = clock

    def notify(self, task_id: str, attempt: int = 0) -> Task:
        """Tell about one terminal task; ``RetryLater`` while its webhook waits for its next attempt."""
        task = self._store.get(task_id)
        if not task.status.terminal:
            logger.warning("notify message for a task that has not ended; dropped", extra={"task_id": task_id})
            return task
        for _ in range(_WRITE_ATTEMPTS):
            state = task.notify or NotifyState()
            if state.settled(has_webhook=bool(task.webhook_url)):
                return task
            now = self._clock()
            if state.lease_until is not None and now < state.lease_until:
                raise RetryLater(_seconds_until(state.lease_until, now), "another copy of the message is telling")
            delivery = _delivery(task) if task.webhook_url else None
            event_due = state.event_sent_at is None
            webhook_due = delivery is not None and not delivery.outcome.final
            if webhook_due and delivery is not None and delivery.next_at is not None and now < delivery.next_at:
                if not event_due:
                    raise RetryLater(_seconds_until(delivery.next_at, now), "webhook not due yet")
                webhook_due = False
            # The claim: one conditional write, so two copies of the message never both tell.
            claimed = state.model_copy(update={"lease_until": now + LEASE, "webhook": delivery})
            try:
                task = self._store.save(task.model_copy(update={"notify": claimed}), expected=task)
            except TransitionConflict:
                task = self._store.get(task.id)  # another copy of the message may have claimed it
                continue
            return self._tell(task, event_due=event_due, webhook_due=webhook_due, attempt=attempt)
        raise RetryLater(backoff_seconds(attempt), "the task's notify state kept changing")

    def _tell(self, task: Task, *, event_due: bool, webhook_due: bool, attempt: int) -> Task:
        """Under the claim: the event (if not out yet), the webhook's attempt (if due), one record of both."""
        sent_at: datetime | None = None
        if event_due:
            try:
                event_id = self._bus.put(DETAIL_TYPES[task.status], task_data(task), resources=[task.id])
            except EventPublishFailed as exc:
                self._write(task, lambda state: state.model_copy(update={"lease_until": None}))
                raise RetryLater(backoff_seconds(attempt), exc.message) from exc
            logger.info("event put", extra={"task_id": task.id, "event_id": event_id, "status": str(task.status)})
            sent_at = self._clock()
        delivery = _delivery(task) if task.webhook_url else None
        done = self._attempt(task, delivery) if webhook_due and delivery is not None else delivery

        def recorded(state: NotifyState) -> NotifyState:
            update: dict[str, Any] = {"lease_until": None}
            if sent_at is not None:
                update["event_sent_at"] = state.event_sent_at or sent_at
            if webhook_due:
                update["webhook"] = done
            return state.model_copy(update=update)

        task = self._write(task, recorded)
        if done is not None and not done.outcome.final and done.next_at is not None:
            raise RetryLater(max(1, _seconds_until(done.next_at, self._clock())), "webhook waits for its next attempt")
        return task

    def _attempt(self, task: Task, delivery: WebhookDelivery) -> WebhookDelivery:
        """One signed POST; the delivery with the attempt recorded (``next_at`` while retrying)."""
        now = self._clock()
        result = self._sender.attempt(task, now=now)
        number = len(delivery.attempts) + 1
        outcome, wait = result.outcome, None
        if outcome is WebhookOutcome.RETRYING:
            scheduled = self._schedule.wait_after(number)
            if scheduled is None:
                outcome = WebhookOutcome.EXHAUSTED
            else:
                wait = result.retry_after if result.retry_after is not None else scheduled
        next_at = now + timedelta(seconds=max(1, math.ceil(wait))) if wait is not None else None
        record = result.attempt.model_copy(update={"next_at": next_at})
        log = {
            "task_id": task.id,
            "webhook_id": delivery.id,
            "attempt": number,
            "status": record.status,
            "outcome": outcome.value,
        }
        logger.info("webhook attempt", extra=log)
        metrics.webhook_attempted(outcome is WebhookOutcome.DELIVERED, outcome.value)
        if outcome in (WebhookOutcome.EXHAUSTED, WebhookOutcome.GONE):
            metrics.webhook_exhausted()
        if outcome is WebhookOutcome.EXHAUSTED:
            logger.warning("webhook exhausted", extra=log)
        return delivery.model_copy(
            update={"outcome": outcome, "attempts": [*delivery.attempts, record], "next_at": next_at}
        )

    # -- writes ----------------------------------------------------------------------------

    def _write(self, task: Task, change: Callable[[NotifyState], NotifyState]) -> Task:
        """Apply ``change`` to the task's notify state, conditionally, reloading on a concurrent write."""
        for _ in range(_WRITE_ATTEMPTS):
            state = change(task.notify or NotifyState())
            try:
                return self._store.save(task.model_copy(update={"notify": state}), expected=task)
            except TransitionConflict:
                task = self._store.get(task.id)
        raise TransitionConflict(f"task {task.id}: notify state kept changing concurrently")


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _delivery(task: Task) -> WebhookDelivery:
    existing = task.notify.webhook if task.notify else None
    return existing or WebhookDelivery(id=webhook_id(task.id))


def emit_batch_completed(
    bus: EventBus,
    *,
    batch_id: str,
    owner: str,
    counts: Mapping[str, int],
    report: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Put ``Batch Completed`` (source ``reelay``) on the stack's bus; the event id.

    For the batch flow, at the one point a batch is known complete (its report written):
    ``detail = {"batch_id", "owner", "counts": {"succeeded": n, "failed": m, ...}, "report": s3 uri,
    ...extra}``. The calling function needs ``EVENT_BUS_NAME`` and the ``EventBridgePutEventsPolicy``
    on ``EventBus`` in template.yaml (as ``NotifyFunction`` has); ``Container.event_bus`` builds the
    bus. ``EventPublishFailed`` when EventBridge did not take it: let the caller's retry repeat it.
    """
    detail: dict[str, Any] = {"batch_id": batch_id, "owner": owner, "counts": dict(counts), **(extra or {})}
    if report is not None:
        detail["report"] = report
    event_id = bus.put(BATCH_COMPLETED, detail, resources=[batch_id])
    logger.info("event put", extra={"batch_id": batch_id, "event_id": event_id, "detail_type": BATCH_COMPLETED})
    return event_id
