"""One Logger and one Tracer for every function, and the one way a handler is wrapped.

Each ``functions/<name>/app.py`` decorates its handler with ``observed(...)`` instead of
copying Powertools' decorators: the Lambda context goes into every log record, the
correlation id of an HTTP request too, and ``task_id`` whenever the handler knows it (a path
parameter, a state machine input, a queue record). ``capture_response=False`` everywhere: an
answer can hold a presigned URL (API), a provider's result URL (poll) or a token, none of
which may be written into X-Ray.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.logging import correlation_paths

logger = Logger()
tracer = Tracer()

T = TypeVar("T")
Handler = Callable[[dict[str, Any], Any], T]


def task_id_of(event: Any) -> str | None:
    """The task an event is about, where one event is about one task."""
    if not isinstance(event, dict):
        return None
    path = event.get("pathParameters") or {}
    task_id = path.get("task_id") if isinstance(path, dict) else None
    task_id = task_id or event.get("task_id")
    return str(task_id) if isinstance(task_id, str) and task_id else None


@contextlib.contextmanager
def task_keys(task_id: str | None) -> Iterator[None]:
    """``task_id`` on every record logged inside, removed after (a batch handles several tasks)."""
    if not task_id:
        yield
        return
    logger.append_keys(task_id=task_id)
    try:
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
            with task_keys(task_id_of(event)):
                return handler(event, context)

        traced = tracer.capture_lambda_handler(with_task, capture_response=False)
        path = correlation_paths.API_GATEWAY_HTTP if http else None
        return logger.inject_lambda_context(traced, correlation_id_path=path, clear_state=True)

    return decorate
