"""The openai_videos adapter against its wire format (seed 001, /tmp/wire.md)."""

from __future__ import annotations

from typing import Any

import pytest

from reelay.errors import (
    CreateOutcomeUnknown,
    CreateServerError,
    ProviderAuthError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    RequestInvalid,
)
from reelay.models import ErrorCode, ImageRequest, VideoRequest
from reelay.providers.base import ImageInput, ProviderState
from reelay.providers.openai_videos import OpenAIVideosProvider, parse_video_model
from reelay.providers.registry import provider_config
from tests.unit.provider_wire import SECRET, ProviderWire, body_of, fields_of, files_of, read_timeout

BASE = "http://10.0.0.5:8080/sora"


def provider(wire: ProviderWire) -> OpenAIVideosProvider:
    return OpenAIVideosProvider(provider_config("ov", "openai_videos", BASE, SECRET), transport=wire.transport)


def request(**fields: Any) -> VideoRequest:
    return VideoRequest(provider="ov", prompt=fields.pop("prompt", "画小猫"), **fields)


def video(status: str = "queued", video_id: str = "video_1", **fields: Any) -> dict[str, Any]:
    body = {
        "id": video_id,
        "object": "video",
        "model": "sora_video2",
        "status": status,
        "progress": 0,
        "created_at": 1760875200,
        "completed_at": None,
        "seconds": "10",
        "size": "720x1280",
        "remixed_from_video_id": None,
        "error": None,
    }
    return body | fields


def error(message: str, code: str = "invalid_request", kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


# ---------------------------------------------------------------- the model string


@pytest.mark.parametrize(
    ("fields", "model"),
    [
        ({}, "sora_video2"),
        ({"duration": 10}, "sora_video2"),
        ({"orientation": "portrait"}, "sora_video2-portrait"),
        ({"orientation": "landscape"}, "sora_video2-landscape"),
        ({"orientation": "landscape", "resolution": "1080p"}, "sora_video2-landscape-hd"),
        ({"resolution": "720p"}, "sora_video2"),
        ({"orientation": "portrait", "resolution": "1080p", "duration": 15}, "sora_video2-portrait-hd-15s"),
        ({"duration": 25}, "sora_video2-25s"),
        ({"duration": 25, "pro": True}, "sora_video2-25s-pro"),
        ({"pro": True, "resolution": "1080p"}, "sora_video2-hd-pro"),
        # An explicit model is sent as given when it agrees with the fields.
        ({"model": "sora_video2-hd-portrait-15s"}, "sora_video2-hd-portrait-15s"),
        (
            {"model": "sora_video2-hd-portrait-15s", "duration": 15, "orientation": "portrait", "resolution": "1080p"},
            "sora_video2-hd-portrait-15s",
        ),
        ({"model": "sora_video2-landscape-hd"}, "sora_video2-landscape-hd"),
        ({"model": "sora_video2-pro-25s", "pro": True}, "sora_video2-pro-25s"),
        ({"model": "sora_video2", "orientation": "portrait", "duration": 10}, "sora_video2"),
        ({"model": "sora_video"}, "sora_video"),
    ],
)
def test_the_model_string_is_composed_from_the_fields(fields: dict[str, Any], model: str) -> None:
    # Given a valid request
    wire = ProviderWire().json("POST", "/sora/v1/videos", video())
    adapter = provider(wire)
    adapter.validate(request(**fields))
    # When it is created
    adapter.create(request(**fields), task_id="tsk_1", callback_url=None)
    # Then the model carries its options, and the watermark is off unless asked for
    assert body_of(wire.only()) == {"prompt": "画小猫", "model": model, "watermark": False}


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"duration": 12}, "duration", "10, 15, 25"),
        ({"duration": 25, "resolution": "1080p"}, "resolution", "no 1080p (hd) for 25 s"),
        ({"image_url": "https://img.example/a.png"}, "image_url", "cannot make a video from an image"),
        ({"model": "sora_video2-hd-25s"}, "model", "no 1080p (hd) for 25 s"),
        ({"model": "sora_video2-portrait-landscape"}, "model", "two orientations"),
        ({"model": "sora_video2-15s-25s"}, "model", "two durations"),
        ({"model": "sora_video2-hd-hd"}, "model", "repeats 'hd'"),
        ({"model": "sora_video2-4k"}, "model", "portrait, landscape, hd, 15s, 25s, pro"),
        ({"model": "sora_video2-10s"}, "model", "unknown suffix '10s'"),
        ({"model": "sora_image"}, "model", "makes images"),
        ({"model": "sora_video-landscape"}, "model", "'sora_video2' with suffixes"),
        ({"model": "dall-e-3"}, "model", "got 'dall-e-3'"),
        ({"model": "sora_video2-landscape", "orientation": "portrait"}, "model", "contradicts orientation portrait"),
        ({"model": "sora_video2", "orientation": "landscape"}, "model", "contradicts orientation landscape"),
        ({"model": "sora_video2-hd", "resolution": "720p"}, "model", "contradicts resolution 720p"),
        ({"model": "sora_video2", "resolution": "1080p"}, "model", "contradicts resolution 1080p"),
        ({"model": "sora_video2-15s", "duration": 25}, "model", "contradicts duration 25"),
        ({"model": "sora_video2", "duration": 15}, "model", "contradicts duration 15"),
        ({"model": "sora_video2-landscape", "pro": True}, "model", "contradicts pro"),
    ],
)
def test_what_openai_videos_cannot_do_is_refused_before_any_call(
    fields: dict[str, Any], field: str, words: str
) -> None:
    wire = ProviderWire()
    adapter = provider(wire)
    with pytest.raises(RequestInvalid) as caught:
        adapter.validate(request(**fields))
    with pytest.raises(RequestInvalid):
        adapter.create(request(**fields), task_id="tsk_1", callback_url=None)
    assert caught.value.field == field
    assert words in caught.value.message
    assert wire.requests == []


