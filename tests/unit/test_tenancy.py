"""Two owners through the real resolver: each sees only its own tasks, uploads and keys.

Owners come from the authorizer context exactly as API Gateway v2 puts it in the event:
``requestContext.authorizer.iam.userArn`` (IAM) or ``authorizer.jwt.claims`` (JWT).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from pydantic import SecretStr

from reelay.api import build_app, owner_of
from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.models import TaskStatus
from reelay.providers.base import ProviderConfig
from reelay.providers.registry import build_provider
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tokens import CursorSigner
from tests.unit.conftest import load_event
from tests.unit.fakes import FakeProvider, config

ANN = {"iam": {"userArn": "arn:aws:iam::111111111111:user/ann"}}
BOB = {"iam": {"userArn": "arn:aws:iam::222222222222:user/bob"}}
JWT_A = {"jwt": {"claims": {"iss": "https://issuer-a.example", "sub": "alice"}, "scopes": None}}
JWT_B = {"jwt": {"claims": {"iss": "https://issuer-b.example", "sub": "alice"}, "scopes": None}}


class _Ctx:
    function_name = "api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"


class Client:
    """Calls the resolver as one owner."""

    def __init__(self, app: Any, authorizer: dict[str, Any] | None) -> None:
        self.app = app
        self.authorizer = authorizer

    def __call__(self, method: str, path: str, body: Any = None, *, qs: str = "") -> tuple[int, dict[str, Any]]:
        event = load_event("api_create_task.json")
        event["headers"] = {"content-type": "application/json"}
        event["rawPath"] = path
        event["requestContext"]["http"].update(method=method, path=path)
        event["requestContext"].pop("authorizer", None)
        if self.authorizer is not None:
            event["requestContext"]["authorizer"] = self.authorizer
        event["rawQueryString"] = qs
        event["queryStringParameters"] = dict(p.split("=", 1) for p in qs.split("&")) if qs else None
        event["body"] = json.dumps(body) if body is not None else None
        out = self.app.resolve(event, _Ctx())
        return out["statusCode"], json.loads(out["body"])

    def create(self, prompt: str, provider: str = "generate_task") -> str:
        status, body = self("POST", "/v1/tasks", {"provider": provider, "prompt": prompt})
        assert status == 202, body
        return str(body["id"])

    def ids(self, qs: str = "") -> list[str]:
        seen, cursor = [], None
        while True:
            status, page = self(
                "GET", "/v1/tasks", qs="&".join(p for p in (qs, f"cursor={cursor}" if cursor else "") if p)
            )
            assert status == 200, page
            seen += [t["id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
            if not cursor:
                return seen


@pytest.fixture
def stack(aws: dict[str, str]) -> dict[str, Any]:
    fake = FakeProvider(config("generate_task"))
    openai = build_provider(
        ProviderConfig(
            name="openai_videos", protocol="openai_videos", base_url="https://o.example", api_key=SecretStr("k")
        )
    )
    providers = {"generate_task": fake, "openai_videos": openai}
    catalog = ProviderCatalog((fake.config, openai.config), factory=lambda c: providers[c.name])
    store = DynamoTaskStore("tasks")
    service = TaskService(
        store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"), cursors=CursorSigner(b"c" * 32)
    )
    app = build_app(lambda: service, [fake.config, openai.config])
    return {"app": app, "store": store}


def _succeed(store: DynamoTaskStore, task_id: str) -> None:
    task = store.update(store.get(task_id), provider_task_id="video_1")
    task = store.transition(task, TaskStatus.INGESTING, reason="test")
    store.transition(task, TaskStatus.SUCCEEDED, reason="test")


def test_owners_come_from_the_authorizer_as_api_gateway_puts_them() -> None:
    assert owner_of({"requestContext": {"authorizer": ANN}}) == "arn:aws:iam::111111111111:user/ann"
    assert owner_of({"requestContext": {"authorizer": JWT_A}}) == "jwt:https://issuer-a.example#alice"
    # The same subject at another issuer is someone else.
    assert owner_of({"requestContext": {"authorizer": JWT_B}}) != owner_of({"requestContext": {"authorizer": JWT_A}})
    assert owner_of({"requestContext": {}}) == "local"


@pytest.mark.parametrize(
    ("first", "second"), [(ANN, BOB), (JWT_A, JWT_B), (None, ANN)], ids=["iam", "jwt", "local-iam"]
)
def test_each_owner_lists_and_reads_only_its_own_tasks(stack: dict[str, Any], first: Any, second: Any) -> None:
    # Given two owners with interleaved tasks
    a, b = Client(stack["app"], first), Client(stack["app"], second)
    mine, theirs = [], []
    for i in range(5):
        mine.append(a.create(f"a{i}"))
        theirs.append(b.create(f"b{i}"))
    # When each lists (two per page), Then each sees exactly its own, newest first, in full pages
    status, page = a("GET", "/v1/tasks", qs="limit=2")
    assert status == 200 and len(page["tasks"]) == 2
    assert a.ids("limit=2") == list(reversed(mine))
    assert b.ids("limit=2") == list(reversed(theirs))
    assert a.ids("status=queued&provider=generate_task&limit=2") == list(reversed(mine))
    assert a.ids("provider=openai_videos") == []
    # And another owner's task is a 404 that says no more than a missing one
    status, foreign = a("GET", f"/v1/tasks/{theirs[0]}")
    missing_id = "tsk_" + "0" * 28
    status_missing, missing = a("GET", f"/v1/tasks/{missing_id}")
    assert (status, status_missing) == (404, 404)
    assert foreign["error"]["message"].replace(theirs[0], "ID") == missing["error"]["message"].replace(missing_id, "ID")
    assert a("GET", f"/v1/tasks/{mine[0]}")[0] == 200


def test_remix_of_another_owners_video_is_404_and_of_ones_own_is_accepted(stack: dict[str, Any]) -> None:
    ann, bob = Client(stack["app"], ANN), Client(stack["app"], BOB)
    parent = ann.create("a lighthouse", provider="openai_videos")
    _succeed(stack["store"], parent)
    status, body = bob("POST", f"/v1/tasks/{parent}/remix", {"prompt": "at night"})
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, child = ann("POST", f"/v1/tasks/{parent}/remix", {"prompt": "at night"})
    assert status == 202 and child["parent_task_id"] == parent
    assert bob.ids() == [] and set(ann.ids()) == {parent, child["id"]}


def test_images_take_only_the_callers_own_uploads(stack: dict[str, Any]) -> None:
    ann, bob = Client(stack["app"], ANN), Client(stack["app"], BOB)
    status, ticket = ann("POST", "/v1/uploads", {"content_type": "image/png", "bytes": 8})
    assert status == 201
    boto3.client("s3").put_object(Bucket="results", Key=ticket["key"], Body=b"\x89PNG\r\n\x1a\n")
    request = {"provider": "openai_videos", "prompt": "make it blue", "image_keys": [ticket["key"]]}
    status, body = bob("POST", "/v1/images", request)
    assert status == 404 and body["error"]["code"] == "UPLOAD_NOT_FOUND"
    status, task = ann("POST", "/v1/images", request)
    assert status == 202 and task["kind"] == "image"
    # And each owner's uploads live under its own prefix
    _, other = bob("POST", "/v1/uploads", {"content_type": "image/png", "bytes": 8})
    assert other["key"].split("/")[1] != ticket["key"].split("/")[1]


def test_an_image_edit_from_a_url_reelay_would_never_fetch_is_refused_when_asked(stack: dict[str, Any]) -> None:
    ann = Client(stack["app"], ANN)
    for url in ("http://127.0.0.1:22/x.png", "https://169.254.169.254/x.png", "https://files.lan/x.png"):
        request = {
            "provider": "openai_videos",
            "prompt": "make it blue",
            "image_urls": ["https://img.example/a.png", url],
        }
        status, body = ann("POST", "/v1/images", request)
        assert status == 422 and body["error"]["code"] == "VALIDATION_FAILED", body
        assert body["error"]["details"][0]["field"] == "image_urls.1"
        assert "refused" in body["error"]["message"] or "not a public host name" in body["error"]["message"]
    assert ann.ids() == []


def test_idempotency_keys_are_per_owner(stack: dict[str, Any]) -> None:
    ann, bob = Client(stack["app"], ANN), Client(stack["app"], BOB)
    body = {"provider": "generate_task", "prompt": "same"}
    event_headers = {"idempotency-key": "k-1"}
    results = []
    for client in (ann, bob, ann):
        event = load_event("api_create_task.json")
        event["headers"] = {"content-type": "application/json", **event_headers}
        event["requestContext"]["authorizer"] = client.authorizer
        event["body"] = json.dumps(body)
        out = client.app.resolve(event, _Ctx())
        results.append(json.loads(out["body"])["id"])
    assert results[0] == results[2] and results[0] != results[1]
    assert ann.ids() == [results[0]] and bob.ids() == [results[1]]


CURSOR_CASES = [
    ("tampered key", lambda c: ("x" + c[1:], "limit=1")),
    ("tampered signature", lambda c: (c[:-2] + ("AA" if not c.endswith("AA") else "BB"), "limit=1")),
    ("another query", lambda c: (c, "limit=1&status=queued")),
    ("not base64", lambda c: ("%%%", "limit=1")),
    ("no signature", lambda c: (c.split(".")[0], "limit=1")),
    ("well-formed, not ours", lambda c: ("eyJhIjoiYiJ9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "limit=1")),
]


@pytest.mark.parametrize("case", CURSOR_CASES, ids=[c[0] for c in CURSOR_CASES])
def test_a_cursor_is_bound_to_its_owner_and_query_and_a_bad_one_is_422(stack: dict[str, Any], case: Any) -> None:
    ann, bob = Client(stack["app"], ANN), Client(stack["app"], BOB)
    for i in range(3):
        ann.create(f"a{i}")
    _, page = ann("GET", "/v1/tasks", qs="limit=1")
    cursor = page["next_cursor"]
    assert cursor and ann("GET", "/v1/tasks", qs=f"limit=1&cursor={cursor}")[0] == 200
    # Another owner cannot page through it
    status, body = bob("GET", "/v1/tasks", qs=f"limit=1&cursor={cursor}")
    assert status == 422 and body["error"]["code"] == "VALIDATION_FAILED"
    # Nor can anyone use a changed or foreign one
    bad, qs = case[1](cursor)
    status, body = ann("GET", "/v1/tasks", qs=f"{qs}&cursor={bad}")
    assert status == 422, body
    assert "cursor" in json.dumps(body["error"])
