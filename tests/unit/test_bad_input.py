"""Bad input, all of it: every kind is a clear 4xx, none a 5xx, and nothing is stored.

One table for the client API and the callback route, through the real resolvers. The rows
marked ``was 5xx`` answered 500 before issue 8.
"""

from __future__ import annotations

import base64
import json
from typing import Any, NamedTuple

import boto3
import pytest

from reelay.api import build_app
from reelay.aws import ResultBucket, TaskQueue
from reelay.callback_api import build_callback_app
from reelay.callbacks import CallbackReceiver
from reelay.catalog import ProviderCatalog
from reelay.errors import RequestInvalid
from reelay.models import TaskStatus, VideoRequest
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from tests.unit.conftest import load_event
from tests.unit.fakes import FakeProvider, config

TOKENS = CallbackTokens(b"c" * 32)
OK = {"provider": "generate_task", "prompt": "a cat"}


class Bad(NamedTuple):
    name: str
    status: int
    method: str = "POST"
    path: str = "/v1/tasks"
    body: Any = None  # JSON-encoded
    raw: str | None = None  # sent as is
    headers: dict[str, str] | None = None
    qs: str = ""
    base64_body: bool = False


def _nested(depth: int) -> str:
    return '{"provider": "generate_task", "prompt": "x", "metadata": ' + "[" * depth + "]" * depth + "}"


API_CASES = [
    Bad("malformed JSON", 400, raw="{not json"),
    Bad("empty body", 422, raw=""),
    Bad("JSON array body", 422, raw="[1, 2]"),
    Bad("missing prompt", 422, body={"provider": "generate_task"}),
    Bad("missing provider", 422, body={"prompt": "x"}),
    Bad("whitespace-only prompt", 422, body=OK | {"prompt": "   "}),
    Bad("prompt over 4000 characters", 422, body=OK | {"prompt": "x" * 4001}),
    Bad("unknown provider", 422, body=OK | {"provider": "nope"}),
    Bad("duration the provider cannot do", 422, body=OK | {"duration": 5}),
    Bad("duration as a string", 422, body=OK | {"duration": "4"}),
    Bad("duration not whole", 422, body=OK | {"duration": 4.5}),
    Bad("bad orientation", 422, body=OK | {"orientation": "diagonal"}),
    Bad("image_url not a URL", 422, body=OK | {"image_url": "not a url"}),
    Bad("image_url ftp scheme", 422, body=OK | {"image_url": "ftp://h.example/x.png"}),
    # The provider fetches a reference image from the internet: an address or name it cannot reach
    # there (or reaches inside its own network) fails before the paid create.
    Bad("image_url on the metadata address", 422, body=OK | {"image_url": "http://169.254.169.254/latest/meta-data"}),
    Bad("image_url on localhost", 422, body=OK | {"image_url": "http://localhost:8080/cat.png"}),
    Bad("image_url on a private address", 422, body=OK | {"image_url": "https://10.1.2.3/cat.png"}),
    Bad("image_url on IPv6 loopback", 422, body=OK | {"image_url": "http://[::1]/cat.png"}),
    Bad("image_url on IPv4-mapped loopback", 422, body=OK | {"image_url": "http://[::ffff:127.0.0.1]/cat.png"}),
    Bad("image_url on a .internal name", 422, body=OK | {"image_url": "https://img.corp.internal/cat.png"}),
    Bad("unknown field", 422, body=OK | {"colour": "red"}),
    Bad("pro not a boolean", 422, body=OK | {"pro": 1}),
    Bad("metadata not strings", 422, body=OK | {"metadata": {"a": {"b": 1}}}),
    Bad("metadata with 33 keys", 422, body=OK | {"metadata": {f"k{i}": "v" for i in range(33)}}),
    Bad("metadata key of 65 characters", 422, body=OK | {"metadata": {"k" * 65: "v"}}),
    Bad("metadata value of 513 characters", 422, body=OK | {"metadata": {"k": "v" * 513}}),
    Bad("metadata over 8 KB in all", 422, body=OK | {"metadata": {f"k{i}": "v" * 500 for i in range(17)}}),
    Bad("metadata of 200 KB (was 5xx)", 422, body=OK | {"metadata": {"k": "v" * 200_000}}),
    Bad("body over 256 KB", 413, body=OK | {"prompt": "x" * 300_000}),
    Bad("JSON nested 10,000 deep (was 5xx)", 422, raw=_nested(10_000)),
    Bad("JSON nested 33 deep", 422, raw=_nested(32)),
    Bad("NaN in JSON", 400, raw='{"provider": "generate_task", "prompt": "x", "duration": NaN}'),
    Bad("unpaired surrogate escape", 400, raw='{"provider": "generate_task", "prompt": "\\ud800"}'),
    Bad("body not UTF-8", 400, raw="\udcfc\udca5"),
    Bad("base64 body not base64", 400, raw="***", base64_body=True),
    Bad("multipart body", 415, raw=json.dumps(OK), headers={"content-type": "multipart/form-data"}),
    Bad("text/plain body", 415, raw="hello", headers={"content-type": "text/plain"}),
    Bad("Idempotency-Key of 300 characters", 422, body=OK, headers={"idempotency-key": "k" * 300}),
    Bad("forged cursor (was 5xx)", 422, "GET", qs="cursor=eyJwayI6IlRBU0sjeCJ9.AAAA"),
    Bad("cursor not base64", 422, "GET", qs="cursor=%%%"),
    Bad("limit 0", 422, "GET", qs="limit=0"),
    Bad("limit not a number", 422, "GET", qs="limit=ten"),
    Bad("unknown status filter", 422, "GET", qs="status=bogus"),
    Bad("unknown provider filter", 422, "GET", qs="provider=nope"),
    Bad("malformed task id", 422, "GET", "/v1/tasks/tsk_NOT-AN-ID"),
    Bad("unknown task", 404, "GET", "/v1/tasks/tsk_0123456789abcdef0123456789ab"),
    Bad("remix of an unknown task", 404, path="/v1/tasks/tsk_0123456789abcdef0123456789ab/remix", body={"prompt": "x"}),
    Bad("remix with an unknown field", 422, path="/v1/tasks/tsk_0123456789abcdef0123456789ab/remix", body={"p": 1}),
    Bad("upload over 10 MiB", 422, path="/v1/uploads", body={"content_type": "image/png", "bytes": 10 * 2**20 + 1}),
    Bad("upload of a GIF", 422, path="/v1/uploads", body={"content_type": "image/gif", "bytes": 10}),
    Bad("images from a provider without images", 422, path="/v1/images", body=OK),
    Bad("unknown route", 404, "GET", "/v1/nothing"),
]


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    provider = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    store = DynamoTaskStore("tasks")
    service = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
    receiver = CallbackReceiver(store, catalog, TOKENS, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])))
    return {
        "api": build_app(lambda: service, [provider.config]),
        "callbacks": build_callback_app(lambda: receiver),
        "service": service,
        "store": store,
        "provider": provider,
    }


