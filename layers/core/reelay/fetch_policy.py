"""What reelay may fetch, how much, and what it must be: the rules ``reelay.fetch`` applies.

``UrlPolicy`` is steps 1 and 2 of ``reelay.fetch`` (the URL parsed strictly, the host resolved
once and every address checked); ``reelay.fetch.Fetcher`` applies it on every hop and then
connects to the checked address. ``Limits`` bound one fetch, ``media_type`` says whether a
body is a video or image; the errors are the fetcher's (see ``reelay.fetch``). Nothing here
needs an HTTP client, so what only checks URLs or bodies (a webhook URL when a task is
accepted, the models the store reads, an uploaded image) imports no httpx.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from reelay.errors import ResultError, ResultFetchError, UnsafeResultUrl

Resolver = Callable[[str, int], Iterable[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(UnsafeResultUrl):
    """The URL is malformed or unsafe to fetch (SSRF), or it redirected too often."""


class ResultGone(ResultFetchError):
    """The host answered 403, 404 or 410: the result is not there (yet, or any more)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ResultTooLarge(ResultError):
    code = "RESULT_TOO_LARGE"


class ResultTooSlow(ResultError):
    code = "RESULT_TOO_SLOW"


class ResultNotMedia(ResultError):
    code = "RESULT_NOT_MEDIA"


# Networks refused besides what ``ipaddress`` already calls non-global. Listed explicitly so
# the policy does not move with the Python version's idea of "global".
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, and the metadata service 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and broadcast
    )
)
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64: whatever it embeds is a local decision
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local, and the EC2 metadata service fd00:ec2::254
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible (deprecated)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 transition form carries, if it is one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client address (``ipaddress`` undoes Teredo's obfuscation)
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64 or ip in _TRANSLATED:
        return low32
    if ip in _COMPATIBLE and int(ip) > 1:
        return low32
    return None


def address_refusal(ip: IPAddress) -> str | None:
    """Why reelay must not connect to ``ip`` (None: a public address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped IPv6 address"
        inner = _embedded_v4(ip)
        if inner is not None:
            reason = address_refusal(inner)
            return f"an IPv6 form wrapping {reason}" if reason else None
        if any(ip in net for net in _REFUSED_V6):
            return "a loopback, private, link-local, multicast or reserved IPv6 address"
    elif any(ip in net for net in _REFUSED_V4):
        return "a loopback, private, link-local, CGNAT, multicast or reserved IPv4 address"
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "a non-public address"
    return None


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an address when it is one, in any form a C resolver accepts (``127.1``, ``0x7f.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # no network: inet_aton only parses
        except OSError:
            return None
    return None


# Names that never denote a public host (RFC 6761 / 6762 / 8375 and the common private suffixes).
PRIVATE_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan", ".intranet")


def public_url_refusal(
    url: str, allowed_hosts: frozenset[str] = frozenset(), *, not_https: str | None = None
) -> str | None:
    """Why ``url`` does not name a public DNS host (None: it does), without DNS: an address (one
    that is not public is named), a single label or a private suffix; with ``not_https``, that
    refusal for a URL that is not https. A listed ``host:port`` (``allowed_hosts``: local
    receivers and simulators) always passes. Fetching still checks every address the name
    resolves to; this is what can be told when the URL is given."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return "is not a valid URL"
    if f"{host}:{port}" in allowed_hosts:
        return None
    if not_https is not None and parts.scheme.lower() != "https":
        return not_https
    literal = literal_ip(host.strip("[]"))
    if literal is not None:
        reason = address_refusal(literal)
        return f"names {reason}; refused" if reason else "must name a DNS host name, not an address"
    if "." not in host or host.endswith(PRIVATE_SUFFIXES):
        return f"{host} is not a public host name"
    return None


def _system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and under which name to speak TLS."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


class UrlPolicy:
    """Parses and checks one URL; resolves its host once and picks the checked address."""

    def __init__(self, allowed_hosts: frozenset[str] = frozenset(), resolver: Resolver | None = None) -> None:
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._resolve = resolver or _system_resolver

    def check(self, url: str) -> Target:
        """The checked target of ``url``, or ``UrlRefused`` saying why not."""
        try:
            parts = urlsplit(url)
            port = parts.port
            host = (parts.hostname or "").rstrip(".").lower()
        except ValueError as exc:
            raise UrlRefused(f"malformed URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlRefused(f"URL scheme {scheme or '(none)'!r} not allowed; https only")
        if not host:
            raise UrlRefused("URL has no host")
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("URL must not carry user info")
        if any(c.isspace() or ord(c) < 0x20 for c in url):
            raise UrlRefused("URL contains whitespace or control characters")
        if port == 0:
            raise UrlRefused("URL port 0 is not allowed")
        port = port or (443 if scheme == "https" else 80)
        allowed = f"{host}:{port}" in self._allowed
        if scheme == "http" and not allowed:
            raise UrlRefused(f"plain http is only allowed for listed hosts, not {host}:{port}")
        literal = literal_ip(host.strip("[]"))
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                host.encode("idna")
            except UnicodeError:
                raise UrlRefused("URL host is not a valid host name") from None
            try:
                answer = list(self._resolve(host, port))
            except (OSError, UnicodeError) as exc:
                raise ResultFetchError(f"cannot resolve {host}: {type(exc).__name__}") from exc
            try:
                addresses = [ipaddress.ip_address(a) for a in answer]
            except ValueError:
                raise UrlRefused(f"{host} resolved to something that is not an address") from None
        if not addresses:
            raise UrlRefused(f"{host} resolved to no address")
        if not allowed:
            for address in addresses:
                reason = address_refusal(address)
                if reason:
                    raise UrlRefused(f"{host} resolves to {reason}; refused")
        return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


@dataclass(frozen=True)
class Limits:
    """What one fetch may cost: bytes, time, and the slowest acceptable rate."""

    max_bytes: int = 4 * 1024**3
    deadline_seconds: float = 780.0
    min_bytes_per_second: int = 64 * 1024
    # The minimum rate is judged only after this long, so a slow start is not a failure.
    rate_grace_seconds: float = 10.0


# -- media -------------------------------------------------------------------------------

MEDIA_TYPES: dict[str, str] = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
}
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
MAGIC_BYTES_NEEDED = 12
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def sniff_media(head: bytes | memoryview) -> str | None:
    """The media type the first bytes say (None when they are no video or image we accept)."""
    head = bytes(head[:MAGIC_BYTES_NEEDED])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head[4:8] in _ISO_BOXES:
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    return None


def media_type(declared: str | None, head: bytes | memoryview) -> str:
    """The accepted media type of a body: its declared type, or its magic bytes when that is generic.

    Raises ``ResultNotMedia`` for anything else (an HTML error page, JSON, text).
    """
    kind = (declared or "").split(";")[0].strip().lower()
    if kind in MEDIA_TYPES:
        return kind
    if kind in GENERIC_TYPES:
        sniffed = sniff_media(head)
        if sniffed:
            return sniffed
        raise ResultNotMedia("the body is not a video or image (generic type, unknown magic bytes)")
    raise ResultNotMedia(f"the body is {kind[:60]}, not a video or image")
