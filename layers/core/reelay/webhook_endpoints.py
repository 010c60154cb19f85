"""Webhook endpoints as OpenAI's SDK manages them (``client.webhooks``), for OpenAI-style video events.

An owner registers endpoints (``POST /v1/webhook_endpoints``: ``name``, ``url``, ``event_types``
out of ``video.completed`` and ``video.failed``); when one of its video tasks ends, each endpoint
subscribed to the task's event type gets OpenAI's event shape (``reelay.webhooks.openai_event_payload``:
``{"id": "evt_...", "object": "event", "type", "created_at", "data": {"id": <video id>}}``),
signed per Standard Webhooks with the *endpoint's own* secret, so ``client.webhooks.verify_signature
(body, headers, secret=endpoint.signing_secret)`` (and ``unwrap``) accept it. The deliveries run in
the one notify path (``reelay.notify``): looked up once when the task is first told, each retried
on the webhook schedule, all recorded on the task.

- **Routes** (``webhook_endpoints_router``; OpenAI's paths under ``/v1``, its objects, its error
  shape through ``reelay.openai_api.openai_errors``): ``POST /v1/webhook_endpoints`` (create:
  the answer carries ``signing_secret``, shown only here and on rotate), ``GET`` one or the
  list (newest first, ``after`` / ``limit``), ``POST /v1/webhook_endpoints/{id}`` (update any of
  ``name``, ``url``, ``event_types``), ``DELETE``, ``POST .../rotate_secret``
  (``keep_old_secret_active_for_24_hours``: the old secret stays valid 24 h and deliveries carry
  both signatures meanwhile; else it ends now), ``POST .../test`` (one signed sample event,
  POSTed now through the same sender, the receiver's status answered), and
  ``GET /v1/webhook_event_types``.
- **Rules**: owner-scoped (another owner's endpoint is a 404); ``url`` follows the rule of a task's
  ``webhook_url`` (``reelay.webhooks.webhook_url_refusal`` with ``REELAY_ALLOWED_WEBHOOK_HOSTS``,
  and every address checked again at delivery); at most ``MAX_ENDPOINTS`` per owner.
- **Storage** (``WebhookEndpointStore``; ``reelay.store.DynamoWebhookEndpointStore``): one item
  per endpoint in the task table next to the owner's webhook secrets, found with one query.
"""

from __future__ import annotations

import re
import secrets as secrets_module
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from pydantic import BaseModel, Field

from reelay.errors import RequestInvalid, WebhookEndpointNotFound
from reelay.models import URL_MAX_CHARS, WebhookOutcome, utcnow
from reelay.webhooks import SUPPORTED_EVENT_TYPES, WebhookSender, new_secret, openai_event, webhook_url_refusal

PREFIX = "/v1/webhook_endpoints"
EVENT_TYPES_PATH = "/v1/webhook_event_types"
MAX_ENDPOINTS = 10
MAX_NAME_CHARS = 256
# ``rotate_secret(keep_old_secret_active_for_24_hours=True)``: how long the old secret stays valid.
KEEP_OLD_SECRET = timedelta(hours=24)
# The video a ``test`` delivery names (no such task: a sample).
SAMPLE_VIDEO_ID = "tsk_" + "0" * 28
_ENDPOINT_ID = re.compile(r"^we_[0-9a-f]{28}$")


# ----------------------------------------------------------------- the stored endpoint


class SigningSecret(BaseModel):
    """One of an endpoint's secrets; ``retire_at`` set on the previous one kept after a rotation."""

    secret: str
    created_at: datetime
    retire_at: datetime | None = None


class WebhookEndpoint(BaseModel):
    """An owner's webhook endpoint as stored. ``version`` increases with every write."""

    id: str
    owner: str
    name: str
    url: str
    event_types: list[str]
    created_at: datetime
    updated_at: datetime
    secrets: list[SigningSecret]  # newest first
    version: int = 0

    def valid_secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery is signed with now, newest first (two during a kept rotation)."""
        return [s.secret for s in self.secrets if s.retire_at is None or s.retire_at > now]


def new_endpoint_id() -> str:
    return "we_" + secrets_module.token_hex(14)


class WebhookEndpointStore(ABC):
    """Where owners' webhook endpoints live (``reelay.store.DynamoWebhookEndpointStore``)."""

    @abstractmethod
    def create(self, endpoint: WebhookEndpoint, *, limit: int) -> bool:
        """Store a new endpoint unless its owner has ``limit`` already (False then)."""

    @abstractmethod
    def get(self, owner: str, endpoint_id: str) -> WebhookEndpoint | None:
        """The owner's endpoint, or None (another owner's too)."""

    @abstractmethod
    def of_owner(self, owner: str) -> list[WebhookEndpoint]:
        """Every endpoint of the owner (at most the limit), in one query."""

    @abstractmethod
    def save(self, endpoint: WebhookEndpoint, *, expected_version: int) -> bool:
        """Write the endpoint if the stored one is still at ``expected_version``; False if not (or gone)."""

    @abstractmethod
    def delete(self, owner: str, endpoint_id: str) -> bool:
        """Delete the owner's endpoint; False if there was none."""