class _Ctx:
    function_name = "api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"


def _tasks_stored() -> int:
    table = boto3.resource("dynamodb").Table("tasks")
    return sum(1 for i in table.scan()["Items"] if str(i["pk"]).startswith("TASK#"))


@pytest.mark.parametrize("case", API_CASES, ids=[c.name for c in API_CASES])
def test_bad_input_to_the_api_is_a_clear_4xx_and_stores_nothing(world: Any, case: Bad) -> None:
    # Given a request that is wrong in one way
    event = load_event("api_create_task.json")
    event["headers"] = {"content-type": "application/json", **(case.headers or {})}
    event["rawPath"] = case.path
    event["requestContext"]["http"].update(method=case.method, path=case.path)
    event["rawQueryString"] = case.qs
    event["queryStringParameters"] = dict(p.split("=", 1) for p in case.qs.split("&")) if case.qs else None
    event["body"] = case.raw if case.raw is not None else (json.dumps(case.body) if case.body is not None else None)
    event["isBase64Encoded"] = case.base64_body
    # When it reaches the API
    out = world["api"].resolve(event, _Ctx())
    # Then the answer is the expected 4xx, with a code and a message, and nothing was stored
    assert out["statusCode"] == case.status, out["body"][:500]
    error = json.loads(out["body"])["error"]
    assert error["code"] and error["message"]
    assert _tasks_stored() == 0


