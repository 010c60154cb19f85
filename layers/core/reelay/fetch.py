"""Fetching URLs reelay did not build itself: the one way in for result URLs, client images and webhooks.

Every untrusted URL (a provider's result URL, a client's image URL, later a client's
webhook) goes through ``Fetcher``. For each request, and again on every redirect hop:

1. the URL is parsed strictly (https only; http only for a ``host:port`` listed in
   ``REELAY_ALLOWED_RESULT_HOSTS``; no user info; a valid port) or refused with
   ``UrlRefused``;
2. the host is resolved once, and *every* address is checked (``address_refusal``; steps 1
   and 2 are ``reelay.fetch_policy.UrlPolicy``, which needs no HTTP client):
   loopback, private, link-local, CGNAT, metadata, multicast, reserved and unspecified
   addresses are refused, also when wrapped in an IPv6 transition form (IPv4-mapped,
   -compatible, -translated, 6to4, Teredo, NAT64). An empty answer is refused too. A listed
   ``host:port`` skips this check, and nothing else;
3. the connection goes to the checked address (``PinnedBackend``: an httpcore network
   backend that connects to the address the check pinned, never to a second resolution),
   while TLS keeps the URL's host name for SNI and certificate checks (httpcore takes
   ``server_hostname`` from the request's origin, not from the socket's address).

Redirects are followed by hand, at most ``MAX_REDIRECTS`` (4 requests), each hop checked
as above; headers from ``headers_for`` (a credential) are asked for per hop, so a
credential never follows a redirect to another origin. A response body is read through
``Body``, which enforces a byte cap, a minimum transfer rate and a total deadline.

Errors (all ``ResultError``; see ``reelay.errors``)::

    UrlRefused (UnsafeResultUrl)  unsafe or malformed URL, too many redirects -> RESULT_URL_REFUSED
    ResultGone (ResultFetchError) HTTP 403/404/410: maybe not there yet, maybe expired -> RESULT_EXPIRED
    ResultTooLarge                over the byte cap -> RESULT_TOO_LARGE
    ResultTooSlow                 below the minimum rate or past the deadline -> RESULT_TOO_SLOW
    ResultNotMedia                not a video or image the providers make -> RESULT_NOT_MEDIA
    ResultFetchError              anything else (5xx, resets, truncation): retryable
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from reelay.errors import ResultFetchError
from reelay.fetch_policy import Limits, ResultGone, ResultTooLarge, ResultTooSlow, UrlPolicy, UrlRefused
from reelay.tls import tls_context

HeadersFor = Callable[[str], dict[str, str]]

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
GONE_STATUSES = frozenset({403, 404, 410})


class PinnedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that connects only to addresses ``UrlPolicy`` checked.

    ``pin(host, port, address)`` is called after the check; ``connect_tcp`` then dials that
    address instead of resolving ``host`` again (no DNS rebinding window). TLS is started by
    httpcore on the returned stream with the origin's host name, so SNI and certificate
    verification stay on the name.
    """

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._pins: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    def pin(self, host: str, port: int, address: str) -> None:
        with self._lock:
            self._pins[(host.lower(), port)] = address

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with self._lock:
            address = self._pins.get((host.strip("[]").lower(), port))
        if address is None:
            raise UrlRefused(f"connection to unchecked host {host}:{port} refused")
        return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise UrlRefused("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def pinned_transport(backend: PinnedBackend, *, max_connections: int = 10) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through ``backend`` (and never through a proxy)."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx 0.28 has no public hook for a network backend; its transport is a thin wrapper
    # over this pool, so the pool is replaced with one that dials through the pinned backend.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=tls_context(trust_env=False),
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        network_backend=backend,
    )
    return transport


