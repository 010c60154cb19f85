"""Shared HTTP behaviour of every provider adapter: one client, the credential, error mapping.

``HttpProvider`` is the one place where httpx meets reelay. It

- holds one ``httpx.Client`` per provider (tests pass ``httpx.MockTransport``), with the
  configured timeout and redirects off;
- sends the credential (``auth_header: auth_prefix + api_key``) only to the provider's own
  origin (scheme, host and port of ``base_url``), never to any other URL;
- translates every low-level failure into ``reelay.errors`` at the boundary:

  ======================================  ==========================================
  what happened                           what reelay raises
  ======================================  ==========================================
  connect error / pool timeout (unsent)   ``ProviderTransientError``
  read timeout, dropped connection        ``ProviderTransientError`` on a safe call,
                                          ``CreateOutcomeUnknown`` on a paid create
  HTTP 429                                ``ProviderRateLimited`` (``Retry-After``)
  HTTP 401 / 403                          ``ProviderAuthError`` (names the provider)
  HTTP 402                                ``InsufficientBalance``
  HTTP 404 on a task's endpoint           ``ProviderTaskUnknown``
  HTTP 408, 5xx on a safe call           ``ProviderTransientError``
  HTTP 504 on a paid create               ``CreateOutcomeUnknown`` (a gateway gave up
                                          waiting: the provider may have the task)
  other HTTP 5xx on a paid create         ``CreateServerError`` (maybe made: held or
                                          re-sent once, never blindly)
  other HTTP 4xx                          ``ProviderRejectedRequest`` (provider's message)
  redirect, 404 elsewhere, bad JSON       ``ProviderProtocolError``
  ======================================  ==========================================

Protocol modules override two small hooks: ``_error_detail`` (where their error body keeps
its code and message) and ``_check_body`` (business codes carried in a 2xx body).
No message built here contains the credential: provider text is scrubbed of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any, Protocol

import httpx
from aws_lambda_powertools import Logger

from reelay.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CreateServerError,
    InsufficientBalance,
    ProviderAuthError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    ProviderTransientError,
)
from reelay.providers.base import Provider, ProviderConfig
from reelay.tls import tls_context

logger = Logger(child=True)

USER_AGENT = "reelay/0.1"
# Provider text quoted in an error message is cut to this length.
MAX_MESSAGE_CHARS = 500
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Failures where the request certainly never reached the provider.
_UNSENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
)

# One multipart part: (field name, (filename or None for a plain field, content[, content type])).
FormPart = tuple[str, tuple[str | None, bytes | str] | tuple[str | None, bytes | str, str]]


@dataclass(frozen=True)
class Call:
    """One request as the error mapping needs to know it.

    ``safe`` calls (reads) may be repeated freely; an unsafe one (a paid create) whose
    answer is lost raises ``CreateOutcomeUnknown``. ``task_id`` marks a task's own
    endpoint, where HTTP 404 means the provider does not know the task.
    """

    method: str
    path: str
    safe: bool
    task_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class ErrorDetail:
    """What a provider's error body says: its own error code and message (either may be absent)."""

    code: str | None = None
    message: str | None = None


def origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port of ``url`` (default ports made explicit), for same-origin checks."""
    parsed = httpx.URL(url)
    scheme = parsed.scheme.lower()
    return scheme, parsed.host.lower(), parsed.port or _DEFAULT_PORTS.get(scheme)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class RequestGate(Protocol):
    """What every provider call passes first: the governor's request log (``reelay.governor``)."""

    def before_request(self, provider: str, *, paid: bool) -> None:
        """Return when the call may be sent; raise ``ProviderRateLimited`` (nothing sent) if not soon."""

    def rate_limited(self, provider: str, retry_after: float | None) -> None:
        """A 429 arrived anyway: slow the provider down."""


