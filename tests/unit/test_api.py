"""The client API through the real handler path (Powertools resolver), against moto."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from reelay.api import build_app
from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tokens import CursorSigner
from tests.unit.conftest import drain, load_event
from tests.unit.fakes import FakeProvider, config


class _Ctx:
    function_name = "api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"


@pytest.fixture
def api(aws: dict[str, str]) -> Any:
    provider = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    service = TaskService(
        DynamoTaskStore("tasks"),
        catalog,
        TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        ResultBucket("results"),
        cursors=CursorSigner(b"k" * 32),
    )
    app = build_app(lambda: service, [provider.config])

    def call(
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
        qs: str = "",
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        event = load_event("api_create_task.json")
        event["headers"] = {"content-type": "application/json", **(headers or {})}
        event["rawPath"] = path
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        event["rawQueryString"] = qs
        event["queryStringParameters"] = dict(p.split("=", 1) for p in qs.split("&")) if qs else None
        event["body"] = raw if raw is not None else (json.dumps(body) if body is not None else None)
        out = app.resolve(event, _Ctx())
        return out["statusCode"], json.loads(out["body"]), out.get("headers", {})

    call.submit_queue = aws["SUBMIT_QUEUE_URL"]  # type: ignore[attr-defined]
    call.app = app  # type: ignore[attr-defined]
    return call


def _count_tasks() -> int:
    table = boto3.resource("dynamodb").Table("tasks")
    return sum(1 for i in table.scan()["Items"] if i["pk"].startswith("TASK#"))


def test_create_task_answers_202_stores_queued_and_enqueues(api: Any) -> None:
    status, body, headers = api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a cat", "duration": 4})
    assert status == 202
    assert body["status"] == "queued" and body["provider"] == "generate_task"
    assert headers["Location"] == f"/v1/tasks/{body['id']}"
    assert drain(api.submit_queue) == [{"task_id": body["id"]}]


def test_powertools_development_mode_prints_no_request_and_no_traceback(
    api: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_DEV", "true")  # reelay dev's readable logs
    from reelay.api import build_app

    def broken() -> Any:
        raise RuntimeError("internal detail")

    app = build_app(broken, None)
    event = load_event("api_create_task.json")
    event["headers"] = {"content-type": "application/json", "authorization": "Bearer rk_live_secret_value"}
    event["body"] = json.dumps({"provider": "generate_task", "prompt": "a cat"})
    # An unhandled error is the function's error (the HTTP API answers its own bare 500), not a
    # response carrying the traceback
    with pytest.raises(RuntimeError):
        app.resolve(event, _Ctx())
    printed = capsys.readouterr()
    assert "rk_live_secret_value" not in printed.out + printed.err


@pytest.mark.parametrize(
    ("field", "url", "said"),
    [
        ("image_url", "http://localhost:8080/cat.png", "localhost is not a public host name"),
        ("image_url", "http://10.0.0.7/cat.png", "names a loopback, private"),
        ("image_url", "https://8.8.8.8/cat.png", "must name a DNS host name, not an address"),
        ("image_url", "https://img.corp.internal/cat.png", "img.corp.internal is not a public host name"),
        ("webhook_url", "http://hooks.example/x", "must be https"),
    ],
)
def test_a_refused_url_is_told_why_in_words_not_by_its_pattern(api: Any, field: str, url: str, said: str) -> None:
    status, body, _ = api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a cat", field: url})
    assert status == 422
    (detail,) = body["error"]["details"]
    assert detail["field"] == field and said in detail["message"] and "pattern" not in detail["message"]
    assert _count_tasks() == 0


def _refused_field(body: dict[str, Any], path: str = "/v1/tasks") -> dict[str, Any]:
    """The one 422 detail of a POST body against the three real protocols' shapes."""
    protocols = ("sorahk", "openai_videos", "generate_task")
    app = build_app(lambda: None, [config(p, p) for p in protocols])
    event = load_event("api_create_task.json")
    event["headers"] = {"content-type": "application/json"}
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["body"] = json.dumps({"prompt": "a fox"} | body)
    out = app.resolve(event, _Ctx())
    assert out["statusCode"] == 422
    (detail,) = json.loads(out["body"])["error"]["details"]
    return detail


