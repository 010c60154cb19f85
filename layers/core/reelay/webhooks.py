"""Client webhooks per Standard Webhooks: URLs, secrets, signing, the retry schedule and one delivery.

A task with a ``webhook_url`` gets one POST when it ends (``reelay.notify`` runs the deliveries):

- **URL.** Checked at input (``webhook_url_refusal``, and ``webhook_url_type`` in the API's
  schema): https with a public DNS host name; plain http, or a loopback/private host, only for a
  ``host:port`` listed in ``REELAY_ALLOWED_WEBHOOK_HOSTS`` (local receivers). At delivery the URL
  goes through the one fetcher of untrusted URLs (``reelay.fetch``): the host is resolved and
  every address checked again, so a name that resolves to a private address is refused and
  nothing is sent (``WebhookOutcome.REFUSED``).
- **Secrets** belong to the owner (``WebhookSecrets``, one DynamoDB item per owner): made on
  first use, rotated on request; after a rotation the previous secret stays valid for
  ``overlap`` (``REELAY_WEBHOOK_SECRET_OVERLAP_SECONDS``, 24 h), so at most two are valid at once.
  Secrets are never logged.
- **Signing** is the ``standardwebhooks`` library's: ``webhook-id`` (stable across retries:
  ``webhook_id(task id)``), ``webhook-timestamp`` (the attempt's time, so a receiver's 5-minute
  tolerance holds on a retry a day later) and ``webhook-signature``, one ``v1,<HMAC-SHA256>`` per
  valid secret, space-separated, over ``id.timestamp.body``.
- **Payload** builders are separate from signing and delivery (``PayloadBuilder``): reelay's own
  is ``task_payload`` (``{"type": "task.succeeded" | "task.failed", "timestamp", "data": task}``,
  the task as the API shows it, without presigned URLs); OpenAI's event shape, for the owner's
  webhook endpoints (``reelay.webhook_endpoints``), is ``openai_event_payload``
  (``{"id": "evt_...", "object": "event", "type": "video.completed" | "video.failed",
  "created_at", "data": {"id": video id}}``), signed with the endpoint's own secrets
  (``WebhookSender.send``).
- **Schedule** (``RetrySchedule``): after a failed attempt the next waits 5 s, 5 min, 30 min, 2 h,
  5 h, 10 h, 24 h (±10 % jitter), or what ``REELAY_WEBHOOK_RETRY_SECONDS`` says; a
  ``Retry-After`` answer replaces the wait (at most 24 h). A 2xx is delivered; a 410 stops;
  anything else (another status, no answer) is retried until the schedule is spent.
"""

from __future__ import annotations

import base64
import json
import random
import secrets as secrets_module
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, Field
from standardwebhooks.webhooks import Webhook

from reelay.errors import ResultError, UnsafeResultUrl
from reelay.fetch_policy import Limits, public_url_refusal
from reelay.models import _PORT, URL_MAX_CHARS, Task, TaskStatus, WebhookAttempt, WebhookOutcome, utcnow

if TYPE_CHECKING:
    import httpx

    from reelay.fetch import Fetcher

# -- identity ------------------------------------------------------------------------------


def webhook_id(task_id: str) -> str:
    """The ``webhook-id`` of a task's webhook: the same on every attempt (receivers dedupe on it)."""
    return f"msg_{task_id}"


def event_id(task_id: str) -> str:
    """The id of a task's OpenAI-style event, and its ``webhook-id``: the same on every attempt and
    every endpoint (``evt_`` and the task id's hex)."""
    return f"evt_{task_id.removeprefix('tsk_')}"


# -- URLs ----------------------------------------------------------------------------------

_DNS_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PATH_QUERY = r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?"


def parse_hosts(listed: str) -> frozenset[str]:
    """``host:port`` entries of a comma-separated list (``REELAY_ALLOWED_WEBHOOK_HOSTS``), lower-cased."""
    return frozenset(h.strip().lower() for h in listed.split(",") if h.strip())


