"""Every test talks to loopback only: a connection or a name lookup that would leave the machine fails.

The handlers run in this process (the embedded local stack), so a URL a test generates (the
Schemathesis run's ``image_urls`` with public literals, a webhook host name) would otherwise
make a real outbound connection or DNS query. With this guard such a call raises ``OSError``
(``socket.gaierror`` for a lookup), which reelay treats as it would an unreachable or unknown
host; the test then sees the same refusal a sandboxed deployment would give.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%", 1)[0]
    if host.lower() in _LOCAL_NAMES or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> Iterator[None]:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"tests talk to loopback only: refused a connection to {address[0]}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"tests talk to loopback only: refused a connection to {address[0]}")
        return int(real_connect_ex(self, address))

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"tests talk to loopback only: no lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    patches = [(socket.socket, "connect", connect), (socket.socket, "connect_ex", connect_ex)]
    patches.append((socket, "getaddrinfo", getaddrinfo))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