def test_a_parsed_model_names_its_options() -> None:
    parsed = parse_video_model("sora_video2-hd-portrait-15s")
    assert (parsed.orientation, parsed.hd, parsed.duration, parsed.pro) == ("portrait", True, 15, False)
    assert parsed.name == "sora_video2-portrait-hd-15s"


def test_capabilities_describe_the_protocol() -> None:
    caps = provider(ProviderWire()).capabilities()
    assert caps.callbacks is False
    assert caps.durations == [10, 15, 25]
    assert caps.default_duration == 10
    assert "remix" in caps.modes
    assert "images" in caps.modes
    assert "image-to-video" not in caps.modes


# ---------------------------------------------------------------- create


def test_create_sends_the_raw_licence_and_returns_the_video_id() -> None:
    wire = ProviderWire().json("POST", "/sora/v1/videos", video("queued", "video_abc"))
    result = provider(wire).create(request(watermark=True), task_id="tsk_1", callback_url=None)
    sent = wire.only()
    assert str(sent.url) == BASE + "/v1/videos"
    assert sent.headers["authorization"] == SECRET  # no Bearer prefix
    assert body_of(sent)["watermark"] is True
    assert result.provider_task_id == "video_abc"
    assert result.initial_state is ProviderState.PENDING
    assert result.cost_cents is None


def test_a_create_answered_in_progress_starts_running() -> None:
    wire = ProviderWire().json("POST", "/sora/v1/videos", video("in_progress"))
    assert provider(wire).create(request(), task_id="t", callback_url=None).initial_state is ProviderState.RUNNING


@pytest.mark.parametrize("answer", [{"object": "video", "status": "queued"}, {"id": ""}, []])
def test_an_accepted_create_without_an_id_is_a_protocol_error(answer: Any) -> None:
    wire = ProviderWire().json("POST", "/sora/v1/videos", answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)


@pytest.mark.parametrize(
    ("http_status", "body", "error_type", "words"),
    [
        (400, error("invalid model sora_video2-hd-25s"), ProviderRejectedRequest, "invalid model sora_video2-hd-25s"),
        (401, error("invalid licence", "invalid_api_key", "authentication_error"), ProviderAuthError, "check"),
        (429, error("slow down", "rate_limit_exceeded", "rate_limit_error"), ProviderRateLimited, "slow down"),
        (500, error("internal", "server_error", "server_error"), CreateServerError, "internal"),
        (503, error("overloaded", "server_error", "server_error"), CreateServerError, "overloaded"),
    ],
)
def test_each_documented_error_of_a_create(
    http_status: int, body: dict[str, Any], error_type: type[Exception], words: str
) -> None:
    wire = ProviderWire().json("POST", "/sora/v1/videos", body, http_status)
    with pytest.raises(error_type) as caught:
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)
    assert words in str(caught.value)


def test_a_rejected_create_keeps_the_providers_error_code() -> None:
    wire = ProviderWire().json("POST", "/sora/v1/videos", error("bad model", "invalid_model"), 400)
    with pytest.raises(ProviderRejectedRequest) as caught:
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)
    assert caught.value.details == {"provider_code": "invalid_model"}


# ---------------------------------------------------------------- status and content


