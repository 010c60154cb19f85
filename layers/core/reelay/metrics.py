"""reelay's CloudWatch metrics (Powertools Metrics, EMF): every name and dimension, in one place.

The namespace is ``POWERTOOLS_METRICS_NAMESPACE`` (template Globals: ``reelay``); every
metric also carries Powertools' ``service`` dimension. A metric with a dimension of its own
(provider, code, kind, outcome) is emitted at once as a single-metric EMF record, so two
records never share a dimension set by accident; counts that alarms watch are also emitted
with the ``service`` dimension alone (``_TOTALS``), because an alarm cannot add a metric
over all of its dimension values.

The domain calls the small functions below; the handler decorator
(``reelay.observability.observed``) flushes with ``Metrics.log_metrics`` and adds the
cold-start metric. Alarms and the dashboard in template.yaml use these names.

Names other engineers emit (defined here so the alarms and they agree):
- ``GovernorWaits`` (provider) and ``GovernorWaitSeconds``: ``governor_waited(provider,
  seconds)`` where the governor finds no free slot (the task joins the waiting line) or no
  request time within the window (the call sleeps until one, or goes back to the queue).
- ``WebhookDeliveries`` / ``WebhookFailures`` (outcome: HTTP status class or error) and
  ``WebhookExhausted``: ``webhook_attempted(ok, outcome)`` after each delivery attempt and
  ``webhook_exhausted()`` when a delivery gives up (schedule over, or 410); the
  ``WebhookExhausted`` alarm watches the last.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from reelay.models import Task, TaskStatus

metrics = Metrics()
logger = Logger(child=True)

TASKS_SUBMITTED = "TasksSubmitted"
TASKS_SUCCEEDED = "TasksSucceeded"
TASKS_FAILED = "TasksFailed"
INGEST_ERRORS = "IngestErrors"
BYTES_COPIED = "BytesCopied"
SECONDS_COPYING = "SecondsCopying"
CALLBACK_TO_SUCCEEDED = "CallbackToSucceededSeconds"
POLLS_PER_TASK = "PollsPerTask"
RECONCILE_FIXES = "ReconcileFixes"
GOVERNOR_WAITS = "GovernorWaits"
GOVERNOR_WAIT_SECONDS = "GovernorWaitSeconds"
WEBHOOK_DELIVERIES = "WebhookDeliveries"
WEBHOOK_FAILURES = "WebhookFailures"
WEBHOOK_EXHAUSTED = "WebhookExhausted"

# Dimension names.
PROVIDER = "provider"
CODE = "code"
KIND = "kind"
OUTCOME = "outcome"

# Emitted with ``service`` alone too: the alarms' inputs.
_TOTALS = frozenset({TASKS_SUCCEEDED, TASKS_FAILED, INGEST_ERRORS, RECONCILE_FIXES, WEBHOOK_EXHAUSTED})
# Reconcile actions that are not a fix (nothing was wrong, or nothing was done).
RECONCILE_NOT_FIXES = frozenset(
    {
        "left_for_next_run",
        "skipped",
        "already_terminal",
        "poll_alive",
        "provider_unavailable",
        "held_create_rechecked",
        "not_due_yet",
        "deadline_look_deferred",
    }
)


def _emit(name: str, value: float, unit: MetricUnit = MetricUnit.Count, **dimensions: str) -> None:
    """One EMF record (and the service-wide total for an alarm's input); never fails the caller."""
    namespace = metrics.namespace
    # No POWERTOOLS_METRICS_NAMESPACE (a script, a unit test): nothing to emit into. Single-metric
    # records do not ask POWERTOOLS_METRICS_DISABLED themselves (the local stack sets it).
    if not namespace or is_metrics_disabled():
        return
    try:
        for dims in (dimensions, {}) if name in _TOTALS and dimensions else (dimensions,):
            with single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric:
                if metrics.service:
                    metric.add_dimension(name="service", value=metrics.service)
                for key, dim in dims.items():
                    metric.add_dimension(name=key, value=dim or "none")
    except Exception:  # a metric is never worth a failed task step
        logger.warning("could not emit metric", extra={"metric": name}, exc_info=True)


def task_moved(task: Task, before: TaskStatus) -> None:
    """Called on every state change (``TaskStore.transition``): counts a task leaving ``queued`` for its provider."""
    if before is TaskStatus.QUEUED and task.status in (TaskStatus.SUBMITTED, TaskStatus.RUNNING, TaskStatus.INGESTING):
        _emit(TASKS_SUBMITTED, 1, provider=task.provider)


def task_ended(task: Task, *, by_callback: bool) -> None:
    """The terminal hook: succeeded / failed per provider (and code), and callback-to-succeeded latency."""
    if task.status is TaskStatus.SUCCEEDED:
        _emit(TASKS_SUCCEEDED, 1, provider=task.provider)
        ready = task.entered(TaskStatus.INGESTING)
        if by_callback and ready is not None:
            seconds = max(0.0, (task.updated_at - ready).total_seconds())
            _emit(CALLBACK_TO_SUCCEEDED, seconds, MetricUnit.Seconds, provider=task.provider)
    elif task.status is TaskStatus.FAILED:
        code = task.error.code.value if task.error else "UNKNOWN"
        _emit(TASKS_FAILED, 1, provider=task.provider, code=code)


def output_copied(provider: str, size: int, seconds: float) -> None:
    """One output copied into the results bucket."""
    _emit(BYTES_COPIED, size, MetricUnit.Bytes, provider=provider)
    _emit(SECONDS_COPYING, seconds, MetricUnit.Seconds, provider=provider)


def ingest_failed(provider: str, code: str) -> None:
    """Ingest gave a task up (``RESULT_*``, ``INGEST_FAILED``): the ``IngestErrors`` alarm's input."""
    _emit(INGEST_ERRORS, 1, provider=provider, code=code)


def polls_done(provider: str, polls: int) -> None:
    """The poll path is done with a task after ``polls`` polls (over every execution)."""
    _emit(POLLS_PER_TASK, polls, provider=provider)


def reconcile_fixed(actions: dict[str, int]) -> None:
    """One reconcile run's actions; those that fixed something, per kind."""
    for kind, count in actions.items():
        if count and kind not in RECONCILE_NOT_FIXES:
            _emit(RECONCILE_FIXES, count, kind=kind)


def governor_waited(provider: str, seconds: float = 0.0) -> None:
    """A task found no free provider slot or request time and waits (the governor calls this)."""
    _emit(GOVERNOR_WAITS, 1, provider=provider)
    if seconds > 0:
        _emit(GOVERNOR_WAIT_SECONDS, seconds, MetricUnit.Seconds, provider=provider)


def webhook_attempted(ok: bool, outcome: str) -> None:
    """One webhook delivery attempt (the notifier calls this): delivered (2xx) or failed, with its outcome."""
    _emit(WEBHOOK_DELIVERIES if ok else WEBHOOK_FAILURES, 1, outcome=outcome)


def webhook_exhausted() -> None:
    """A webhook gave up: its retry schedule is over, or the receiver answered 410."""
    _emit(WEBHOOK_EXHAUSTED, 1, outcome="exhausted")
