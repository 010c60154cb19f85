"""The provider adapters against the real provider simulator (reelay_sim) on loopback.

Every endpoint of sorahk (seed 000) and openai_videos (seed 001), generate_task's create,
status and callback, and each documented error code, through the adapters reelay ships.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from reelay.errors import (
    CreateOutcomeUnknown,
    CreateServerError,
    InsufficientBalance,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    ProviderTransientError,
)
from reelay.models import ErrorCode, ImageRequest, VideoRequest
from reelay.providers.base import ImageInput, Provider, ProviderState, ProviderStatus
from reelay.providers.generate_task import GenerateTaskProvider
from reelay.providers.openai_videos import OpenAIVideosProvider
from reelay.providers.registry import build_provider, provider_config
from reelay.providers.sorahk import SorahkProvider, estimate_cost_cents
from reelay_sim import Simulator

pytestmark = pytest.mark.integration

GENERATION_SECONDS = 0.3
MP4_BRAND = b"ftyp"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(port=0).start()
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def _fresh(sim: Simulator) -> None:
    sim.reset()
    sim.configure("all", generation_seconds=GENERATION_SECONDS)


def adapter(sim: Simulator, protocol: str, *, key: str | None = None, **overrides: Any) -> Provider:
    overrides.setdefault("timeout_seconds", 5.0)
    config = provider_config(protocol, protocol, sim.base_urls[protocol], key or sim.api_keys[protocol], **overrides)
    return build_provider(config)


def video(protocol: str, prompt: str = "a lighthouse in a storm", **fields: Any) -> VideoRequest:
    return VideoRequest(provider=protocol, prompt=prompt, **fields)


def finished(provider: Provider, provider_task_id: str, timeout: float = 10.0) -> ProviderStatus:
    """Poll until the task ends (the simulator's tasks take ``GENERATION_SECONDS``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = provider.status(provider_task_id)
        if status.state in (ProviderState.SUCCEEDED, ProviderState.FAILED) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def fetch(provider: Provider, url: str) -> httpx.Response:
    return httpx.get(url, headers=provider.result_headers(url), timeout=10.0)


def recorded(sim: Simulator, protocol: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in sim.requests if r["protocol"] == protocol and r["kind"] == kind]


class CallbackSink:
    """A loopback HTTP endpoint that keeps every POSTed body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.end_headers()
                sink.arrived.set()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/callbacks/generate_task/tsk_1?t=token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[CallbackSink]:
    receiver = CallbackSink()
    yield receiver
    receiver.close()


# ================================================================ generate_task


def test_generate_task_async_create_then_status_to_a_downloadable_video(sim: Simulator) -> None:
    provider = adapter(sim, "generate_task")
    created = provider.create(
        video("generate_task", orientation="landscape", duration=8), task_id="t", callback_url=None
    )
    sent = recorded(sim, "generate_task", "create")[-1]["body"]
    assert sent == {
        "request_type": "async",
        "provider": "official",
        "input": {"prompt": "a lighthouse in a storm", "duration": 8, "size": "1280*720"},
    }
    status = finished(provider, created.provider_task_id)
    assert status.state is ProviderState.SUCCEEDED
    (result,) = status.results
    download = fetch(provider, result.url)
    assert download.status_code == 200
    assert download.content[4:8] == MP4_BRAND
    assert provider.result_headers(result.url) == {}


def test_generate_task_image_to_video_is_accepted(sim: Simulator) -> None:
    provider = adapter(sim, "generate_task")
    request = video("generate_task", image_url="https://img.example/cat.png", resolution="1080p", duration=12)
    created = provider.create(request, task_id="t", callback_url=None)
    assert recorded(sim, "generate_task", "create")[-1]["body"]["input"] == {
        "prompt": "a lighthouse in a storm",
        "image_urls": ["https://img.example/cat.png"],
        "duration": 12,
        "resolution": "1080p",
    }
    assert finished(provider, created.provider_task_id).state is ProviderState.SUCCEEDED


def test_generate_task_callback_is_read_as_a_hint_for_the_right_task(sim: Simulator, sink: CallbackSink) -> None:
    provider = adapter(sim, "generate_task")
    created = provider.create(video("generate_task"), task_id="tsk_1", callback_url=sink.url)
    assert recorded(sim, "generate_task", "create")[-1]["body"]["request_type"] == "callback"
    assert sink.arrived.wait(10)
    hint = provider.parse_callback(sink.bodies[0])
    assert hint.provider_task_id == created.provider_task_id
    assert hint.claimed_state == "success"
    assert provider.status(created.provider_task_id).state is ProviderState.SUCCEEDED


@pytest.mark.parametrize(
    ("directive", "code"),
    [
        ("[sim:refuse]", ErrorCode.CONTENT_POLICY),
        ("[sim:invalid_image]", ErrorCode.INVALID_IMAGE),
        ("[sim:fail]", ErrorCode.PROVIDER_FAILED),
    ],
)
def test_generate_task_failure_codes(sim: Simulator, directive: str, code: ErrorCode) -> None:
    provider = adapter(sim, "generate_task")
    created = provider.create(video("generate_task", f"a scene {directive}"), task_id="t", callback_url=None)
    status = finished(provider, created.provider_task_id)
    assert status.state is ProviderState.FAILED
    assert status.error_code is code
    assert status.error_message


@pytest.mark.parametrize(
    ("forced", "error"),
    [
        (400, ProviderRejectedRequest),
        (401, ProviderAuthError),
        (429, ProviderRateLimited),
        # A 5xx on the paid create may still have made the task: held or re-sent once, never blindly.
        (500, CreateServerError),
        (503, CreateServerError),
    ],
)
def test_generate_task_documented_http_errors_on_create(sim: Simulator, forced: int, error: type[Exception]) -> None:
    sim.configure("generate_task", force={"create": [forced]})
    with pytest.raises(error):
        adapter(sim, "generate_task").create(video("generate_task"), task_id="t", callback_url=None)


def test_generate_task_a_wrong_key_is_an_auth_error_that_does_not_show_the_key(sim: Simulator) -> None:
    with pytest.raises(ProviderAuthError) as caught:
        adapter(sim, "generate_task", key="wrong-key-123").status("gt_x")
    assert "wrong-key-123" not in str(caught.value)
    assert "check the API key" in str(caught.value)


def test_generate_task_rate_limit_and_concurrency_are_429s_with_retry_after(sim: Simulator) -> None:
    provider = adapter(sim, "generate_task")
    sim.configure("generate_task", max_concurrent=1, generation_seconds=5.0)
    provider.create(video("generate_task"), task_id="t1", callback_url=None)
    with pytest.raises(ProviderRateLimited) as concurrent:
        provider.create(video("generate_task"), task_id="t2", callback_url=None)
    assert concurrent.value.retry_after is not None and concurrent.value.retry_after >= 1
    sim.reset()
    sim.configure("generate_task", rate_limit_per_minute=1)
    with pytest.raises(ProviderTaskUnknown):
        provider.status("gt_unknown")
    with pytest.raises(ProviderRateLimited) as limited:
        provider.status("gt_unknown")
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1


def test_generate_task_unknown_task(sim: Simulator) -> None:
    with pytest.raises(ProviderTaskUnknown):
        adapter(sim, "generate_task").status("gt_does_not_exist")


def test_generate_task_a_create_whose_answer_never_comes_is_an_unknown_outcome(sim: Simulator) -> None:
    sim.configure("generate_task", create_hang_seconds=1.5)
    with pytest.raises(CreateOutcomeUnknown):
        adapter(sim, "generate_task", timeout_seconds=0.3).create(
            video("generate_task"), task_id="t", callback_url=None
        )
    assert len(sim.tasks("generate_task")) == 1  # the provider did take the job


# ================================================================ sorahk


def test_sorahk_create_status_and_download(sim: Simulator) -> None:
    provider = adapter(sim, "sorahk")
    created = provider.create(
        video("sorahk", pro=True, duration=25, orientation="landscape"), task_id="t", callback_url=None
    )
    assert recorded(sim, "sorahk", "create")[-1]["body"] == {
        "prompt": "a lighthouse in a storm",
        "is_pro": True,
        "duration": 25,
        "resolution": "horizontal",
        "quality": "high",
        "remove_watermark": True,
    }
    assert created.cost_cents == 75
    status = finished(provider, created.provider_task_id)
    assert status.state is ProviderState.SUCCEEDED
    (result,) = status.results
    assert fetch(provider, result.url).content[4:8] == MP4_BRAND


@pytest.mark.parametrize(
    "fields",
    [{}, {"duration": 15}, {"pro": True}, {"pro": True, "duration": 15}, {"model": "sora-2-pro", "duration": 25}],
)
def test_sorahk_estimated_price_is_what_the_provider_charges(sim: Simulator, fields: dict[str, Any]) -> None:
    provider = adapter(sim, "sorahk")
    assert isinstance(provider, SorahkProvider)
    request = video("sorahk", **fields)
    created = provider.create(request, task_id="t", callback_url=None)
    assert created.cost_cents == estimate_cost_cents(provider.pricing(), request)


def test_sorahk_balance_pricing_and_account(sim: Simulator) -> None:
    sim.configure("sorahk", balance=1234, normal_price=4, pro_price=40)
    provider = adapter(sim, "sorahk")
    account = provider.account()
    assert account is not None
    assert account.balance_cents == 1234
    assert account.pricing == {"normal_price": 4, "pro_price": 40, "unit": "cents"}
    assert account.currency == "USD"


def test_sorahk_preflight_refuses_before_a_paid_create(sim: Simulator) -> None:
    sim.configure("sorahk", balance=50)
    provider = adapter(sim, "sorahk")
    with pytest.raises(InsufficientBalance) as caught:
        provider.preflight(video("sorahk", pro=True, duration=25))
    assert "needs 75 cents, balance 50" in str(caught.value)
    provider.preflight(video("sorahk", pro=True))  # 30 cents: affordable
    assert recorded(sim, "sorahk", "create") == []


def test_sorahk_1012_when_the_balance_runs_out_at_create(sim: Simulator) -> None:
    sim.configure("sorahk", balance=2)
    with pytest.raises(InsufficientBalance):
        adapter(sim, "sorahk").create(video("sorahk"), task_id="t", callback_url=None)


@pytest.mark.parametrize(
    ("forced", "error", "words"),
    [
        (1001, ProviderRejectedRequest, "Invalid parameters"),
        (1012, InsufficientBalance, "Insufficient balance"),
        (401, ProviderAuthError, "check the API key"),
        (429, ProviderRateLimited, "Too many requests"),
        # A 500 on the paid create may still have made the task: looked for, never re-sent.
        (500, CreateOutcomeUnknown, "HTTP 500"),
    ],
)
def test_sorahk_documented_business_codes_on_create(
    sim: Simulator, forced: int, error: type[Exception], words: str
) -> None:
    sim.configure("sorahk", force={"create": [forced]})
    with pytest.raises(error) as caught:
        adapter(sim, "sorahk").create(video("sorahk"), task_id="t", callback_url=None)
    assert words in str(caught.value)


def test_sorahk_a_real_1001_carries_the_providers_reason(sim: Simulator) -> None:
    # The simulator checks list parameters like the provider: page_size above 100 is a 1001.
    provider = adapter(sim, "sorahk")
    assert isinstance(provider, SorahkProvider)
    with pytest.raises(ProviderRejectedRequest) as caught:
        provider.list_tasks(page_size=500)
    assert "page_size must be at most 100" in str(caught.value)


def test_sorahk_a_wrong_key_is_an_auth_error(sim: Simulator) -> None:
    with pytest.raises(ProviderAuthError):
        adapter(sim, "sorahk", key="nope").account()


@pytest.mark.parametrize(
    ("directive", "code"),
    [("[sim:refuse]", ErrorCode.CONTENT_POLICY), ("[sim:fail]", ErrorCode.PROVIDER_FAILED)],
)
def test_sorahk_failures_are_read_from_error_msg(sim: Simulator, directive: str, code: ErrorCode) -> None:
    provider = adapter(sim, "sorahk")
    created = provider.create(video("sorahk", f"a scene {directive}"), task_id="t", callback_url=None)
    status = finished(provider, created.provider_task_id)
    assert status.state is ProviderState.FAILED
    assert status.error_code is code


def test_sorahk_unknown_task(sim: Simulator) -> None:
    with pytest.raises(ProviderTaskUnknown):
        adapter(sim, "sorahk").status("00000000-0000-0000-0000-000000000000")


def test_sorahk_task_list_pages_and_filters(sim: Simulator) -> None:
    provider = adapter(sim, "sorahk")
    assert isinstance(provider, SorahkProvider)
    ids = [
        provider.create(video("sorahk", f"scene {i}"), task_id="t", callback_url=None).provider_task_id
        for i in range(3)
    ]
    finished(provider, ids[-1])
    listed = provider.list_tasks(page=1, page_size=2)
    assert [t.task_id for t in listed] == [ids[2], ids[1]]  # newest first
    assert [t.task_id for t in provider.list_tasks(page=2, page_size=2)] == [ids[0]]
    assert {t.task_id for t in provider.list_tasks(status="completed")} == set(ids)
    assert provider.list_tasks(status="failed") == []


def test_sorahk_a_lost_create_is_found_in_the_task_list(sim: Simulator) -> None:
    # Given a create the provider took but whose answer never came back
    sim.configure("sorahk", create_hang_seconds=1.5)
    provider = adapter(sim, "sorahk", timeout_seconds=0.3)
    request = video("sorahk", "a very particular prompt", duration=15)
    sent = datetime.now(UTC)
    with pytest.raises(CreateOutcomeUnknown):
        provider.create(request, task_id="tsk_lost", callback_url=None)
    # When reelay looks for it
    found = provider.find_created("tsk_lost", request, since=sent)
    # Then it is the task the provider made, and only tasks made since our send count
    (made,) = sim.tasks("sorahk")
    assert found == [made["status"]["task_id"]]
    assert provider.find_created("tsk_other", video("sorahk", "another prompt"), since=sent) == []
    assert provider.find_created("tsk_later", request, since=sent + timedelta(minutes=1)) == []


# ================================================================ openai_videos


def test_openai_videos_create_status_and_licensed_content(sim: Simulator) -> None:
    provider = adapter(sim, "openai_videos")
    created = provider.create(
        video("openai_videos", orientation="landscape", resolution="1080p", duration=15), task_id="t", callback_url=None
    )
    assert recorded(sim, "openai_videos", "create")[-1]["body"] == {
        "prompt": "a lighthouse in a storm",
        "model": "sora_video2-landscape-hd-15s",
        "watermark": False,
    }
    status = finished(provider, created.provider_task_id)
    assert status.state is ProviderState.SUCCEEDED
    (result,) = status.results
    assert result.url == sim.base_urls["openai_videos"] + f"/v1/videos/{created.provider_task_id}/content"
    download = fetch(provider, result.url)
    assert download.status_code == 200
    assert download.content[4:8] == MP4_BRAND
    assert httpx.get(result.url, timeout=10).status_code == 401  # the content needs the licence


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"orientation": "portrait", "duration": 25, "pro": True},
        {"resolution": "1080p", "pro": True},
        {"model": "sora_video2-hd-portrait-15s"},
        {"model": "sora_video"},
    ],
)
def test_openai_videos_every_model_reelay_composes_is_accepted(sim: Simulator, fields: dict[str, Any]) -> None:
    provider = adapter(sim, "openai_videos")
    provider.create(video("openai_videos", **fields), task_id="t", callback_url=None)
    assert recorded(sim, "openai_videos", "create")[-1]["status"] == 200


def test_openai_videos_remix_of_a_finished_video(sim: Simulator) -> None:
    provider = adapter(sim, "openai_videos")
    parent = provider.create(video("openai_videos"), task_id="t", callback_url=None).provider_task_id
    with pytest.raises(ProviderRejectedRequest):  # not finished yet
        provider.remix(parent, video("openai_videos", "now with a dog"))
    finished(provider, parent)
    child = provider.remix(parent, video("openai_videos", "now with a dog", orientation="landscape"))
    assert child.provider_task_id != parent
    assert recorded(sim, "openai_videos", "remix")[-1]["body"] == {
        "prompt": "now with a dog",
        "model": "sora_video2-landscape",
    }
    assert finished(provider, child.provider_task_id).state is ProviderState.SUCCEEDED
    with pytest.raises(ProviderTaskUnknown):
        provider.remix("video_unknown", video("openai_videos", "x"))


def test_openai_videos_image_generation_and_edit(sim: Simulator) -> None:
    provider = adapter(sim, "openai_videos")
    generated = provider.generate_images(
        ImageRequest(provider="openai_videos", prompt="a cat", n=2, size="1536x1024"), []
    )
    assert len(generated) == 2
    png = fetch(provider, generated[0].url).content
    assert png.startswith(PNG_MAGIC)
    edited = provider.generate_images(
        ImageRequest(provider="openai_videos", prompt="make it blue"),
        [ImageInput(filename="cat.png", content=png, content_type="image/png")],
    )
    assert len(edited) == 1
    edit_request = recorded(sim, "openai_videos", "images")[-1]
    assert edit_request["path"].endswith("/v1/images/edits")
    assert edit_request["body"]["form"] == {"prompt": "make it blue", "model": "sora_image", "n": "1"}
    assert [(f["field"], f["filename"]) for f in edit_request["body"]["files"]] == [("image[]", "cat.png")]


def test_openai_videos_image_refusal_is_a_rejected_request(sim: Simulator) -> None:
    with pytest.raises(ProviderRejectedRequest) as caught:
        adapter(sim, "openai_videos").generate_images(
            ImageRequest(provider="openai_videos", prompt="x [sim:refuse]"), []
        )
    assert caught.value.details == {"provider_code": "content_policy_violation"}


@pytest.mark.parametrize(
    ("directive", "code"),
    [("[sim:refuse]", ErrorCode.CONTENT_POLICY), ("[sim:fail]", ErrorCode.PROVIDER_FAILED)],
)
def test_openai_videos_failures(sim: Simulator, directive: str, code: ErrorCode) -> None:
    provider = adapter(sim, "openai_videos")
    created = provider.create(video("openai_videos", f"a scene {directive}"), task_id="t", callback_url=None)
    status = finished(provider, created.provider_task_id)
    assert (status.state, status.error_code) == (ProviderState.FAILED, code)


@pytest.mark.parametrize(
    ("forced", "on_create", "on_status"),
    [
        (400, ProviderRejectedRequest, ProviderRejectedRequest),
        (401, ProviderAuthError, ProviderAuthError),
        (429, ProviderRateLimited, ProviderRateLimited),
        # A 5xx on the paid create may still have made the task; on a status call it is transient.
        (500, CreateServerError, ProviderTransientError),
    ],
)
def test_openai_videos_documented_http_errors(
    sim: Simulator, forced: int, on_create: type[Exception], on_status: type[Exception]
) -> None:
    sim.configure("openai_videos", force={"create": [forced], "status": [forced]})
    provider = adapter(sim, "openai_videos")
    with pytest.raises(on_create):
        provider.create(video("openai_videos"), task_id="t", callback_url=None)
    with pytest.raises(on_status):
        provider.status("video_x")


def test_openai_videos_the_licence_is_raw_so_a_bearer_prefix_is_refused(sim: Simulator) -> None:
    with pytest.raises(ProviderAuthError):
        adapter(sim, "openai_videos", auth_prefix="Bearer ").status("video_x")
    with pytest.raises(ProviderTaskUnknown):
        adapter(sim, "openai_videos").status("video_x")


def test_adapters_are_the_registered_classes(sim: Simulator) -> None:
    assert isinstance(adapter(sim, "generate_task"), GenerateTaskProvider)
    assert isinstance(adapter(sim, "sorahk"), SorahkProvider)
    assert isinstance(adapter(sim, "openai_videos"), OpenAIVideosProvider)


def test_result_headers_of_sim_files(sim: Simulator) -> None:
    # The images' /files URLs share the simulator's origin with the API: the licence goes with them
    # there (same scheme, host and port), and never to any other origin.
    provider = adapter(sim, "openai_videos")
    assert provider.result_headers(sim.url + "/files/images/x.png") == {"Authorization": sim.api_keys["openai_videos"]}
    assert provider.result_headers("http://127.0.0.2:1/files/images/x.png") == {}
    assert provider.result_headers(sim.url.replace("http://", "https://") + "/files/images/x.png") == {}
