"""One Logger and one Tracer for every function, and the one way a handler is wrapped.

Each ``functions/<name>/app.py`` decorates its handler with ``observed(...)`` instead of
copying Powertools' decorators: the Lambda context goes into every log record, the
correlation id of an HTTP request too, and ``task_id`` whenever the handler knows it (a path
parameter, a state machine input, a queue record). ``capture_response=False`` everywhere: an
answer can hold a presigned URL (API), a provider's result URL (poll) or a token, none of
which may be written into X-Ray.

It also flushes the invocation's metrics (``reelay.metrics``, Powertools ``log_metrics``, with
the cold-start metric) and keeps its cost ledger (``reelay.costs``): the AWS operations the
adapters count per task, plus the invocation's own request and GB-seconds, shared among the
tasks it worked on and added to each task's cost record at its end, or carried on the task's
next message (``reelay.costs.carrying``: the ledger is begun with the tasks the event names). A
client's read (an HTTP ``GET``) is the client's and is not counted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from reelay import costs
from reelay.metrics import metrics

logger = Logger()
# X-Ray traces boto3 calls from the start; httpx calls once the function builds an HTTP client
# (``trace_http``). Patching everything Powertools supports would import httpx, sqlite3 and
# more at every cold start, including in functions that never make an HTTP call.
tracer = Tracer(patch_modules=("botocore",))
# reelay's metrics are single-metric records (reelay.metrics), so the handler's own metric set is
# often empty by design: Powertools' warning about it on every flush says nothing.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

T = TypeVar("T")
Handler = Callable[[dict[str, Any], Any], T]


def trace_http() -> None:
    """Trace httpx calls (providers, fetches, webhooks) in X-Ray from now on.

    The composition root (``reelay.bootstrap``) calls it before it builds an HTTP client; the
    X-Ray SDK patches a module once, so calling it again costs nothing.
    """
    tracer.patch(("httpx",))


def task_id_of(event: Any) -> str | None:
    """The task an event is about, where one event is about one task."""
    if not isinstance(event, dict):
        return None
    path = event.get("pathParameters") or {}
    task_id = path.get("task_id") if isinstance(path, dict) else None
    task_id = task_id or event.get("task_id")
    return str(task_id) if isinstance(task_id, str) and task_id else None


def tasks_named(event: Any) -> set[str]:
    """The tasks an event names: its queue records' ``task_id`` s, or the one task of ``task_id_of``."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        task_id = task_id_of(event)
        return {task_id} if task_id else set()
    named: set[str] = set()
    for record in records:
        try:
            task_id = json.loads(record["body"])["task_id"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(task_id, str) and task_id:
            named.add(task_id)
    return named


@contextlib.contextmanager
def task_keys(task_id: str | None) -> Iterator[None]:
    """``task_id`` on every record logged inside, removed after (a batch handles several tasks)."""
    if not task_id:
        yield
        return
    logger.append_keys(task_id=task_id)
    try:
        with costs.working_on(task_id):
            yield
    finally:
        logger.remove_keys(["task_id"])


def for_each_task(handle: Callable[[str, int], T]) -> Callable[[str, int], T]:
    """Wrap a queue worker's per-task step so each record's logs carry its ``task_id``."""

    @functools.wraps(handle)
    def wrapped(task_id: str, attempt: int) -> T:
        with task_keys(task_id):
            return handle(task_id, attempt)

    return wrapped


def observed(*, http: bool = False) -> Callable[[Handler[T]], Handler[T]]:
    """The decorator of every Lambda handler: context and ``task_id`` in logs, traced, nothing captured.

    ``http`` adds the API Gateway request id as the correlation id.
    """

    def decorate(handler: Handler[T]) -> Handler[T]:
        @functools.wraps(handler)
        def with_task(event: dict[str, Any], context: Any) -> T:
            with costs.invocation() as ledger, task_keys(task_id_of(event)):
                started = time.perf_counter()
                if not (http and _method(event) == "GET"):
                    memory_mb = int(getattr(context, "memory_limit_in_mb", 0) or 0)
                    ledger.begin(memory_mb=memory_mb, http=http, tasks=tasks_named(event))
                try:
                    return handler(event, context)
                finally:
                    _account(ledger, event, context, http=http, seconds=time.perf_counter() - started)

        traced = tracer.capture_lambda_handler(with_task, capture_response=False)
        # Metrics need a namespace (POWERTOOLS_METRICS_NAMESPACE, set by the template for every function).
        # Powertools prints the cold-start metric even with metrics disabled (as locally): asked only when on.
        cold_start = not is_metrics_disabled()
        measured = metrics.log_metrics(traced, capture_cold_start_metric=cold_start) if metrics.namespace else traced
        path = correlation_paths.API_GATEWAY_HTTP if http else None
        return logger.inject_lambda_context(measured, correlation_id_path=path, clear_state=True)

    return decorate


def _account(ledger: costs.Invocation, event: Any, context: Any, *, http: bool, seconds: float) -> None:
    """Close the invocation's cost ledger; a failure to record a cost never fails the invocation."""
    if http and isinstance(event, dict) and _method(event) == "GET":
        return  # a client's read: the client's cost, not the task's
    try:
        ledger.close(
            duration_ms=seconds * 1000, memory_mb=int(getattr(context, "memory_limit_in_mb", 0) or 0), http=http
        )
    except Exception:
        logger.warning("could not record the invocation's AWS cost", exc_info=True)


def _method(event: dict[str, Any]) -> str:
    http = (event.get("requestContext") or {}).get("http") or {}
    return str(http.get("method", "")).upper() if isinstance(http, dict) else ""