# ----------------------------------------------------------------- OpenAI's objects


class WebhookEndpointObject(BaseModel):
    """OpenAI's ``WebhookEndpoint``."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    created_at: int
    updated_at: int
    event_types: list[str]
    name: str
    url: str
    signing_secret_hint: str


class WebhookEndpointWithSecret(WebhookEndpointObject):
    """OpenAI's ``WebhookEndpointWithSecret``: the answer of create and rotate only."""

    signing_secret: str


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookEndpointObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class WebhookEndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint.deleted"] = "webhook_endpoint.deleted"
    deleted: bool = True


class WebhookEndpointTestResult(BaseModel):
    object: Literal["webhook_endpoint.test"] = "webhook_endpoint.test"
    event_type: str
    status_code: int
    success: Literal[True] = True
    webhook_endpoint_id: str


class WebhookEventTypeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[str] = Field(default_factory=lambda: list(SUPPORTED_EVENT_TYPES))


def secret_hint(secret: str) -> str:
    """A masked hint of a secret: its prefix and last four characters."""
    return f"whsec_****{secret[-4:]}"


def endpoint_object(endpoint: WebhookEndpoint) -> WebhookEndpointObject:
    return WebhookEndpointObject(
        id=endpoint.id,
        created_at=int(endpoint.created_at.timestamp()),
        updated_at=int(endpoint.updated_at.timestamp()),
        event_types=list(endpoint.event_types),
        name=endpoint.name,
        url=endpoint.url,
        signing_secret_hint=secret_hint(endpoint.secrets[0].secret),
    )


def with_secret(endpoint: WebhookEndpoint) -> WebhookEndpointWithSecret:
    return WebhookEndpointWithSecret(
        **endpoint_object(endpoint).model_dump(exclude={"object"}), signing_secret=endpoint.secrets[0].secret
    )


# ----------------------------------------------------------------- the service


class TooManyWebhookEndpoints(RequestInvalid):
    code = "TOO_MANY_WEBHOOK_ENDPOINTS"


class WebhookTestFailed(RequestInvalid):
    code = "WEBHOOK_TEST_FAILED"


