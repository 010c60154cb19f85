"""The official ``openai`` SDK against ``reelay dev --client-auth apikey``, once per provider forced as the route.

Each module-scoped stack runs with ``REELAY_OPENAI_MODELS`` mapping every OpenAI model name to
one provider, so the whole suite passes through generate_task (callbacks), sorahk and
openai_videos (poll path) in turn. The webhook endpoint tests (``client.webhooks``) run once, on
the generate_task stack, with a loopback receiver listed in ``REELAY_ALLOWED_WEBHOOK_HOSTS``.
Only the SDK talks to the API (``OpenAI(base_url, api_key)``); httpx is used for what the SDK
has no call for (the local gateway's `/_reelay/keys` that makes keys, reading ``/v1/tasks``) and
boto3 reads the stored objects the downloads must hash to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import E2E_ENV, Api, running_api
from tests.template_support import REPO

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROVIDERS = ("generate_task", "sorahk", "openai_videos")
# A duration each provider sells (OpenAI's own are 4, 8 and 12 s; sorahk and openai_videos sell 10).
SECONDS = {"generate_task": "4", "sorahk": "10", "openai_videos": "10"}
IMAGE_TO_VIDEO = {"generate_task", "sorahk"}
REMIX = {"openai_videos"}
CACHE_SECONDS = 2
PNG = (REPO / "devstack/reelay_sim/assets/sample.png").read_bytes()


class Stack:
    """One running stack: its API client (for the conftest's per-test reset), keys and SDK clients."""

    def __init__(self, api: Api, provider: str) -> None:
        self.api = api
        self.provider = provider
        self.url = api.env.stack.api_url
        self.alice_key = self.make_key("alice")
        self.alice = self.sdk(self.alice_key)

    def make_key(self, owner: str) -> str:
        answer = httpx.post(f"{self.url}/_reelay/keys", json={"owner": owner, "name": "e2e"}, timeout=30)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["key"])

    def sdk(self, key: str) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def stored(self, video_id: str) -> dict[str, bytes]:
        """Every object of the task in the results bucket (outputs, then previews), by key."""
        s3 = boto3.client("s3", endpoint_url=self.api.env.stack.aws_endpoint)
        bucket = self.api.env.stack.bucket
        found = {}
        for prefix in (f"tasks/{video_id}/", f"previews/{video_id}/"):
            for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
                found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def task(self, video_id: str, key: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/v1/tasks/{video_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def paid_calls(self) -> int:
        return len([r for r in self.api.env.sim.requests if r.get("kind") in ("create", "remix")])

    def video(self, **extra: Any) -> Any:
        """A finished text-to-video of this stack's provider (``create_and_poll``)."""
        return self.alice.videos.create_and_poll(
            prompt=extra.pop("prompt", "a red fox in the snow"),
            model="sora-2",
            seconds=SECONDS[self.provider],  # type: ignore[arg-type]
            size="720x1280",
            poll_interval_ms=250,
            **extra,
        )


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every delivery (path, headers, body) and answers 204."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.deliveries.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    def delivery(self, webhook_id: str, *, timeout: float = 20) -> tuple[dict[str, str], bytes]:
        """The first delivery with this ``webhook-id`` (headers, body), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, headers, body in list(self.deliveries):
                if headers.get("webhook-id") == webhook_id:
                    return headers, body
            time.sleep(0.1)
        raise AssertionError(f"no delivery {webhook_id} in {timeout} s: {[d[:2] for d in self.deliveries]}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture(scope="module", params=PROVIDERS)
def stack(request: pytest.FixtureRequest, receiver: Receiver) -> Iterator[Stack]:
    provider = str(request.param)
    routes = json.dumps({"sora-2": [provider], "sora-2-pro": [provider]})
    parameters = {"ApiKeyCacheSeconds": str(CACHE_SECONDS), "OpenaiModelRoutes": routes}
    variables = {**E2E_ENV, "REELAY_ALLOWED_WEBHOOK_HOSTS": receiver.host_port}
    with running_api(variables, client_auth="apikey", parameter_overrides=parameters) as client:
        yield Stack(client, provider)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    """The conftest's per-test simulator reset runs against this module's stack."""
    return stack.api


def test_create_and_poll_completes_and_every_variant_hashes_to_the_stored_object(stack: Stack) -> None:
    video = stack.video()

    assert (video.status, video.progress, video.model, video.seconds) == (
        "completed",
        100,
        "sora-2",
        SECONDS[stack.provider],
    )
    assert stack.alice.videos.retrieve(video.id).id == video.id
    stored = stack.stored(video.id)
    task = stack.task(video.id, stack.alice_key)
    assert task["provider"] == stack.provider and task["status"] == "succeeded"  # the same task on /v1/tasks
    video_key = task["outputs"][0]["s3_uri"].split("/", 3)[3]
    expected = {
        "video": stored[video_key],
        "thumbnail": stored[f"previews/{video.id}/thumbnail.jpg"],
        "spritesheet": stored[f"previews/{video.id}/spritesheet.jpg"],
    }
    for variant, stored_bytes in expected.items():
        downloaded = stack.alice.videos.download_content(video.id, variant=variant).content  # type: ignore[arg-type]
        assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(stored_bytes).hexdigest(), variant
    assert expected["thumbnail"][:3] == expected["spritesheet"][:3] == b"\xff\xd8\xff"  # JPEGs
    assert hashlib.sha256(expected["video"]).hexdigest() == task["outputs"][0]["sha256"]


def test_the_largest_input_reference_reelay_takes_passes_api_gateway_and_lambda_and_one_byte_more_is_a_400(
    stack: Stack,
) -> None:
    # Given the largest image reelay takes inline, 4 MiB: base64-encoded into the Lambda event it
    # is under Lambda's 6 MB (the local gateway refuses what API Gateway and Lambda would)
    largest = PNG + bytes(4 * 1024 * 1024 - len(PNG))
    if stack.provider not in IMAGE_TO_VIDEO:
        # It reaches reelay all the same (not the gateway's 413), which refuses it before a paid call
        paid = stack.paid_calls()
        with pytest.raises(openai.BadRequestError) as refused:
            stack.alice.videos.create(prompt="x", input_reference=("ref.png", largest, "image/png"))
        assert "image" in refused.value.message and stack.paid_calls() == paid
        return
    # When it is sent, the video is made from it
    assert stack.video(input_reference=("ref.png", largest, "image/png")).status == "completed"
    # And one byte more is reelay's 400 naming the field, before any paid call, not the gateway's 413
    paid = stack.paid_calls()
    with pytest.raises(openai.BadRequestError) as refused:
        stack.alice.videos.create(prompt="x", input_reference=("ref.png", largest + b"\0", "image/png"))
    assert refused.value.body["param"] == "input_reference" and "4 MiB" in refused.value.message  # type: ignore[index]
    assert stack.paid_calls() == paid


def test_image_to_video_sends_the_input_reference_through_the_callers_uploads(stack: Stack) -> None:
    if stack.provider not in IMAGE_TO_VIDEO:
        with pytest.raises(openai.BadRequestError) as refused:
            stack.video(input_reference=("ref.png", PNG, "image/png"))
        assert "image" in refused.value.message and stack.paid_calls() == 0
        return

    video = stack.video(input_reference=("ref.png", PNG, "image/png"))

    assert video.status == "completed"
    sent = json.dumps([r["body"] for r in stack.api.env.sim.requests if r.get("kind") == "create"])
    digest = hashlib.sha256(PNG).hexdigest()
    url = next(u for u in re.findall(r'"(http[^"]+)"', sent) if f"ref-{digest[:40]}.png" in u)
    assert "/uploads/" in url  # under the caller's own uploads prefix
    assert httpx.get(url, timeout=30).content == PNG  # the provider can fetch exactly the uploaded image


def test_list_pages_newest_first_and_asc_oldest_first(stack: Stack) -> None:
    made = [stack.alice.videos.create(prompt=f"page {i}", seconds=SECONDS[stack.provider]).id for i in range(3)]  # type: ignore[arg-type]

    first = stack.alice.videos.list(limit=2)
    everything = [v.id for v in stack.alice.videos.list(limit=2)]  # the SDK follows after=last_id
    oldest = stack.alice.videos.list(limit=2, order="asc")

    assert [v.id for v in first.data] == made[::-1][:2] and first.has_more is True
    assert everything[:3] == made[::-1] and len(everything) == len(set(everything))
    assert [v.id for v in oldest.data] == everything[::-1][:2]
    stack.api.env.stack.drain(timeout=60, executions=True)


def test_remix_goes_to_the_parents_provider_or_is_a_bad_request_before_any_paid_call(stack: Stack) -> None:
    parent = stack.video()
    paid = stack.paid_calls()

    if stack.provider not in REMIX:
        with pytest.raises(openai.BadRequestError) as refused:
            stack.alice.videos.remix(parent.id, prompt="now at night")
        assert "cannot remix" in refused.value.message and stack.paid_calls() == paid
        return
    remix = stack.alice.videos.remix(parent.id, prompt="now at night")
    done = stack.alice.videos.poll(remix.id, poll_interval_ms=250)

    assert done.status == "completed" and done.remixed_from_video_id == parent.id
    assert stack.task(done.id, stack.alice_key)["provider"] == stack.provider


def test_delete_removes_the_stored_outputs_and_the_video(stack: Stack) -> None:
    video = stack.video()
    assert len(stack.stored(video.id)) == 3  # video, thumbnail, spritesheet

    deleted = stack.alice.videos.delete(video.id)

    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    assert stack.stored(video.id) == {}
    with pytest.raises(openai.NotFoundError):
        stack.alice.videos.retrieve(video.id)
    assert video.id not in [v.id for v in stack.alice.videos.list(limit=100)]


def test_a_request_no_route_can_serve_is_a_bad_request_naming_what_is_possible(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        stack.alice.videos.create(prompt="too long", seconds="30")  # type: ignore[arg-type]

    assert refused.value.status_code == 400 and stack.paid_calls() == 0
    assert stack.provider in refused.value.message and "seconds" in refused.value.message
    assert refused.value.body["code"] == "no_route"  # type: ignore[index]


def test_a_wrong_key_is_an_authentication_error_and_a_revoked_one_within_the_cache_lifetime(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        stack.sdk("rk-" + "A" * 43).videos.list()
    with pytest.raises(openai.AuthenticationError):
        stack.sdk("not-a-key").videos.list()

    made = subprocess.run(
        [str(Path(sys.executable).parent / "reelay"), "keys", "create", "--owner", "carol"],
        env={**os.environ, "REELAY_API_URL": stack.url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = made.stdout.strip()
    carol = stack.sdk(key)
    carol.videos.list()
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "reelay"), "--api-url", stack.url, "keys", "list", "--owner", "carol"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key_id = listed.stdout.split("\t")[0]
    revoked_at = time.monotonic()
    assert httpx.delete(f"{stack.url}/_reelay/keys/{key_id}", timeout=30).status_code == 200
    while True:
        try:
            carol.videos.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 1, "a revoked key still worked past the cache lifetime"
        time.sleep(0.1)


def test_another_owners_video_is_not_found(stack: Stack) -> None:
    video = stack.alice.videos.create(prompt="alice's", seconds=SECONDS[stack.provider])  # type: ignore[arg-type]
    bob = stack.sdk(stack.make_key("bob"))

    with pytest.raises(openai.NotFoundError):
        bob.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        bob.videos.download_content(video.id)
    with pytest.raises(openai.NotFoundError):
        bob.videos.delete(video.id)
    assert video.id not in [v.id for v in bob.videos.list()]
    stack.api.env.stack.drain(timeout=60, executions=True)


def test_an_idempotency_key_replays_the_same_fields_and_refuses_other_ones(stack: Stack) -> None:
    headers = {"Idempotency-Key": f"e2e-{stack.provider}-{time.time_ns()}"}
    ask: dict[str, Any] = {"prompt": "once", "seconds": SECONDS[stack.provider], "extra_headers": headers}
    if stack.provider in IMAGE_TO_VIDEO:  # a multipart body with a file: its bytes differ per send (boundary)
        ask["input_reference"] = ("ref.png", PNG, "image/png")

    first = stack.alice.videos.create(**ask)
    again = stack.alice.videos.with_raw_response.create(**ask)
    with pytest.raises(openai.ConflictError):
        stack.alice.videos.create(**{**ask, "prompt": "twice"})

    assert again.parse().id == first.id and again.headers["idempotent-replayed"] == "true"
    stack.api.env.stack.drain(timeout=60, executions=True)
    assert stack.paid_calls() == 1


# -- webhook endpoints (client.webhooks): once, on the generate_task stack ----------------------

ONCE = pytest.mark.parametrize("stack", ["generate_task"], indirect=True)


def _event_id(video_id: str) -> str:
    return "evt_" + video_id.removeprefix("tsk_")


@ONCE
def test_a_videos_event_reaches_the_endpoint_and_verifies_with_its_signing_secret(
    stack: Stack, receiver: Receiver
) -> None:
    # Given an endpoint registered through the SDK, on a loopback receiver
    endpoint = stack.alice.webhooks.create(
        url=receiver.url("/videos"), name="e2e", event_types=["video.completed", "video.failed"]
    )
    # When a video completes and another fails
    video = stack.video()
    failed = stack.video(prompt="a storm at sea [sim:fail]")
    assert (video.status, failed.status) == ("completed", "failed")
    # Then each event is delivered, verified by the SDK with the endpoint's secret, in OpenAI's shape
    for made, event_type in ((video, "video.completed"), (failed, "video.failed")):
        headers, body = receiver.delivery(_event_id(made.id))
        stack.alice.webhooks.verify_signature(body, headers, secret=endpoint.signing_secret)
        event = stack.alice.webhooks.unwrap(body, headers, secret=endpoint.signing_secret)
        assert (event.type, event.data.id, event.object) == (event_type, made.id, "event")
        assert json.loads(body)["id"] == headers["webhook-id"]
        with pytest.raises(openai.InvalidWebhookSignatureError):
            stack.alice.webhooks.verify_signature(body, headers, secret="whsec_" + "QUJD" * 11)
    shown = stack.task(video.id, stack.alice_key)["webhook_endpoints"]
    assert [(d["endpoint_id"], d["outcome"]) for d in shown] == [(endpoint.id, "delivered")]
    stack.alice.webhooks.delete(endpoint.id)


@ONCE
def test_endpoints_are_listed_retrieved_updated_rotated_tested_and_deleted_through_the_sdk(
    stack: Stack, receiver: Receiver
) -> None:
    made = stack.alice.webhooks.create(url=receiver.url("/manage"), name="first", event_types=["video.completed"])
    assert made.id in [e.id for e in stack.alice.webhooks.list()]
    assert stack.alice.webhooks.retrieve(made.id).name == "first"

    changed = stack.alice.webhooks.update(made.id, name="second", event_types=["video.failed"])
    assert (changed.name, changed.event_types, changed.url) == ("second", ["video.failed"], made.url)
    rotated = stack.alice.webhooks.rotate_secret(made.id, keep_old_secret_active_for_24_hours=True)
    result = stack.alice.webhooks.test(made.id, event_type="video.failed")

    assert (result.success, result.status_code, result.webhook_endpoint_id) == (True, 204, made.id)
    _, headers, body = next(d for d in receiver.deliveries if d[0] == "/manage")
    assert json.loads(body)["type"] == "video.failed"
    for secret in (made.signing_secret, rotated.signing_secret):  # the old one is kept for 24 h
        stack.alice.webhooks.verify_signature(body, headers, secret=secret)
    with pytest.raises(openai.NotFoundError):
        stack.sdk(stack.make_key("bob")).webhooks.retrieve(made.id)
    with pytest.raises(openai.BadRequestError):
        stack.alice.webhooks.create(url="http://10.0.0.7/x", name="private", event_types=["video.failed"])
    assert stack.alice.webhooks.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        stack.alice.webhooks.retrieve(made.id)
