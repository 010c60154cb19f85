"""The web page's server: its files, and a proxy that authenticates as the CLI and refuses other sites."""

from __future__ import annotations

import httpx
from werkzeug.test import Client

from reelay_cli.api_client import ReelayClient
from reelay_cli.ui_server import UiApp

DEPLOYED = "https://abc123.execute-api.eu-west-1.amazonaws.com"
HOST = "127.0.0.1:8790"


def _page(seen: list[httpx.Request], api_url: str = DEPLOYED, **client: str) -> Client:
    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(422, json={"error": {"code": "VALIDATION_FAILED", "message": "no"}})

    return Client(UiApp(ReelayClient(api_url, transport=httpx.MockTransport(api), **client), {HOST}))


def test_the_page_is_served_with_its_script_and_no_credential_in_it() -> None:
    page = _page([])

    html = page.get("/", headers={"Host": HOST})
    script = page.get("/app.js", headers={"Host": HOST})

    assert html.status_code == 200 and b'<script src="/app.js">' in html.data
    assert "default-src 'self'" in html.headers["Content-Security-Policy"]
    assert script.status_code == 200 and b"X-Reelay-UI" in script.data
    assert b"AKIA" not in html.data + script.data


def test_an_api_call_is_forwarded_sigv4_signed_and_its_answer_comes_back_unchanged() -> None:
    seen: list[httpx.Request] = []
    page = _page(seen)

    answer = page.post("/api/v1/tasks?x=1", data=b'{"provider":"sorahk"}', headers={"Host": HOST, "X-Reelay-UI": "1"})

    assert answer.status_code == 422 and answer.json == {"error": {"code": "VALIDATION_FAILED", "message": "no"}}
    (sent,) = seen
    assert str(sent.url) == f"{DEPLOYED}/v1/tasks?x=1" and sent.content == b'{"provider":"sorahk"}'
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")  # the page never had AWS keys


def test_a_bearer_token_is_added_by_the_proxy() -> None:
    seen: list[httpx.Request] = []

    _page(seen, token="jwt-1").get("/api/v1/providers", headers={"Host": HOST, "X-Reelay-UI": "1"})

    assert seen[0].headers["authorization"] == "Bearer jwt-1"


def test_another_site_cannot_use_the_proxy() -> None:
    seen: list[httpx.Request] = []
    page = _page(seen)

    no_header = page.post("/api/v1/tasks", data=b"{}", headers={"Host": HOST})  # a cross-site form post
    rebound = page.get("/api/v1/tasks", headers={"Host": "evil.example:8790", "X-Reelay-UI": "1"})
    elsewhere = page.get("/api/_reelay/token", headers={"Host": HOST, "X-Reelay-UI": "1"})

    assert (no_header.status_code, rebound.status_code) == (403, 403)
    assert elsewhere.status_code == 404
    assert seen == []