def test_a_reference_image_on_a_listed_simulator_host_is_let_through_and_no_other(aws: dict[str, str]) -> None:
    provider = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    service = TaskService(
        DynamoTaskStore("tasks"),
        catalog,
        TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        ResultBucket("results"),
        result_hosts=frozenset({"127.0.0.1:9999"}),  # REELAY_ALLOWED_RESULT_HOSTS: a local simulator
    )
    listed = VideoRequest(provider="generate_task", prompt="a cat", image_url="http://127.0.0.1:9999/cat.png")
    assert service.create(listed)[1]
    other_port = listed.model_copy(update={"image_url": "http://127.0.0.1:9998/cat.png"})
    with pytest.raises(RequestInvalid, match="loopback"):
        service.create(other_port)
    public = listed.model_copy(update={"image_url": "https://img.example/cat.png"})
    assert service.create(public)[1]
    assert _tasks_stored() == 2


class BadCallback(NamedTuple):
    name: str
    status: int
    token: str | None  # "GOOD": the task's real token
    body: bytes = b"{}"
    base64_body: bool = False
    raw_query: str | None = None
    provider: str = "generate_task"


CALLBACK_CASES = [
    BadCallback("no token", 401, None),
    BadCallback("wrong token", 401, "wrong"),
    BadCallback("non-ASCII token (was 5xx)", 401, "tökén"),
    BadCallback("percent-encoded non-ASCII token", 401, None, raw_query="t=%C3%B6k%FF"),
    BadCallback("another task's token", 401, TOKENS.token("generate_task", "tsk_other")),
    BadCallback("binary body, wrong token (was 5xx)", 401, "wrong", bytes(range(256)), base64_body=True),
    BadCallback("body not base64, wrong token", 401, "wrong", b"***", base64_body=True),
    BadCallback("provider this stack does not have", 401, "GOOD", provider="nope"),
    BadCallback("callback body over 256 KB", 413, "GOOD", b"x" * (256 * 1024 + 1)),
    BadCallback("callback JSON nested 10,000 deep", 422, "GOOD", b"[" * 10_000 + b"]" * 10_000),
]


@pytest.mark.parametrize("case", CALLBACK_CASES, ids=[c.name for c in CALLBACK_CASES])
def test_bad_callbacks_are_refused_before_anything_is_parsed(world: Any, case: BadCallback) -> None:
    # Given a task waiting for its provider's callback
    task = world["service"].create(VideoRequest(provider="generate_task", prompt="a cat"))[0]
    world["store"].transition(task, TaskStatus.SUBMITTED, reason="t", provider_task_id="p-1")
    token = TOKENS.token(case.provider, task.id) if case.token == "GOOD" else case.token
    event = load_event("callback_generate_task.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/callbacks/{case.provider}/{task.id}"
    event["pathParameters"] = {"provider": case.provider, "task_id": task.id}
    event["rawQueryString"] = case.raw_query if case.raw_query is not None else (f"t={token}" if token else "")
    event["queryStringParameters"] = {"t": token} if token else None
    event["body"] = base64.b64encode(case.body).decode() if case.base64_body and case.body != b"***" else None
    if case.body == b"***" or not case.base64_body:
        event["body"] = case.body.decode("latin-1")
    event["isBase64Encoded"] = case.base64_body
    # When the callback arrives
    out = world["callbacks"].resolve(event, _Ctx())
    # Then it is refused with a 4xx, and the provider was never asked
    assert out["statusCode"] == case.status, out["body"][:300]
    assert json.loads(out["body"])["error"]["code"]
    assert world["provider"].status_calls == []


def test_a_binary_callback_body_with_the_right_token_is_an_empty_hint_not_an_error(world: Any) -> None:
    task = world["service"].create(VideoRequest(provider="generate_task", prompt="a cat"))[0]
    world["store"].transition(task, TaskStatus.SUBMITTED, reason="t", provider_task_id="p-1")
    event = load_event("callback_generate_task.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/callbacks/generate_task/{task.id}"
    event["pathParameters"] = {"provider": "generate_task", "task_id": task.id}
    token = TOKENS.token("generate_task", task.id)
    event["rawQueryString"], event["queryStringParameters"] = f"t={token}", {"t": token}
    event["body"], event["isBase64Encoded"] = base64.b64encode(bytes(range(256))).decode(), True
    out = world["callbacks"].resolve(event, _Ctx())
    assert out["statusCode"] == 200 and world["provider"].status_calls == ["p-1"]


def test_there_are_at_least_25_kinds_of_bad_input() -> None:
    assert len(API_CASES) + len(CALLBACK_CASES) >= 25
