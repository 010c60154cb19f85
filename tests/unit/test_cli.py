"""The `reelay` CLI: every command against a fake API on httpx.MockTransport (no sockets)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from typer.testing import CliRunner, Result

from reelay.contract import TaskView
from reelay_cli.api_client import ReelayClient
from reelay_cli.demo import run_demo
from reelay_cli.main import COMMANDS, Wiring, create_app

TASK_ID = "tsk_" + "a" * 28
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
VIDEO_SHA = hashlib.sha256(VIDEO).hexdigest()
PRESIGNED = "http://127.0.0.1:4566/results/tasks/x/0.mp4?X-Amz-Credential=AKIA&X-Amz-Signature=deadbeef"

Handler = Callable[[httpx.Request], httpx.Response]


def task(status: str = "queued", progress: int = 0, **fields: Any) -> dict[str, Any]:
    """A task as the API shows it."""
    return {
        "id": TASK_ID,
        "provider": "generate_task",
        "kind": "video",
        "status": status,
        "progress": progress,
        "prompt": "a cat surfing a wave at sunset",
        "provider_task_id": "gt-1",
        "parent_task_id": None,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:01:00+00:00",
        "error": None,
        "outputs": [],
        "cost_cents": 12,
        "metadata": {},
        **fields,
    }


def output(sha256: str = VIDEO_SHA, size: int = len(VIDEO), url: str = PRESIGNED) -> dict[str, Any]:
    return {
        "s3_uri": "s3://results/tasks/x/0.mp4",
        "bytes": size,
        "sha256": sha256,
        "content_type": "video/mp4",
        "url": url,
    }


def error(status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return httpx.Response(status, json={"error": body})


def _always(response: httpx.Response) -> Handler:
    """The same answer every time (a fresh copy: a response is bound to the request it answers)."""
    return lambda _request: httpx.Response(response.status_code, headers=response.headers, content=response.content)


@dataclass
class FakeApi:
    """Routes (method, path) to handlers; the last handler of a route repeats. Records every request."""

    routes: dict[tuple[str, str], list[Handler]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, *answers: httpx.Response | Handler) -> FakeApi:
        self.routes[(method, path)] = [a if callable(a) else _always(a) for a in answers]
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handlers = self.routes.get((request.method, request.url.path))
        if not handlers:
            return error(404, "NOT_FOUND", "no such route")
        handler = handlers.pop(0) if len(handlers) > 1 else handlers[0]
        return handler(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@dataclass
class Run:
    result: Result
    sleeps: list[float]

    @property
    def code(self) -> int:
        return self.result.exit_code

    @property
    def out(self) -> str:
        return self.result.stdout

    @property
    def err(self) -> str:
        return self.result.stderr

    @property
    def text(self) -> str:
        """stdout without the terminal's colour codes (for ``tty=True`` runs)."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.result.stdout)


@dataclass
class FakeUiServer:
    """Stands in for the web page's server (unit tests open no sockets); records its client."""

    client: ReelayClient
    port: int
    stopped: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port or 8790}/"

    def stop(self) -> None:
        self.stopped = True


def reelay(api: FakeApi | Handler, *args: str, env: dict[str, str | None] | None = None, **wiring: Any) -> Run:
    """Run `reelay ARGS` against ``api`` with instant sleeps (stdout is not a TTY unless ``tty=True``)."""
    sleeps: list[float] = []
    wiring.setdefault("ui", lambda factory, port: FakeUiServer(factory(), port))
    app = create_app(Wiring(transport=httpx.MockTransport(api), sleep=sleeps.append, **wiring))
    environment = {"COLUMNS": "200", "REELAY_API_URL": None, "REELAY_TOKEN": None, "REELAY_API_TOKEN": None}
    result = CliRunner().invoke(app, list(args), env={**environment, **(env or {})})
    # Every outcome is a deliberate exit: an escaped exception would also exit 1, and hide a bug.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return Run(result, sleeps)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


# --- help ---------------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    run = reelay(FakeApi(), "--help")

    assert run.code == 0
    listed = set(re.findall(r"│ (\w+) ", run.out))
    assert set(COMMANDS) <= listed
    assert {"dev", "demo", "submit", "status", "list", "watch", "download", "providers", "remix", "images"} <= listed


# --- submit -------------------------------------------------------------------------------------


def test_submit_sends_the_request_and_the_idempotency_key() -> None:
    api = FakeApi().on("POST", "/v1/tasks", httpx.Response(202, json=task()))

    run = reelay(
        api,
        "submit",
        "--provider", "generate_task",
        "--prompt", "a cat surfing",
        "--duration", "15",
        "--orientation", "portrait",
        "--meta", "team=video",
        "--meta", "run=7",
        "--idempotency-key", "key-123",
    )  # fmt: skip

    assert run.code == 0, run.err
    (sent,) = api.sent("POST", "/v1/tasks")
    assert sent.headers["idempotency-key"] == "key-123"
    assert json.loads(sent.content) == {
        "provider": "generate_task",
        "prompt": "a cat surfing",
        "duration": 15,
        "orientation": "portrait",
        "metadata": {"team": "video", "run": "7"},
    }
    assert TASK_ID in run.out and "queued" in run.out


def test_submit_without_a_key_sends_no_idempotency_header() -> None:
    api = FakeApi().on("POST", "/v1/tasks", httpx.Response(202, json=task()))

    run = reelay(api, "submit", "--provider", "sorahk", "--prompt", "p", "--pro")

    assert run.code == 0, run.err
    (sent,) = api.sent("POST", "/v1/tasks")
    assert "idempotency-key" not in sent.headers
    assert json.loads(sent.content) == {"provider": "sorahk", "prompt": "p", "pro": True}