@pytest.mark.parametrize(
    ("status_word", "state", "progress"),
    [("queued", ProviderState.PENDING, 0), ("in_progress", ProviderState.RUNNING, 63)],
)
def test_videos_in_flight(status_word: str, state: ProviderState, progress: int) -> None:
    wire = ProviderWire().json("GET", "/sora/v1/videos/video_1", video(status_word, progress=progress))
    status = provider(wire).status("video_1")
    assert (status.state, status.progress, status.raw_state, status.results) == (state, progress, status_word, [])


def test_a_completed_video_points_at_its_content_which_needs_the_licence() -> None:
    # Given a completed video
    wire = ProviderWire().json("GET", "/sora/v1/videos/video_1", video("completed", progress=100))
    adapter = provider(wire)
    # When its status is asked
    status = adapter.status("video_1")
    # Then its result is the content endpoint on the provider's own origin, fetched with the licence
    assert status.state is ProviderState.SUCCEEDED
    assert [(r.url, r.content_type) for r in status.results] == [(f"{BASE}/v1/videos/video_1/content", "video/mp4")]
    assert adapter.content_url("video_1") == f"{BASE}/v1/videos/video_1/content"
    assert adapter.result_headers(status.results[0].url) == {"Authorization": SECRET}


@pytest.mark.parametrize(
    ("err", "code", "message"),
    [
        ({"code": "content_policy_violation", "message": "blocked by policy"}, ErrorCode.CONTENT_POLICY, "blocked"),
        ({"code": "moderation", "message": "flagged"}, ErrorCode.CONTENT_POLICY, "flagged"),
        ({"code": "generation_failed", "message": "worker died"}, ErrorCode.PROVIDER_FAILED, "worker died"),
        ({"code": "timeout"}, ErrorCode.PROVIDER_FAILED, "timeout"),
        ("something broke", ErrorCode.PROVIDER_FAILED, "something broke"),
        (None, ErrorCode.PROVIDER_FAILED, None),
    ],
)
def test_a_failed_video_maps_its_error_code(err: Any, code: ErrorCode, message: str | None) -> None:
    wire = ProviderWire().json("GET", "/sora/v1/videos/video_1", video("failed", error=err))
    status = provider(wire).status("video_1")
    assert status.state is ProviderState.FAILED
    assert status.error_code is code
    assert status.error_message == message if message is None else message in str(status.error_message)


def test_an_unknown_video_is_reported_as_unknown() -> None:
    wire = ProviderWire().json("GET", "/sora/v1/videos/video_x", error("no such video", "not_found"), 404)
    with pytest.raises(ProviderTaskUnknown):
        provider(wire).status("video_x")


def test_an_unknown_status_word_is_a_protocol_error() -> None:
    wire = ProviderWire().json("GET", "/sora/v1/videos/video_1", video("melting"))
    with pytest.raises(ProviderProtocolError):
        provider(wire).status("video_1")


# ---------------------------------------------------------------- remix


def test_remix_creates_a_new_video_from_the_parent() -> None:
    # Given a finished parent video
    wire = ProviderWire().json(
        "POST", "/sora/v1/videos/video_1/remix", video("queued", "video_2", remixed_from_video_id="video_1")
    )
    # When it is remixed with a new prompt
    result = provider(wire).remix("video_1", request(prompt="再加一只小狗", orientation="landscape"))
    # Then the remix endpoint gets the prompt and the model, and the new video is returned
    sent = wire.only()
    assert sent.headers["authorization"] == SECRET
    assert body_of(sent) == {"prompt": "再加一只小狗", "model": "sora_video2-landscape"}
    assert result.provider_task_id == "video_2"


@pytest.mark.parametrize(
    ("http_status", "error_type"),
    [(400, ProviderRejectedRequest), (404, ProviderTaskUnknown), (401, ProviderAuthError)],
)
def test_remix_errors(http_status: int, error_type: type[Exception]) -> None:
    wire = ProviderWire().json("POST", "/sora/v1/videos/video_1/remix", error("parent not completed"), http_status)
    with pytest.raises(error_type):
        provider(wire).remix("video_1", request())


def test_a_remix_whose_answer_is_lost_is_an_unknown_outcome() -> None:
    wire = ProviderWire().on("POST", "/sora/v1/videos/video_1/remix", read_timeout())
    with pytest.raises(CreateOutcomeUnknown):
        provider(wire).remix("video_1", request())


def test_a_remix_with_an_impossible_model_is_refused_before_any_call() -> None:
    wire = ProviderWire()
    with pytest.raises(RequestInvalid):
        provider(wire).remix("video_1", request(model="sora_video2-hd-25s"))
    assert wire.requests == []