class Body:
    """A response body read under ``Limits``: chunks as they come, with cap, rate and deadline enforced."""

    def __init__(self, response: httpx.Response, limits: Limits, *, started: float, already: int = 0) -> None:
        self.response = response
        self._limits = limits
        self._started = started
        self.received = 0
        self._already = already  # bytes a resumed transfer counts against the cap

    def chunks(self) -> Iterator[bytes]:
        """Raw body bytes (no decoding, so a range resumes byte for byte)."""
        limits = self._limits
        try:
            for chunk in self.response.iter_raw():
                self.received += len(chunk)
                if self._already + self.received > limits.max_bytes:
                    raise ResultTooLarge(f"the body is larger than the cap of {limits.max_bytes} bytes")
                elapsed = time.monotonic() - self._started
                if elapsed > limits.deadline_seconds:
                    raise ResultTooSlow(f"the transfer ran past its deadline of {limits.deadline_seconds:.0f} s")
                if elapsed > limits.rate_grace_seconds and self.received / elapsed < limits.min_bytes_per_second:
                    raise ResultTooSlow(
                        f"the transfer is slower than {limits.min_bytes_per_second} bytes/s "
                        f"({self.received / elapsed:.0f} bytes/s)"
                    )
                yield chunk
        except httpx.TimeoutException as exc:
            raise ResultTooSlow(f"the transfer stalled ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ResultFetchError(f"the transfer broke off after {self.received} bytes: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.response.close()


class Fetcher:
    """Fetches untrusted URLs safely (see the module docstring): GET streaming, POST with a body."""

    def __init__(
        self,
        policy: UrlPolicy,
        *,
        limits: Limits | None = None,
        transport: httpx.BaseTransport | None = None,
        backend: PinnedBackend | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
    ) -> None:
        self._policy = policy
        self.limits = limits or Limits()
        # Tests pass an ``httpx.MockTransport``; then no connection is made at all.
        self._backend = backend or PinnedBackend()
        self._transport = transport
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)

    @cached_property
    def _client(self) -> httpx.Client:
        # Made on the first fetch: a function whose requests fetch nothing makes no client (and
        # loads no CA bundle); the TLS context is the function's one (``reelay.tls``).
        return httpx.Client(
            transport=self._transport or pinned_transport(self._backend),
            trust_env=False,
            timeout=self._timeout,
        )

    def open(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        headers_for: HeadersFor | None = None,
        content: bytes | None = None,
        limits: Limits | None = None,
    ) -> Body:
        """Send the request (following checked redirects) and return the final response's body, unread.

        ``headers`` go to every hop; ``headers_for(url)`` is asked per hop (credentials: only
        for the origin they belong to). The caller closes the body. Only GET and HEAD follow
        redirects; a POST's redirect is answered as is (a webhook must not be re-sent elsewhere).
        """
        started = time.monotonic()
        limits = limits or self.limits
        for _hop in range(MAX_REDIRECTS + 1):
            target = self._policy.check(url)
            self._backend.pin(target.host, target.port, target.address)
            request_headers = {
                "Accept-Encoding": "identity",
                **(headers or {}),
                **(headers_for(url) if headers_for else {}),
            }
            request = self._client.build_request(method, url, headers=request_headers, content=content)
            remaining = limits.deadline_seconds - (time.monotonic() - started)
            if remaining <= 0:
                raise ResultTooSlow(f"the transfer ran past its deadline of {limits.deadline_seconds:.0f} s")
            try:
                response = self._client.send(request, stream=True, follow_redirects=False)
            except httpx.TimeoutException as exc:
                raise ResultFetchError(f"{target.host} did not answer in time: {type(exc).__name__}") from exc
            except httpx.HTTPError as exc:
                raise ResultFetchError(f"fetching from {target.host} failed: {type(exc).__name__}") from exc
            if response.status_code in REDIRECT_STATUSES and method in ("GET", "HEAD"):
                location = response.headers.get("location")
                response.close()
                if not location:
                    raise ResultFetchError(f"{target.host} redirected without a Location")
                url = urljoin(url, location)
                continue
            if response.status_code in GONE_STATUSES and method in ("GET", "HEAD"):
                response.close()
                raise ResultGone(f"{target.host} answered HTTP {response.status_code}", status=response.status_code)
            return Body(response, limits, started=started)
        raise UrlRefused(f"more than {MAX_REDIRECTS} redirects")

    def post(
        self, url: str, content: bytes, *, headers: dict[str, str] | None = None, limits: Limits | None = None
    ) -> httpx.Response:
        """POST ``content`` (a webhook) to a checked URL; the answer, closed, its body unread.

        Every status is answered as is (a 410 too, and a redirect is not followed); only an
        unsafe URL (``UrlRefused``) or no answer (``ResultFetchError``, ``ResultTooSlow``) raises.
        """
        body = self.open(url, method="POST", headers=headers, content=content, limits=limits)
        body.close()
        return body.response

    def close(self) -> None:
        if "_client" in self.__dict__:
            self._client.close()