def test_submit_shows_an_idempotent_replay() -> None:
    api = FakeApi().on("POST", "/v1/tasks", httpx.Response(202, json=task(), headers={"Idempotent-Replayed": "true"}))

    run = reelay(api, "submit", "--provider", "generate_task", "--prompt", "p", "--idempotency-key", "k")

    assert run.code == 0
    assert "idempotent replay" in run.out


def test_submit_422_shows_the_field_details() -> None:
    api = FakeApi().on(
        "POST",
        "/v1/tasks",
        error(422, "INVALID_DURATION", "sorahk: 25 s needs pro", [{"field": "duration", "message": "25 s needs pro"}]),
    )

    run = reelay(api, "submit", "--provider", "sorahk", "--prompt", "p", "--duration", "25")

    assert run.code == 1
    assert "sorahk: 25 s needs pro" in run.err
    assert "INVALID_DURATION" in run.err and "HTTP 422" in run.err
    assert "duration: 25 s needs pro" in run.err
    assert "Traceback" not in run.result.output


def test_submit_refuses_a_malformed_meta_before_calling_the_api() -> None:
    api = FakeApi()

    run = reelay(api, "submit", "--provider", "generate_task", "--prompt", "p", "--meta", "novalue")

    assert run.code == 2
    assert "key=value" in run.err
    assert api.requests == []


def test_submit_watch_follows_the_new_task_to_its_end() -> None:
    done = task("succeeded", 100, outputs=[output()])
    api = (
        FakeApi()
        .on("POST", "/v1/tasks", httpx.Response(202, json=task()))
        .on(
            "GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("running", 40)), httpx.Response(200, json=done)
        )
    )

    run = reelay(api, "submit", "--provider", "generate_task", "--prompt", "p", "--watch")

    assert run.code == 0
    assert "succeeded" in run.out and "s3://results/tasks/x/0.mp4" in run.out


# --- status -------------------------------------------------------------------------------------


def test_status_in_a_pipe_shows_the_prompt_the_age_and_the_full_download_url() -> None:
    api = FakeApi().on(
        "GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("succeeded", 100, outputs=[output()]))
    )

    run = reelay(api, "status", TASK_ID)

    assert run.code == 0
    lines = [line.split("\t") for line in run.out.splitlines()]
    fields = {line[0]: line[1:] for line in lines}
    assert fields["status"] == ["succeeded"]
    assert fields["prompt"] == ["a cat surfing a wave at sunset"]
    assert re.fullmatch(r"2025-01-01T00:00:00\+00:00 \(\d+ d ago\)", fields["created"][0])
    assert fields["output"] == ["s3://results/tasks/x/0.mp4", str(len(VIDEO)), VIDEO_SHA, "video/mp4", PRESIGNED]
    assert "…" not in run.out


@pytest.mark.parametrize("where", ["before", "after"])
def test_status_json_prints_the_contract_model(where: str) -> None:
    body = task("succeeded", 100, outputs=[output()])
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=body))

    args = ("--json", "status", TASK_ID) if where == "before" else ("status", TASK_ID, "--json")
    run = reelay(api, *args)

    assert run.code == 0
    assert TaskView.model_validate_json(run.out) == TaskView.model_validate(body)
    assert json.loads(run.out)["outputs"][0]["url"] == PRESIGNED


def test_status_of_an_unknown_task_is_a_clear_404() -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", error(404, "TASK_NOT_FOUND", f"no task {TASK_ID}"))

    run = reelay(api, "status", TASK_ID)

    assert run.code == 1
    assert f"no task {TASK_ID}" in run.err and "HTTP 404" in run.err


def test_a_task_id_cannot_change_the_route() -> None:
    api = FakeApi()

    reelay(api, "status", "../providers")

    assert api.requests[0].url.raw_path == b"/v1/tasks/..%2Fproviders"


def test_an_api_that_is_not_running_is_named_with_exit_code_2() -> None:
    run = reelay(refused, "status", TASK_ID)

    assert run.code == 2
    assert "cannot reach reelay API at http://127.0.0.1:8787 — is `reelay dev` running?" in run.err
    assert "Traceback" not in run.result.output


def test_api_url_comes_from_the_option() -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task()))

    reelay(api, "--api-url", "http://localhost:9000/", "status", TASK_ID)

    assert str(api.requests[0].url) == f"http://localhost:9000/v1/tasks/{TASK_ID}"


def test_an_api_url_without_a_scheme_is_refused() -> None:
    api = FakeApi()

    run = reelay(api, "--api-url", "127.0.0.1:8787", "status", TASK_ID)

    assert run.code == 2
    assert "'127.0.0.1:8787' is not an http(s) URL" in run.err
    assert api.requests == []


def test_a_foreign_error_body_is_still_reported() -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(502, text="<html>Bad Gateway</html>"))

    run = reelay(api, "status", TASK_ID)

    assert run.code == 1
    assert "HTTP 502" in run.err and "Bad Gateway" in run.err


# --- list ---------------------------------------------------------------------------------------