# ---------------------------------------------------------------- images


def image_request(**fields: Any) -> ImageRequest:
    return ImageRequest(provider="ov", prompt=fields.pop("prompt", "画小猫"), **fields)


def images_answer(*urls: str) -> dict[str, Any]:
    return {"created": 1760875200, "data": [{"url": url} for url in urls]}


def test_generate_images_posts_a_multipart_generation() -> None:
    # Given a text-to-image request for two square images
    wire = ProviderWire().json(
        "POST", "/sora/v1/images/generations", images_answer("http://files/1.png", "http://files/2.png")
    )
    # When images are generated
    results = provider(wire).generate_images(image_request(n=2, size="1024x1024"), [])
    # Then the generations endpoint gets multipart fields and no files, and the URLs come back
    sent = wire.only()
    assert sent.headers["authorization"] == SECRET
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert fields_of(sent) == {"prompt": ["画小猫"], "model": ["sora_image"], "n": ["2"], "size": ["1024x1024"]}
    assert files_of(sent) == []
    assert [r.url for r in results] == ["http://files/1.png", "http://files/2.png"]


def test_generate_images_with_images_posts_an_edit_with_image_files() -> None:
    wire = ProviderWire().json("POST", "/sora/v1/images/edits", images_answer("http://files/3.png"))
    inputs = [
        ImageInput(filename="a.png", content=b"\x89PNG-a", content_type="image/png"),
        ImageInput(filename="b.jpg", content=b"\xff\xd8JPEG-b", content_type="image/jpeg"),
    ]
    results = provider(wire).generate_images(image_request(prompt="换一个风格"), inputs)
    sent = wire.only()
    assert fields_of(sent) == {"prompt": ["换一个风格"], "model": ["sora_image"], "n": ["1"]}
    assert files_of(sent) == [
        ("image[]", "a.png", b"\x89PNG-a", "image/png"),
        ("image[]", "b.jpg", b"\xff\xd8JPEG-b", "image/jpeg"),
    ]
    assert [r.url for r in results] == ["http://files/3.png"]


@pytest.mark.parametrize("answer", [{"created": 1, "data": []}, {"data": [{"b64_json": "AAAA"}]}, {"data": "x"}])
def test_an_image_answer_without_urls_is_a_protocol_error(answer: dict[str, Any]) -> None:
    wire = ProviderWire().json("POST", "/sora/v1/images/generations", answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).generate_images(image_request(), [])


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"n": 0}, "n", "from 1 to 4"),
        ({"n": 5}, "n", "from 1 to 4"),
        ({"size": "0x512"}, "size", "WIDTHxHEIGHT"),
        ({"size": "512"}, "size", "WIDTHxHEIGHT"),
        ({"size": "512x-2"}, "size", "WIDTHxHEIGHT"),
        ({"size": "widexhigh"}, "size", "WIDTHxHEIGHT"),
        ({"model": "sora_video2"}, "model", "'sora_image'"),
    ],
)
def test_image_requests_the_protocol_cannot_do_are_refused(fields: dict[str, Any], field: str, words: str) -> None:
    # ImageRequest validates too; the adapter holds its own rules for requests built any other way.
    wire = ProviderWire()
    adapter = provider(wire)
    base: dict[str, Any] = {"provider": "ov", "prompt": "cat", "n": 1}
    image = ImageRequest.model_construct(**(base | fields))
    with pytest.raises(RequestInvalid) as caught:
        adapter.validate_images(image)
    with pytest.raises(RequestInvalid):
        adapter.generate_images(image, [])
    assert caught.value.field == field
    assert words in caught.value.message
    assert wire.requests == []


@pytest.mark.parametrize("fields", [{}, {"n": 4, "size": "1792x1024"}, {"model": "sora_image", "size": "16x16"}])
def test_valid_image_requests_pass(fields: dict[str, Any]) -> None:
    provider(ProviderWire()).validate_images(image_request(**fields))


def test_an_empty_input_image_is_refused_before_any_call() -> None:
    wire = ProviderWire()
    with pytest.raises(RequestInvalid):
        provider(wire).generate_images(
            image_request(), [ImageInput(filename="a.png", content=b"", content_type="image/png")]
        )
    assert wire.requests == []


def test_a_lost_image_answer_is_an_unknown_outcome() -> None:
    wire = ProviderWire().on("POST", "/sora/v1/images/generations", read_timeout())
    with pytest.raises(CreateOutcomeUnknown):
        provider(wire).generate_images(image_request(), [])
