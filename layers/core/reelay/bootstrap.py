"""The composition root: every dependency is wired here, once per cold start, lazily.

Handlers call ``Container.from_environ(os.environ)`` at import time (settings validated
once) and take only the services they use, so a function builds only its own clients and
imports only its own modules (the imports inside the properties keep cold starts short).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from reelay.errors import ConfigurationError
from reelay.settings import Settings

if TYPE_CHECKING:
    from reelay.aws import ResultBucket, TaskQueue
    from reelay.callbacks import CallbackReceiver
    from reelay.catalog import ProviderCatalog
    from reelay.deadlines import Deadlines
    from reelay.fetch import Fetcher
    from reelay.ingest import IngestService
    from reelay.polling import PollService
    from reelay.reconcile import Reconciler
    from reelay.store import TaskStore
    from reelay.submission import Submitter
    from reelay.tasks import TaskService
    from reelay.tokens import CallbackTokens
    from reelay.tracking import TaskTracker


class Container:
    """Lazily built services of one function."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Container:
        return cls(Settings.from_environ(environ))

    @cached_property
    def deadlines(self) -> Deadlines:
        from datetime import timedelta

        from reelay.deadlines import Deadlines

        return Deadlines(
            self.settings.providers,
            ingest_stall=timedelta(seconds=self.settings.reelay_ingest_stall_seconds),
            ingest_give_up=timedelta(seconds=self.settings.ingest_task_deadline_seconds),
        )

    @cached_property
    def store(self) -> TaskStore:
        from reelay.store import DynamoTaskStore

        return DynamoTaskStore(self.settings.task_table_name, due=self.deadlines.due)

    @cached_property
    def providers(self) -> ProviderCatalog:
        from reelay.catalog import ProviderCatalog

        return ProviderCatalog(self.settings.providers)

    @cached_property
    def bucket(self) -> ResultBucket:
        from reelay.aws import ResultBucket

        return ResultBucket(self.settings.results_bucket)

    @cached_property
    def ingest_queue(self) -> TaskQueue:
        from reelay.aws import TaskQueue

        return TaskQueue(self.settings.ingest_queue_url)

    @cached_property
    def submit_queue(self) -> TaskQueue:
        from reelay.aws import TaskQueue

        if not self.settings.submit_queue_url:
            raise ConfigurationError("SUBMIT_QUEUE_URL is not set")
        return TaskQueue(self.settings.submit_queue_url)

    @cached_property
    def tokens(self) -> CallbackTokens:
        from reelay.tokens import CallbackTokens

        return CallbackTokens(self.settings.callback_key())

    @cached_property
    def tracker(self) -> TaskTracker:
        from reelay.tracking import TaskTracker

        return TaskTracker(self.store, self.ingest_queue)

    @cached_property
    def tasks(self) -> TaskService:
        from reelay.tasks import TaskService
        from reelay.tokens import CursorSigner

        return TaskService(
            self.store,
            self.providers,
            self.submit_queue,
            self.bucket,
            # List cursors are signed under a key derived from the callback secret (no new secret).
            cursors=CursorSigner(self.tokens.cursor_key()),
            presign_ttl_seconds=self.settings.presign_ttl_seconds,
            upload_ttl_seconds=self.settings.uploads_ttl_seconds,
        )

    @cached_property
    def submitter(self) -> Submitter:
        has_callbacks = any(self.providers.get(n).supports_callbacks for n in self.providers.names)
        return self._submitter(tokens=self.tokens if has_callbacks else None)

    def _submitter(self, *, tokens: CallbackTokens | None) -> Submitter:
        from reelay.aws import PollStarter
        from reelay.inputs import ImageInputs
        from reelay.submission import Submitter

        polled = [n for n in self.providers.names if not self.providers.get(n).supports_callbacks]
        if polled and not self.settings.poll_state_machine_arn:
            raise ConfigurationError(f"POLL_STATE_MACHINE_ARN is not set (providers {', '.join(polled)} are polled)")
        return Submitter(
            self.store,
            self.providers,
            self.tracker,
            PollStarter(self.settings.poll_state_machine_arn),
            tokens=tokens,
            callback_base_url=self.settings.callback_base_url if tokens else None,
            inputs=ImageInputs(self.bucket, self.guard),
        )

    @cached_property
    def callbacks(self) -> CallbackReceiver:
        from reelay.callbacks import CallbackReceiver

        return CallbackReceiver(self.store, self.providers, self.tokens, self.tracker)

    @cached_property
    def guard(self) -> Fetcher:
        """The one fetcher of untrusted URLs (results, client images, later webhooks)."""
        from reelay.fetch import Fetcher, Limits, UrlPolicy

        s = self.settings
        return Fetcher(
            UrlPolicy(s.allowed_result_hosts),
            limits=Limits(
                max_bytes=s.ingest_max_bytes,
                deadline_seconds=s.ingest_deadline_seconds,
                min_bytes_per_second=s.ingest_min_bytes_per_second,
            ),
        )

    @cached_property
    def ingest(self) -> IngestService:
        from reelay.copier import ResultCopier
        from reelay.ingest import IngestService

        s = self.settings
        copier = ResultCopier(
            self.bucket, self.guard, part_bytes=s.ingest_part_bytes, parts_in_flight=s.ingest_parts_in_flight
        )
        return IngestService(
            self.store,
            self.providers,
            copier,
            self.tracker,
            deadline_seconds=s.ingest_task_deadline_seconds,
            gone_confirm_seconds=s.ingest_gone_confirm_seconds,
            retry_base_seconds=s.ingest_retry_base_seconds,
        )

    @cached_property
    def poller(self) -> PollService:
        from reelay.aws import PollTokens, TaskQueue
        from reelay.polling import PollService

        if not self.settings.poll_queue_url:
            raise ConfigurationError("POLL_QUEUE_URL is not set")
        return PollService(
            self.store,
            self.providers,
            self.tracker,
            TaskQueue(self.settings.poll_queue_url),
            PollTokens(),
            record_seconds=self.settings.poll_record_seconds,
        )

    @cached_property
    def reconciler(self) -> Reconciler:
        from reelay.reconcile import Reconciler

        # Reconcile never sends a create (it settles held ones, or fails them at the deadline),
        # so it needs no callback secret.
        return Reconciler(
            self.store,
            self.providers,
            self.tracker,
            self._submitter(tokens=None),
            self.deadlines,
            submit_queue=self.submit_queue,
            ingest_queue=self.ingest_queue,
        )