def test_list_all_follows_every_cursor() -> None:
    ids = [f"tsk_{i:028x}" for i in range(5)]
    pages = {
        None: {"tasks": [task(id=ids[0]), task(id=ids[1])], "next_cursor": "c1"},
        "c1": {"tasks": [task(id=ids[2]), task(id=ids[3])], "next_cursor": "c2"},
        "c2": {"tasks": [task(id=ids[4])], "next_cursor": None},
    }
    api = FakeApi().on("GET", "/v1/tasks", lambda r: httpx.Response(200, json=pages[r.url.params.get("cursor")]))

    run = reelay(api, "--json", "list", "--all", "--status", "running", "--limit", "2")

    assert run.code == 0, run.err
    assert [r.url.params.get("cursor") for r in api.requests] == [None, "c1", "c2"]
    assert all(r.url.params["status"] == "running" and r.url.params["limit"] == "2" for r in api.requests)
    assert [json.loads(line)["id"] for line in run.out.splitlines()] == ids  # JSON Lines


def test_list_one_page_says_how_to_get_more() -> None:
    api = FakeApi().on("GET", "/v1/tasks", httpx.Response(200, json={"tasks": [task()], "next_cursor": "c1"}))

    run = reelay(api, "list", "--provider", "sorahk")

    assert run.code == 0
    assert api.requests[0].url.params["provider"] == "sorahk"
    assert TASK_ID in run.out and "--cursor c1" in run.err  # stdout keeps rows only


def test_list_rejects_an_unknown_status() -> None:
    run = reelay(FakeApi(), "list", "--status", "done")

    assert run.code == 2


# --- watch --------------------------------------------------------------------------------------


def test_watch_exits_0_when_the_task_succeeds() -> None:
    api = FakeApi().on(
        "GET",
        f"/v1/tasks/{TASK_ID}",
        httpx.Response(200, json=task("submitted", 0)),
        httpx.Response(200, json=task("running", 60)),
        httpx.Response(200, json=task("succeeded", 100, outputs=[output()])),
    )

    run = reelay(api, "watch", TASK_ID)

    assert run.code == 0
    # Polled three times; the pauses start near 1 s and grow (±20 % jitter), never every second.
    first, second = run.sleeps
    assert 0.8 <= first <= 1.2 and 1.2 <= second <= 1.8
    assert "succeeded" in run.out and "s3://results/tasks/x/0.mp4" in run.out


def test_watch_exits_1_when_the_task_fails() -> None:
    failed = task("failed", 30, error={"code": "CONTENT_POLICY", "message": "refused by the provider"})
    api = FakeApi().on(
        "GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("running", 30)), httpx.Response(200, json=failed)
    )

    run = reelay(api, "watch", TASK_ID, "--interval", "0.5")

    assert run.code == 1
    assert len(run.sleeps) == 1 and 0.4 <= run.sleeps[0] <= 0.6
    assert "CONTENT_POLICY: refused by the provider" in run.out


def test_watch_gives_up_at_its_timeout_with_exit_code_3() -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("running", 10)))

    run = reelay(api, "watch", TASK_ID, "--timeout", "0")

    assert run.code == 3
    assert "still running" in run.err


# --- download -----------------------------------------------------------------------------------


def _download_api(sha256: str = VIDEO_SHA, body: bytes = VIDEO) -> FakeApi:
    return (
        FakeApi()
        .on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("succeeded", 100, outputs=[output(sha256)])))
        .on("GET", "/results/tasks/x/0.mp4", httpx.Response(200, content=body))
    )


def test_download_writes_the_verified_file(tmp_path: Path) -> None:
    api = _download_api()

    run = reelay(api, "--token", "secret-jwt", "download", TASK_ID, "--out", str(tmp_path / "videos"))

    assert run.code == 0, run.err
    saved = tmp_path / "videos" / f"{TASK_ID}.mp4"
    assert saved.read_bytes() == VIDEO
    assert list(saved.parent.iterdir()) == [saved]
    assert VIDEO_SHA in run.out
    (fetch,) = api.sent("GET", "/results/tasks/x/0.mp4")
    assert "X-Amz-Signature=deadbeef" in str(fetch.url)
    assert "authorization" not in fetch.headers  # the API's credential never goes to the object store


def test_download_refuses_bytes_that_do_not_match_the_recorded_sha256(tmp_path: Path) -> None:
    api = _download_api(body=VIDEO[:-1] + b"!")

    run = reelay(api, "download", TASK_ID, "--out", str(tmp_path))

    assert run.code == 1
    assert "refusing s3://results/tasks/x/0.mp4" in run.err and VIDEO_SHA in run.err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial copy


def test_download_of_a_task_without_outputs_says_so(tmp_path: Path) -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("running", 50)))

    run = reelay(api, "download", TASK_ID, "--out", str(tmp_path))

    assert run.code == 1
    assert "is running and has no outputs" in run.err


# --- providers, remix, images -------------------------------------------------------------------

PROVIDERS = {
    "providers": [
        {
            "name": "sorahk",
            "protocol": "sorahk",
            "capabilities": {
                "protocol": "sorahk",
                "callbacks": False,
                "modes": ["text", "image"],
                "durations": [10, 15, 25],
                "default_duration": 10,
                "orientations": ["portrait", "landscape"],
                "resolutions": [],
                "sizes": [],
                "pro": True,
                "notes": ["25 s needs pro"],
            },
            "account": {"balance_cents": 12345, "pricing": {"normal_price": 30}, "currency": "CNY"},
        },
        {
            "name": "generate_task",
            "protocol": "generate_task",
            "capabilities": {
                "protocol": "generate_task",
                "callbacks": True,
                "modes": ["text"],
                "durations": [4, 8],
                "default_duration": 4,
            },
            "account": None,
        },
    ]
}