def webhook_url_refusal(url: str, allowed_hosts: frozenset[str] = frozenset()) -> str | None:
    """Why ``url`` cannot be a webhook URL (None: it can). No DNS here; delivery checks every address."""
    return public_url_refusal(
        url,
        allowed_hosts,
        not_https="must be https (plain http only for receivers listed in REELAY_ALLOWED_WEBHOOK_HOSTS)",
    )


def _public_url_type(
    field: str, schemes: str, allowed_hosts: frozenset[str], refusal: Callable[[str], str | None], description: str
) -> Any:
    """A URL field of the API's schema: ``schemes`` with a public DNS name, or a listed ``host:port``
    (http too); what the pattern cannot say (a private suffix) is refused by ``refusal``.

    Built at cold start from the allowed hosts, so the OpenAPI document says exactly what passes.
    """
    alternatives = [rf"{schemes}://{_DNS_HOST}(?::{_PORT})?"]
    if allowed_hosts:
        listed = "|".join(sorted(h.replace(".", r"\.") for h in allowed_hosts))
        alternatives.append(rf"https?://(?:{listed})")
    pattern = rf"^(?:{'|'.join(alternatives)}){_PATH_QUERY}$"

    def refuse(value: str) -> str:
        reason = refusal(value)
        if reason:
            raise ValueError(f"{field} {reason}")
        return value

    return Annotated[
        str, Field(max_length=URL_MAX_CHARS, pattern=pattern, description=description), AfterValidator(refuse)
    ]


def webhook_url_type(allowed_hosts: frozenset[str] = frozenset()) -> Any:
    """The API schema's ``webhook_url``: https with a public DNS name, or a listed ``host:port`` (http too)."""
    return _public_url_type(
        "webhook_url",
        "https",
        allowed_hosts,
        lambda url: webhook_url_refusal(url, allowed_hosts),
        "Notified with a signed webhook (Standard Webhooks) when the task ends: https, a public host.",
    )


def image_url_type(allowed_hosts: frozenset[str] = frozenset()) -> Any:
    """The API schema's image URLs (``image_url``, ``image_urls``): http(s) with a public DNS name,
    or a listed ``host:port`` (``REELAY_ALLOWED_RESULT_HOSTS``: the local simulators). They are
    fetched from the internet: by the provider (a reference image) or by reelay (an edit's)."""
    return _public_url_type(
        "image URL",
        "https?",
        allowed_hosts,
        lambda url: public_url_refusal(url, allowed_hosts),
        "An image on the internet: http(s), a public host name.",
    )


# -- secrets -------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets_module.token_bytes(32)).decode()


class WebhookSecretStore(ABC):
    """Where owners' webhook secrets live (``reelay.store.DynamoWebhookSecretStore``)."""

    @abstractmethod
    def read(self, owner: str) -> tuple[list[dict[str, Any]], int] | None:
        """The owner's entries ``{"secret", "created_at", "retire_at"?}`` and the item's version, or None."""

    @abstractmethod
    def write(self, owner: str, entries: list[dict[str, Any]], *, expected_version: int | None) -> bool:
        """Write the entries if the item is still at ``expected_version`` (None: absent); False if not."""


