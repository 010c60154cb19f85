"""Ingest: copy every result URL of a task into the results bucket, then end the task.

``IngestService`` drives one task per queue message: each result URL is copied by
``ResultCopier`` (pipelined, checksummed, resumable; see ``reelay.copier``) through the one
fetcher of untrusted URLs (``reelay.fetch``), and the task ends through the one terminal
path (``TaskTracker.succeed`` / ``TaskTracker.fail``).

All or nothing per task: a task with several outputs uploads every one of them as a
multipart upload and leaves it open; only when all are fully uploaded are they completed,
back to back (a completion is a metadata operation, milliseconds). Until then nothing is
visible under the task's keys. When the task fails, every open upload is aborted and any
output already completed is deleted. The open uploads are recorded on the task
(``Task.ingest``), so a worker that dies leaves the next attempt enough to finish or to
clean up. A task with one output writes it directly (a single PUT when it fits one part).

When to give up (``ErrorCode``):
- ``RESULT_URL_REFUSED``, ``RESULT_TOO_LARGE``, ``RESULT_NOT_MEDIA``: at once.
- ``RESULT_TOO_SLOW``: retried once, then failed.
- ``RESULT_EXPIRED``: 403/404/410 on ``GONE_ATTEMPTS`` attempts spread over at least
  ``gone_confirm_seconds`` (a result may not be there yet; one that stays gone has expired).
- ``INGEST_FAILED``: anything else once the attempt budget is spent, or past the ingest
  deadline (counted from entering ``ingesting``, separate from the provider's deadline).
The attempt budget is the ingest queue's ``maxReceiveCount`` (``MAX_RECEIVES``; a unit
test reads it from template.yaml): the last allowed receive fails the task rather than
letting the message park in the DLQ.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from aws_lambda_powertools import Logger

from reelay import metrics
from reelay.catalog import ProviderCatalog
from reelay.copier import ResultCopier
from reelay.errors import ProviderRateLimited, ResultFetchError, TransitionConflict, UnsafeResultUrl
from reelay.fetch_policy import ResultGone, ResultNotMedia, ResultTooLarge, ResultTooSlow
from reelay.media import PreviewMaker
from reelay.models import ErrorCode, IngestState, OutputUpload, Task, TaskStatus, utcnow
from reelay.store import TaskStore
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater, backoff_seconds

logger = Logger(child=True)

MAX_RECEIVES = 5  # == IngestQueue maxReceiveCount in template.yaml
GONE_ATTEMPTS = 3


class IngestService:
    """Copies a task's results and ends the task (idempotent per task; resumes an interrupted copy)."""

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        copier: ResultCopier,
        tracker: TaskTracker,
        *,
        deadline_seconds: float = 3600.0,
        gone_confirm_seconds: float = 60.0,
        max_receives: int = MAX_RECEIVES,
        retry_base_seconds: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
        previews: PreviewMaker | None = None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._copier = copier
        self._tracker = tracker
        self._deadline = timedelta(seconds=deadline_seconds)
        self._gone_window = timedelta(seconds=gone_confirm_seconds)
        self._max_receives = max_receives
        self._retry_base = retry_base_seconds
        self._now = clock
        # Thumbnail and spritesheet (the OpenAI routes' variants), made before the task succeeds.
        self._previews = previews

    def ingest_with_retry(self, task_id: str, attempt: int) -> Task:
        """The queue worker's entry: ``attempt`` is the message's receive count minus one."""
        return self.ingest(task_id, attempt=attempt)

    def ingest(self, task_id: str, *, attempt: int = 0) -> Task:
        """Copy the task's results; raises ``RetryLater`` when a later attempt may succeed."""
        task = self._store.get(task_id)
        if task.status is not TaskStatus.INGESTING:
            return task  # a duplicate message, or already done
        entered = _entered_ingesting(task)
        state = task.ingest or IngestState(started_at=entered)
        if self._now() - entered > self._deadline:
            return self._give_up(
                task, state, ErrorCode.INGEST_FAILED, f"the results could not be copied within {self._deadline}"
            )
        last = attempt >= self._max_receives - 1
        run = _Run(self._store, task, state)
        try:
            return self._copy_all(run)
        except UnsafeResultUrl as exc:
            return self._give_up(run.task, run.state, ErrorCode.RESULT_URL_REFUSED, exc.message)
        except ResultTooLarge as exc:
            return self._give_up(run.task, run.state, ErrorCode.RESULT_TOO_LARGE, exc.message)
        except ResultNotMedia as exc:
            return self._give_up(run.task, run.state, ErrorCode.RESULT_NOT_MEDIA, exc.message)
        except ResultTooSlow as exc:
            if run.state.slow_count >= 1 or last:
                return self._give_up(run.task, run.state, ErrorCode.RESULT_TOO_SLOW, exc.message)
            run.save(slow_count=run.state.slow_count + 1)
            raise RetryLater(backoff_seconds(attempt, base=self._retry_base, cap=300.0), exc.message) from exc
        except ResultGone as exc:
            return self._gone(run, exc, attempt, last)
        except ProviderRateLimited as exc:
            # reelay's own hold on the provider's request limit (a download that needs its
            # credential is one of its requests); nothing was sent and the result is still there,
            # so this never gives up, not even on the last receive (reconcile re-sends the copy).
            raise RetryLater(max(1, math.ceil(exc.retry_after or 1.0)), exc.message) from exc
        except ResultFetchError as exc:
            if last:
                return self._give_up(
                    run.task, run.state, ErrorCode.INGEST_FAILED, f"copying kept failing: {exc.message}"
                )
            raise RetryLater(backoff_seconds(attempt, base=self._retry_base, cap=300.0), exc.message) from exc

    def _copy_all(self, run: _Run) -> Task:
        task = run.task
        provider = self._providers.get(task.provider)
        together = len(task.result_urls) > 1
        for index, url in enumerate(task.result_urls):
            earlier = run.upload(index)
            if earlier is not None and earlier.bytes is not None:
                continue  # every byte is uploaded already

            def started(record: OutputUpload) -> None:
                run.put_upload(record)

            copy_started = time.monotonic()
            record = self._copier.copy(
                url,
                f"tasks/{task.id}/output-{index}",
                index=index,
                headers_for=provider.result_headers,
                resume=earlier,
                on_started=started,
                complete=not together,
            )
            metrics.output_copied(task.provider, record.bytes or 0, time.monotonic() - copy_started)
            logger.info(
                "output copied",
                extra={
                    "task_id": task.id,
                    "index": index,
                    "bytes": record.bytes,
                    "parts_uploaded": self._copier.last.parts_uploaded,
                    "parts_skipped": self._copier.last.parts_skipped,
                },
            )
            if together:
                run.put_upload(record)  # uploaded, still open: a later attempt need not copy it again
            else:
                run.state.uploads = [*(u for u in run.state.uploads if u.index != index), record]
        records = sorted(run.state.uploads, key=lambda u: u.index)
        if together:
            records = [self._copier.complete(r) for r in records]
        outputs = [self._copier.output(r) for r in records]
        if self._previews is not None:
            self._previews.make(run.task, outputs)
        task = self._tracker.succeed(run.task, outputs)
        logger.info(
            "task succeeded",
            extra={"task_id": task.id, "outputs": len(outputs), "bytes": sum(o.bytes for o in outputs)},
        )
        return task

    def _gone(self, run: _Run, exc: ResultGone, attempt: int, last: bool) -> Task:
        now = self._now()
        first = run.state.first_gone_at or now
        count = run.state.gone_count + 1
        if count >= GONE_ATTEMPTS and (now - first >= self._gone_window or last):
            return self._give_up(
                run.task,
                run.state,
                ErrorCode.RESULT_EXPIRED,
                f"the result is gone ({exc.message} on {count} attempts since {first.isoformat()})",
            )
        if last:
            return self._give_up(run.task, run.state, ErrorCode.INGEST_FAILED, f"copying kept failing: {exc.message}")
        run.save(gone_count=count, first_gone_at=first)
        # Spread the attempts so that GONE_ATTEMPTS of them span the confirmation window.
        spread = int(self._gone_window.total_seconds() / (GONE_ATTEMPTS - 1)) + 1
        raise RetryLater(max(spread, backoff_seconds(attempt, base=self._retry_base, cap=60.0)), exc.message) from exc

    def _give_up(self, task: Task, state: IngestState, code: ErrorCode, message: str) -> Task:
        """Fail the task, leaving nothing behind: open uploads aborted, completed outputs deleted."""
        for record in state.uploads:
            self._copier.discard(record)
        cleared = state.model_copy(update={"uploads": []})
        logger.warning("ingest gave up", extra={"task_id": task.id, "code": code.value})
        metrics.ingest_failed(task.provider, code.value)
        return self._tracker.fail(task, code, message, ingest=cleared)


class _Run:
    """One attempt's view of the task and its ingest state; ``save`` writes both back conditionally."""

    def __init__(self, store: TaskStore, task: Task, state: IngestState) -> None:
        self._store = store
        self.task = task
        self.state = state

    def upload(self, index: int) -> OutputUpload | None:
        return next((u for u in self.state.uploads if u.index == index), None)

    def put_upload(self, record: OutputUpload) -> None:
        uploads = [*(u for u in self.state.uploads if u.index != record.index), record]
        self.save(uploads=uploads)

    def save(self, **changes: object) -> None:
        state = self.state.model_copy(update=changes)
        try:
            self.task = self._store.update(self.task, ingest=state)
        except TransitionConflict:
            # Another writer moved the task (a duplicate worker, reconcile): this attempt's
            # record is still good for this attempt; the other writer's state wins on disk.
            self.task = self._store.get(self.task.id)
        self.state = state


def _entered_ingesting(task: Task) -> datetime:
    """When the task entered ``ingesting`` (the ingest deadline counts from here)."""
    for entry in reversed(task.history):
        if entry.to_status is TaskStatus.INGESTING:
            return entry.at
    return task.ingest.started_at if task.ingest else task.updated_at