def test_providers_shows_a_table_on_a_terminal() -> None:
    api = FakeApi().on("GET", "/v1/providers", httpx.Response(200, json=PROVIDERS))

    run = reelay(api, "providers", tty=True)

    assert run.code == 0
    assert "┃ provider" in run.text and "sorahk" in run.text and "generate_task" in run.text
    assert "10*, 15, 25" in run.text and "123.45 CNY" in run.text and "25 s needs pro" in run.text


def test_providers_in_a_pipe_is_one_tab_separated_line_each() -> None:
    api = FakeApi().on("GET", "/v1/providers", httpx.Response(200, json=PROVIDERS))

    run = reelay(api, "providers")

    assert run.code == 0
    assert run.out.splitlines() == [
        "sorahk\tsorahk\ttext, image\t10*, 15, 25\tportrait, landscape\t-\tyes\tno\t123.45 CNY",
        "generate_task\tgenerate_task\ttext\t4*, 8\tportrait, landscape\t-\tno\tyes\t-",
    ]


def test_providers_error_is_reported() -> None:
    api = FakeApi().on("GET", "/v1/providers", error(503, "CONFIGURATION", "no providers configured"))

    run = reelay(api, "providers")

    assert run.code == 1 and "no providers configured" in run.err


def test_remix_posts_the_prompt_for_the_parent_task() -> None:
    child = task(id="tsk_" + "b" * 28, kind="remix", parent_task_id=TASK_ID, provider="openai_videos")
    api = FakeApi().on("POST", f"/v1/tasks/{TASK_ID}/remix", httpx.Response(202, json=child))

    run = reelay(api, "remix", TASK_ID, "--prompt", "make it night")

    assert run.code == 0
    assert json.loads(api.requests[0].content) == {"prompt": "make it night"}
    assert child["id"] in run.out and TASK_ID in run.out


def test_remix_of_an_unfinished_task_shows_the_conflict() -> None:
    api = FakeApi().on("POST", f"/v1/tasks/{TASK_ID}/remix", error(409, "NOT_REMIXABLE", "task is still running"))

    run = reelay(api, "remix", TASK_ID, "--prompt", "x")

    assert run.code == 1 and "task is still running" in run.err


def test_images_sends_keys_size_and_count() -> None:
    api = FakeApi().on("POST", "/v1/images", httpx.Response(202, json=task(kind="image", provider="openai_videos")))

    run = reelay(
        api,
        "images", "--provider", "openai_videos", "--prompt", "a logo",
        "--n", "2", "--size", "1024x1536", "--image-key", "uploads/a.png", "--image-key", "uploads/b.png",
    )  # fmt: skip

    assert run.code == 0, run.err
    assert json.loads(api.requests[0].content) == {
        "provider": "openai_videos",
        "prompt": "a logo",
        "n": 2,
        "size": "1024x1536",
        "image_keys": ["uploads/a.png", "uploads/b.png"],
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--image-url", "https://example.com/a.png", "--image-key", "uploads/a.png"],
        ["--size", "big"],
        ["--n", "9"],
    ],
)
def test_images_refuses_bad_options_without_calling_the_api(args: list[str]) -> None:
    api = FakeApi()

    run = reelay(api, "images", "--provider", "openai_videos", "--prompt", "p", *args)

    assert run.code == 2
    assert api.requests == []


# --- authentication -----------------------------------------------------------------------------

DEPLOYED = "https://abc123defg.execute-api.eu-west-1.amazonaws.com"


def _auth_of(*global_args: str) -> httpx.Request:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task()))
    run = reelay(api, *global_args, "status", TASK_ID)
    assert run.code == 0, run.err
    return api.requests[0]


def test_a_deployed_api_gets_sigv4_signed_requests() -> None:
    sent = _auth_of("--api-url", DEPLOYED)

    authorization = sent.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token" in authorization
    assert sent.headers["x-amz-security-token"] == "testing"
    assert re.fullmatch(r"\d{8}T\d{6}Z", sent.headers["x-amz-date"])


