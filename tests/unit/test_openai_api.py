"""The OpenAI-shaped routes, driven by the official ``openai`` SDK in-process (no network).

The SDK's HTTP client gets a ``MockTransport`` that turns each request into an API Gateway v2
event for the real resolver (``reelay.api.build_app``) and its answer back into a response; a
redirect to a presigned S3 URL is served from moto. Providers are the real adapters (their
``validate`` needs no network); the key owner comes from a Lambda authorizer context.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx2
import openai
import pytest
from openai import OpenAI
from pydantic import SecretStr

from reelay.api import build_app
from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import ConfigurationError, NoRouteForModel
from reelay.media import preview_key
from reelay.models import ErrorCode, Output, TaskError, TaskStatus
from reelay.models_map import ModelMap, VideoAsk
from reelay.openai_api import VideoService, parse_create, video_object
from reelay.providers.base import ProviderConfig
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tokens import CursorSigner
from tests.template_support import REPO
from tests.unit.conftest import drain, load_event

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PNG = (REPO / "devstack/reelay_sim/assets/sample.png").read_bytes()
MP4 = (REPO / "devstack/reelay_sim/assets/sample.mp4").read_bytes()
API = "https://api.reelay.test"


class _Ctx:
    function_name = "api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"


class Bridge:
    """The SDK's transport: API requests to the resolver as API Gateway events; S3 URLs to moto."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.owner = "alice"
        self.redirected: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host != urlsplit(API).hostname:
            self.redirected.append(request)
            bucket = request.url.host.split(".")[0]
            data = boto3.client("s3").get_object(Bucket=bucket, Key=request.url.path.lstrip("/"))["Body"].read()
            return httpx2.Response(200, content=data)
        event = load_event("api_get_task.json")
        body = request.read()
        event.update(
            rawPath=request.url.path,
            rawQueryString=request.url.query.decode() if isinstance(request.url.query, bytes) else request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=base64.b64encode(body).decode() if body else None,
            isBase64Encoded=bool(body),
        )
        event.pop("pathParameters", None)
        query = dict(httpx2.QueryParams(event["rawQueryString"]))
        event["queryStringParameters"] = query or None
        event["requestContext"]["http"].update(method=request.method, path=request.url.path)
        event["requestContext"]["authorizer"] = {"lambda": {"owner": self.owner, "key_id": "key_x"}}
        out = self.app.resolve(event, _Ctx())
        content = base64.b64decode(out["body"]) if out.get("isBase64Encoded") else str(out["body"]).encode()
        return httpx2.Response(out["statusCode"], headers=out.get("headers") or {}, content=content)


def _configs() -> list[ProviderConfig]:
    return [
        ProviderConfig(name=n, protocol=n, base_url=f"https://{n}.example", api_key=SecretStr("k"))
        for n in ("generate_task", "sorahk", "openai_videos")
    ]


@pytest.fixture
def world(aws: dict[str, str]) -> Iterator[dict[str, Any]]:
    configs = _configs()
    catalog = ProviderCatalog(tuple(configs))
    store = DynamoTaskStore("tasks")
    bucket = ResultBucket("results")
    tasks = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), bucket, cursors=CursorSigner(b"c" * 32))
    models = ModelMap.from_config(catalog, "", [c.name for c in configs])
    videos = VideoService(tasks, store, bucket, catalog, models, inline_max_bytes=64 * 1024)
    app = build_app(lambda: tasks, configs, videos=lambda: videos)
    bridge = Bridge(app)
    client = OpenAI(
        base_url=f"{API}/v1",
        api_key="rk-test",
        max_retries=0,
        # The SDK's own default client (it follows redirects), on a transport that is the resolver.
        http_client=openai.DefaultHttpxClient(transport=httpx2.MockTransport(bridge)),
    )
    yield {"sdk": client, "bridge": bridge, "store": store, "videos": videos, "aws": aws, "catalog": catalog}


def _finish(world: dict[str, Any], video_id: str, *, with_previews: bool = True) -> None:
    """Move a task to succeeded with a stored MP4 (and previews), as ingest would."""
    store, s3 = world["store"], boto3.client("s3")
    key = f"tasks/{video_id}/output-0.mp4"
    s3.put_object(Bucket="results", Key=key, Body=MP4, ContentType="video/mp4")
    if with_previews:
        for variant in ("thumbnail", "spritesheet"):
            s3.put_object(Bucket="results", Key=preview_key(video_id, variant), Body=variant.encode() * 10)
    output = Output(
        key=key,
        s3_uri=f"s3://results/{key}",
        bytes=len(MP4),
        sha256=hashlib.sha256(MP4).hexdigest(),
        content_type="video/mp4",
    )
    task = store.update(store.get(video_id), provider_task_id="p1")
    task = store.transition(task, TaskStatus.INGESTING, reason="test")
    store.transition(task, TaskStatus.SUCCEEDED, reason="test", outputs=[output], progress=100)


