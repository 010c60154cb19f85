"""The sorahk adapter against its wire format (seed 000, /tmp/wire.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from reelay.errors import (
    CreateOutcomeUnknown,
    InsufficientBalance,
    ProviderAuthError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    RequestInvalid,
)
from reelay.models import ErrorCode, VideoRequest
from reelay.providers.base import ProviderState
from reelay.providers.registry import provider_config
from reelay.providers.sorahk import SorahkPricing, SorahkProvider, estimate_cost_cents
from tests.unit.provider_wire import SECRET, ProviderWire, body_of, read_timeout

BASE = "https://api.sora.hk/v1"
NOW = datetime(2025, 10, 19, 12, 0, 0, tzinfo=UTC)
PRICING = {"normal_price": 3, "pro_price": 30, "currency": "USD", "unit": "cents"}


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def provider(wire: ProviderWire, clock: Clock | None = None) -> SorahkProvider:
    return SorahkProvider(
        provider_config("sorahk", "sorahk", BASE, SECRET), transport=wire.transport, clock=clock or Clock()
    )


def request(**fields: Any) -> VideoRequest:
    return VideoRequest(provider="sorahk", prompt=fields.pop("prompt", "A beautiful sunset over the ocean"), **fields)


def ok(data: Any) -> dict[str, Any]:
    return {"code": 200, "message": "操作成功", "data": data}


def fail(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "data": None}


def task(status: str, **fields: Any) -> dict[str, Any]:
    data = {
        "task_id": "550e8400",
        "status": status,
        "progress": 0,
        "prompt": "A beautiful sunset over the ocean",
        "is_pro": False,
        "created_at": "2025-10-19T12:00:00Z",
    }
    return data | fields


def created(cost: int = 10, task_id: str = "550e8400") -> dict[str, Any]:
    return ok({"task_id": task_id, "status": "pending", "cost": cost})


# ---------------------------------------------------------------- validation and the create body


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {},
            {"is_pro": False, "duration": 10, "resolution": "vertical", "quality": "normal", "remove_watermark": True},
        ),
        (
            {"duration": 15, "orientation": "landscape", "resolution": "1080p", "watermark": True},
            {"is_pro": False, "duration": 15, "resolution": "horizontal", "quality": "high", "remove_watermark": False},
        ),
        (
            {"orientation": "portrait", "resolution": "720p", "watermark": False},
            {"is_pro": False, "duration": 10, "resolution": "vertical", "quality": "normal", "remove_watermark": True},
        ),
        (
            {"pro": True, "duration": 25},
            {"is_pro": True, "duration": 25, "resolution": "vertical", "quality": "high", "remove_watermark": True},
        ),
        (
            {"pro": True, "resolution": "1080p", "duration": 15},
            {"is_pro": True, "duration": 15, "resolution": "vertical", "quality": "high", "remove_watermark": True},
        ),
        (
            {"model": "sora-2-pro"},
            {"is_pro": True, "duration": 10, "resolution": "vertical", "quality": "high", "remove_watermark": True},
        ),
        (
            {"model": "sora-2", "duration": 15},
            {"is_pro": False, "duration": 15, "resolution": "vertical", "quality": "normal", "remove_watermark": True},
        ),
    ],
)
def test_a_valid_request_becomes_the_create_body(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    # Given a valid request
    wire = ProviderWire().json("POST", "/v1/create", created())
    adapter = provider(wire)
    adapter.validate(request(**fields))
    # When it is created
    adapter.create(request(**fields), task_id="tsk_1", callback_url=None)
    # Then the body says everything explicitly, as the seed names it
    sent = wire.only()
    assert str(sent.url) == BASE + "/create"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert body_of(sent) == {"prompt": "A beautiful sunset over the ocean", **expected}


def test_an_image_to_video_request_sends_the_image_url() -> None:
    wire = ProviderWire().json("POST", "/v1/create", created())
    provider(wire).create(request(image_url="https://img.example/cat.png"), task_id="tsk_1", callback_url=None)
    assert body_of(wire.only())["image_url"] == "https://img.example/cat.png"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"duration": 25}, "duration", "25 s needs pro"),
        ({"duration": 12}, "duration", "normal (without pro) durations are 10, 15"),
        ({"pro": True, "duration": 20}, "duration", "pro durations are 10, 15, 25"),
        ({"model": "sora-2", "duration": 25}, "duration", "25 s needs pro"),
        ({"model": "sora-2", "pro": True}, "model", "normal model"),
        ({"model": "sora_video2"}, "model", "'sora-2', 'sora-2-pro'"),
        ({"pro": True, "resolution": "720p"}, "resolution", "always high quality"),
    ],
)
def test_what_sorahk_cannot_do_is_refused_before_any_call(fields: dict[str, Any], field: str, words: str) -> None:
    wire = ProviderWire()
    adapter = provider(wire)
    with pytest.raises(RequestInvalid) as caught:
        adapter.validate(request(**fields))
    with pytest.raises(RequestInvalid):
        adapter.create(request(**fields), task_id="tsk_1", callback_url=None)
    assert caught.value.field == field
    assert words in caught.value.message
    assert wire.requests == []


def test_capabilities_describe_the_protocol() -> None:
    caps = provider(ProviderWire()).capabilities()
    assert caps.callbacks is False
    assert caps.durations == [10, 15, 25]
    assert caps.default_duration == 10
    assert caps.pro is True


# ---------------------------------------------------------------- create answers


def test_the_create_returns_the_task_and_its_cost() -> None:
    wire = ProviderWire().json("POST", "/v1/create", created(cost=45, task_id="t-9"))
    result = provider(wire).create(request(duration=15), task_id="tsk_1", callback_url=None)
    assert result.provider_task_id == "t-9"
    assert result.cost_cents == 45
    assert result.initial_state is ProviderState.PENDING


@pytest.mark.parametrize(
    ("http_status", "body", "error", "words"),
    [
        (200, fail(1012, "余额不足"), InsufficientBalance, "insufficient balance"),
        (200, fail(1001, "duration must be 10 or 15"), ProviderRejectedRequest, "duration must be 10 or 15"),
        (401, fail(401, "API Key 无效或已禁用"), ProviderAuthError, "check the API key"),
        (200, fail(401, "API Key 无效或已禁用"), ProviderAuthError, "check the API key"),
        # A server error on the paid create may still have made the task: an unknown outcome,
        # which the submitter settles by searching the task list, never by re-sending.
        (500, fail(500, "服务器内部错误"), CreateOutcomeUnknown, "服务器内部错误"),
        (200, fail(500, "服务器内部错误"), CreateOutcomeUnknown, "服务器内部错误"),
        (429, fail(429, "too many requests"), ProviderRateLimited, "too many requests"),
        (200, fail(7777, "something new"), ProviderProtocolError, "unknown code 7777"),
    ],
)
def test_each_documented_business_code_of_a_create(
    http_status: int, body: dict[str, Any], error: type[Exception], words: str
) -> None:
    # Given the provider answers a create with a business code (HTTP status aside)
    wire = ProviderWire().json("POST", "/v1/create", body, http_status)
    # When reelay creates a task
    with pytest.raises(error) as caught:
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)
    # Then the body code decides what reelay raises, with the provider's words
    assert words in str(caught.value)


def test_the_body_code_wins_over_the_http_status() -> None:
    # An HTTP 500 whose body says 1012 is a balance problem, not a transient one.
    wire = ProviderWire().json("POST", "/v1/create", fail(1012, "余额不足"), 500)
    with pytest.raises(InsufficientBalance):
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)


def test_a_lost_create_answer_is_an_unknown_outcome() -> None:
    wire = ProviderWire().on("POST", "/v1/create", read_timeout())
    with pytest.raises(CreateOutcomeUnknown):
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)


@pytest.mark.parametrize("answer", [ok({"status": "pending", "cost": 10}), ok(None), {"code": 200}])
def test_an_accepted_create_without_a_task_id_is_a_protocol_error(answer: dict[str, Any]) -> None:
    wire = ProviderWire().json("POST", "/v1/create", answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).create(request(), task_id="tsk_1", callback_url=None)


# ---------------------------------------------------------------- status


def test_a_completed_task_reports_its_video() -> None:
    wire = ProviderWire().json(
        "GET",
        "/v1/tasks/550e8400",
        ok(
            task(
                "completed",
                progress=100,
                video_url="https://example.com/video.mp4",
                completed_at="2025-10-19T12:05:00Z",
            )
        ),
    )
    status = provider(wire).status("550e8400")
    assert wire.only().headers["authorization"] == f"Bearer {SECRET}"
    assert status.state is ProviderState.SUCCEEDED
    assert status.progress == 100
    assert [(r.url, r.content_type) for r in status.results] == [("https://example.com/video.mp4", "video/mp4")]


@pytest.mark.parametrize(
    ("status_word", "state", "progress"),
    [("pending", ProviderState.PENDING, 0), ("processing", ProviderState.RUNNING, 42)],
)
def test_tasks_in_flight(status_word: str, state: ProviderState, progress: int) -> None:
    wire = ProviderWire().json("GET", "/v1/tasks/550e8400", ok(task(status_word, progress=progress)))
    status = provider(wire).status("550e8400")
    assert (status.state, status.progress, status.raw_state) == (state, progress, status_word)


@pytest.mark.parametrize(
    ("error_msg", "code"),
    [
        ("此内容可能违反关于裸露、性内容或色情内容的相关规定。", ErrorCode.CONTENT_POLICY),
        ("该提示词违反内容政策", ErrorCode.CONTENT_POLICY),
        ("This content may violate our content policy.", ErrorCode.CONTENT_POLICY),
        ("Blocked by moderation", ErrorCode.CONTENT_POLICY),
        ("生成超时，请重试", ErrorCode.PROVIDER_FAILED),  # noqa: RUF001 (real Chinese punctuation)
        ("GPU worker crashed", ErrorCode.PROVIDER_FAILED),
        (None, ErrorCode.PROVIDER_FAILED),
    ],
)
def test_a_failed_task_is_read_for_a_content_refusal(error_msg: str | None, code: ErrorCode) -> None:
    fields = {"progress": 97} | ({"error_msg": error_msg} if error_msg else {})
    wire = ProviderWire().json("GET", "/v1/tasks/550e8400", ok(task("failed", **fields)))
    status = provider(wire).status("550e8400")
    assert status.state is ProviderState.FAILED
    assert status.error_code is code
    assert status.error_message == error_msg
    assert status.results == []


@pytest.mark.parametrize("http_status", [404, 200])
def test_an_unknown_task_is_reported_as_unknown(http_status: int) -> None:
    wire = ProviderWire().json("GET", "/v1/tasks/nope", fail(404, "task not found"), http_status)
    with pytest.raises(ProviderTaskUnknown):
        provider(wire).status("nope")


def test_a_task_id_cannot_escape_its_path() -> None:
    wire = ProviderWire().json("GET", "/v1/balance", ok({"balance": 5000}))
    with pytest.raises(ProviderTaskUnknown):
        provider(wire).status("../balance")
    assert wire.only().url.raw_path == b"/v1/tasks/..%2Fbalance"


@pytest.mark.parametrize("answer", [ok(task("exploded")), ok("completed"), ok(None)])
def test_a_status_reelay_cannot_read_is_a_protocol_error(answer: dict[str, Any]) -> None:
    wire = ProviderWire().json("GET", "/v1/tasks/550e8400", answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).status("550e8400")


# ---------------------------------------------------------------- task list


@pytest.mark.parametrize(
    "data",
    [
        [task("completed", task_id="a"), task("pending", task_id="b")],
        {"tasks": [task("completed", task_id="a"), task("pending", task_id="b")], "total": 2},
        {"items": [task("completed", task_id="a"), task("pending", task_id="b")]},
        {"list": [task("completed", task_id="a"), task("pending", task_id="b")]},
        {"records": [task("completed", task_id="a"), task("pending", task_id="b")]},
        {"data": {"list": [task("completed", task_id="a"), task("pending", task_id="b")]}},
        {"total": 3, "tasks": [task("completed", task_id="a"), "junk", {"no": "id"}, {"id": "b", "status": "pending"}]},
    ],
)
def test_the_task_list_is_parsed_leniently(data: Any) -> None:
    wire = ProviderWire().json("GET", "/v1/tasks", ok(data))
    tasks = provider(wire).list_tasks()
    assert [t.task_id for t in tasks] == ["a", "b"]
    assert tasks[0].status == "completed"
    assert tasks[0].created_at == NOW


def test_the_task_list_asks_for_the_page_and_filter() -> None:
    wire = ProviderWire().json("GET", "/v1/tasks", ok({"tasks": []}))
    assert provider(wire).list_tasks(page=3, page_size=50, status="completed") == []
    assert dict(wire.only().url.params) == {"page": "3", "page_size": "50", "status": "completed"}


def test_odd_fields_in_a_listed_task_do_not_lose_it() -> None:
    odd = {"id": 17, "status": 3, "progress": "55", "is_pro": "yes", "created_at": "yesterday", "duration": "15"}
    wire = ProviderWire().json("GET", "/v1/tasks", ok([odd]))
    (listed,) = provider(wire).list_tasks()
    assert (listed.task_id, listed.status, listed.progress, listed.is_pro, listed.created_at, listed.duration) == (
        "17",
        None,
        55,
        None,
        None,
        15,
    )


# ---------------------------------------------------------------- find_created


def page(*tasks: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=ok({"tasks": list(tasks)}))


SENT = datetime(2025, 10, 19, 11, 58, 0, tzinfo=UTC)  # when our create was first sent


def test_find_created_finds_the_task_made_after_our_send_with_the_same_prompt_on_a_later_page() -> None:
    # Given a lost create, and a full first page of other tasks before the one it made
    others = [task("completed", task_id=f"other-{i}", prompt=f"other {i}") for i in range(50)]
    ours = task("pending", task_id="ours", created_at="2025-10-19T11:58:01Z", duration=15)
    wire = ProviderWire().on("GET", "/v1/tasks", page(*others), page(ours))
    # When reelay looks for it
    found = provider(wire, Clock(NOW)).find_created("tsk_1", request(duration=15), since=SENT)
    # Then it is found by its prompt, on page 2
    assert found == ["ours"]
    assert [r.url.params["page"] for r in wire.requests] == ["1", "2"]


@pytest.mark.parametrize(
    "candidate",
    [
        task("pending", prompt="something else", created_at="2025-10-19T11:59:00Z"),
        task("pending", is_pro=True, created_at="2025-10-19T11:59:00Z"),
        task("pending", duration=15, created_at="2025-10-19T11:59:00Z"),
        # An earlier request for the same prompt, made before our create was sent: never ours.
        task("pending", created_at="2025-10-19T11:57:00Z"),
        task("pending", created_at="2025-10-18T12:00:00Z"),
        task("pending", created_at=None),  # no creation time: cannot be told apart
    ],
)
def test_find_created_ignores_tasks_that_do_not_match(candidate: dict[str, Any]) -> None:
    wire = ProviderWire().on("GET", "/v1/tasks", page(candidate))
    assert provider(wire).find_created("tsk_1", request(), since=SENT) == []


def test_find_created_allows_for_one_second_timestamps_and_a_small_clock_difference() -> None:
    # The provider's clock says 11:57:57, three seconds before reelay's send at 11:58:00.
    close = task("pending", task_id="close", created_at="2025-10-19T11:57:57Z")
    wire = ProviderWire().on("GET", "/v1/tasks", page(close))
    assert provider(wire).find_created("tsk_1", request(), since=SENT) == ["close"]


def test_find_created_lists_every_match_oldest_first() -> None:
    older = task("pending", task_id="older", created_at="2025-10-19T11:58:30Z")
    newer = task("pending", task_id="newer", created_at="2025-10-19T11:59:00Z")
    wire = ProviderWire().on("GET", "/v1/tasks", page(newer, older))
    assert provider(wire).find_created("tsk_1", request(), since=SENT) == ["older", "newer"]


def test_find_created_stops_at_a_short_page() -> None:
    wire = ProviderWire().on("GET", "/v1/tasks", page(task("pending", prompt="x")))
    assert provider(wire).find_created("tsk_1", request(), since=SENT) == []
    assert len(wire.requests) == 1


def test_find_created_gives_up_after_a_bounded_number_of_pages() -> None:
    full = [task("completed", task_id=f"o-{i}", prompt="other") for i in range(50)]
    wire = ProviderWire().on("GET", "/v1/tasks", page(*full))
    assert provider(wire).find_created("tsk_1", request(), since=SENT) == []
    assert len(wire.requests) == 5


# ---------------------------------------------------------------- price, balance, preflight


@pytest.mark.parametrize(
    ("fields", "cents"),
    [
        ({}, 3),
        ({"duration": 15}, 5),  # 4.5 rounded up
        ({"pro": True}, 30),
        ({"pro": True, "duration": 15}, 45),
        ({"pro": True, "duration": 25}, 75),
        ({"model": "sora-2-pro", "duration": 25}, 75),
    ],
)
def test_the_price_is_per_ten_seconds_scaled_by_duration_and_rounded_up(fields: dict[str, Any], cents: int) -> None:
    assert estimate_cost_cents(SorahkPricing.model_validate(PRICING), request(**fields)) == cents


def test_fractional_prices_round_up_to_a_whole_cent() -> None:
    pricing = SorahkPricing(normal_price=2.5, pro_price=20)
    assert estimate_cost_cents(pricing, request(duration=15)) == 4  # 3.75


def balance_wire(balance: int) -> ProviderWire:
    return (
        ProviderWire()
        .json("GET", "/v1/pricing", ok(PRICING))
        .json("GET", "/v1/balance", ok({"balance": balance}))
        .json("POST", "/v1/create", created(cost=75))
    )


def test_preflight_refuses_a_video_the_balance_cannot_pay_for_before_any_create() -> None:
    # Given a balance of 50 cents and a 25 s pro video priced at 75
    wire = balance_wire(50)
    adapter = provider(wire)
    # When reelay checks before creating
    with pytest.raises(InsufficientBalance) as caught:
        adapter.preflight(request(pro=True, duration=25))
    # Then it is refused with both amounts, and nothing paid was sent
    assert "needs 75 cents, balance 50" in str(caught.value)
    assert "POST /v1/create" not in wire.paths()


def test_preflight_passes_when_the_balance_suffices() -> None:
    wire = balance_wire(75)
    provider(wire).preflight(request(pro=True, duration=25))
    assert sorted(wire.paths()) == ["GET /v1/balance", "GET /v1/pricing"]


def test_balance_and_pricing_are_cached_briefly() -> None:
    # Given a preflight that fetched balance and pricing
    clock = Clock()
    wire = balance_wire(5000)
    adapter = provider(wire, clock)
    adapter.preflight(request())
    # When more preflights follow within 30 s
    clock.advance(29)
    adapter.preflight(request())
    adapter.preflight(request(duration=15))
    # Then the provider was asked once
    assert len(wire.requests) == 2
    # And once the cache is older than 30 s, it is asked again
    clock.advance(2)
    adapter.preflight(request())
    assert len(wire.requests) == 4


def test_a_create_spends_the_cached_balance_and_a_short_balance_is_reread_before_failing() -> None:
    # Given a cached balance of 100 and a create that cost 75 (the cache now says 25)
    clock = Clock()
    wire = balance_wire(100)
    adapter = provider(wire, clock)
    adapter.preflight(request(pro=True, duration=25))
    adapter.create(request(pro=True, duration=25), task_id="tsk_1", callback_url=None)
    assert adapter.balance_cents() == 25
    # When the next preflight finds the cached 25 too small, it asks the provider again
    # (a top-up must not wait out the cache); the provider says 100, so it passes
    adapter.preflight(request(pro=True, duration=25))
    assert wire.paths().count("GET /v1/balance") == 2


def test_a_1012_on_create_forgets_the_cached_balance() -> None:
    clock = Clock()
    wire = (
        ProviderWire()
        .json("GET", "/v1/pricing", ok(PRICING))
        .on(
            "GET",
            "/v1/balance",
            httpx.Response(200, json=ok({"balance": 5000})),
            httpx.Response(200, json=ok({"balance": 0})),
        )
        .json("POST", "/v1/create", fail(1012, "余额不足"))
    )
    adapter = provider(wire, clock)
    adapter.preflight(request())
    with pytest.raises(InsufficientBalance):
        adapter.create(request(), task_id="tsk_1", callback_url=None)
    with pytest.raises(InsufficientBalance) as caught:
        adapter.preflight(request())
    assert "balance 0" in str(caught.value)


def test_account_reports_balance_and_pricing() -> None:
    wire = balance_wire(5000)
    account = provider(wire).account()
    assert account.balance_cents == 5000
    assert account.currency == "USD"
    assert account.pricing == {"normal_price": 3, "pro_price": 30, "unit": "cents"}
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in wire.requests)


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/v1/pricing", ok({"currency": "USD"})),
        ("/v1/pricing", ok({"normal_price": "three", "pro_price": 30})),
        ("/v1/balance", ok({"balance": "lots"})),
        ("/v1/balance", ok(None)),
    ],
)
def test_unreadable_balance_or_pricing_is_a_protocol_error(path: str, answer: dict[str, Any]) -> None:
    wire = balance_wire(5000).json("GET", path, answer)
    with pytest.raises(ProviderProtocolError):
        provider(wire).preflight(request())


def test_a_refused_key_during_preflight_is_an_auth_error() -> None:
    wire = ProviderWire().json("GET", "/v1/pricing", fail(401, "unauthorized"), 401)
    with pytest.raises(ProviderAuthError):
        provider(wire).preflight(request())