def test_a_custom_domain_signs_for_the_configured_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-south-1")

    sent = _auth_of("--api-url", "https://video.example.com")

    assert "/ap-south-1/execute-api/aws4_request" in sent.headers["authorization"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8787", "http://localhost:3000", "http://[::1]:8787"])
def test_a_loopback_api_gets_no_credentials(url: str) -> None:
    sent = _auth_of("--api-url", url)

    assert "authorization" not in sent.headers
    assert "x-amz-date" not in sent.headers


def test_no_sign_turns_signing_off() -> None:
    sent = _auth_of("--api-url", DEPLOYED, "--no-sign")

    assert "authorization" not in sent.headers


def test_a_token_is_sent_as_bearer_instead_of_signing() -> None:
    sent = _auth_of("--api-url", DEPLOYED, "--token", "jwt-abc")

    assert sent.headers["authorization"] == "Bearer jwt-abc"
    assert "x-amz-date" not in sent.headers


def test_signing_without_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    run = reelay(FakeApi(), "--api-url", DEPLOYED, "status", TASK_ID)

    assert run.code == 1
    assert "no AWS credentials found" in run.err and "--no-sign" in run.err


# --- dev and demo (with a fake local stack) -----------------------------------------------------


@dataclass
class FakeStack:
    api_url: str = "http://127.0.0.1:8787"
    aws_endpoint: str = "http://127.0.0.1:4566"
    bucket: str = "results"


@dataclass
class FakeSimulator:
    served: dict[tuple[str, str], str] = field(default_factory=dict)
    url: str = "http://127.0.0.1:4600"

    def video_bytes_sha256(self, protocol: str, provider_task_id: str) -> str:
        return self.served[(protocol, provider_task_id)]


@dataclass
class FakeEnvironment:
    repo_root: Path
    api_port: int | None
    stack: FakeStack = field(default_factory=FakeStack)
    sim: FakeSimulator | None = field(default_factory=FakeSimulator)
    events: list[str] = field(default_factory=list)
    fail_start: Exception | None = None

    def start(self) -> None:
        self.events.append("start")
        if self.fail_start:
            raise self.fail_start

    def stop(self) -> None:
        self.events.append("stop")

    def issue_token(self, subject: str) -> str:
        return f"jwt-for-{subject}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    return tmp_path


def _interrupt() -> None:
    raise KeyboardInterrupt


def test_dev_prints_where_the_stack_serves_and_stops_it_on_ctrl_c(repo: Path) -> None:
    made: list[FakeEnvironment] = []

    def environment(root: Path, port: int | None, client_auth: str) -> FakeEnvironment:
        made.append(FakeEnvironment(root, port, stack=FakeStack(api_url=f"http://127.0.0.1:{port}")))
        return made[-1]

    run = reelay(
        FakeApi(), "dev", "--port", "9001", "--repo", str(repo), environment=environment, wait_for_interrupt=_interrupt
    )

    assert run.code == 0, run.err
    (env,) = made
    assert (env.repo_root, env.api_port, env.events) == (repo.resolve(), 9001, ["start", "stop"])
    for shown in ("http://127.0.0.1:9001", "http://127.0.0.1:4566", "results", "http://127.0.0.1:4600"):
        assert shown in run.out
    assert "export REELAY_API_URL=http://127.0.0.1:9001" in run.out


def test_dev_reports_a_stack_that_cannot_start(repo: Path) -> None:
    env = FakeEnvironment(repo, 8787, fail_start=OSError(98, "Address already in use"))

    run = reelay(FakeApi(), "dev", "--repo", str(repo), environment=lambda root, port, auth: env)

    assert run.code == 2
    assert "could not start" in run.err and "Address already in use" in run.err and "--port" in run.err
    assert env.events == ["start", "stop"]


def test_dev_refuses_a_directory_that_is_not_a_checkout(tmp_path: Path) -> None:
    run = reelay(FakeApi(), "dev", "--repo", str(tmp_path), wait_for_interrupt=_interrupt)

    assert run.code == 1
    assert "not a reelay checkout" in run.err


DEFAULT_PROVIDERS = ("generate_task", "sorahk", "openai_videos")


class DemoApi:
    """An API whose tasks run once, then succeed with one output already in the bucket."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.fail = fail
        self.tasks: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/providers":
            caps = {"protocol": "x", "callbacks": False, "modes": [], "durations": [10], "default_duration": 10}
            listed = [{"name": p, "protocol": p, "capabilities": {**caps, "protocol": p}} for p in DEFAULT_PROVIDERS]
            return httpx.Response(200, json={"providers": listed})
        if request.method == "POST" and path == "/v1/tasks":
            return self._create(json.loads(request.content)["provider"])
        return self._poll(path.rsplit("/", 1)[-1])

    def _create(self, provider: str) -> httpx.Response:
        if provider not in DEFAULT_PROVIDERS:
            return error(422, "UNKNOWN_PROVIDER", f"no provider {provider}", [{"field": "provider", "message": "?"}])
        task_id = f"tsk_{len(self.tasks):028x}"
        self.tasks[task_id] = task(id=task_id, provider=provider, provider_task_id=f"{provider}-job")
        return httpx.Response(202, json=self.tasks[task_id])

    def _poll(self, task_id: str) -> httpx.Response:
        self.polls[task_id] = self.polls.get(task_id, 0) + 1
        current = self.tasks[task_id]
        if self.polls[task_id] == 1:
            return httpx.Response(200, json={**current, "status": "running", "progress": 50})
        if current["provider"] in self.fail:
            failure = {"code": "PROVIDER_FAILED", "message": "boom"}
            return httpx.Response(200, json={**current, "status": "failed", "error": failure})
        stored = {**output(), "s3_uri": f"s3://results/tasks/{task_id}/0.mp4"}
        return httpx.Response(200, json={**current, "status": "succeeded", "progress": 100, "outputs": [stored]})


@pytest.fixture
def demo_bucket(aws: dict[str, str]) -> Any:
    """moto's in-process S3 holding what ingest would have stored for the demo's three tasks."""
    s3 = boto3.client("s3")
    for i in range(3):
        s3.put_object(Bucket="results", Key=f"tasks/tsk_{i:028x}/0.mp4", Body=VIDEO)
    return s3


def _served(video_sha: str = VIDEO_SHA) -> FakeSimulator:
    return FakeSimulator({(p, f"{p}-job"): video_sha for p in DEFAULT_PROVIDERS})


def test_demo_runs_every_provider_and_verifies_each_hash(repo: Path, demo_bucket: Any) -> None:
    env = FakeEnvironment(repo, None, sim=_served())

    run = reelay(
        DemoApi(),
        "--json",
        "demo",
        "--repo",
        str(repo),
        environment=lambda root, port, auth: env,
        s3=lambda _env: demo_bucket,
    )

    assert run.code == 0, run.out + run.err
    result = json.loads(run.out)
    assert result["ok"] is True
    assert [(r["provider"], r["status"]) for r in result["runs"]] == [
        ("generate_task", "succeeded"),
        ("sorahk", "succeeded"),
        ("openai_videos", "succeeded"),
    ]
    checks = [o for r in result["runs"] for o in r["outputs"]]
    assert all(o["stored_sha256"] == o["simulator_sha256"] == o["recorded_sha256"] == VIDEO_SHA for o in checks)
    assert env.events == ["start", "stop"]


def test_demo_fails_when_the_simulator_served_other_bytes(repo: Path, demo_bucket: Any) -> None:
    env = FakeEnvironment(repo, None, sim=_served("0" * 64))

    run = reelay(
        DemoApi(), "demo", "--repo", str(repo), environment=lambda root, port, auth: env, s3=lambda _env: demo_bucket
    )

    assert run.code == 1
    assert "demo failed" in run.out and "simulator served sha256" in run.out
    assert env.events == ["start", "stop"]


def test_run_demo_reports_failed_and_rejected_tasks(repo: Path, demo_bucket: Any) -> None:
    env = FakeEnvironment(repo, None, sim=_served())
    client = ReelayClient(env.stack.api_url, transport=httpx.MockTransport(DemoApi(fail=frozenset({"sorahk"}))))

    result = run_demo(env, client, providers=["generate_task", "sorahk", "nope"], s3=demo_bucket, sleep=lambda s: None)

    assert not result.ok
    by_provider = {r.provider: r for r in result.runs}
    assert by_provider["generate_task"].ok
    assert (by_provider["sorahk"].status, by_provider["sorahk"].error) == ("failed", "PROVIDER_FAILED: boom")
    assert (by_provider["nope"].status, by_provider["nope"].error) == ("not submitted", "no provider nope")


def test_run_demo_flags_an_object_missing_from_the_bucket(repo: Path, aws: dict[str, str]) -> None:
    env = FakeEnvironment(repo, None, sim=_served())
    client = ReelayClient(env.stack.api_url, transport=httpx.MockTransport(DemoApi()))

    result = run_demo(env, client, providers=["generate_task"], s3=boto3.client("s3"), sleep=lambda s: None)

    (run,) = result.runs
    assert run.status == "succeeded" and not run.ok
    assert "cannot read s3://results/" in (run.outputs[0].problem or "")


# --- contract: the CLI against the real API handler ---------------------------------------------


@pytest.fixture
def real_api(aws: dict[str, str]) -> Handler:
    """The real resolver (Powertools, TaskService, moto), reached through API Gateway v2 events."""
    from reelay.api import build_app
    from reelay.aws import ResultBucket, TaskQueue
    from reelay.catalog import ProviderCatalog
    from reelay.store import DynamoTaskStore
    from reelay.tasks import TaskService
    from tests.unit.conftest import load_event
    from tests.unit.fakes import FakeProvider, config

    provider = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    service = TaskService(
        DynamoTaskStore("tasks"), catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results")
    )
    app = build_app(lambda: service)

    class Context:
        function_name = "api"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
        aws_request_id = "req"

    def handle(request: httpx.Request) -> httpx.Response:
        event = load_event("api_create_task.json")
        query = request.url.query.decode()
        event.update(
            rawPath=request.url.path,
            rawQueryString=query,
            queryStringParameters=dict(request.url.params) or None,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.content.decode() or None,
        )
        event["requestContext"]["http"].update(method=request.method, path=request.url.path)
        answer = app.resolve(event, Context())
        return httpx.Response(answer["statusCode"], headers=answer.get("headers"), content=answer["body"])

    return handle


def test_the_cli_speaks_the_real_api(real_api: Handler) -> None:
    submit = ("submit", "--provider", "generate_task", "--prompt", "a lighthouse", "--duration", "4")

    first = reelay(real_api, "--json", *submit, "--idempotency-key", "k-1", "--meta", "run=1")
    again = reelay(real_api, *submit, "--idempotency-key", "k-1", "--meta", "run=1")
    invalid = reelay(real_api, *submit[:-1], "5")

    assert first.code == 0, first.err
    created = json.loads(first.out)
    assert (created["status"], created["metadata"]) == ("queued", {"run": "1"})
    assert again.code == 0 and created["id"] in again.out and "idempotent replay" in again.out
    assert invalid.code == 1 and "duration must be 4 or 8" in invalid.err and "HTTP 422" in invalid.err

    status = reelay(real_api, "--json", "status", created["id"])
    listed = reelay(real_api, "--json", "list", "--all", "--limit", "1")
    missing = reelay(real_api, "status", "tsk_" + "0" * 28)

    assert json.loads(status.out)["id"] == created["id"]
    assert [json.loads(line)["id"] for line in listed.out.splitlines()] == [created["id"]]
    assert TaskView.model_validate_json(status.out).prompt == "a lighthouse"
    assert missing.code == 1 and "HTTP 404" in missing.err


# --- a citizen of the shell: pipes, --json, --version, open, token, ui -----------------------------

LONG_PROMPT = "a very long prompt " * 20 + "that must reach the end of the line"


def test_list_in_a_pipe_prints_full_tab_separated_rows_that_grep_can_find() -> None:
    rows = [task("succeeded", 100, prompt=LONG_PROMPT), task("running", 40, id="tsk_" + "b" * 28)]
    api = FakeApi().on("GET", "/v1/tasks", httpx.Response(200, json={"tasks": rows, "next_cursor": None}))

    run = reelay(api, "list")

    assert run.code == 0
    lines = run.out.splitlines()
    assert len(lines) == 2
    fields = lines[0].split("\t")
    assert fields[:6] == [TASK_ID, "succeeded", "100%", "generate_task", "video", "2025-01-01T00:00:00+00:00"]
    assert re.fullmatch(r"\d+ d ago", fields[6])
    assert fields[7] == LONG_PROMPT.strip()  # whole, not cut at 80 columns
    assert [line for line in lines if "succeeded" in line] == [lines[0]]


def test_list_on_a_terminal_is_a_table_with_prompt_and_age() -> None:
    api = FakeApi().on("GET", "/v1/tasks", httpx.Response(200, json={"tasks": [task()], "next_cursor": None}))

    run = reelay(api, "list", tty=True)

    assert run.code == 0
    assert "┃ prompt" in run.text and "a cat surfing" in run.text and " d ago" in run.text


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    run = reelay(FakeApi(), "--version")

    assert run.code == 0
    assert run.out.strip() == f"reelay {version('reelay')}"


def test_help_documents_the_exit_codes() -> None:
    run = reelay(FakeApi(), "watch", "--help")

    assert "3 `watch --timeout` ran out" in " ".join(run.out.split())


def _succeeded_api() -> FakeApi:
    return FakeApi().on(
        "GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("succeeded", 100, outputs=[output()]))
    )


def test_open_in_a_pipe_prints_the_full_presigned_url_and_opens_nothing() -> None:
    opened: list[str] = []

    run = reelay(_succeeded_api(), "open", TASK_ID, open_browser=lambda url: opened.append(url) or True)

    assert run.code == 0
    assert run.out == PRESIGNED + "\n"
    assert opened == []


def test_open_on_a_terminal_opens_the_browser_and_falls_back_to_printing() -> None:
    opened: list[str] = []

    shown = reelay(_succeeded_api(), "open", TASK_ID, tty=True, open_browser=lambda url: opened.append(url) or True)
    no_browser = reelay(_succeeded_api(), "open", TASK_ID, tty=True, open_browser=lambda url: False)
    printed = reelay(_succeeded_api(), "open", TASK_ID, "--print", tty=True, open_browser=lambda url: True)

    assert shown.code == 0 and opened == [PRESIGNED] and PRESIGNED not in shown.out
    assert no_browser.out.strip() == PRESIGNED
    assert printed.out.strip() == PRESIGNED


def test_open_of_an_unfinished_task_says_so() -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task("running", 50)))

    run = reelay(api, "open", TASK_ID)

    assert run.code == 1 and "is running and has no outputs to open" in run.err


def test_download_on_a_terminal_draws_a_progress_bar_with_size_and_speed(tmp_path: Path) -> None:
    run = reelay(_download_api(), "download", TASK_ID, "--out", str(tmp_path), tty=True)

    assert run.code == 0, run.err
    assert f"{TASK_ID}.mp4" in run.err and "16.0/16.0 KiB" in run.err  # (speed: "?" for an instant one)
    assert (tmp_path / f"{TASK_ID}.mp4").read_bytes() == VIDEO


def test_download_json_is_one_line_per_file(tmp_path: Path) -> None:
    run = reelay(_download_api(), "download", TASK_ID, "--out", str(tmp_path), "--json")

    (line,) = run.out.splitlines()
    assert json.loads(line) == {
        "path": str(tmp_path / f"{TASK_ID}.mp4"), "bytes": len(VIDEO), "sha256": VIDEO_SHA,
        "s3_uri": "s3://results/tasks/x/0.mp4",
    }  # fmt: skip


def test_reelay_token_env_is_sent_as_bearer_even_to_a_loopback_api() -> None:
    api = FakeApi().on("GET", f"/v1/tasks/{TASK_ID}", httpx.Response(200, json=task()))

    run = reelay(api, "status", TASK_ID, env={"REELAY_TOKEN": "jwt-from-env"})

    assert run.code == 0
    assert api.requests[0].headers["authorization"] == "Bearer jwt-from-env"


def test_token_prints_a_bare_jwt_from_the_local_issuer() -> None:
    api = FakeApi().on("POST", "/_reelay/token", httpx.Response(200, json={"token": "aaa.bbb.ccc"}))

    run = reelay(api, "--api-url", "http://127.0.0.1:9001", "token", "alice", "--ttl", "60")

    assert run.code == 0
    assert run.out == "aaa.bbb.ccc\n"
    (sent,) = api.requests
    assert str(sent.url) == "http://127.0.0.1:9001/_reelay/token"
    assert json.loads(sent.content) == {"sub": "alice", "ttl_seconds": 60}
    assert "authorization" not in sent.headers


def test_token_against_a_stack_without_jwt_auth_says_how_to_start_one() -> None:
    run = reelay(FakeApi(), "token", "alice")

    assert run.code == 1
    assert "has no local JWT issuer" in run.err and "reelay dev --client-auth jwt" in run.err


def test_ui_serves_against_the_api_url_with_the_same_credentials_and_stops() -> None:
    made: list[FakeUiServer] = []

    def ui(factory: Callable[[], ReelayClient], port: int) -> FakeUiServer:
        made.append(FakeUiServer(factory(), port))
        return made[-1]

    run = reelay(
        FakeApi(), "--api-url", DEPLOYED, "--token", "t", "ui", "--port", "0", ui=ui, wait_for_interrupt=_interrupt
    )

    assert run.code == 0, run.err
    (server,) = made
    assert server.client.api_url == DEPLOYED and server.port == 0 and server.stopped
    assert "http://127.0.0.1:8790/" in run.out


def test_dev_with_jwt_asks_for_a_jwt_stack_and_gives_the_page_local_tokens(repo: Path) -> None:
    made: list[tuple[str, FakeEnvironment]] = []
    pages: list[FakeUiServer] = []

    def environment(root: Path, port: int | None, client_auth: str) -> FakeEnvironment:
        made.append((client_auth, FakeEnvironment(root, port)))
        return made[-1][1]

    def ui(factory: Callable[[], ReelayClient], port: int) -> FakeUiServer:
        pages.append(FakeUiServer(factory(), port))
        return pages[-1]

    api = FakeApi().on("GET", "/v1/providers", httpx.Response(200, json=PROVIDERS))
    run = reelay(
        api,
        "dev", "--client-auth", "jwt", "--repo", str(repo),
        environment=environment, ui=ui, wait_for_interrupt=_interrupt,
    )  # fmt: skip

    assert run.code == 0, run.err
    assert [auth for auth, _ in made] == ["jwt"]
    (page,) = pages
    page.client.providers()
    assert api.requests[-1].headers["authorization"] == "Bearer jwt-for-local-ui"
    assert "reelay token SUBJECT" in run.out and page.stopped


def test_poll_delays_start_fast_grow_to_the_cap_and_jitter() -> None:
    from reelay_cli.backoff import poll_delays

    steady = poll_delays(first=1.0, cap=10.0, uniform=lambda a, b: 0.0)
    low = poll_delays(first=1.0, cap=10.0, uniform=lambda a, b: a)

    assert [round(next(steady), 3) for _ in range(8)] == [1.0, 1.5, 2.25, 3.375, 5.062, 7.594, 10.0, 10.0]
    assert next(low) == pytest.approx(0.8)


_KEY_VIEW = {
    "key_id": "key_0123456789abcdef0123",
    "owner": "alice",
    "name": "ci",
    "created_at": "2026-12-02T01:00:00Z",
    "revoked_at": None,
}


def test_keys_create_prints_the_bare_key_and_sends_no_bearer_token() -> None:
    made = {**_KEY_VIEW, "key": "rk-" + "k" * 43}
    api = FakeApi().on("POST", "/_reelay/keys", httpx.Response(201, json=made))

    run = reelay(
        api, "--api-url", "http://127.0.0.1:9001", "keys", "create", "--owner", "alice", "--name", "ci",
        env={"REELAY_TOKEN": "a-jwt"},
    )  # fmt: skip

    assert run.code == 0 and run.out == made["key"] + "\n"
    (sent,) = api.requests
    assert json.loads(sent.content) == {"owner": "alice", "name": "ci"}
    assert str(sent.url) == "http://127.0.0.1:9001/_reelay/keys"  # the local gateway's key administration
    assert "authorization" not in sent.headers  # never the bearer token of the API's clients


def test_keys_list_and_revoke_print_lines_or_json_and_never_a_key() -> None:
    revoked = {**_KEY_VIEW, "revoked_at": "2026-12-02T02:00:00Z"}
    api = (
        FakeApi()
        .on("GET", "/_reelay/keys", httpx.Response(200, json={"keys": [_KEY_VIEW]}))
        .on("DELETE", f"/_reelay/keys/{_KEY_VIEW['key_id']}", httpx.Response(200, json=revoked))
    )

    listed = reelay(api, "--api-url", "http://127.0.0.1:9001", "keys", "list", "--owner", "alice")
    as_json = reelay(api, "--api-url", "http://127.0.0.1:9001", "keys", "list", "--json")
    gone = reelay(api, "--api-url", "http://127.0.0.1:9001", "keys", "revoke", str(_KEY_VIEW["key_id"]))

    assert listed.out.split("\t")[:3] == [_KEY_VIEW["key_id"], "alice", "ci"]
    assert json.loads(as_json.out.splitlines()[0])["key_id"] == _KEY_VIEW["key_id"]
    assert gone.code == 0 and gone.out.startswith(f"{_KEY_VIEW['key_id']}\trevoked\t2026-12-02T02:00:00")
    assert str(api.requests[0].url).endswith("/_reelay/keys?owner=alice")


def test_keys_for_a_deployed_stack_are_written_to_its_table_with_aws_credentials() -> None:
    import boto3
    from moto import mock_aws

    deployed = "https://abc123.execute-api.us-east-1.amazonaws.com"
    with mock_aws():
        boto3.client("dynamodb", region_name="us-east-1").create_table(
            TableName="stack-ApiKeyTable-X",
            AttributeDefinitions=[{"AttributeName": "key_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "key_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        env = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"}
        made = reelay(FakeApi(), "--api-url", deployed, "keys", "create", "--owner", "bob", "--table",
                      "stack-ApiKeyTable-X", env=env)  # fmt: skip
        listed = reelay(FakeApi(), "--api-url", deployed, "keys", "list", "--table", "stack-ApiKeyTable-X", env=env)
        items = boto3.resource("dynamodb", region_name="us-east-1").Table("stack-ApiKeyTable-X").scan()["Items"]
    no_table = reelay(FakeApi(), "--api-url", deployed, "keys", "create", "--owner", "bob")

    assert made.code == 0 and made.out.startswith("rk-") and listed.out.split("\t")[1] == "bob"
    assert [i["owner"] for i in items] == ["bob"] and made.out.strip() not in json.dumps(items, default=str)
    assert no_table.code == 2 and "--stack" in no_table.err