@pytest.mark.parametrize(
    ("body", "field", "said"),
    [
        # The normal model's shape is picked (no `pro`): its 10 or 15, and where 25 is sold.
        (
            {"provider": "sorahk", "duration": 25},
            "duration",
            "Input should be 10 or 15; 25 is offered by sorahk (sorahk), pro by `pro: true`",
        ),
        (
            {"provider": "sorahk", "pro": True, "resolution": "720p"},
            "resolution",
            "Input should be '1080p'; '720p' is offered by sorahk (sorahk), normal model",
        ),
        (
            {"provider": "openai_videos", "duration": 25, "resolution": "1080p"},
            "resolution",
            "Input should be '720p'; '1080p' is offered by openai_videos (openai_videos): 1080p (the hd suffix)",
        ),
        # A named model fixes the options: the message says what it means.
        (
            {"provider": "openai_videos", "model": "sora_video2-landscape", "duration": 15},
            "duration",
            "Input should be 10; openai_videos (openai_videos) with an explicit model: landscape, 720p, 10 s",
        ),
    ],
)
def test_a_value_another_shape_of_the_provider_offers_is_refused_naming_that_shape(
    body: dict[str, Any], field: str, said: str
) -> None:
    detail = _refused_field(body)
    assert detail["field"] == field and detail["message"].startswith(said), detail


def test_a_value_no_shape_of_the_provider_offers_is_refused_with_its_choices_alone() -> None:
    detail = _refused_field({"provider": "generate_task", "duration": 10})
    assert detail == {"field": "duration", "message": "Input should be 4, 8 or 12"}


@pytest.mark.parametrize(
    ("method", "path", "qs", "body", "field", "said"),
    [
        ("GET", "/v1/tasks/tsk_nope", "", None, "task_id", "is not a task id (tsk_ and 28 hex digits)"),
        ("GET", "/v1/batches/bat_nope", "", None, "batch_id", "is not a batch id (bat_ and 28 hex digits)"),
        ("GET", "/v1/tasks", "cursor=zzz", None, "cursor", "is not a cursor this API gave"),
        ("POST", "/v1/tasks", "", {"provider": "generate_task", "prompt": "\u2003\n"}, "prompt", "must contain a"),
        (
            "POST",
            "/v1/batches",
            "",
            {"name": "../up", "bytes": 10, "md5": "0" * 32},
            "name",
            "must be letters, digits and ._- in /-separated parts",
        ),
        (
            "POST",
            "/v1/batches",
            "",
            {"name": "shots", "bytes": 10, "md5": "ABC"},
            "md5",
            "must be the file's MD5 in 32 lowercase hex digits",
        ),
    ],
)
def test_a_value_that_misses_a_pattern_is_told_what_the_field_takes_not_the_pattern(
    api: Any, method: str, path: str, qs: str, body: Any, field: str, said: str
) -> None:
    status, answer, _ = api(method, path, body, qs=qs)
    assert status == 422
    (detail,) = answer["error"]["details"]
    assert detail["field"] == field and said in detail["message"] and "pattern" not in answer["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field", "said"),
    [
        ({"size": "big"}, "size", "must be WIDTHxHEIGHT in pixels, such as 1024x1024"),
        ({"image_keys": ["../x"]}, "image_keys.0", "is not a key this API gives (POST /v1/uploads)"),
    ],
)
def test_an_image_request_that_misses_a_pattern_is_told_what_the_field_takes(
    body: dict[str, Any], field: str, said: str
) -> None:
    detail = _refused_field({"provider": "openai_videos"} | body, "/v1/images")
    assert detail["field"] == field and detail["message"].startswith(said), detail