class WebhookEndpoints:
    """An owner's webhook endpoints: create, read, list, update, delete, rotate, test (owner-scoped)."""

    def __init__(
        self,
        store: WebhookEndpointStore,
        sender: WebhookSender,
        *,
        allowed_hosts: frozenset[str] = frozenset(),
        limit: int = MAX_ENDPOINTS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._sender = sender
        self._hosts = allowed_hosts
        self._limit = limit
        self._clock = clock

    def create(self, *, owner: str, name: str, url: str, event_types: Sequence[str]) -> WebhookEndpoint:
        now = self._clock()
        endpoint = WebhookEndpoint(
            id=new_endpoint_id(),
            owner=owner,
            name=_name(name),
            url=self._url(url),
            event_types=_event_types(event_types),
            created_at=now,
            updated_at=now,
            secrets=[SigningSecret(secret=new_secret(), created_at=now)],
        )
        if not self._store.create(endpoint, limit=self._limit):
            raise TooManyWebhookEndpoints(
                f"you have {self._limit} webhook endpoints already, the most allowed; delete one first"
            )
        return endpoint

    def get(self, endpoint_id: str, *, owner: str) -> WebhookEndpoint:
        """The owner's endpoint; another owner's, or none, is ``WebhookEndpointNotFound``."""
        found = self._store.get(owner, endpoint_id) if _ENDPOINT_ID.fullmatch(endpoint_id) else None
        if found is None:
            raise WebhookEndpointNotFound(f"webhook endpoint {endpoint_id[:64]} not found")
        return found

    def list(self, *, owner: str, after: str | None, limit: int) -> tuple[list[WebhookEndpoint], bool]:
        """A page of the owner's endpoints, newest first, after the endpoint ``after``; and whether more follow."""
        found = sorted(self._store.of_owner(owner), key=lambda e: (e.created_at, e.id), reverse=True)
        if after:
            ids = [e.id for e in found]
            if after not in ids:
                raise WebhookEndpointNotFound(f"webhook endpoint {after[:64]} not found")
            found = found[ids.index(after) + 1 :]
        return found[:limit], len(found) > limit

    def update(
        self,
        endpoint_id: str,
        *,
        owner: str,
        name: str | None = None,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
    ) -> WebhookEndpoint:
        """Change any of name, url and event_types; an unchanged endpoint is not written (nor its
        ``updated_at`` advanced)."""
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _name(name)
        if url is not None:
            changes["url"] = self._url(url)
        if event_types is not None:
            changes["event_types"] = _event_types(event_types)
        return self._change(endpoint_id, owner, lambda endpoint, now: changes)

    def rotate(self, endpoint_id: str, *, owner: str, keep_old: bool) -> WebhookEndpoint:
        """A new secret, first; the previous newest stays valid ``KEEP_OLD_SECRET`` if ``keep_old``, else ends now."""

        def rotated(endpoint: WebhookEndpoint, now: datetime) -> dict[str, Any]:
            kept: list[SigningSecret] = []
            live = [s for s in endpoint.secrets if s.retire_at is None or s.retire_at > now]
            if keep_old and live:
                retire = now + KEEP_OLD_SECRET
                if live[0].retire_at is not None:
                    retire = min(retire, live[0].retire_at)
                kept = [live[0].model_copy(update={"retire_at": retire})]
            return {"secrets": [SigningSecret(secret=new_secret(), created_at=now), *kept]}

        return self._change(endpoint_id, owner, rotated)

    def delete(self, endpoint_id: str, *, owner: str) -> None:
        """Delete the owner's endpoint; a delivery still pending to it then ends unsent (``reelay.notify``)."""
        if not _ENDPOINT_ID.fullmatch(endpoint_id) or not self._store.delete(owner, endpoint_id):
            raise WebhookEndpointNotFound(f"webhook endpoint {endpoint_id[:64]} not found")

    def test(self, endpoint_id: str, *, owner: str, event_type: str) -> int:
        """One signed sample event POSTed now to the endpoint; the receiver's HTTP status."""
        (checked,) = _event_types([event_type], field="event_type")
        endpoint = self.get(endpoint_id, owner=owner)
        now = self._clock()
        sample_id = "evt_test_" + secrets_module.token_hex(12)
        body = openai_event(sample_id, checked, now, SAMPLE_VIDEO_ID)
        result = self._sender.send(endpoint.url, body, msg_id=sample_id, secrets=endpoint.valid_secrets(now), now=now)
        if result.outcome is WebhookOutcome.REFUSED:
            raise WebhookTestFailed(f"the endpoint's url was refused: {result.attempt.error}", field="url")
        if result.attempt.status is None:
            raise WebhookTestFailed(f"the endpoint did not answer: {result.attempt.error}")
        return result.attempt.status

    def _change(
        self,
        endpoint_id: str,
        owner: str,
        change: Callable[[WebhookEndpoint, datetime], dict[str, Any]],
    ) -> WebhookEndpoint:
        for _ in range(5):
            endpoint = self.get(endpoint_id, owner=owner)
            now = self._clock()
            updates = {k: v for k, v in change(endpoint, now).items() if getattr(endpoint, k) != v}
            if not updates:
                return endpoint
            new = endpoint.model_copy(update={**updates, "updated_at": now, "version": endpoint.version + 1})
            if self._store.save(new, expected_version=endpoint.version):
                return new
        raise RequestInvalid(f"webhook endpoint {endpoint_id} kept changing concurrently; retry")

    def _url(self, url: str) -> str:
        if len(url) > URL_MAX_CHARS:
            raise RequestInvalid(f"url is longer than {URL_MAX_CHARS} characters", field="url")
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        reason = webhook_url_refusal(url, self._hosts) if scheme in ("http", "https") else "must be an https URL"
        if reason:
            raise RequestInvalid(f"url {reason}", field="url")
        return url


def _name(name: str) -> str:
    if not name.strip() or len(name) > MAX_NAME_CHARS:
        raise RequestInvalid(f"name must be 1 to {MAX_NAME_CHARS} characters", field="name")
    return name


def _event_types(event_types: Sequence[str], *, field: str = "event_types") -> list[str]:
    supported = ", ".join(SUPPORTED_EVENT_TYPES)
    unknown = [t for t in event_types if t not in SUPPORTED_EVENT_TYPES]
    if unknown or not event_types:
        named = f"{str(unknown[0])[:64]!r} is not supported" if unknown else "at least one is required"
        raise RequestInvalid(f"{field}: {named}; reelay sends {supported}", field=field)
    return list(dict.fromkeys(event_types))


# ----------------------------------------------------------------- the routes


def _fields(body: Mapping[str, Any], allowed: dict[str, type | tuple[type, ...]], required: Sequence[str] = ()) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise RequestInvalid(f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64])
    for name in required:
        if body.get(name) is None:
            raise RequestInvalid(f"{name} is required", field=name)
    for name, kind in allowed.items():
        value = body.get(name)
        if value is None:
            continue
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RequestInvalid(f"{name} must be a list of strings", field=name)
        elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise RequestInvalid(f"{name} must be a {getattr(kind, '__name__', 'value')}", field=name)


