"""The generate_task adapter against its wire format (seed 002, /tmp/wire.md)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from reelay.errors import (
    CreateServerError,
    ProviderAuthError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    RequestInvalid,
)
from reelay.models import ErrorCode, VideoRequest
from reelay.providers.base import CallbackHint, ProviderState
from reelay.providers.generate_task import GenerateTaskProvider
from reelay.providers.registry import provider_config
from tests.unit.provider_wire import SECRET, ProviderWire, body_of

BASE = "https://api.gt.example"
CREATE = "/api/v1/generateTask/sora-2-pro"
STATUS = "/api/v1/statusTask/sora-2-pro"
CALLBACK = "https://hooks.reelay.example/callbacks/generate_task/tsk_1?t=abc"


def provider(wire: ProviderWire) -> GenerateTaskProvider:
    return GenerateTaskProvider(provider_config("gt", "generate_task", BASE, SECRET), transport=wire.transport)


def request(**fields: Any) -> VideoRequest:
    return VideoRequest(provider="gt", prompt=fields.pop("prompt", "a heron lands on a pier"), **fields)


def accepted(task_id: str = "gt_42") -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": {"taskId": task_id}}


def task(state: str, **fields: Any) -> dict[str, Any]:
    data = {"taskId": "gt_42", "state": state, "createTime": 1760875200000, "completeTime": None, "costTime": None}
    return {"code": 200, "msg": "success", "data": data | fields}


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "expected_input"),
    [
        ({}, {"duration": 4, "size": "720*1280"}),
        ({"duration": 8}, {"duration": 8, "size": "720*1280"}),
        ({"duration": 12, "orientation": "landscape"}, {"duration": 12, "size": "1280*720"}),
        ({"resolution": "720p", "orientation": "portrait"}, {"duration": 4, "size": "720*1280"}),
        ({"resolution": "1080p"}, {"duration": 4, "size": "1024*1792"}),
        ({"resolution": "1080p", "orientation": "landscape"}, {"duration": 4, "size": "1792*1024"}),
        ({"model": "sora-2-pro", "pro": True}, {"duration": 4, "size": "720*1280"}),
        (
            {"image_url": "https://img.example/a.png"},
            {"image_urls": ["https://img.example/a.png"], "duration": 4, "resolution": "720p"},
        ),
        (
            {"image_url": "https://img.example/a.png", "resolution": "1080p", "duration": 12},
            {"image_urls": ["https://img.example/a.png"], "duration": 12, "resolution": "1080p"},
        ),
    ],
)
def test_a_valid_request_becomes_the_input_on_the_wire(fields: dict[str, Any], expected_input: dict[str, Any]) -> None:
    # Given a valid request
    wire = ProviderWire().json("POST", CREATE, accepted())
    adapter = provider(wire)
    adapter.validate(request(**fields))
    # When it is created
    adapter.create(request(**fields), task_id="tsk_1", callback_url=None)
    # Then the input carries the prompt, an explicit duration and size (text) or resolution (image)
    assert body_of(wire.only())["input"] == {"prompt": "a heron lands on a pier", **expected_input}


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"duration": 5}, "duration", "4, 8, 12"),
        ({"duration": 10}, "duration", "got 10"),
        ({"model": "sora-2"}, "model", "sora-2-pro"),
        ({"watermark": True}, "watermark", "no watermark option"),
        ({"watermark": False}, "watermark", "no watermark option"),
        ({"image_url": "https://img.example/a.png", "orientation": "landscape"}, "orientation", "from its image"),
    ],
)
def test_what_generate_task_cannot_do_is_refused_before_any_call(
    fields: dict[str, Any], field: str, words: str
) -> None:
    # Given a request the protocol cannot honour
    wire = ProviderWire()
    adapter = provider(wire)
    # When it is validated, or created
    with pytest.raises(RequestInvalid) as caught:
        adapter.validate(request(**fields))
    with pytest.raises(RequestInvalid):
        adapter.create(request(**fields), task_id="tsk_1", callback_url=None)
    # Then the error names the field and says why, and nothing was sent
    assert caught.value.field == field
    assert words in caught.value.message
    assert wire.requests == []


def test_capabilities_describe_the_protocol() -> None:
    caps = provider(ProviderWire()).capabilities()
    assert caps.callbacks is True
    assert caps.durations == [4, 8, 12]
    assert caps.default_duration == 4
    assert set(caps.sizes) == {"720*1280", "1280*720", "1024*1792", "1792*1024"}
    assert caps.modes == ["text-to-video", "image-to-video"]


# ---------------------------------------------------------------- create


def test_create_without_a_callback_url_is_async_with_the_official_route() -> None:
    wire = ProviderWire().json("POST", CREATE, accepted("gt_1"))
    result = provider(wire).create(request(), task_id="tsk_1", callback_url=None)
    sent = wire.only()
    assert str(sent.url) == BASE + CREATE
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert body_of(sent) == {
        "request_type": "async",
        "provider": "official",
        "input": {"prompt": "a heron lands on a pier", "duration": 4, "size": "720*1280"},
    }
    assert result.provider_task_id == "gt_1"
    assert result.initial_state is ProviderState.PENDING


def test_create_with_a_callback_url_asks_for_a_callback() -> None:
    wire = ProviderWire().json("POST", CREATE, accepted())
    provider(wire).create(request(duration=8), task_id="tsk_1", callback_url=CALLBACK)
    assert body_of(wire.only()) == {
        "request_type": "callback",
        "callback_url": CALLBACK,
        "provider": "official",
        "input": {"prompt": "a heron lands on a pier", "duration": 8, "size": "720*1280"},
    }


@pytest.mark.parametrize(
    "answer",
    [{"code": 200, "msg": "success", "data": {}}, {"code": 200, "msg": "success"}, {"data": {"taskId": ""}}, []],
)
def test_an_accepted_create_without_a_task_id_is_a_protocol_error(answer: Any) -> None:
    wire = ProviderWire().json("POST", CREATE, answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)


@pytest.mark.parametrize(
    ("http_status", "body", "error", "words"),
    [
        (400, {"code": 400, "msg": "duration must be 4, 8 or 12"}, ProviderRejectedRequest, "duration must be 4, 8"),
        (401, {"code": 401, "msg": "Invalid or missing API Key"}, ProviderAuthError, "check the API key"),
        (429, {"code": 429, "msg": "Rate limit exceeded"}, ProviderRateLimited, "rate limit"),
        (500, {"code": 500, "msg": "upstream exploded"}, CreateServerError, "upstream exploded"),
        # The same codes carried in the body of an HTTP 200 are honoured too.
        (200, {"code": 400, "msg": "prompt is required"}, ProviderRejectedRequest, "prompt is required"),
        (200, {"code": 401, "msg": "Invalid or missing API Key"}, ProviderAuthError, "check the API key"),
        (200, {"code": 429, "msg": "Rate limit exceeded"}, ProviderRateLimited, "rate limit"),
    ],
)
def test_each_documented_error_code_of_a_create(
    http_status: int, body: dict[str, Any], error: type[Exception], words: str
) -> None:
    wire = ProviderWire().json("POST", CREATE, body, http_status)
    with pytest.raises(error) as caught:
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)
    assert words in str(caught.value)


def test_a_429_on_create_carries_retry_after() -> None:
    wire = ProviderWire().json(
        "POST", CREATE, {"code": 429, "msg": "Rate limit exceeded"}, 429, **{"Retry-After": "12"}
    )
    with pytest.raises(ProviderRateLimited) as caught:
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)
    assert caught.value.retry_after == 12.0


# ---------------------------------------------------------------- status


def test_status_asks_for_the_task_by_query_parameter() -> None:
    wire = ProviderWire().json("GET", STATUS, task("pending"))
    provider(wire).status("gt_42")
    sent = wire.only()
    assert sent.url.params["taskId"] == "gt_42"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("state", "expected", "progress"),
    [
        ("pending", ProviderState.PENDING, None),
        ("processing", ProviderState.RUNNING, 40),
    ],
)
def test_states_in_flight(state: str, expected: ProviderState, progress: int | None) -> None:
    extra = {"progress": progress} if progress is not None else {}
    wire = ProviderWire().json("GET", STATUS, task(state, **extra))
    status = provider(wire).status("gt_42")
    assert status.state is expected
    assert status.progress == progress
    assert status.raw_state == state
    assert status.results == []


def test_success_parses_result_json_a_second_time() -> None:
    # Given a finished task whose resultJson is a JSON *string*
    result_json = json.dumps({"resultUrls": ["https://cdn.example/a.mp4", "https://cdn.example/b.mp4"]})
    wire = ProviderWire().json("GET", STATUS, task("success", resultJson=result_json, completeTime=1760875380000))
    # When its status is asked
    status = provider(wire).status("gt_42")
    # Then the result URLs come out of the inner document
    assert status.state is ProviderState.SUCCEEDED
    assert status.progress == 100
    assert [r.url for r in status.results] == ["https://cdn.example/a.mp4", "https://cdn.example/b.mp4"]
    assert status.error_code is None


def test_success_tolerates_result_json_already_being_an_object() -> None:
    wire = ProviderWire().json("GET", STATUS, task("success", resultJson={"resultUrls": ["https://cdn.example/a.mp4"]}))
    assert [r.url for r in provider(wire).status("gt_42").results] == ["https://cdn.example/a.mp4"]


def test_success_with_a_result_json_that_is_not_json_is_a_protocol_error() -> None:
    wire = ProviderWire().json("GET", STATUS, task("success", resultJson="{resultUrls: [oops"))
    with pytest.raises(ProviderProtocolError):
        provider(wire).status("gt_42")


def test_success_without_result_urls_reports_no_results() -> None:
    # The tracker fails such a task; the adapter only reports what it saw.
    wire = ProviderWire().json("GET", STATUS, task("success", resultJson=json.dumps({"resultUrls": []})))
    status = provider(wire).status("gt_42")
    assert status.state is ProviderState.SUCCEEDED
    assert status.results == []


@pytest.mark.parametrize(
    ("fail_code", "fail_msg", "code", "message"),
    [
        ("CONTENT_VIOLATION", "Content violates safety guidelines", ErrorCode.CONTENT_POLICY, "violates safety"),
        ("INVALID_IMAGE_URL", "Cannot access provided image URL", ErrorCode.INVALID_IMAGE, "Cannot access"),
        ("GPU_ON_FIRE", "internal failure", ErrorCode.PROVIDER_FAILED, "internal failure"),
        ("INSUFFICIENT_CREDITS", None, ErrorCode.PROVIDER_FAILED, "INSUFFICIENT_CREDITS"),
        (None, None, ErrorCode.PROVIDER_FAILED, None),
    ],
)
def test_failure_codes_map_to_reelays_codes_and_keep_the_message(
    fail_code: str | None, fail_msg: str | None, code: ErrorCode, message: str | None
) -> None:
    fields = {k: v for k, v in {"failCode": fail_code, "failMsg": fail_msg}.items() if v is not None}
    wire = ProviderWire().json("GET", STATUS, task("failed", **fields))
    status = provider(wire).status("gt_42")
    assert status.state is ProviderState.FAILED
    assert status.error_code is code
    if message is None:
        assert status.error_message is None
    else:
        assert message in str(status.error_message)


def test_an_unknown_task_is_reported_as_unknown() -> None:
    wire = ProviderWire().json("GET", STATUS, {"code": 404, "msg": "task not found"}, 404)
    with pytest.raises(ProviderTaskUnknown):
        provider(wire).status("gt_nope")


@pytest.mark.parametrize("answer", [task("exploded"), {"code": 200, "msg": "success", "data": None}, {"code": 200}])
def test_a_status_reelay_cannot_read_is_a_protocol_error(answer: dict[str, Any]) -> None:
    wire = ProviderWire().json("GET", STATUS, answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).status("gt_42")


def test_status_errors_are_translated() -> None:
    wire = ProviderWire().on(
        "GET", STATUS, httpx.Response(401, json={"code": 401, "msg": "Invalid or missing API Key"})
    )
    with pytest.raises(ProviderAuthError):
        provider(wire).status("gt_42")


# ---------------------------------------------------------------- callbacks


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (task("success", resultJson="{}"), CallbackHint(provider_task_id="gt_42", claimed_state="success")),
        (task("failed")["data"], CallbackHint(provider_task_id="gt_42", claimed_state="failed")),
        ({"taskId": "gt_7"}, CallbackHint(provider_task_id="gt_7")),
        ({"code": 200, "data": {"state": "processing"}}, CallbackHint(claimed_state="processing")),
        ({"data": "gt_42"}, CallbackHint()),
        ({"taskId": 42, "state": ["success"]}, CallbackHint()),
        ([1, 2, 3], CallbackHint()),
        (None, CallbackHint()),
        ("just a string", CallbackHint()),
    ],
)
def test_a_callback_body_is_read_as_a_hint(body: Any, hint: CallbackHint) -> None:
    assert provider(ProviderWire()).parse_callback(json.dumps(body).encode()) == hint


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe\x00garbage", b'{"taskId":', b"NaN"])
def test_a_garbage_callback_is_an_empty_hint_and_never_raises(raw: bytes) -> None:
    assert provider(ProviderWire()).parse_callback(raw) == CallbackHint()


def test_parsing_a_callback_never_calls_the_provider() -> None:
    wire = ProviderWire()
    provider(wire).parse_callback(json.dumps(task("success")).encode())
    assert wire.requests == []
