"""The client-facing task operations behind the HTTP API (and the batch manifest)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from reelay import costs
from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.contract import (
    EndpointDeliveryView,
    ErrorInfo,
    OutputView,
    ProviderView,
    TaskErrorView,
    TaskView,
    WebhookAttemptView,
    WebhookView,
)
from reelay.errors import (
    QueueSendFailed,
    ReelayError,
    RequestInvalid,
    TaskNotFound,
    TaskNotRemixable,
    UploadNotFound,
)
from reelay.fetch_policy import public_url_refusal
from reelay.models import (
    LOCAL_OWNER,
    UPLOADS_ROOT,
    ImageRequest,
    RemixRequest,
    Task,
    TaskKind,
    TaskStatus,
    UploadRequest,
    UploadTicket,
    VideoRequest,
    utcnow,
)
from reelay.routing import AUTO, Router
from reelay.store import TaskStore
from reelay.tokens import CursorSigner
from reelay.webhooks import webhook_id, webhook_url_refusal

if TYPE_CHECKING:
    from reelay.governor import Governor

logger = Logger(child=True)


def new_task_id() -> str:
    """Time-ordered, unguessable: 12 hex digits of milliseconds, then 16 random hex digits."""
    return f"tsk_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


_UPLOAD_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def uploads_prefix(owner: str) -> str:
    """The owner's own uploads area: a hash of the owner (no ARN or subject in keys)."""
    return f"{UPLOADS_ROOT}{hashlib.sha256(owner.encode()).hexdigest()[:32]}/"