def test_the_sdk_creates_a_queued_video_routed_to_the_first_capable_provider(world: dict[str, Any]) -> None:
    video = world["sdk"].videos.create(prompt="a fox", model="sora-2", seconds="8", size="1280x720")

    task = world["store"].get(video.id)
    assert (video.object, video.status, video.model, video.seconds, video.size) == (
        "video",
        "queued",
        "sora-2",
        "8",
        "1280x720",
    )
    assert task.provider == "generate_task" and task.request["orientation"] == "landscape"
    assert [m["task_id"] for m in drain(world["aws"]["SUBMIT_QUEUE_URL"])] == [video.id]


def test_model_and_seconds_pick_the_provider_that_can_serve_them(world: dict[str, Any]) -> None:
    pro = world["sdk"].videos.create(prompt="long", model="sora-2-pro-2025-10-06", seconds="25")

    task = world["store"].get(pro.id)
    assert task.provider == "sorahk" and task.request["pro"] is True and task.request["duration"] == 25
    assert pro.model == "sora-2-pro" and pro.seconds == "25"


def test_a_request_no_provider_can_serve_is_a_400_in_openais_shape_and_nothing_is_stored(
    world: dict[str, Any],
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        world["sdk"].videos.create(prompt="x", seconds="7")
    with pytest.raises(openai.BadRequestError) as unknown_model:
        world["sdk"].videos.create(prompt="x", model="veo-3")

    body = refused.value.body
    assert body["code"] == "no_route" and body["type"] == "invalid_request_error"  # type: ignore[index]
    for name in ("generate_task", "sorahk", "openai_videos", "4, 8, 12", "10, 15"):
        assert name in refused.value.message
    assert "sora-2" in unknown_model.value.message
    assert world["store"].list(owner="alice", status=None, provider=None, limit=10)[0] == []
    assert drain(world["aws"]["SUBMIT_QUEUE_URL"]) == []


def test_an_input_reference_is_stored_under_the_callers_uploads_and_sent_as_a_presigned_url(
    world: dict[str, Any],
) -> None:
    video = world["sdk"].videos.create(prompt="animate", seconds="4", input_reference=("r.png", PNG, "image/png"))

    task = world["store"].get(video.id)
    url = urlsplit(task.request["image_url"])
    key = url.path.lstrip("/")
    assert key.startswith("uploads/") and key.endswith(f"ref-{hashlib.sha256(PNG).hexdigest()[:40]}.png")
    assert "X-Amz-Signature=" in url.query and "orientation" not in task.request
    assert boto3.client("s3").get_object(Bucket="results", Key=key)["Body"].read() == PNG


def test_an_input_reference_that_is_not_an_image_is_refused_and_openai_videos_cannot_animate(
    world: dict[str, Any],
) -> None:
    with pytest.raises(openai.BadRequestError) as not_image:
        world["sdk"].videos.create(prompt="x", input_reference=("r.png", b"<html>", "image/png"))
    with pytest.raises(openai.BadRequestError) as no_route:
        world["sdk"].videos.create(prompt="x", seconds="25", input_reference=("r.png", PNG, "image/png"))

    assert not_image.value.body["param"] == "input_reference"  # type: ignore[index]
    assert "openai_videos cannot make a video from an image" in no_route.value.message
    assert not list(boto3.client("s3").list_objects_v2(Bucket="results").get("Contents", []))  # nothing stored


def test_an_idempotency_key_compares_the_parsed_fields_not_the_multipart_bytes(world: dict[str, Any]) -> None:
    sdk, key = world["sdk"], {"Idempotency-Key": "k-1"}
    first = sdk.videos.create(
        prompt="same", seconds="4", input_reference=("a.png", PNG, "image/png"), extra_headers=key
    )
    # Another file name and a fresh multipart boundary: the same fields and image bytes.
    again = sdk.videos.with_raw_response.create(
        prompt="same", seconds="4", input_reference=("b.png", PNG, "image/png"), extra_headers=key
    )

    with pytest.raises(openai.ConflictError):
        sdk.videos.create(prompt="other", seconds="4", extra_headers=key)
    assert again.parse().id == first.id and again.headers["idempotent-replayed"] == "true"
    assert len(drain(world["aws"]["SUBMIT_QUEUE_URL"])) == 1


def test_retrieve_shows_openai_status_words_progress_and_errors(world: dict[str, Any]) -> None:
    sdk, store = world["sdk"], world["store"]
    running = sdk.videos.create(prompt="r", seconds="4")
    failed = sdk.videos.create(prompt="f", seconds="4")
    store.transition(store.get(running.id), TaskStatus.RUNNING, reason="t", progress=42)
    task = store.get(failed.id)
    store.transition(
        task, TaskStatus.FAILED, reason="t", error=TaskError(code=ErrorCode.CONTENT_POLICY, message="refused")
    )

    shown_running, shown_failed = sdk.videos.retrieve(running.id), sdk.videos.retrieve(failed.id)

    assert (shown_running.status, shown_running.progress) == ("in_progress", 42)
    assert shown_failed.status == "failed" and shown_failed.completed_at is not None
    assert shown_failed.error is not None and shown_failed.error.code == "CONTENT_POLICY"


def test_download_content_serves_reelays_copy_inline_or_by_redirect_without_the_key(world: dict[str, Any]) -> None:
    sdk, bridge = world["sdk"], world["bridge"]
    video = sdk.videos.create(prompt="v", seconds="4")
    _finish(world, video.id)

    inline = sdk.videos.download_content(video.id).content  # 24 KB: under this test's 64 KB inline limit
    thumb = sdk.videos.download_content(video.id, variant="thumbnail").content
    world["videos"]._inline_max = 1  # now everything is a redirect to a presigned URL
    redirected = sdk.videos.download_content(video.id, variant="video").content

    assert inline == MP4 == redirected and thumb == b"thumbnail" * 10
    assert len(bridge.redirected) == 1 and "X-Amz-Signature" in str(bridge.redirected[0].url)
    assert "authorization" not in {k.lower() for k in bridge.redirected[0].headers}  # the key stays with reelay


def test_a_missing_variant_and_an_unfinished_video_are_not_found(world: dict[str, Any]) -> None:
    sdk = world["sdk"]
    pending = sdk.videos.create(prompt="p", seconds="4")
    done = sdk.videos.create(prompt="d", seconds="4")
    _finish(world, done.id, with_previews=False)

    with pytest.raises(openai.NotFoundError):
        sdk.videos.download_content(pending.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.download_content(done.id, variant="spritesheet")
    with pytest.raises(openai.BadRequestError):
        sdk.videos.download_content(done.id, variant="poster")  # type: ignore[arg-type]


def test_list_pages_with_after_limit_and_order_and_skips_deleted_videos(world: dict[str, Any]) -> None:
    sdk = world["sdk"]
    made = [sdk.videos.create(prompt=f"{i}", seconds="4").id for i in range(5)]
    _finish(world, made[2])
    sdk.videos.delete(made[2])

    page = sdk.videos.list(limit=2)
    everything = [v.id for v in sdk.videos.list(limit=2)]
    ascending = [v.id for v in sdk.videos.list(limit=3, order="asc")]
    after = sdk.videos.list(after=made[3], limit=10)

    expected = [made[4], made[3], made[1], made[0]]
    assert [v.id for v in page.data] == expected[:2] and page.has_more and page.last_id == made[3]
    assert everything == expected and ascending == expected[::-1]
    assert [v.id for v in after.data] == expected[2:] and after.has_more is False


def test_delete_removes_outputs_and_previews_and_only_a_finished_video_can_go(world: dict[str, Any]) -> None:
    sdk, store = world["sdk"], world["store"]
    pending = sdk.videos.create(prompt="p", seconds="4")
    done = sdk.videos.create(prompt="d", seconds="4")
    _finish(world, done.id)

    with pytest.raises(openai.BadRequestError):
        sdk.videos.delete(pending.id)
    gone = sdk.videos.delete(done.id)

    assert gone.deleted and gone.object == "video.deleted"
    s3 = boto3.client("s3")
    listed = [
        s3.list_objects_v2(Bucket="results", Prefix=f"{p}/{done.id}/").get("Contents", [])
        for p in ("tasks", "previews")
    ]
    assert listed == [[], []] and store.get(done.id).deleted_at is not None and store.get(done.id).outputs == []
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(done.id)


def test_remix_goes_to_the_parents_provider_or_is_a_400(world: dict[str, Any]) -> None:
    sdk = world["sdk"]
    openai_parent = sdk.videos.create(prompt="p", seconds="15")  # only openai_videos... and sorahk sell 15 s
    generate_parent = sdk.videos.create(prompt="g", seconds="4")
    for video in (openai_parent, generate_parent):
        _finish(world, video.id)
    provider = world["store"].get(openai_parent.id).provider

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.videos.remix(generate_parent.id, prompt="again")
    assert "cannot remix" in refused.value.message
    if provider == "openai_videos":
        remix = sdk.videos.remix(openai_parent.id, prompt="again")
        assert remix.remixed_from_video_id == openai_parent.id


def test_another_owners_video_is_not_found(world: dict[str, Any]) -> None:
    sdk, bridge = world["sdk"], world["bridge"]
    video = sdk.videos.create(prompt="mine", seconds="4")
    bridge.owner = "bob"

    # Every route answers as for a video that does not exist, in OpenAI's word for it
    calls = [
        lambda: sdk.videos.retrieve(video.id),
        lambda: sdk.videos.remix(video.id, prompt="x"),
        lambda: sdk.videos.download_content(video.id),
        lambda: sdk.videos.delete(video.id),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.message.endswith(f"video {video.id} not found"), missing.value.message
    assert sdk.videos.list().data == []


def test_bad_bodies_are_400s_naming_the_field(world: dict[str, Any]) -> None:
    def parsed(body: dict[str, Any]) -> Any:
        event = {"headers": {"content-type": "application/json"}, "body": json.dumps(body)}
        return parse_create(event)

    for body, field in (
        ({"prompt": " "}, "prompt"),
        ({"prompt": "x", "seconds": "4.5"}, "seconds"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "model": "m" * 200}, "model"),
    ):
        with pytest.raises(Exception) as refused:
            parsed(body)
        assert getattr(refused.value, "field", None) == field, body
    assert parsed({"prompt": "x", "seconds": 8}).seconds == 8


def test_the_model_map_reads_its_configuration_and_resolves_dated_aliases() -> None:
    catalog = ProviderCatalog(tuple(_configs()))
    models = ModelMap.from_config(catalog, '{"sora-2-pro": ["openai_videos", "sorahk"]}', ["sorahk"])

    assert models.family("sora-2-2025-12-08") == "sora-2" and models.family("sora-2-pro-2025-10-06") == "sora-2-pro"
    assert models.candidates("sora-2-pro-2025-10-06") == ("openai_videos", "sorahk")
    assert models.candidates("sora-2") == ("sorahk", "generate_task", "openai_videos")
    routes = models.routes(VideoAsk(prompt="x", model="sora-2-pro", seconds=25))
    assert [r.provider for r in routes] == ["openai_videos", "sorahk"]
    with pytest.raises(NoRouteForModel):
        models.route(VideoAsk(prompt="x", model="sora-2-pro", seconds=4))
    for bad in ("not json", '["sorahk"]', '{"sora-2": ["nowhere"]}'):
        with pytest.raises(ConfigurationError):
            ModelMap.from_config(catalog, bad, [])


def test_the_video_object_is_reusable_as_a_webhook_payload(world: dict[str, Any]) -> None:
    video = world["sdk"].videos.create(prompt="hook", seconds="4")
    _finish(world, video.id)

    payload = video_object(world["store"].get(video.id), world["catalog"]).model_dump(mode="json")

    assert payload["id"] == video.id and payload["status"] == "completed" and payload["progress"] == 100
    assert payload["object"] == "video" and isinstance(payload["completed_at"], int)


def test_hostile_bodies_are_400s_never_500s(world: dict[str, Any]) -> None:
    deep = "[" * 5000 + "]" * 5000
    cases = [
        ("application/json", deep.encode()),
        ("application/json", b"\xff\xfe{"),
        ("multipart/form-data", b"--x\r\n\r\n"),  # no boundary parameter
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="evil"\r\n\r\n1\r\n--x--'),
        ("text/plain", b"prompt=x"),
    ]
    for content_type, body in cases:
        request = httpx2.Request("POST", f"{API}/v1/videos", headers={"Content-Type": content_type}, content=body)
        answer = world["bridge"](request)  # raw bytes, as no SDK would send them
        assert answer.status_code == 400, (content_type, body[:40], answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
