"""The fetcher of untrusted URLs: address checks, URL forms, pinning, redirects, limits, media types."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx
import pytest

from reelay.errors import ResultFetchError
from reelay.fetch import Fetcher, PinnedBackend
from reelay.fetch_policy import (
    Limits,
    ResultGone,
    ResultNotMedia,
    ResultTooLarge,
    ResultTooSlow,
    UrlPolicy,
    UrlRefused,
    address_refusal,
    media_type,
)

NAMES = {
    "cdn.example": ["93.184.216.34"],
    "empty.example": [],
    "mixed.example": ["93.184.216.34", "10.1.2.3"],
    "private.example": ["192.168.1.10"],
    "v6private.example": ["fd12:3456::1"],
    "meta.example": ["169.254.169.254"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "garbage.example": ["not-an-ip"],
}


def resolver(host: str, port: int) -> list[str]:
    return NAMES[host]


# Every class of point 3: each form must be refused before any socket exists (unit tests run with
# sockets disabled; a connection attempt would fail the test with another error).
REFUSED = [
    # loopback
    "https://127.0.0.1/x",
    "https://127.0.0.2/x",
    "https://127.255.255.254/x",
    "https://[::1]/x",
    "https://localhost.localdomain@127.0.0.1/x",  # user info
    # odd IPv4 spellings a C resolver accepts
    "https://127.1/x",
    "https://0x7f.1/x",
    "https://2130706433/x",
    "https://0177.0.0.1/x",
    "https://0x7f000001/x",
    # private
    "https://10.0.0.1/x",
    "https://172.16.5.4/x",
    "https://192.168.0.1/x",
    "https://private.example/x",
    "https://[fd00::1]/x",
    "https://v6private.example/x",
    # link-local and metadata
    "https://169.254.1.1/x",
    "https://169.254.169.254/latest/meta-data/",
    "https://meta.example/x",
    "https://[fe80::1]/x",
    "https://[fd00:ec2::254]/x",
    # CGNAT
    "https://100.64.0.1/x",
    "https://100.127.255.254/x",
    # multicast, reserved, unspecified, broadcast
    "https://224.0.0.1/x",
    "https://[ff02::1]/x",
    "https://240.0.0.1/x",
    "https://255.255.255.255/x",
    "https://0.0.0.0/x",
    "https://[::]/x",
    "https://192.0.2.1/x",
    "https://198.18.0.1/x",
    # wrapped: IPv4-mapped, -compatible, -translated, 6to4, Teredo, NAT64 (well-known and local-use)
    "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:10.0.0.1]/x",
    "https://mapped.example/x",
    "https://[::127.0.0.1]/x",
    "https://[::169.254.169.254]/x",
    "https://[::ffff:0:127.0.0.1]/x",
    "https://[::ffff:0:a9fe:a9fe]/x",
    "https://[2002:7f00:1::]/x",
    "https://[2002:a9fe:a9fe::1]/x",
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/x",  # Teredo, client 127.0.0.1
    "https://[64:ff9b::127.0.0.1]/x",
    "https://[64:ff9b::a9fe:a9fe]/x",
    "https://[64:ff9b:1::10.0.0.1]/x",
    # DNS answers: empty, mixed (one bad address is enough), not an address
    "https://empty.example/x",
    "https://mixed.example/x",
    "https://garbage.example/x",
    # malformed or not allowed
    "http://h:99999/",
    "https://cdn.example:0/x",
    "https://cdn.example:-1/x",
    "http://cdn.example/x",  # plain http for a host that is not listed
    "ftp://cdn.example/x",
    "file:///etc/passwd",
    "gopher://cdn.example/x",
    "https:///x",
    "//cdn.example/x",
    "https://user:pass@cdn.example/x",
    "https://cdn.example/x\r\nHost: evil",
    "https://[::1/x",
]


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_or_malformed_urls_are_refused_before_any_connection(url: str) -> None:
    seen: list[httpx.Request] = []
    fetcher = Fetcher(UrlPolicy(frozenset(), resolver), transport=httpx.MockTransport(lambda r: seen.append(r)))  # type: ignore[arg-type, return-value]
    with pytest.raises(UrlRefused):
        fetcher.open(url)
    assert seen == []


def test_the_table_covers_every_class() -> None:
    assert len(REFUSED) >= 40


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::8.8.8.8"]
)
def test_public_addresses_pass_also_when_wrapped(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_listed_host_port_skips_the_address_check_and_nothing_else() -> None:
    policy = UrlPolicy(frozenset({"127.0.0.1:8080"}), resolver)
    assert policy.check("http://127.0.0.1:8080/v.mp4").address == "127.0.0.1"
    with pytest.raises(UrlRefused):
        policy.check("http://127.0.0.1:8081/v.mp4")  # another port
    with pytest.raises(UrlRefused):
        policy.check("ftp://127.0.0.1:8080/v.mp4")  # the scheme rule still holds


# -- pinning: the connection goes to the checked address ------------------------------------


class FakeStream(httpcore.NetworkStream):
    """A socket stand-in that answers one canned HTTP response."""

    def __init__(self, answer: bytes, log: dict[str, Any]) -> None:
        self._answer = answer
        self._log = log

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        out, self._answer = self._answer[:max_bytes], self._answer[max_bytes:]
        return out

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._log.setdefault("sent", b"")
        self._log["sent"] += buffer

    def close(self) -> None:
        pass

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        self._log["sni"] = server_hostname
        self._log["verify"] = ssl_context.verify_mode
        return self

    def get_extra_info(self, info: str) -> Any:
        return None


class RecordingBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.log: dict[str, Any] = {}

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        self.log["connected"] = (host, port)
        body = b"\x00\x00\x00\x18ftypmp42" + bytes(20)
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        return FakeStream(answer, self.log)


def test_dns_rebinding_cannot_move_the_connection_to_another_address() -> None:
    # Given a resolver that answers a public address first and 127.0.0.2 on any later lookup
    answers = iter([["93.184.216.34"], ["127.0.0.2"], ["127.0.0.2"]])
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    inner = RecordingBackend()
    fetcher = Fetcher(UrlPolicy(frozenset(), rebinding), backend=PinnedBackend(inner))
    # When the URL is fetched through the real transport
    body = fetcher.open("https://cdn.example/v.mp4")
    data = b"".join(body.chunks())
    # Then the host was resolved once, the socket went to the checked address, TLS kept the name
    assert lookups == ["cdn.example"]
    assert inner.log["connected"] == ("93.184.216.34", 443)
    assert inner.log["sni"] == "cdn.example" and inner.log["verify"] == ssl.CERT_REQUIRED
    assert b"Host: cdn.example" in inner.log["sent"] and data.startswith(b"\x00\x00\x00\x18ftyp")


def test_the_pinned_backend_refuses_a_host_nobody_checked() -> None:
    with pytest.raises(UrlRefused):
        PinnedBackend(RecordingBackend()).connect_tcp("cdn.example", 443)


# -- redirects, credentials, statuses --------------------------------------------------------


def _chain(n: int) -> Fetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        hop = int(request.url.path.strip("/") or 0)
        if hop < n:
            return httpx.Response(302, headers={"location": f"/{hop + 1}"})
        return httpx.Response(200, content=b"ok")

    return Fetcher(UrlPolicy(frozenset(), resolver), transport=httpx.MockTransport(handler))


def test_three_redirects_are_followed_and_a_fourth_is_refused() -> None:
    assert _chain(3).open("https://cdn.example/0").response.status_code == 200
    with pytest.raises(UrlRefused, match="redirects"):
        _chain(4).open("https://cdn.example/0")


def test_a_redirect_to_a_private_address_is_refused() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "https://169.254.169.254/latest"})

    fetcher = Fetcher(UrlPolicy(frozenset(), resolver), transport=httpx.MockTransport(handler))
    with pytest.raises(UrlRefused):
        fetcher.open("https://cdn.example/a")
    assert seen == ["https://cdn.example/a"]


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_statuses_are_their_own_error(status: int) -> None:
    fetcher = Fetcher(UrlPolicy(frozenset(), resolver), transport=httpx.MockTransport(lambda r: httpx.Response(status)))
    with pytest.raises(ResultGone) as gone:
        fetcher.open("https://cdn.example/x")
    assert gone.value.status == status


def test_a_post_is_not_redirected() -> None:
    fetcher = Fetcher(
        UrlPolicy(frozenset(), resolver),
        transport=httpx.MockTransport(lambda r: httpx.Response(307, headers={"location": "https://other/"})),
    )
    assert fetcher.post("https://cdn.example/hook", b"{}").status_code == 307


# -- limits ----------------------------------------------------------------------------------


def _streaming(chunks: list[bytes], pause: float = 0.0) -> Fetcher:
    import time

    def stream() -> Iterator[bytes]:
        for c in chunks:
            time.sleep(pause)
            yield c

    return Fetcher(
        UrlPolicy(frozenset(), resolver),
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=stream())),
        limits=Limits(max_bytes=1000, deadline_seconds=60, min_bytes_per_second=10_000, rate_grace_seconds=0.0),
    )


def test_the_byte_cap_stops_a_body_that_grows_past_it() -> None:
    body = _streaming([b"x" * 600, b"x" * 600]).open("https://cdn.example/x")
    with pytest.raises(ResultTooLarge):
        list(body.chunks())


def test_a_drip_below_the_minimum_rate_is_too_slow() -> None:
    body = _streaming([b"x", b"x"], pause=0.01).open("https://cdn.example/x")
    with pytest.raises(ResultTooSlow):
        list(body.chunks())


def test_a_reset_connection_is_a_retryable_fetch_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset")

    fetcher = Fetcher(UrlPolicy(frozenset(), resolver), transport=httpx.MockTransport(handler))
    with pytest.raises(ResultFetchError):
        fetcher.open("https://cdn.example/x")


# -- media -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "head", "expected"),
    [
        ("video/mp4", b"", "video/mp4"),
        ("video/quicktime; charset=binary", b"", "video/quicktime"),
        ("image/jpeg", b"", "image/jpeg"),
        ("application/octet-stream", b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
        (None, b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        ("binary/octet-stream", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
    ],
)
def test_media_types_from_the_declared_type_or_the_magic_bytes(
    declared: str | None, head: bytes, expected: str
) -> None:
    assert media_type(declared, head) == expected


@pytest.mark.parametrize(
    ("declared", "head"),
    [("text/html", b"<html>"), ("application/json", b"{}"), ("application/octet-stream", b"<html>"), (None, b"GIF89a")],
)
def test_anything_else_is_not_media(declared: str | None, head: bytes) -> None:
    with pytest.raises(ResultNotMedia):
        media_type(declared, head)


def test_a_post_answers_a_gone_status_with_its_headers_instead_of_raising() -> None:
    fetcher = Fetcher(
        UrlPolicy(frozenset(), resolver),
        transport=httpx.MockTransport(lambda r: httpx.Response(410, headers={"retry-after": "7"})),
    )
    answer = fetcher.post("https://cdn.example/hook", b"{}")
    assert (answer.status_code, answer.headers["retry-after"]) == (410, "7")