def request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class TaskService:
    """Create, read and list an owner's tasks; every check that can fail happens before anything is stored.

    Every operation takes the ``owner`` (``reelay.api`` derives it from the authorizer): another
    owner's task is ``TaskNotFound``, the same answer as a task that does not exist.
    """

    def __init__(
        self,
        store: TaskStore,
        providers: ProviderCatalog,
        submit_queue: TaskQueue,
        bucket: ResultBucket,
        *,
        cursors: CursorSigner | None = None,
        presign_ttl_seconds: int = 900,
        upload_ttl_seconds: int = 900,
        router: Router | None = None,
        webhook_hosts: frozenset[str] = frozenset(),
        result_hosts: frozenset[str] = frozenset(),
        governor: Governor | None = None,
    ) -> None:
        self._store = store
        # With providers that have limits: a new task takes a free slot or joins the line.
        self._governor = governor
        self._providers = providers
        self._router = router or Router(providers)
        self._submit = submit_queue
        self._bucket = bucket
        # Without a signer (tests), cursors are signed under a key of this process only.
        self._cursors = cursors or CursorSigner(secrets.token_bytes(32))
        self._ttl = presign_ttl_seconds
        self._upload_ttl = upload_ttl_seconds
        # host:port receivers allowed over plain http on any address (REELAY_ALLOWED_WEBHOOK_HOSTS).
        self._webhook_hosts = webhook_hosts
        # host:port the providers may be sent to for a reference image on any address: the local
        # simulators (REELAY_ALLOWED_RESULT_HOSTS, the result fetcher's own exemption).
        self._result_hosts = result_hosts

    def create(
        self,
        request: VideoRequest | ImageRequest,
        *,
        owner: str = LOCAL_OWNER,
        idempotency_key: str | None = None,
        kind: TaskKind = TaskKind.VIDEO,
        parent_task_id: str | None = None,
        extra: dict[str, Any] | None = None,
        task_id: str | None = None,
        batch_id: str | None = None,
        batch_line: int | None = None,
        fingerprint: dict[str, Any] | None = None,
        dispatch: bool = True,
        image_url_is_ours: bool = False,
    ) -> tuple[Task, bool]:
        """Validate against the provider, store as ``queued``, enqueue. ``(task, created)``.

        ``provider: auto`` (a video): the router picks the provider and the task records why.
        A batch manifest's line passes its own deterministic ``task_id`` (and ``batch_id``,
        ``batch_line``): a line made before is that task again, ``created`` False, nothing sent.
        ``fingerprint`` replaces the stored request as what an Idempotency-Key replay must match
        (the OpenAI routes compare their parsed fields and the image's hash, not a fresh upload URL).
        A client's ``image_url`` must name a host the provider can reach from the internet
        (``public_url_refusal``: a public DNS name, no address, no private name; the API's schema
        says the same), or the paid create would fail at the provider, or make it fetch from its
        own network;
        ``image_url_is_ours``: reelay presigned it (the OpenAI routes' uploaded reference). An
        image edit's ``image_urls`` are held to the same rule (reelay's fetcher, which reads them,
        checks each address it resolves as well).
        """
        if isinstance(request, VideoRequest) and request.image_url and not image_url_is_ours:
            refusal = public_url_refusal(str(request.image_url), self._result_hosts)
            if refusal:
                raise RequestInvalid(
                    f"image_url {refusal} (the provider fetches the image from the internet)", field="image_url"
                )
        for n, url in enumerate(request.image_urls if isinstance(request, ImageRequest) else ()):
            # Fetched by reelay (``reelay.inputs``), whose fetcher would refuse it before the paid call.
            refusal = public_url_refusal(str(url), self._result_hosts)
            if refusal:
                raise RequestInvalid(
                    f"image_urls[{n}] {refusal} (reelay fetches it from the internet)", field="image_urls"
                )
        routing = None
        if isinstance(request, VideoRequest) and request.provider == AUTO:
            routing = self._router.plan(request)
            provider = self._providers.get(routing.candidates[0].provider)
        else:
            provider = self._providers.get(request.provider)
        if request.webhook_url:
            refusal = webhook_url_refusal(str(request.webhook_url), self._webhook_hosts)
            if refusal:
                raise RequestInvalid(f"webhook_url: {refusal}", field="webhook_url")
        if isinstance(request, ImageRequest):
            provider.validate_images(request)
        else:
            provider.validate(request)
        payload = request.model_dump(mode="json", exclude_none=True) | (extra or {})
        now = utcnow()
        task = Task(
            id=task_id or new_task_id(),
            owner=owner,
            provider=provider.name,
            protocol=provider.protocol,
            kind=kind,
            request=payload,
            parent_task_id=parent_task_id,
            created_at=now,
            updated_at=now,
            webhook_url=str(request.webhook_url) if request.webhook_url else None,
            metadata=request.metadata or {},
            idempotency_key=idempotency_key,
            routing=routing,
            batch_id=batch_id,
            batch_line=batch_line,
        )
        scope = f"{owner}#{idempotency_key}" if idempotency_key else None
        compared = payload if fingerprint is None else fingerprint
        digest = request_hash({"kind": kind.value, "parent": parent_task_id, **compared})
        task, created = self._store.create(task, idempotency_scope=scope, request_hash=digest)
        if created and dispatch:
            self._dispatch(task)
        return task, created

    def dispatch_many(self, tasks: list[Task]) -> None:
        """Send on many tasks made with ``dispatch=False`` (a manifest chunk's lines), together."""
        if self._governor is None:
            for task in tasks:
                self._dispatch(task)
            return
        try:
            self._governor.offer_many(tasks)
        except Exception:  # the tasks are stored: reconcile takes them from here
            logger.exception(
                "tasks not given slots or places in line; reconcile sends them on", extra={"tasks": len(tasks)}
            )

    def _dispatch(self, task: Task) -> None:
        """Send a new task on: its submit message, or (a governed provider, no free slot) a place
        in the governor's line, where a freed slot sends it the message."""
        if self._governor is not None:
            try:
                self._governor.offer(task)
            except Exception:  # the task is stored: reconcile takes it from here
                logger.exception(
                    "task not given a slot or a place in line; reconcile sends it on", extra={"task_id": task.id}
                )
            return
        try:
            self._submit.send(task.id)
        except QueueSendFailed:
            # The task is stored: it stays queued and reconcile sends its message again.
            logger.warning("submit message not sent; reconcile will send it", extra={"task_id": task.id})

    def remix(
        self, parent_id: str, remix: RemixRequest, *, owner: str = LOCAL_OWNER, idempotency_key: str | None = None
    ) -> tuple[Task, bool]:
        """A new task derived from one of the owner's succeeded videos, linked to its parent."""
        parent = self.get(parent_id, owner=owner)
        provider = self._providers.get(parent.provider)
        if "remix" not in provider.capabilities().modes:
            raise TaskNotRemixable(f"provider {provider.name} ({provider.protocol}) cannot remix videos")
        if parent.kind is TaskKind.IMAGE:
            raise TaskNotRemixable("only a video can be remixed")
        if parent.status is not TaskStatus.SUCCEEDED or not parent.provider_task_id:
            raise TaskNotRemixable(f"task {parent.id} is {parent.status.value}; only a succeeded video can be remixed")
        base = {k: v for k, v in parent.request.items() if k not in ("webhook_url", "metadata")}
        changes = remix.model_dump(mode="json", exclude_none=True)
        if remix.model is not None:
            # An explicit model says orientation, duration, definition and pro itself.
            for field in ("model", "orientation", "duration", "resolution", "pro"):
                base.pop(field, None)
        # A remix goes to the parent's provider (an `auto` parent: the one that served it).
        request = VideoRequest.model_validate(base | changes | {"provider": parent.provider})
        return self.create(
            request, owner=owner, idempotency_key=idempotency_key, kind=TaskKind.REMIX, parent_task_id=parent.id
        )

    def images(
        self, request: ImageRequest, *, owner: str = LOCAL_OWNER, idempotency_key: str | None = None
    ) -> tuple[Task, bool]:
        """A task whose outputs are images (synchronous at the provider, copied to S3 all the same).

        ``image_keys`` must lie in the owner's own uploads area (``POST /v1/uploads``); any
        other key is ``UploadNotFound`` (404, as for a missing one) before anything is read, so
        no one can send another task's or owner's object to a provider.
        """
        own = uploads_prefix(owner)
        for key in request.image_keys:
            if not key.startswith(own) or ".." in key.split("/") or self._bucket.head(key) is None:
                raise UploadNotFound(
                    f"image_keys: {key!r} is not one of your uploads (POST /v1/uploads gives keys under {own})"
                )
        return self.create(request, owner=owner, idempotency_key=idempotency_key, kind=TaskKind.IMAGE)

    def upload(self, request: UploadRequest, *, owner: str = LOCAL_OWNER) -> UploadTicket:
        """A presigned PUT for one input image under the owner's own uploads prefix.

        Content-Type and Content-Length are signed into the URL, so S3 refuses a body of
        another size or type; the key is usable in ``image_keys`` by this owner only.
        """
        key = f"{uploads_prefix(owner)}{secrets.token_hex(12)}{_UPLOAD_EXTENSIONS[request.content_type]}"
        ttl = self._bucket.presign_ttl(self._upload_ttl)
        url = self._bucket.presigned_put(
            key, content_type=request.content_type, content_length=request.bytes, ttl_seconds=ttl
        )
        return UploadTicket(
            key=key,
            url=url,
            headers={"Content-Type": request.content_type, "Content-Length": str(request.bytes)},
            expires_at=utcnow() + timedelta(seconds=ttl),
        )

    def providers(self) -> list[ProviderView]:
        """Each configured provider: protocol, capabilities and, where the protocol has them, live account data."""
        views = []
        for provider in self._providers:
            view = ProviderView(name=provider.name, protocol=provider.protocol, capabilities=provider.capabilities())
            try:
                view.account = provider.account()
            except ReelayError as exc:
                view.account_error = ErrorInfo(code=exc.code, message=exc.message)
            views.append(view)
        return views

    def get(self, task_id: str, *, owner: str, consistent: bool = True) -> Task:
        """The owner's task; another owner's is ``TaskNotFound`` with the very same message.
        ``consistent=False`` for a read that only shows it (a client's GET)."""
        task = self._store.get(task_id, consistent=consistent)
        if task.owner != owner:
            raise TaskNotFound(f"task {task_id} not found")
        return task

    def list(
        self,
        *,
        owner: str,
        status: TaskStatus | None = None,
        provider: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[Task], str | None]:
        """The owner's tasks, newest first; the cursor is signed and bound to owner and query."""
        query = {"status": str(status) if status else None, "provider": provider}
        after = self._cursors.open(owner, query, cursor) if cursor else None
        tasks, last = self._store.list(owner=owner, status=status, provider=provider, limit=limit, after=after)
        return tasks, (self._cursors.seal(owner, query, last) if last else None)

    def view(self, task: Task, *, with_cost: bool = False) -> TaskView:
        """The client's view of a task: no internal bookkeeping, outputs with presigned URLs.

        ``with_cost`` adds what it cost (one more read, of its cost record): ``GET /v1/tasks/{id}``.
        """
        view = task_view(task, presigned_get=lambda key: self._bucket.presigned_get(key, self._ttl))
        if with_cost:
            view.cost = costs.costs_of([task], self._store)[0]
        return view