class HttpProvider(Provider):
    """Base of the HTTP protocols: subclasses hold only their wire format.

    ``client`` (a ready ``httpx.Client``) or ``transport`` (e.g. ``httpx.MockTransport``)
    replace the network in tests; a client passed in is the caller's to close. ``gate`` (the
    governor) is asked before every request, so the provider's rate limit counts every call.
    """

    def __init__(
        self,
        config: ProviderConfig,
        *,
        client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        super().__init__(config)
        self._gate = gate
        self.base_url = config.base_url.rstrip("/")
        self._origin = origin(self.base_url)
        self._given_client = client
        self._transport = transport

    @cached_property
    def client(self) -> httpx.Client:
        """The HTTP client: the one passed in, else one made for the first request.

        Made on first use: a function that only validates requests (the API) makes none, one
        that calls a single provider makes one. Every client shares the function's TLS context
        (``reelay.tls``), so the CA bundle is loaded once, not once per provider.
        """
        if self._given_client is not None:
            return self._given_client
        return httpx.Client(
            timeout=httpx.Timeout(self.config.timeout_seconds, connect=self.config.connect_seconds),
            transport=self._transport,
            verify=tls_context() if self._transport is None else True,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    # ----------------------------------------------------------------- credentials

    def is_own_url(self, url: str) -> bool:
        """Whether ``url`` is on this provider's origin (scheme, host and port of the base URL)."""
        try:
            return origin(url) == self._origin
        except (httpx.InvalidURL, TypeError, ValueError):
            return False

    def credential_headers(self, url: str) -> dict[str, str]:
        """The credential header for ``url`` when it is this provider's own origin, else ``{}``."""
        if not self.is_own_url(url):
            return {}
        return {self.config.auth_header: self.config.auth_prefix + self.config.key()}

    def download_headers(self, url: str) -> dict[str, str]:
        """The credential for a download from this provider's own origin, once it may be sent.

        Such a download is a request on the provider's key like any other call, so it takes a
        send time of the provider's request limit first (``RequestGate.before_request``, which
        raises ``ProviderRateLimited`` when none is near); a download from anywhere else (a CDN)
        carries no credential and is not the provider's to count.
        """
        headers = self.credential_headers(url)
        if headers and self._gate is not None:
            self._gate.before_request(self.name, paid=False)
        return headers

    def close(self) -> None:
        """Release connections of a client this provider made itself."""
        if self._given_client is None and "client" in self.__dict__:
            self.client.close()

    # ----------------------------------------------------------------- requests

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _request(
        self,
        call: Call,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Mapping[str, Any] | None = None,
        files: Sequence[FormPart] | None = None,
    ) -> Any:
        """Send one request and return its parsed JSON body, or raise a ``reelay.errors`` error."""
        url = self._url(call.path)
        headers = self.credential_headers(url)
        if self._gate is not None:
            self._gate.before_request(self.name, paid=not call.safe)
        try:
            response = self.client.request(
                call.method,
                url,
                params=params,
                json=json_body,
                files=files,
                headers=headers,
                follow_redirects=False,
            )
        except _UNSENT_ERRORS as exc:
            logger.warning(
                "provider unreachable", extra={"provider": self.name, "call": call.label, "error": type(exc).__name__}
            )
            raise ProviderTransientError(
                f"provider {self.name} could not be reached ({type(exc).__name__}) for {call.label}",
                provider=self.name,
            ) from exc
        except httpx.TransportError as exc:
            logger.warning(
                "provider answer lost", extra={"provider": self.name, "call": call.label, "error": type(exc).__name__}
            )
            if call.safe:
                raise ProviderTransientError(
                    f"provider {self.name} did not answer {call.label} ({type(exc).__name__})", provider=self.name
                ) from exc
            raise CreateOutcomeUnknown(
                f"provider {self.name} received {call.label} but its answer was lost ({type(exc).__name__}); "
                "the provider may have created the task",
                provider=self.name,
            ) from exc
        payload = self._parse_json(response)
        self._check_body(response, payload, call)
        if not response.is_success:
            raise self._error_for_status(response.status_code, self._detail(payload), call, response)
        if payload is None:
            raise ProviderProtocolError(
                f"provider {self.name} answered {call.label} with a body that is not JSON", provider=self.name
            )
        return payload

    @staticmethod
    def _parse_json(response: httpx.Response) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(response.content) if response.content else None
        except (ValueError, UnicodeDecodeError):
            return None

    # ----------------------------------------------------------------- hooks

    def _error_detail(self, payload: Mapping[str, Any]) -> ErrorDetail:
        """Read the protocol's error body. The default knows the common shapes."""
        error = payload.get("error")
        if isinstance(error, Mapping):
            return ErrorDetail(_text(error.get("code") or error.get("type")), _text(error.get("message")))
        message = payload.get("message") or payload.get("msg") or payload.get("detail") or error
        return ErrorDetail(_text(payload.get("code")), _text(message))

    def _check_body(self, response: httpx.Response, payload: Any, call: Call) -> None:
        """Raise for an error the body carries although the HTTP status may say success.

        The default trusts the HTTP status; protocols with business codes override it.
        """

    # ----------------------------------------------------------------- error mapping

    def _detail(self, payload: Any) -> ErrorDetail:
        if not isinstance(payload, Mapping):
            return ErrorDetail()
        detail = self._error_detail(payload)
        return ErrorDetail(detail.code, self.scrub(detail.message) if detail.message else None)

    def scrub(self, text: str) -> str:
        """``text`` without the credential, cut to a readable length."""
        secret = self.config.key()
        if secret:
            text = text.replace(secret, "***")
        return text[:MAX_MESSAGE_CHARS]

    def _error_for_status(
        self, status: int, detail: ErrorDetail, call: Call, response: httpx.Response | None = None
    ) -> ProviderError:
        """The reelay error for an HTTP(-like) status answered to ``call``."""
        said = f": {detail.message}" if detail.message else ""
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after")) if response is not None else None
            if self._gate is not None:
                self._gate.rate_limited(self.name, retry_after)
            return ProviderRateLimited(
                f"provider {self.name} is rate limiting reelay (HTTP 429){said}",
                provider=self.name,
                retry_after=retry_after,
            )
        if status in (401, 403):
            return self._auth_error(status, detail)
        if status == 402:
            return InsufficientBalance(f"provider {self.name} reports insufficient balance{said}", provider=self.name)
        if status == 404 and call.task_id is not None:
            return ProviderTaskUnknown(
                f"provider {self.name} does not know task {call.task_id}{said}", provider=self.name
            )
        if status == 504 and not call.safe:
            return CreateOutcomeUnknown(
                f"provider {self.name} timed out at its gateway on {call.label} (HTTP 504); "
                "the provider may have created the task",
                provider=self.name,
            )
        if status >= 500 and not call.safe:
            return CreateServerError(
                f"provider {self.name} failed {call.label} (HTTP {status}){said}; it may have created the task "
                "anyway, so reelay does not simply send it again",
                provider=self.name,
            )
        if status == 408 or status >= 500:
            return ProviderTransientError(
                f"provider {self.name} failed {call.label} (HTTP {status}){said}", provider=self.name
            )
        if status == 404 or status < 400:
            return ProviderProtocolError(
                f"provider {self.name} answered {call.label} with HTTP {status}; check its base URL {self.base_url}",
                provider=self.name,
            )
        kind = ContentRefused if self.is_content_refusal(detail) else ProviderRejectedRequest
        return kind(
            f"provider {self.name} rejected the request (HTTP {status}){said or ': no reason given'}",
            provider=self.name,
            details={"provider_code": detail.code} if detail.code else None,
        )

    def is_content_refusal(self, detail: ErrorDetail) -> bool:
        """Whether a rejection is a content-policy refusal (protocols override)."""
        return False

    def _auth_error(self, status: int | str, detail: ErrorDetail) -> ProviderAuthError:
        said = f" ({detail.message})" if detail.message else ""
        return ProviderAuthError(
            f"provider {self.name} refused reelay's credential (code {status}){said}; "
            f"check the API key configured for provider {self.name}",
            provider=self.name,
        )


def _text(value: Any) -> str | None:
    """A string for a code or message field, whatever JSON type it came as."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (lenient reading)."""
    return value if isinstance(value, Mapping) else {}


def as_int(value: Any) -> int | None:
    """An integer from a JSON number or numeric string, else None (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def as_progress(value: Any) -> int | None:
    """A progress percentage clamped to 0-100, or None."""
    number = as_int(value)
    return None if number is None else max(0, min(100, number))