def test_idempotency_key_same_body_returns_same_task_and_enqueues_once(api: Any) -> None:
    req = {"provider": "generate_task", "prompt": "a cat"}
    s1, first, _ = api("POST", "/v1/tasks", req, headers={"idempotency-key": "k1"})
    s2, second, h2 = api("POST", "/v1/tasks", req, headers={"idempotency-key": "k1"})
    assert (s1, s2) == (202, 202)
    assert first["id"] == second["id"]
    assert h2["Idempotent-Replayed"] == "true"
    assert len(drain(api.submit_queue)) == 1
    assert _count_tasks() == 1


def test_idempotency_key_with_other_body_is_409(api: Any) -> None:
    api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a cat"}, headers={"idempotency-key": "k1"})
    status, body, _ = api(
        "POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a dog"}, headers={"idempotency-key": "k1"}
    )
    assert status == 409
    assert body["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert _count_tasks() == 1


def test_a_write_that_lost_to_a_concurrent_one_is_409_not_a_5xx(api: Any, monkeypatch: Any) -> None:
    from reelay.errors import TransitionConflict

    def create(*args: Any, **kwargs: Any) -> Any:
        raise TransitionConflict("task tsk_1 changed while it was being written")

    monkeypatch.setattr(TaskService, "create", create)
    status, body, _ = api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a cat"})
    assert (status, body["error"]["code"]) == (409, "CONFLICT")
    assert "changed while" in body["error"]["message"]


BAD_INPUTS: list[tuple[str, str | None, Any, int, str]] = [
    # (name, raw body, json body, expected status, field or code that must be named)
    ("malformed JSON", "{not json", None, 400, "MALFORMED_JSON"),
    ("empty body", "", None, 422, "VALIDATION_FAILED"),
    ("JSON array body", "[1,2]", None, 422, "VALIDATION_FAILED"),
    ("missing prompt", None, {"provider": "generate_task"}, 422, "prompt"),
    ("missing provider", None, {"prompt": "x"}, 422, "provider"),
    ("empty prompt", None, {"provider": "generate_task", "prompt": "   "}, 422, "prompt"),
    ("prompt too long", None, {"provider": "generate_task", "prompt": "x" * 4001}, 422, "prompt"),
    ("unknown provider", None, {"provider": "nope", "prompt": "x"}, 422, "provider"),
    (
        "duration the provider cannot do",
        None,
        {"provider": "generate_task", "prompt": "x", "duration": 5},
        422,
        "duration",
    ),
    ("duration not a number", None, {"provider": "generate_task", "prompt": "x", "duration": "long"}, 422, "duration"),
    ("negative duration", None, {"provider": "generate_task", "prompt": "x", "duration": -4}, 422, "duration"),
    (
        "bad orientation",
        None,
        {"provider": "generate_task", "prompt": "x", "orientation": "diagonal"},
        422,
        "orientation",
    ),
    ("bad resolution", None, {"provider": "generate_task", "prompt": "x", "resolution": "8k"}, 422, "resolution"),
    (
        "image_url not a URL",
        None,
        {"provider": "generate_task", "prompt": "x", "image_url": "not a url"},
        422,
        "image_url",
    ),
    (
        "image_url ftp scheme",
        None,
        {"provider": "generate_task", "prompt": "x", "image_url": "ftp://h/x.png"},
        422,
        "image_url",
    ),
    (
        "webhook_url not a URL",
        None,
        {"provider": "generate_task", "prompt": "x", "webhook_url": "nope"},
        422,
        "webhook_url",
    ),
    ("unknown field", None, {"provider": "generate_task", "prompt": "x", "colour": "red"}, 422, "colour"),
    (
        "metadata not strings",
        None,
        {"provider": "generate_task", "prompt": "x", "metadata": {"a": {"b": 1}}},
        422,
        "metadata",
    ),
    ("pro not a boolean", None, {"provider": "generate_task", "prompt": "x", "pro": "very"}, 422, "pro"),
]


@pytest.mark.parametrize(("name", "raw", "body", "status", "named"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_4xx_and_creates_nothing(
    api: Any, name: str, raw: str | None, body: Any, status: int, named: str
) -> None:
    got, answer, _ = api("POST", "/v1/tasks", body, raw=raw)
    assert got == status, answer
    assert named in json.dumps(answer["error"])
    assert answer["error"]["message"]
    assert _count_tasks() == 0
    assert drain(api.submit_queue) == []


def test_bad_idempotency_key_header_is_422(api: Any) -> None:
    status, _body, _ = api(
        "POST", "/v1/tasks", {"provider": "generate_task", "prompt": "x"}, headers={"idempotency-key": "k" * 300}
    )
    assert status == 422
    assert _count_tasks() == 0


def test_unknown_task_is_404_and_malformed_id_is_422(api: Any) -> None:
    status, body, _ = api("GET", "/v1/tasks/tsk_0123456789abcdef0123456789ab")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, body, _ = api("GET", "/v1/tasks/../../etc")
    assert status in (404, 422)


def test_list_is_newest_first_with_cursor_paging(api: Any) -> None:
    ids = [api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": f"p{i}"})[1]["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        qs = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = api("GET", "/v1/tasks", qs=qs)
        assert status == 200
        seen += [t["id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


def test_list_filters_by_status_and_rejects_bad_values(api: Any) -> None:
    api("POST", "/v1/tasks", {"provider": "generate_task", "prompt": "p"})
    assert len(api("GET", "/v1/tasks", qs="status=queued")[1]["tasks"]) == 1
    assert api("GET", "/v1/tasks", qs="status=succeeded")[1]["tasks"] == []
    assert api("GET", "/v1/tasks", qs="status=bogus")[0] == 422
    assert api("GET", "/v1/tasks", qs="limit=0")[0] == 422
    assert api("GET", "/v1/tasks", qs="cursor=%%%")[0] == 422


def test_openapi_document_declares_every_answer_and_error_of_every_route(api: Any) -> None:
    # Given the API, When its document is fetched
    status, doc, _ = api("GET", "/v1/openapi.json")
    assert status == 200
    # Then every route names its answer's model and an ErrorBody for each error it can give
    schemas = doc["components"]["schemas"]
    assert {"TaskView", "TaskPage", "ProviderList", "UploadTicket", "ErrorBody"} <= set(schemas)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            answers = op["responses"]
            ok = next(code for code in answers if code.startswith("2"))
            assert "$ref" in answers[ok]["content"]["application/json"]["schema"], (method, path)
            for code, answer in answers.items():
                if code[0] in "45":
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, code)
    create = doc["paths"]["/v1/tasks"]["post"]
    assert {"202", "400", "409", "413", "415", "422"} <= set(create["responses"])
    # And the request body names the configured provider as a constant of its shape
    shapes = create["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert shapes and all(
        schemas[s["$ref"].rsplit("/", 1)[1]]["properties"]["provider"]["const"] == "generate_task" for s in shapes
    )
    assert schemas["UploadRequest"]["properties"]["bytes"]["maximum"] == 10 * 1024 * 1024


def test_swagger_ui_is_served_at_v1_docs(api: Any) -> None:
    event = load_event("api_create_task.json")
    event.update(rawPath="/v1/docs", body=None, rawQueryString="", queryStringParameters=None)
    event["requestContext"]["http"].update(method="GET", path="/v1/docs")
    out = api.app.resolve(event, _Ctx())
    assert out["statusCode"] == 200 and "swagger-ui" in out["body"].lower()


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        ("multipart/form-data", '{"provider": "generate_task", "prompt": "x"}', 415),
        ("text/plain", "hello", 415),
        ("application/json", "\udcfc\udca5", 400),  # bytes that are not UTF-8, as API Gateway passes them
    ],
)
def test_bodies_that_are_not_utf8_json_are_a_4xx(api: Any, content_type: str, raw: str, status: int) -> None:
    got, body, _ = api("POST", "/v1/tasks", raw=raw, headers={"content-type": content_type})
    assert got == status and body["error"]["message"]
    assert _count_tasks() == 0
