"""Telling the world a task ended: one EventBridge event per terminal task, its webhook, its endpoints' events.

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
4. **The owner's webhook endpoints** (``reelay.webhook_endpoints``): at the first claim (the event
   not sent yet) one query finds the owner's endpoints subscribed to the task's OpenAI-style event
   (``video.completed`` / ``video.failed``; video tasks only), and the claim records one delivery
   per endpoint in ``notify.endpoints`` (the event's id is each one's ``webhook-id``). Each is then
   attempted under the same claims as the task's own webhook, with the same schedule,
   ``Retry-After`` and 410 rules and the same metrics (``_attempt``), with the endpoint as it is
   at the attempt (its current URL and secrets: one query per tell); a deleted endpoint's delivery
   ends ``gone`` without a POST. All are recorded in the one write; the message waits until the
   earliest ``next_at`` of all, and the task is not settled (it stays in ``Due``) while any is pending.

Log points (for metrics and alarms): ``"event put"``; ``"webhook attempt"`` with ``outcome``
(``delivered``, ``retrying``, ``gone``, ``refused``, ``exhausted``), ``attempt`` and ``status``;
and ``"webhook exhausted"`` at WARNING when every attempt of the schedule failed.

``emit_batch_completed`` puts the ``Batch Completed`` event for the batch flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from reelay import metrics
from reelay.aws import EventBus, EventPublishFailed, TaskQueue
from reelay.deadlines import NOTIFY_GRACE, notification_pending, notify_due
from reelay.errors import QueueSendFailed, TransitionConflict
from reelay.models import NotifyState, Task, TaskKind, TaskStatus, WebhookDelivery, WebhookOutcome, utcnow

__all__ = ["NOTIFY_GRACE", "Notifier", "NotifyHook", "emit_batch_completed", "notification_pending", "notify_due"]
from reelay.store import TaskStore
from reelay.webhook_endpoints import WebhookEndpoint, WebhookEndpointStore
from reelay.webhooks import (
    VIDEO_EVENT_TYPES,
    AttemptResult,
    RetrySchedule,
    WebhookSender,
    event_id,
    openai_event_payload,
    task_data,
    webhook_id,
)
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
    """The notify worker's logic: the task's event, then its webhooks' next attempts (its own and the
    owner's endpoints')."""

    def __init__(
        self,
        store: TaskStore,
        bus: EventBus,
        sender: WebhookSender,
        schedule: RetrySchedule,
        *,
        endpoints: WebhookEndpointStore | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._bus = bus
        self._sender = sender
        self._schedule = schedule
        self._endpoints = endpoints
        self._clock = clock

    def notify(self, task_id: str, attempt: int = 0) -> Task:
        """Tell about one terminal task; ``RetryLater`` while a webhook waits for its next attempt."""
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
            targets: list[WebhookDelivery] | None = state.endpoints
            known: dict[str, WebhookEndpoint] | None = None
            if event_due and targets is None:
                # The first claim: the endpoints subscribed to the task's event, one query, recorded
                # with the claim (later copies of the message attempt the same list).
                known = self._subscribed(task)
                targets = [WebhookDelivery(id=event_id(task.id), endpoint_id=e) for e in known]
            webhook_due = delivery is not None and _due(delivery, now)
            endpoints_due = {str(d.endpoint_id) for d in targets or () if _due(d, now)}
            if endpoints_due and known is None:
                # A retry: the endpoints as they are now (URL, secrets; a deleted one is missing),
                # read before the claim, so a failed read sends nothing.
                known = self._of_owner(task.owner)
            if not (event_due or webhook_due or endpoints_due):
                waits = _next_attempt([delivery, *(targets or ())]) or now
                raise RetryLater(_seconds_until(waits, now), "webhook not due yet")
            if delivery is None and not targets:
                # Only the event to put, no webhook: no claim, one write (the record). A second copy
                # of the message (SQS delivers at least once) may put the event twice, which adds
                # nothing: EventBridge itself delivers to its targets at least once, so they already
                # tell repeats apart (the task id and status in the detail). The claim's write would
                # be paid on every task for that.
                return self._tell(
                    task, event_due=True, webhook_due=False, endpoints_due=set(), known={}, attempt=attempt,
                    claimed=False, targets=targets,
                )  # fmt: skip
            # The claim: one conditional write, so two copies of the message never both tell.
            claimed = state.model_copy(update={"lease_until": now + LEASE, "webhook": delivery, "endpoints": targets})
            try:
                task = self._store.save(task.model_copy(update={"notify": claimed}), expected=task)
            except TransitionConflict:
                task = self._store.get(task.id)  # another copy of the message may have claimed it
                continue
            return self._tell(
                task, event_due=event_due, webhook_due=webhook_due, endpoints_due=endpoints_due, known=known,
                attempt=attempt, claimed=True, targets=targets,
            )  # fmt: skip
        raise RetryLater(backoff_seconds(attempt), "the task's notify state kept changing")

    def _tell(
        self,
        task: Task,
        *,
        event_due: bool,
        webhook_due: bool,
        endpoints_due: set[str],
        known: Mapping[str, WebhookEndpoint] | None,
        attempt: int,
        claimed: bool,
        targets: list[WebhookDelivery] | None,
    ) -> Task:
        """Under the claim (``claimed``; unclaimed only for a lone event): the event (if not out yet),
        the due webhook attempts (the task's own and the endpoints'), one record of all, with the
        endpoint deliveries (``targets``) looked up for it."""
        sent_at: datetime | None = None
        if event_due:
            try:
                event_id_ = self._bus.put(DETAIL_TYPES[task.status], task_data(task), resources=[task.id])
            except EventPublishFailed as exc:
                if claimed:
                    self._write(task, lambda state: state.model_copy(update={"lease_until": None}))
                raise RetryLater(backoff_seconds(attempt), exc.message) from exc
            logger.info("event put", extra={"task_id": task.id, "event_id": event_id_, "status": str(task.status)})
            sent_at = self._clock()
        delivery = _delivery(task) if task.webhook_url else None
        done = delivery
        if webhook_due and delivery is not None:
            done = self._attempt(task, delivery, lambda now: self._sender.attempt(task, now=now))
        sent = self._attempt_endpoints(task, endpoints_due, known or {}) if endpoints_due else {}

        def recorded(state: NotifyState) -> NotifyState:
            update: dict[str, Any] = {"lease_until": None}
            if sent_at is not None:
                update["event_sent_at"] = state.event_sent_at or sent_at
            if webhook_due:
                update["webhook"] = done
            if sent:
                update["endpoints"] = [sent.get(str(d.endpoint_id), d) for d in state.endpoints or ()]
            elif state.endpoints is None and targets is not None:
                update["endpoints"] = targets  # looked up (none subscribed): not looked up again
            return state.model_copy(update=update)

        task = self._write(task, recorded)
        state = task.notify or NotifyState()
        next_at = _next_attempt([state.webhook, *(state.endpoints or ())])
        if next_at is not None:
            raise RetryLater(max(1, _seconds_until(next_at, self._clock())), "webhook waits for its next attempt")
        return task

    def _subscribed(self, task: Task) -> dict[str, WebhookEndpoint]:
        """The owner's endpoints subscribed to the task's OpenAI-style event (video tasks only), by id."""
        if self._endpoints is None or task.kind is TaskKind.IMAGE:
            return {}
        event_type = VIDEO_EVENT_TYPES[task.status]
        return {e.id: e for e in self._of_owner(task.owner).values() if event_type in e.event_types}

    def _of_owner(self, owner: str) -> dict[str, WebhookEndpoint]:
        """Every endpoint of the owner, by id (one query)."""
        return {e.id: e for e in self._endpoints.of_owner(owner)} if self._endpoints is not None else {}

    def _attempt_endpoints(
        self, task: Task, due: set[str], known: Mapping[str, WebhookEndpoint]
    ) -> dict[str, WebhookDelivery]:
        """Each due endpoint delivery attempted with the endpoint as ``known`` (read for this claim: its
        current URL and secrets); a deleted endpoint's delivery ends ``gone``, unsent. By endpoint id."""
        body = openai_event_payload(task)
        sent: dict[str, WebhookDelivery] = {}
        for delivery in (task.notify.endpoints if task.notify else None) or ():
            endpoint_id = str(delivery.endpoint_id)
            if endpoint_id not in due:
                continue
            endpoint = known.get(endpoint_id)
            if endpoint is None:
                logger.info(
                    "webhook endpoint deleted; its delivery ends unsent",
                    extra={"task_id": task.id, "webhook_id": delivery.id, "endpoint_id": endpoint_id},
                )
                sent[endpoint_id] = delivery.model_copy(update={"outcome": WebhookOutcome.GONE, "next_at": None})
                continue
            sent[endpoint_id] = self._attempt(task, delivery, _endpoint_send(self._sender, endpoint, body, delivery.id))
        return sent

    def _attempt(
        self, task: Task, delivery: WebhookDelivery, send: Callable[[datetime], AttemptResult]
    ) -> WebhookDelivery:
        """One signed POST (``send``); the delivery with the attempt recorded (``next_at`` while retrying)."""
        now = self._clock()
        result = send(now)
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
        if delivery.endpoint_id is not None:
            log["endpoint_id"] = delivery.endpoint_id
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


def _next_attempt(deliveries: Sequence[WebhookDelivery | None]) -> datetime | None:
    """The earliest ``next_at`` of the deliveries not final yet (None: none waits)."""
    return min((d.next_at for d in deliveries if d is not None and not d.outcome.final and d.next_at), default=None)


def _due(delivery: WebhookDelivery, now: datetime) -> bool:
    """Whether a delivery's next attempt may start now."""
    return not delivery.outcome.final and (delivery.next_at is None or now >= delivery.next_at)


def _endpoint_send(
    sender: WebhookSender, endpoint: WebhookEndpoint, body: bytes, msg_id: str
) -> Callable[[datetime], AttemptResult]:
    """One POST of the event to the endpoint, signed with its secrets valid at that moment."""
    return lambda now: sender.send(endpoint.url, body, msg_id=msg_id, secrets=endpoint.valid_secrets(now), now=now)


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
