"""Shared HTTP behaviour of the adapters: credential, timeouts, error translation, registry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from reelay.errors import (
    ConfigurationError,
    CreateOutcomeUnknown,
    CreateServerError,
    InsufficientBalance,
    ProviderAuthError,
    ProviderProtocolError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    ProviderTransientError,
)
from reelay.models import VideoRequest
from reelay.providers.base import ProviderConfig
from reelay.providers.generate_task import GenerateTaskProvider
from reelay.providers.http import HttpProvider, parse_retry_after
from reelay.providers.openai_videos import OpenAIVideosProvider
from reelay.providers.registry import PROTOCOL_DEFAULTS, PROTOCOLS, build_provider, provider_config
from reelay.providers.sorahk import SorahkProvider
from tests.unit.provider_wire import SECRET, ProviderWire, connect_refused, dropped, read_timeout

BASES = {
    "generate_task": "https://gt.example/base",
    "sorahk": "https://api.sora.hk/v1",
    "openai_videos": "http://10.1.2.3:8080/sora",
}
CREATE_PATHS = {
    "generate_task": "/base/api/v1/generateTask/sora-2-pro",
    "sorahk": "/v1/create",
    "openai_videos": "/sora/v1/videos",
}
STATUS_PATHS = {
    "generate_task": "/base/api/v1/statusTask/sora-2-pro",
    "sorahk": "/v1/tasks/t-1",
    "openai_videos": "/sora/v1/videos/t-1",
}
PROTOCOL_NAMES = sorted(BASES)


def make(protocol: str, wire: ProviderWire, **overrides: Any) -> HttpProvider:
    config = provider_config(protocol, protocol, BASES[protocol], SECRET, **overrides)
    return PROTOCOLS[protocol](config, transport=wire.transport)


def video(protocol: str) -> VideoRequest:
    return VideoRequest(provider=protocol, prompt="a red kite over the sea")


def create(provider: HttpProvider) -> object:
    return provider.create(video(provider.protocol), task_id="tsk_1", callback_url=None)


def status(provider: HttpProvider) -> object:
    return provider.status("t-1")


CALLS: dict[str, tuple[Callable[[HttpProvider], object], dict[str, str]]] = {
    "create": (create, CREATE_PATHS),
    "status": (status, STATUS_PATHS),
}


def method_of(call: str) -> str:
    return "POST" if call == "create" else "GET"


# ---------------------------------------------------------------- credential


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("generate_task", f"Bearer {SECRET}"), ("sorahk", f"Bearer {SECRET}"), ("openai_videos", SECRET)],
)
def test_the_credential_goes_to_the_providers_own_host_in_the_protocols_form(protocol: str, expected: str) -> None:
    # Given a provider configured with the protocol's defaults
    wire = ProviderWire().json("GET", STATUS_PATHS[protocol], {}, status=500)
    provider = make(protocol, wire)
    # When it calls its own endpoint
    with pytest.raises(ProviderTransientError):
        status(provider)
    # Then the credential header is sent, in the protocol's form, to the base URL's host
    request = wire.only()
    assert request.url.host == httpx.URL(BASES[protocol]).host
    assert request.headers["authorization"] == expected


def test_a_custom_credential_header_and_prefix_are_honoured() -> None:
    # Given a provider whose credential goes in X-Api-Key with a "Key " prefix
    wire = ProviderWire().json("GET", STATUS_PATHS["generate_task"], {}, status=500)
    provider = make("generate_task", wire, auth_header="X-Api-Key", auth_prefix="Key ")
    # When it calls the provider
    with pytest.raises(ProviderTransientError):
        status(provider)
    # Then only that header carries the credential
    request = wire.only()
    assert request.headers["x-api-key"] == f"Key {SECRET}"
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/sora/v1/videos/v1/content",  # another host
        "http://10.1.2.3:9090/sora/v1/videos/v1/content",  # same host, other port
        "https://10.1.2.3:8080/sora/v1/videos/v1/content",  # same host and port, other scheme
        "http://10.1.2.3.evil.example:8080/sora/v1/videos/v1/content",  # host as a prefix
        "not a url at all",
    ],
)
def test_the_credential_is_never_offered_for_a_url_on_another_origin(url: str) -> None:
    # Given an openai_videos provider (its content URLs need the licence)
    provider = make("openai_videos", ProviderWire())
    # When reelay asks how to fetch a URL on another origin
    # Then no credential is given
    assert provider.result_headers(url) == {}


@pytest.mark.parametrize("protocol", ["generate_task", "sorahk"])
def test_cdn_result_urls_of_other_protocols_get_no_credential(protocol: str) -> None:
    provider = make(protocol, ProviderWire())
    assert provider.result_headers(BASES[protocol] + "/files/video.mp4") == {}
    assert provider.result_headers("https://cdn.example.com/video.mp4") == {}


def test_a_redirect_is_not_followed_so_the_credential_cannot_travel_with_it() -> None:
    # Given a provider that answers with a redirect to another host
    wire = ProviderWire().on(
        "GET", STATUS_PATHS["sorahk"], httpx.Response(302, headers={"Location": "https://evil.example/steal"})
    )
    provider = make("sorahk", wire)
    # When reelay asks for a status
    with pytest.raises(ProviderProtocolError):
        status(provider)
    # Then the other host was never asked
    assert wire.paths() == ["GET /v1/tasks/t-1"]


# ---------------------------------------------------------------- timeouts and client


def test_timeouts_come_from_the_configuration() -> None:
    # Given a provider configured with a 12.5 s timeout
    wire = ProviderWire().json("GET", STATUS_PATHS["generate_task"], {}, status=500)
    provider = make("generate_task", wire, timeout_seconds=12.5)
    # When it sends a request
    with pytest.raises(ProviderTransientError):
        status(provider)
    # Then the request carries that read timeout, and connecting is capped at 5 s
    timeout = wire.only().extensions["timeout"]
    assert timeout["read"] == 12.5
    assert timeout["connect"] == 5.0


def test_a_client_passed_in_is_used_and_left_open_while_an_own_client_is_closed() -> None:
    # Given one provider with a client of the caller's and one that made its own
    wire = ProviderWire().json("GET", STATUS_PATHS["sorahk"], {}, status=500)
    shared = httpx.Client(transport=wire.transport)
    config = provider_config("sorahk", "sorahk", BASES["sorahk"], SECRET)
    borrowed = build_provider(config, client=shared)
    owned = SorahkProvider(config, transport=wire.transport)
    # When both call out and both are closed
    for provider in (borrowed, owned):
        with pytest.raises(ProviderTransientError):
            provider.status("t-1")
        provider.close()
    # Then the shared client carried its call and is still open; the own one is closed
    assert wire.paths() == ["GET /v1/tasks/t-1"] * 2
    assert owned.client is not shared
    assert not shared.is_closed
    assert owned.client.is_closed


def test_a_provider_makes_its_http_client_on_its_first_request_not_when_built() -> None:
    # Given a provider built without a client (validation needs none)
    wire = ProviderWire().json("GET", STATUS_PATHS["sorahk"], {}, status=500)
    provider = SorahkProvider(provider_config("sorahk", "sorahk", BASES["sorahk"], SECRET), transport=wire.transport)
    # Then it has made none, and closing it makes none either
    assert "client" not in vars(provider)
    provider.close()
    assert "client" not in vars(provider)
    # When it calls out, it makes its client, and keeps it
    with pytest.raises(ProviderTransientError):
        provider.status("t-1")
    assert provider.client is vars(provider)["client"]


# ---------------------------------------------------------------- transport failures


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("call", ["create", "status"])
@pytest.mark.parametrize("failure", [connect_refused, lambda: httpx.ConnectTimeout("connect timed out")])
def test_a_request_that_never_left_is_transient_for_every_call(
    protocol: str, call: str, failure: Callable[[], Exception]
) -> None:
    # Given a provider that cannot be reached
    invoke, paths = CALLS[call]
    wire = ProviderWire().on(method_of(call), paths[protocol], failure())
    provider = make(protocol, wire)
    # When reelay calls it, even for a paid create
    with pytest.raises(ProviderTransientError) as caught:
        invoke(provider)
    # Then the error is transient (nothing was sent, so a retry is safe), chained to its cause
    assert not isinstance(caught.value, CreateOutcomeUnknown)
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert caught.value.provider == protocol


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("failure", [read_timeout, dropped, lambda: httpx.ReadError("connection reset")])
def test_a_create_whose_answer_is_lost_is_an_unknown_outcome(protocol: str, failure: Callable[[], Exception]) -> None:
    # Given a provider that receives the create but whose answer never arrives
    wire = ProviderWire().on("POST", CREATE_PATHS[protocol], failure())
    provider = make(protocol, wire)
    # When reelay creates a task
    with pytest.raises(CreateOutcomeUnknown) as caught:
        create(provider)
    # Then the outcome is unknown (never resent blindly), not a transient error
    assert not isinstance(caught.value, ProviderTransientError)
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert len(wire.requests) == 1


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("failure", [read_timeout, dropped])
def test_a_status_whose_answer_is_lost_is_transient(protocol: str, failure: Callable[[], Exception]) -> None:
    wire = ProviderWire().on("GET", STATUS_PATHS[protocol], failure())
    provider = make(protocol, wire)
    with pytest.raises(ProviderTransientError) as caught:
        status(provider)
    assert isinstance(caught.value.__cause__, httpx.TransportError)


# ---------------------------------------------------------------- HTTP statuses


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("call", ["create", "status"])
def test_http_429_is_rate_limited_with_the_retry_after_seconds(protocol: str, call: str) -> None:
    invoke, paths = CALLS[call]
    wire = ProviderWire().json(
        method_of(call), paths[protocol], {"code": 429, "msg": "slow down"}, 429, **{"Retry-After": "7"}
    )
    with pytest.raises(ProviderRateLimited) as caught:
        invoke(make(protocol, wire))
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_http_401_names_the_provider_and_its_credential_but_never_the_key(protocol: str) -> None:
    # Given a provider that refuses the key and, carelessly, echoes it back
    body = {"code": 401, "msg": f"bad key {SECRET}", "message": f"bad key {SECRET}", "error": {"message": SECRET}}
    wire = ProviderWire().json("POST", CREATE_PATHS[protocol], body, 401)
    provider = make(protocol, wire)
    # When reelay creates a task
    with pytest.raises(ProviderAuthError) as caught:
        create(provider)
    # Then the message names the provider and says to check its credential, without the key
    message = str(caught.value)
    assert protocol in message
    assert "check the API key" in message
    assert SECRET not in message
    assert SECRET not in repr(caught.value.details)


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("http_status", [500, 502, 503])
@pytest.mark.parametrize("call", ["create", "status"])
def test_http_5xx_is_transient(protocol: str, http_status: int, call: str) -> None:
    invoke, paths = CALLS[call]
    wire = ProviderWire().on(method_of(call), paths[protocol], httpx.Response(http_status, text="<html>oops</html>"))
    provider = make(protocol, wire)
    if call == "create":
        # A 5xx on the paid create may still have made the task: an unknown outcome that the
        # submitter holds (or re-sends once where nothing can tell), never a plain retry.
        with pytest.raises(CreateServerError):
            invoke(provider)
        return
    with pytest.raises(ProviderTransientError) as caught:
        invoke(provider)
    assert not isinstance(caught.value, ProviderRateLimited)


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_a_gateway_timeout_on_a_create_is_an_unknown_outcome_but_transient_on_a_status(protocol: str) -> None:
    # Given a gateway that gave up waiting for the provider
    wire = (
        ProviderWire()
        .on("POST", CREATE_PATHS[protocol], httpx.Response(504, text="gateway timeout"))
        .on("GET", STATUS_PATHS[protocol], httpx.Response(504, text="gateway timeout"))
    )
    provider = make(protocol, wire)
    # Then the paid create may have happened; the status may simply be asked again
    with pytest.raises(CreateOutcomeUnknown):
        create(provider)
    with pytest.raises(ProviderTransientError):
        status(provider)


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        ("generate_task", {"code": 400, "msg": "prompt is required"}),
        ("sorahk", {"code": 1001, "message": "prompt is required", "data": None}),
        ("openai_videos", {"error": {"message": "prompt is required", "type": "invalid_request_error"}}),
    ],
)
def test_http_400_is_a_rejected_request_with_the_providers_message(protocol: str, body: dict[str, Any]) -> None:
    wire = ProviderWire().json("POST", CREATE_PATHS[protocol], body, 400)
    with pytest.raises(ProviderRejectedRequest) as caught:
        create(make(protocol, wire))
    assert "prompt is required" in str(caught.value)


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_http_402_is_insufficient_balance(protocol: str) -> None:
    wire = ProviderWire().json("POST", CREATE_PATHS[protocol], {"message": "pay up"}, 402)
    with pytest.raises(InsufficientBalance):
        create(make(protocol, wire))


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_http_404_on_a_tasks_endpoint_means_the_task_is_unknown(protocol: str) -> None:
    wire = ProviderWire().json("GET", STATUS_PATHS[protocol], {"code": 404, "msg": "task not found"}, 404)
    with pytest.raises(ProviderTaskUnknown) as caught:
        status(make(protocol, wire))
    assert "t-1" in str(caught.value)


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_http_404_on_a_create_points_at_the_base_url(protocol: str) -> None:
    wire = ProviderWire().on("POST", CREATE_PATHS[protocol], httpx.Response(404, text="Not Found"))
    with pytest.raises(ProviderProtocolError) as caught:
        create(make(protocol, wire))
    assert BASES[protocol] in str(caught.value)


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("content", [b"<html>maintenance</html>", b"", b"{not json"])
def test_a_success_whose_body_is_not_json_is_a_protocol_error(protocol: str, content: bytes) -> None:
    wire = ProviderWire().on("GET", STATUS_PATHS[protocol], httpx.Response(200, content=content))
    with pytest.raises(ProviderProtocolError):
        status(make(protocol, wire))


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), (None, None), ("", None), ("soon", None), ("nan", None)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2025, 10, 19, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("protocol", "cls", "callbacks"),
    [
        ("generate_task", GenerateTaskProvider, True),
        ("sorahk", SorahkProvider, False),
        ("openai_videos", OpenAIVideosProvider, False),
    ],
)
def test_build_provider_makes_the_protocols_adapter(protocol: str, cls: type[HttpProvider], callbacks: bool) -> None:
    config = provider_config(f"my-{protocol}", protocol, BASES[protocol], SECRET)
    provider = build_provider(config)
    assert type(provider) is cls
    assert provider.name == f"my-{protocol}"
    assert provider.supports_callbacks is callbacks
    assert provider.capabilities().callbacks is callbacks
    assert provider.capabilities().protocol == protocol
    provider.close()


def test_an_unknown_protocol_is_a_configuration_error_listing_the_known_ones() -> None:
    config = ProviderConfig(name="x", protocol="fal", base_url="https://x.example", api_key=SECRET)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as caught:
        build_provider(config)
    assert "'fal'" in str(caught.value)
    for protocol in PROTOCOL_NAMES:
        assert protocol in str(caught.value)


def test_protocol_defaults() -> None:
    assert set(PROTOCOL_DEFAULTS) == set(PROTOCOLS) == set(PROTOCOL_NAMES)
    assert PROTOCOL_DEFAULTS["generate_task"]["auth_prefix"] == "Bearer "
    assert PROTOCOL_DEFAULTS["sorahk"]["auth_prefix"] == "Bearer "
    assert PROTOCOL_DEFAULTS["openai_videos"]["auth_prefix"] == ""
    assert PROTOCOL_DEFAULTS["generate_task"]["typical_seconds"] == 180
    assert PROTOCOL_DEFAULTS["sorahk"]["typical_seconds"] == 300
    assert PROTOCOL_DEFAULTS["openai_videos"]["typical_seconds"] == 240
    for defaults in PROTOCOL_DEFAULTS.values():
        assert defaults["deadline_seconds"] > defaults["typical_seconds"]
        ProviderConfig(name="n", protocol="p", base_url="https://x", api_key=SECRET, **defaults)  # type: ignore[arg-type]


def test_provider_config_applies_defaults_then_overrides() -> None:
    config = provider_config("o", "openai_videos", "http://h:1/sora/", SECRET, typical_seconds=60)
    assert config.auth_prefix == ""
    assert config.typical_seconds == 60
    assert config.base_url == "http://h:1/sora"
    assert config.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config)
