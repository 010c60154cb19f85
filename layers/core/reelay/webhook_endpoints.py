"""Webhook endpoints as OpenAI's SDK manages them (``client.webhooks``), for OpenAI-style video events.

An owner registers endpoints (``POST /v1/webhook_endpoints``: ``name``, ``url``, ``event_types``
out of ``video.completed`` and ``video.failed``); when one of its video tasks ends, each endpoint
subscribed to the task's event type gets OpenAI's event shape (``reelay.webhooks.openai_event_payload``:
``{"id": "evt_...", "object": "event", "type", "created_at", "data": {"id": <video id>}}``),
signed per Standard Webhooks with the *endpoint's own* secret, so ``client.webhooks.verify_signature
(body, headers, secret=endpoint.signing_secret)`` (and ``unwrap``) accept it. The deliveries run in
the one notify path (``reelay.notify``): looked up once when the task is first told, each retried
on the webhook schedule, all recorded on the task.

- **Routes** (``reelay.webhook_endpoints_api``; OpenAI's paths under ``/v1``, its objects, its error
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
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

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


__all__ = [
    "MAX_ENDPOINTS",
    "WebhookEndpoint",
    "WebhookEndpointStore",
    "WebhookEndpoints",
]