def task_view(task: Task, *, presigned_get: Callable[[str], str] | None = None) -> TaskView:
    """A task as the API shows it (the one definition); without ``presigned_get``, outputs carry no URL
    (events and webhooks: a presigned URL must not travel further than the API's answer)."""
    webhook = task.notify.webhook if task.notify else None
    return TaskView(
        id=task.id,
        provider=task.provider,
        kind=task.kind,
        status=task.status,
        progress=task.progress,
        prompt=str(task.request.get("prompt") or "") or None,
        provider_task_id=task.provider_task_id,
        parent_task_id=task.parent_task_id,
        created_at=task.created_at,
        updated_at=task.updated_at,
        error=TaskErrorView(code=task.error.code.value, message=task.error.message) if task.error else None,
        outputs=[
            OutputView(
                s3_uri=o.s3_uri,
                bytes=o.bytes,
                sha256=o.sha256,
                content_type=o.content_type,
                url=presigned_get(o.key) if presigned_get else None,
            )
            for o in task.outputs
        ],
        cost_cents=task.cost_cents,
        metadata=task.metadata,
        request=task.request,
        routing=task.routing,
        batch_id=task.batch_id,
        webhook=(
            WebhookView(
                id=webhook.id,
                outcome=webhook.outcome.value,
                attempts=[WebhookAttemptView.model_validate(a.model_dump()) for a in webhook.attempts],
            )
            if webhook
            else (WebhookView(id=webhook_id(task.id), outcome="pending") if task.webhook_url else None)
        ),
        webhook_endpoints=[
            EndpointDeliveryView(
                id=d.id,
                endpoint_id=str(d.endpoint_id),
                outcome=d.outcome.value,
                attempts=[WebhookAttemptView.model_validate(a.model_dump()) for a in d.attempts],
            )
            for d in task.notify.endpoints
        ]
        if task.notify and task.notify.endpoints
        else None,
    )
