"""The composition root: every dependency is wired here, once per cold start, lazily.

Handlers call ``Container.from_environ(os.environ)`` at import time (settings validated
once) and take only the services they use, so a function builds only its own clients and
imports only its own modules (the imports inside the properties keep cold starts short).
Every DynamoDB adapter shares one boto3 resource, every queue one SQS client: each client
made costs a cold start more than any of its calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from reelay.errors import ConfigurationError
from reelay.settings import Settings

if TYPE_CHECKING:
    from datetime import timedelta

    from reelay.apikeys import ApiKeyAuthorizer, ApiKeys
    from reelay.aws import EventBus, ResultBucket, TaskQueue
    from reelay.batch_store import BatchQueue, BatchStore
    from reelay.batches import Batch, BatchProgress, BatchRunner, BatchService
    from reelay.callbacks import CallbackReceiver
    from reelay.catalog import ProviderCatalog
    from reelay.deadlines import Deadlines
    from reelay.fetch import Fetcher
    from reelay.governor import Governor
    from reelay.ingest import IngestService
    from reelay.models import Task
    from reelay.notify import Notifier
    from reelay.openai_api import VideoService
    from reelay.polling import PollService
    from reelay.reconcile import Reconciler
    from reelay.routing import Router
    from reelay.store import TaskStore
    from reelay.submission import Submitter
    from reelay.tasks import TaskService
    from reelay.tokens import CallbackTokens
    from reelay.tracking import TaskTracker
    from reelay.webhook_endpoints import WebhookEndpoints, WebhookEndpointStore
    from reelay.webhooks import WebhookSecrets, WebhookSender


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
            notify_grace=self._notify_grace(),
        )

    def _notify_grace(self) -> timedelta | None:
        """With a notify queue, a terminal task stays due until it is told (``reelay.notify``)."""
        if not self.settings.notify_queue_url:
            return None
        from reelay.deadlines import NOTIFY_GRACE

        return NOTIFY_GRACE

    @cached_property
    def _dynamodb(self) -> Any:
        """The one DynamoDB resource of the function's tables (task table, API key table)."""
        from reelay.aws import new_resource

        return new_resource("dynamodb")

    @cached_property
    def _sqs(self) -> Any:
        """The one SQS client of the function's queues (boto3 clients are thread-safe)."""
        from reelay.aws import new_client

        return new_client("sqs")

    @cached_property
    def store(self) -> TaskStore:
        from reelay.store import DynamoTaskStore

        return DynamoTaskStore(self.settings.task_table_name, resource=self._dynamodb, due=self.deadlines.due)

    @cached_property
    def providers(self) -> ProviderCatalog:
        """The configured providers, each adapter built (and its protocol imported) on first use."""
        from reelay.catalog import ProviderCatalog
        from reelay.observability import trace_http
        from reelay.providers.base import Provider, ProviderConfig
        from reelay.providers.registry import build_provider

        def build(config: ProviderConfig) -> Provider:
            trace_http()
            # Every provider call passes the governor's request log first (when the provider has a limit).
            gate = self.governor if self.governor.governed_providers else None
            return build_provider(config, gate=gate)

        return ProviderCatalog(self.settings.providers, factory=build)

    @cached_property
    def governor(self) -> Governor:
        """Slots and request logs of the providers with limits, shared through the task table."""
        from reelay.governor import Governor
        from reelay.governor_store import GovernorStore

        dispatch = None
        if self.settings.submit_queue_url:
            dispatch = self.submit_queue.send  # a freed slot sends the next waiting task's message
        return Governor.for_providers(
            GovernorStore(self.settings.task_table_name, resource=self._dynamodb),
            self.settings.providers,
            dispatch=dispatch,
        )

    @cached_property
    def router(self) -> Router:
        """Routing for ``provider: auto``; ``free_capacity`` is the governor's view of free slots."""
        from reelay.routing import Router

        governed = self.governor.governed_providers
        return Router(self.providers, free_capacity=self.governor.free_slots if governed else None)

    @cached_property
    def bucket(self) -> ResultBucket:
        from reelay.aws import ResultBucket

        return ResultBucket(self.settings.results_bucket)

    @cached_property
    def ingest_queue(self) -> TaskQueue:
        from reelay.aws import TaskQueue

        return TaskQueue(self.settings.ingest_queue_url, client=self._sqs)

    @cached_property
    def submit_queue(self) -> TaskQueue:
        from reelay.aws import TaskQueue

        if not self.settings.submit_queue_url:
            raise ConfigurationError("SUBMIT_QUEUE_URL is not set")
        return TaskQueue(self.settings.submit_queue_url, client=self._sqs)

    @cached_property
    def notify_queue(self) -> TaskQueue:
        """Where terminal tasks are told (``NOTIFY_QUEUE_URL``; a stack without it tells no one)."""
        from reelay.aws import TaskQueue

        if not self.settings.notify_queue_url:
            raise ConfigurationError("NOTIFY_QUEUE_URL is not set")
        return TaskQueue(self.settings.notify_queue_url, client=self._sqs)

    @cached_property
    def tokens(self) -> CallbackTokens:
        from reelay.tokens import CallbackTokens

        return CallbackTokens(self.settings.callback_key())

    @cached_property
    def tracker(self) -> TaskTracker:
        from reelay.notify import NotifyHook
        from reelay.tracking import TaskTracker

        hooks: list[Any] = []
        if self.settings.batch_queue_url:
            # A batch's counters move when one of its tasks ends; the last one queues its report.
            hooks.append(self._batch_task_ended)
        if self.settings.notify_queue_url:
            hooks.append(NotifyHook(self.notify_queue))
        slot_release = [self.governor.release] if self.governor.governed_providers else []
        return TaskTracker(
            self.store,
            self.ingest_queue,
            on_terminal=[self._terminal_metrics, *slot_release, *hooks],
            on_provider_final=slot_release,
        )

    def _batch_task_ended(self, task: Task) -> None:
        """Terminal hook: ``BatchProgress.task_ended``, its modules and clients built for a batch's task only."""
        if task.batch_id:
            self.batch_progress.task_ended(task)

    def _terminal_metrics(self, task: Task) -> None:
        """Terminal hook: succeeded/failed per provider and code, callback-to-succeeded latency."""
        from reelay import metrics
        from reelay.errors import ReelayError

        try:
            by_callback = self.providers.get(task.provider).supports_callbacks
        except ReelayError:  # a provider no longer configured
            by_callback = False
        metrics.task_ended(task, by_callback=by_callback)

    @cached_property
    def batch_store(self) -> BatchStore:
        from reelay.batch_store import DynamoBatchStore

        return DynamoBatchStore(self.settings.task_table_name, resource=self._dynamodb)

    @cached_property
    def batch_queue(self) -> BatchQueue:
        from reelay.batch_store import BatchQueue

        if not self.settings.batch_queue_url:
            raise ConfigurationError("BATCH_QUEUE_URL is not set")
        return BatchQueue(self.settings.batch_queue_url, client=self._sqs)

    @cached_property
    def batch_progress(self) -> BatchProgress:
        from reelay.batches import BatchProgress

        return BatchProgress(self.batch_store, self.batch_queue)

    @cached_property
    def batch_runner(self) -> BatchRunner:
        from reelay.batch_store import ManifestObjects
        from reelay.batches import BatchRunner

        s = self.settings
        return BatchRunner(
            self.batch_store,
            ManifestObjects(s.results_bucket),
            self.batch_queue,
            lambda: self._batch_tasks,
            s.providers,
            chunk_lines=s.batch_chunk_lines,
            chunk_bytes=s.batch_chunk_bytes,
            check_seconds=s.batch_check_seconds,
            on_batch_completed=[self._batch_completed_event] if s.event_bus_name else [],
        )

    def _batch_completed_event(self, batch: Batch) -> None:
        """Batch-completed hook: ``Batch Completed`` on the stack's bus (``reelay.notify``)."""
        from reelay.notify import emit_batch_completed

        emit_batch_completed(
            self.event_bus,
            batch_id=batch.id,
            owner=batch.owner,
            counts={
                "lines": batch.lines or 0,
                "tasks": batch.tasks,
                "invalid": batch.invalid,
                "succeeded": batch.succeeded,
                "failed": batch.failed,
            },
            report=f"s3://{batch.bucket}/{batch.report_key}" if batch.report_key else None,
            extra={"name": batch.name, "cost_cents": batch.cost_cents, "by_code": dict(batch.codes)},
        )

    @cached_property
    def _batch_tasks(self) -> TaskService:
        """Task creation for manifest lines: the API's ``TaskService``, without list cursors (no secret)."""
        from reelay.tasks import TaskService

        return TaskService(
            self.store,
            self.providers,
            self.submit_queue,
            self.bucket,
            router=self.router,
            webhook_hosts=self.settings.allowed_webhook_hosts,
            result_hosts=self.settings.allowed_result_hosts,
            governor=self.governor if self.governor.governed_providers else None,
        )

    @cached_property
    def batches(self) -> BatchService:
        from reelay.batches import BatchService

        return BatchService(self.batch_store, self.bucket, upload_ttl_seconds=self.settings.uploads_ttl_seconds)

    @cached_property
    def tasks(self) -> TaskService:
        from reelay.tasks import TaskService
        from reelay.tokens import CursorSigner

        return TaskService(
            self.store,
            self.providers,
            self.submit_queue,
            self.bucket,
            # List cursors are signed under a key derived from the callback secret (no new secret),
            # read when a list is first asked for: no other route needs the secret.
            cursors=CursorSigner(lambda: self.tokens.cursor_key()),
            presign_ttl_seconds=self.settings.presign_ttl_seconds,
            upload_ttl_seconds=self.settings.uploads_ttl_seconds,
            router=self.router,
            webhook_hosts=self.settings.allowed_webhook_hosts,
            result_hosts=self.settings.allowed_result_hosts,
            governor=self.governor if self.governor.governed_providers else None,
        )

    @cached_property
    def openai_videos(self) -> VideoService:
        from reelay.models_map import ModelMap
        from reelay.openai_api import VideoService

        order = [p.name for p in self.settings.providers]
        models = ModelMap.from_config(self.providers, self.settings.reelay_openai_models, order)
        return VideoService(
            self.tasks,
            self.store,
            self.bucket,
            self.providers,
            models,
            presign_ttl_seconds=self.settings.presign_ttl_seconds,
        )

    def _api_key_table(self) -> object:
        from reelay.aws import ApiKeyTable

        if not self.settings.api_key_table_name:
            raise ConfigurationError("API_KEY_TABLE_NAME is not set")
        return ApiKeyTable(self.settings.api_key_table_name, resource=self._dynamodb)

    @cached_property
    def api_keys(self) -> ApiKeys:
        from reelay.apikeys import ApiKeys

        return ApiKeys(self._api_key_table())  # type: ignore[arg-type]

    @cached_property
    def authorizer(self) -> ApiKeyAuthorizer:
        from reelay.apikeys import ApiKeyAuthorizer

        return ApiKeyAuthorizer(self._api_key_table())  # type: ignore[arg-type]

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
            router=self.router,
            governor=self.governor if self.governor.governed_providers else None,
        )

    @cached_property
    def callbacks(self) -> CallbackReceiver:
        from reelay.callbacks import CallbackReceiver

        looks = self.submit_queue if self.settings.submit_queue_url else None
        return CallbackReceiver(self.store, self.providers, self.tokens, self.tracker, looks=looks)

    @cached_property
    def guard(self) -> Fetcher:
        """The one fetcher of untrusted URLs (results, client images, later webhooks)."""
        from reelay.fetch import Fetcher, Limits, UrlPolicy
        from reelay.observability import trace_http

        trace_http()
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
        from reelay.media import PreviewMaker

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
            previews=PreviewMaker(self.bucket),
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
            TaskQueue(self.settings.poll_queue_url, client=self._sqs),
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
            notify_queue=self.notify_queue if self.settings.notify_queue_url else None,
            governor=self.governor if self.governor.governed_providers else None,
        )

    @cached_property
    def event_bus(self) -> EventBus:
        from reelay.aws import EventBus

        if not self.settings.event_bus_name:
            raise ConfigurationError("EVENT_BUS_NAME is not set")
        return EventBus(self.settings.event_bus_name)

    @cached_property
    def webhook_secrets(self) -> WebhookSecrets:
        from datetime import timedelta

        from reelay.store import DynamoWebhookSecretStore
        from reelay.webhooks import WebhookSecrets

        return WebhookSecrets(
            DynamoWebhookSecretStore(self.settings.task_table_name, resource=self._dynamodb),
            overlap=timedelta(seconds=self.settings.reelay_webhook_secret_overlap_seconds),
        )

    def _webhook_sender(self, *, connect_timeout: float, read_timeout: float, deadline_seconds: float) -> WebhookSender:
        from dataclasses import replace

        from reelay.fetch import Fetcher, UrlPolicy
        from reelay.observability import trace_http
        from reelay.webhooks import WEBHOOK_LIMITS, WebhookSender

        trace_http()
        # Webhook URLs get a fetcher of their own: the same checks, their own allow-list and limits.
        limits = replace(WEBHOOK_LIMITS, deadline_seconds=deadline_seconds)
        fetcher = Fetcher(
            UrlPolicy(self.settings.allowed_webhook_hosts),
            limits=limits,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        return WebhookSender(fetcher, self.webhook_secrets, limits=limits)

    @cached_property
    def webhook_endpoint_store(self) -> WebhookEndpointStore:
        from reelay.store import DynamoWebhookEndpointStore

        return DynamoWebhookEndpointStore(self.settings.task_table_name, resource=self._dynamodb)

    @cached_property
    def webhook_endpoints(self) -> WebhookEndpoints:
        """The API's webhook endpoints; its ``test`` POSTs within the API function's 10 s."""
        from reelay.webhook_endpoints import WebhookEndpoints

        return WebhookEndpoints(
            self.webhook_endpoint_store,
            self._webhook_sender(connect_timeout=2.0, read_timeout=5.0, deadline_seconds=6.0),
            allowed_hosts=self.settings.allowed_webhook_hosts,
        )

    @cached_property
    def notifier(self) -> Notifier:
        from reelay.notify import Notifier
        from reelay.webhooks import WEBHOOK_LIMITS, RetrySchedule

        return Notifier(
            self.store,
            self.event_bus,
            self._webhook_sender(
                connect_timeout=5.0, read_timeout=10.0, deadline_seconds=WEBHOOK_LIMITS.deadline_seconds
            ),
            RetrySchedule.parse(self.settings.reelay_webhook_retry_seconds),
            endpoints=self.webhook_endpoint_store,
        )
