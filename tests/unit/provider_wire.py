"""A provider's HTTP side in memory for adapter tests: scripted answers, every request kept.

Built on ``httpx.MockTransport``: no socket is ever opened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]

SECRET = "sk-TOP-SECRET-0123456789"


class ProviderWire:
    """Answers per (method, path); an answer list is served in order, its last one repeating."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *answers: Answer) -> ProviderWire:
        self.routes[(method, path)] = list(answers)
        return self

    def json(self, method: str, path: str, body: Any, status: int = 200, **headers: str) -> ProviderWire:
        return self.on(method, path, httpx.Response(status, json=body, headers=headers))

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json={"error": f"no route {request.method} {request.url.path}"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def only(self) -> httpx.Request:
        assert len(self.requests) == 1, [f"{r.method} {r.url}" for r in self.requests]
        return self.requests[0]

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def form_of(request: httpx.Request) -> list[Message]:
    """The parts of a multipart/form-data request."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    assert message.is_multipart()
    return list(message.iter_parts())


def fields_of(request: httpx.Request) -> dict[str, list[str]]:
    """Plain (file-less) multipart fields: name -> values."""
    fields: dict[str, list[str]] = {}
    for part in form_of(request):
        if part.get_filename() is None:
            fields.setdefault(str(part.get_param("name", header="content-disposition")), []).append(
                _payload(part).decode("utf-8")
            )
    return fields


def files_of(request: httpx.Request) -> list[tuple[str, str, bytes, str]]:
    """File parts of a multipart request: (field name, filename, bytes, content type)."""
    return [
        (
            str(part.get_param("name", header="content-disposition")),
            str(part.get_filename()),
            _payload(part),
            part.get_content_type(),
        )
        for part in form_of(request)
        if part.get_filename() is not None
    ]


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def read_timeout(message: str = "read timed out") -> httpx.ReadTimeout:
    return httpx.ReadTimeout(message)


def connect_refused(message: str = "connection refused") -> httpx.ConnectError:
    return httpx.ConnectError(message)


def dropped(message: str = "server disconnected without sending a response") -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(message)
