"""When each non-terminal task is next looked at, and when it must end (DESIGN.md: every task ends).

Every non-terminal task carries a due time in the sparse ``Due`` index; reconcile reads the
tasks that are past it. ``Deadlines.due`` is the one rule for that time, computed from the
task's provider configuration on every write:

========================  ===============================================================
status                    next look
========================  ===============================================================
queued                    ``updated_at`` + 2 x the provider's typical time, doubled by
                          each look so far (10 s to 10 min; an ``auto`` task's capacity
                          wait is not overrun): a lost submit message is sent again, a
                          held create settled
submitted / running,      ``clock_start`` + 2 x typical (a callback that never came gets
callback protocol         a status check), then every typical time after each look
submitted / running,      2 x typical after the last write or look (10 s to 30 min): a
poll protocol             dead poll execution is restarted
ingesting                 ``updated_at`` + ``ingest_stall``: the ingest is enqueued again
succeeded / failed,       ``notify_grace`` after the terminal write (or the webhook's next
notification pending      attempt): the notify message is sent again (``reelay.notify``)
========================  ===============================================================

and never later than the provider's deadline (``clock_start`` + ``deadline_seconds``), where
a queued, submitted or running task is ended. ``clock_start`` is when the first create was
sent (before that: the task's creation, or reconcile's last look that found it waiting in the
governor's line or just let in, so a long line runs no deadline). An ``ingesting`` task has its own limit,
``ingest_give_up`` after it entered ``ingesting``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import SecretStr

from reelay.models import NotifyState, Task, TaskStatus
from reelay.providers.base import ProviderConfig

MIN_LOOK = timedelta(seconds=10)
MAX_QUEUED_LOOK = timedelta(minutes=10)
MAX_POLL_LOOK = timedelta(minutes=30)
# A queued task's looks back off by doubling; 2**6 x the first interval exceeds the ten-minute cap.
_MAX_DOUBLINGS = 6


def follows_by_callback(protocol: str) -> bool:
    """Whether tasks of ``protocol`` are followed by callbacks (else by the poll path)."""
    from reelay.providers.registry import PROTOCOLS

    cls = PROTOCOLS.get(protocol)
    return bool(cls and cls.supports_callbacks)


class Deadlines:
    """Due times and deadlines of tasks, from their providers' typical and deadline times."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        *,
        ingest_stall: timedelta = timedelta(minutes=20),
        ingest_give_up: timedelta = timedelta(hours=2),
        notify_grace: timedelta | None = None,
    ) -> None:
        self._configs = {config.name: config for config in providers}
        self.ingest_stall = ingest_stall
        self.ingest_give_up = ingest_give_up
        # With a notify queue: a terminal task stays due until its event and webhook are out.
        self.notify_grace = notify_grace

    def _config(self, task: Task) -> ProviderConfig:
        config = self._configs.get(task.provider)
        if config is None:  # a provider no longer configured: its protocol's defaults
            config = ProviderConfig(
                name=task.provider,
                protocol=task.protocol,
                base_url="http://unconfigured.invalid",
                api_key=SecretStr(""),
            )
        return config

    def typical(self, task: Task) -> timedelta:
        return timedelta(seconds=self._config(task).typical_seconds)

    def deadline(self, task: Task) -> datetime:
        """When a queued, submitted or running task is ended (the provider's deadline)."""
        return task.clock_start + timedelta(seconds=self._config(task).deadline_seconds)

    def callback_check(self, task: Task) -> datetime:
        """When a callback-mode task with no callback gets its first status check."""
        return task.clock_start + 2 * self.typical(task)

    def ingest_deadline(self, task: Task) -> datetime:
        return (task.entered(TaskStatus.INGESTING) or task.updated_at) + self.ingest_give_up

    def due(self, task: Task) -> datetime | None:
        """When reconcile should next look at ``task``; None for a terminal task with nothing left to tell."""
        if task.status.terminal:
            if self.notify_grace is None:
                return None
            return notify_due(task, self.notify_grace)
        if task.status is TaskStatus.INGESTING:
            return min(task.updated_at + self.ingest_stall, self.ingest_deadline(task))
        typical = self.typical(task)
        last_look = max(task.updated_at, task.reconciled_at or task.updated_at)
        if task.status is TaskStatus.QUEUED:
            # Twice the typical time, as for the states that follow: the entry a task is created
            # with is then still ahead when it is submitted, runs and ends, so it stays as it is
            # (``DynamoTaskStore``) and is removed once, with no move in between. Each look that
            # finds it still queued doubles the next wait (up to ten minutes): a look at a task
            # never sent sends its submit message again, so a backlog (a submit queue behind, a
            # long governor line) would otherwise gain a message per task every interval.
            backoff = 2 ** min(task.reconcile_count, _MAX_DOUBLINGS)
            look = last_look + _clamp(2 * typical * backoff, MIN_LOOK, MAX_QUEUED_LOOK)
            if task.routing is not None and task.create_sent_at is None:
                # An ``auto`` task fails over once its capacity wait is over: looked at by then.
                since = max([task.created_at, *(f.at for f in task.routing.failovers)])
                wait_over = since + timedelta(seconds=self._config(task).capacity_wait_seconds)
                if wait_over > last_look:
                    look = min(look, wait_over)
        elif follows_by_callback(self._config(task).protocol):
            first = self.callback_check(task)
            look = first if task.reconciled_at is None else max(first, task.reconciled_at + max(typical, MIN_LOOK))
        else:
            look = last_look + _clamp(2 * typical, MIN_LOOK, MAX_POLL_LOOK)
        return min(look, self.deadline(task))


# How long after the terminal write (or a webhook's or endpoint delivery's next attempt) reconcile waits for the
# notify worker before it sends the task's notify message again (``reelay.notify``).
NOTIFY_GRACE = timedelta(minutes=5)


def notification_pending(task: Task) -> bool:
    """Whether a terminal task still has its event, its webhook or an endpoint delivery to send."""
    if not task.status.terminal:
        return False
    return not (task.notify or NotifyState()).settled(has_webhook=bool(task.webhook_url))


def notify_due(task: Task, grace: timedelta = NOTIFY_GRACE) -> datetime | None:
    """When reconcile should resend a terminal task's notify message (None: nothing left to tell)."""
    if not notification_pending(task):
        return None
    moments = [task.updated_at, task.reconciled_at]
    if task.notify is not None:
        moments.append(task.notify.lease_until)
        if task.notify.webhook is not None:
            moments.append(task.notify.webhook.next_at)
        moments += [d.next_at for d in task.notify.pending_deliveries()]
    return max(m for m in moments if m is not None) + grace


def _clamp(value: timedelta, low: timedelta, high: timedelta) -> timedelta:
    return max(low, min(high, value))