def webhook_endpoints_router(endpoints: Callable[[], WebhookEndpoints], owner: Callable[[], str]) -> Router:
    """The ``/v1/webhook_endpoints`` routes (and ``/v1/webhook_event_types``), to include into the API resolver."""
    # Here, not at the top: reelay.store imports this module, and reelay.openai_api imports the store.
    from reelay.openai_api import json_object, openai_errors

    router = Router()
    guarded: list[Any] = [openai_errors]
    editable: dict[str, type | tuple[type, ...]] = {"name": str, "url": str, "event_types": list}

    def body() -> dict[str, Any]:
        return json_object(router.current_event.raw_event)

    def answer(model: BaseModel) -> Response[str]:
        return Response(200, content_type="application/json", body=model.model_dump_json())

    @router.post(PREFIX, middlewares=guarded, include_in_schema=False)
    def create_webhook_endpoint() -> Response[str]:
        fields = body()
        _fields(fields, editable, required=("name", "url", "event_types"))
        made = endpoints().create(
            owner=owner(), name=fields["name"], url=fields["url"], event_types=fields["event_types"]
        )
        return answer(with_secret(made))

    @router.get(PREFIX, middlewares=guarded, include_in_schema=False)
    def list_webhook_endpoints() -> Response[str]:
        query = router.current_event.query_string_parameters or {}
        limit_text = query.get("limit", "20")
        if not re.fullmatch(r"[0-9]{1,3}", limit_text) or not 1 <= int(limit_text) <= 100:
            raise RequestInvalid("limit must be 1 to 100", field="limit")
        found, more = endpoints().list(owner=owner(), after=query.get("after") or None, limit=int(limit_text))
        page = WebhookEndpointList(
            data=[endpoint_object(e) for e in found],
            first_id=found[0].id if found else None,
            last_id=found[-1].id if found else None,
            has_more=more,
        )
        return answer(page)

    @router.get(f"{PREFIX}/<webhook_endpoint_id>", middlewares=guarded, include_in_schema=False)
    def get_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        return answer(endpoint_object(endpoints().get(webhook_endpoint_id, owner=owner())))

    @router.post(f"{PREFIX}/<webhook_endpoint_id>", middlewares=guarded, include_in_schema=False)
    def update_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        fields = body()
        _fields(fields, editable)
        changed = endpoints().update(
            webhook_endpoint_id, owner=owner(), name=fields.get("name"), url=fields.get("url"),
            event_types=fields.get("event_types"),
        )  # fmt: skip
        return answer(endpoint_object(changed))

    @router.delete(f"{PREFIX}/<webhook_endpoint_id>", middlewares=guarded, include_in_schema=False)
    def delete_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        endpoints().delete(webhook_endpoint_id, owner=owner())
        return answer(WebhookEndpointDeleted(id=webhook_endpoint_id))

    @router.post(f"{PREFIX}/<webhook_endpoint_id>/rotate_secret", middlewares=guarded, include_in_schema=False)
    def rotate_webhook_endpoint_secret(webhook_endpoint_id: str) -> Response[str]:
        fields = body()
        _fields(fields, {"keep_old_secret_active_for_24_hours": bool})
        keep = bool(fields.get("keep_old_secret_active_for_24_hours") or False)
        return answer(with_secret(endpoints().rotate(webhook_endpoint_id, owner=owner(), keep_old=keep)))

    @router.post(f"{PREFIX}/<webhook_endpoint_id>/test", middlewares=guarded, include_in_schema=False)
    def test_webhook_endpoint(webhook_endpoint_id: str) -> Response[str]:
        fields = body()
        _fields(fields, {"event_type": str}, required=("event_type",))
        event_type = fields["event_type"]
        status = endpoints().test(webhook_endpoint_id, owner=owner(), event_type=event_type)
        return answer(
            WebhookEndpointTestResult(
                event_type=event_type, status_code=status, webhook_endpoint_id=webhook_endpoint_id
            )
        )

    @router.get(EVENT_TYPES_PATH, middlewares=guarded, include_in_schema=False)
    def list_webhook_event_types() -> Response[str]:
        return answer(WebhookEventTypeList())

    return router


__all__ = [
    "MAX_ENDPOINTS",
    "WebhookEndpoint",
    "WebhookEndpointStore",
    "WebhookEndpoints",
    "endpoint_object",
    "webhook_endpoints_router",
]