class WebhookSecrets:
    """An owner's signing secrets: made on first use, rotated with an overlap."""

    def __init__(
        self, store: WebhookSecretStore, *, overlap: timedelta, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._overlap = overlap
        self._clock = clock

    def valid(self, owner: str) -> list[str]:
        """The owner's valid secrets, newest first (made now if the owner has none)."""
        for _ in range(5):
            found = self._store.read(owner)
            now = self._clock()
            if found is not None:
                live = _live(found[0], now)
                if live:
                    return [e["secret"] for e in live]
            entries = [{"secret": new_secret(), "created_at": now.isoformat()}]
            if self._store.write(owner, entries, expected_version=found[1] if found else None):
                return [entries[0]["secret"]]
        raise RuntimeError("webhook secrets kept changing concurrently")

    def rotate(self, owner: str) -> list[str]:
        """Add a new secret; the previous newest stays valid for the overlap, any older one ends now."""
        for _ in range(5):
            found = self._store.read(owner)
            now = self._clock()
            live = _live(found[0], now) if found else []
            entries = [{"secret": new_secret(), "created_at": now.isoformat()}]
            if live:
                previous = dict(live[0])
                retire = now + self._overlap
                if previous.get("retire_at"):
                    retire = min(retire, datetime.fromisoformat(previous["retire_at"]))
                previous["retire_at"] = retire.isoformat()
                entries.append(previous)
            if self._store.write(owner, entries, expected_version=found[1] if found else None):
                return [e["secret"] for e in _live(entries, now)]
        raise RuntimeError("webhook secrets kept changing concurrently")


def _live(entries: Sequence[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    alive = [e for e in entries if not e.get("retire_at") or datetime.fromisoformat(e["retire_at"]) > now]
    return sorted(alive, key=lambda e: str(e["created_at"]), reverse=True)


def signature_header(msg_id: str, timestamp: datetime, body: str, secrets: Sequence[str]) -> str:
    """``webhook-signature``: one ``v1,`` signature per secret (the library's), space-separated."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


# -- payloads ------------------------------------------------------------------------------

PayloadBuilder = Callable[[Task], bytes]


def task_data(task: Task) -> dict[str, Any]:
    """The task as the API shows it, as JSON, without presigned URLs or delivery bookkeeping.

    The detail of reelay's EventBridge events and the ``data`` of its webhooks: the same view.
    """
    from reelay.tasks import task_view

    dumped: dict[str, Any] = task_view(task).model_dump(
        mode="json", exclude={"webhook": True, "webhook_endpoints": True, "outputs": {"__all__": {"url"}}}
    )
    return dumped


def task_payload(task: Task) -> bytes:
    """reelay's webhook body: ``{"type": "task.<status>", "timestamp", "data": task_data(task)}``.

    The same bytes on every attempt (the terminal time, not the attempt's, is the timestamp).
    """
    ended = task.entered(task.status) or task.updated_at
    message = {"type": f"task.{task.status.value}", "timestamp": ended.isoformat(), "data": task_data(task)}
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


VIDEO_EVENT_TYPES: dict[TaskStatus, str] = {
    TaskStatus.SUCCEEDED: "video.completed",
    TaskStatus.FAILED: "video.failed",
}
# The event types a webhook endpoint may subscribe to (OpenAI's names for the video events).
SUPPORTED_EVENT_TYPES: tuple[str, ...] = tuple(VIDEO_EVENT_TYPES.values())


def openai_event(event_id_: str, event_type: str, created_at: datetime, video_id: str) -> bytes:
    """OpenAI's event body (as ``openai.types.webhooks.*WebhookEvent``), compact JSON."""
    message = {
        "id": event_id_,
        "object": "event",
        "type": event_type,
        "created_at": int(created_at.timestamp()),
        "data": {"id": video_id},
    }
    return json.dumps(message, separators=(",", ":")).encode()


def openai_event_payload(task: Task) -> bytes:
    """A terminal video task's OpenAI-style event: ``video.completed`` / ``video.failed``, created at the
    task's end, ``data.id`` the video (task) id. The same bytes on every attempt and endpoint."""
    ended = task.entered(task.status) or task.updated_at
    return openai_event(event_id(task.id), VIDEO_EVENT_TYPES[task.status], ended, task.id)


# -- schedule ------------------------------------------------------------------------------

DEFAULT_RETRY_SECONDS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 86400)
MAX_RETRY_AFTER_SECONDS = 86400.0


class RetrySchedule:
    """The waits between attempts (after the first), with ±``jitter`` of each; then no more attempts."""

    def __init__(
        self,
        delays: Sequence[float] = DEFAULT_RETRY_SECONDS,
        *,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self.delays = tuple(float(d) for d in delays)
        self._jitter = jitter
        self._rng = rng or random.Random()

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """From ``REELAY_WEBHOOK_RETRY_SECONDS`` (``"5,300,1800"``); empty: the default schedule."""
        if not text.strip():
            return cls()
        delays = [float(part) for part in text.split(",") if part.strip()]
        if any(d < 0 for d in delays):
            raise ValueError("webhook retry delays must not be negative")
        return cls(delays)

    @property
    def attempts(self) -> int:
        return len(self.delays) + 1

    def wait_after(self, attempt: int) -> float | None:
        """Seconds to wait after the ``attempt``-th failed attempt (1-based); None when none is left."""
        if attempt > len(self.delays):
            return None
        delay = self.delays[attempt - 1]
        return max(0.0, delay * (1 + self._rng.uniform(-self._jitter, self._jitter)))


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now``, capped at 24 h."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.isdigit() else (parsedate_to_datetime(value) - now).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return None
    return max(1.0, min(MAX_RETRY_AFTER_SECONDS, seconds))


# -- one delivery --------------------------------------------------------------------------

WEBHOOK_LIMITS = Limits(max_bytes=64 * 1024, deadline_seconds=15.0, min_bytes_per_second=0)


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did: the record for the task, its outcome, and a ``Retry-After`` if given."""

    attempt: WebhookAttempt
    outcome: WebhookOutcome
    retry_after: float | None = None


class WebhookSender:
    """Signs and POSTs one webhook attempt through the fetcher of untrusted URLs: a task's own webhook
    (``attempt``: reelay's body, the owner's secrets) or any signed body (``send``: an endpoint's event)."""

    def __init__(
        self,
        fetcher: Fetcher,
        secrets: WebhookSecrets,
        *,
        payload: PayloadBuilder = task_payload,
        limits: Limits = WEBHOOK_LIMITS,
    ) -> None:
        self._fetcher = fetcher
        self._secrets = secrets
        self._payload = payload
        self._limits = limits

    def attempt(self, task: Task, *, now: datetime | None = None) -> AttemptResult:
        """One POST of ``task``'s webhook: delivered (2xx), gone (410), refused (unsafe URL) or failed."""
        if not task.webhook_url:
            raise ValueError(f"task {task.id} has no webhook_url")
        return self.send(
            task.webhook_url, self._payload(task), msg_id=webhook_id(task.id), secrets=self._secrets.valid(task.owner),
            now=now,
        )  # fmt: skip

    def send(
        self, url: str, body: bytes, *, msg_id: str, secrets: Sequence[str], now: datetime | None = None
    ) -> AttemptResult:
        """One POST of ``body`` to ``url``, signed with each of ``secrets`` (a webhook endpoint's own)."""
        now = now or utcnow()
        headers = {
            "content-type": "application/json",
            "user-agent": "reelay-webhooks/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature_header(msg_id, now, body.decode(), secrets),
        }
        try:
            answer: httpx.Response = self._fetcher.post(url, body, headers=headers, limits=self._limits)
        except UnsafeResultUrl as exc:
            return AttemptResult(WebhookAttempt(at=now, error=exc.message[:300]), WebhookOutcome.REFUSED)
        except ResultError as exc:
            return AttemptResult(WebhookAttempt(at=now, error=exc.message[:300]), WebhookOutcome.RETRYING)
        status = answer.status_code
        record = WebhookAttempt(at=now, status=status)
        if 200 <= status < 300:
            return AttemptResult(record, WebhookOutcome.DELIVERED)
        if status == 410:
            return AttemptResult(record, WebhookOutcome.GONE)
        return AttemptResult(
            record, WebhookOutcome.RETRYING, retry_after_seconds(answer.headers.get("retry-after"), now)
        )
