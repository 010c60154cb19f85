"""API keys: made random and shown once, stored as a hash, decided by the authorizer, refused after revocation.

The key table is built from template.yaml's ``ApiKeyTable`` (moto); the local gateway's Lambda
authorizer emulation (cache lifetime, identity checks, simple responses) is tested with a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from reelay.api import build_app, owner_of
from reelay.apikeys import (
    ApiKeyAuthorizer,
    ApiKeyRequest,
    ApiKeys,
    api_key_owner,
    bearer_key,
)
from reelay.aws import ApiKeyTable, ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import ApiKeyNotFound, ApiKeyRejected, RequestInvalid
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tokens import CursorSigner
from reelay_local.local_authorizer import AuthorizerCache, LambdaAuthorizerConfig, authorize
from tests.template_support import resource
from tests.unit.conftest import load_event
from tests.unit.fakes import FakeProvider, config


@pytest.fixture
def table(aws: dict[str, str]) -> Iterator[ApiKeyTable]:
    props = resource("ApiKeyTable")["Properties"]
    boto3.client("dynamodb").create_table(
        TableName="keys",
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props["BillingMode"],
    )
    yield ApiKeyTable("keys")


def _request(authorization: str | None) -> dict[str, Any]:
    event = load_event("authorizer_request.json")
    event["identitySource"] = [authorization] if authorization else []
    event["headers"] = {"authorization": authorization} if authorization else {}
    return event


def test_a_key_is_random_shown_once_and_only_its_hash_is_stored(table: ApiKeyTable) -> None:
    keys = ApiKeys(table)

    first = keys.create(ApiKeyRequest(owner="alice", name="laptop"))
    second = keys.create(ApiKeyRequest(owner="alice"))

    assert first.key != second.key and bearer_key(first.key) == first.key and len(first.key) == 46
    items = boto3.resource("dynamodb").Table("keys").scan()["Items"]
    assert first.key not in json.dumps(items, default=str) and second.key not in json.dumps(items, default=str)
    assert {i["key_hash"] for i in items} == {hashlib.sha256(k.key.encode()).hexdigest() for k in (first, second)}
    listed = keys.list(owner="alice")
    assert {k.key_id for k in listed} == {first.key_id, second.key_id}
    assert all(not hasattr(k, "key") and not hasattr(k, "key_hash") for k in listed)
    assert keys.list(owner="bob") == []


def test_the_authorizer_names_the_owner_of_a_good_key_and_rejects_every_other(table: ApiKeyTable) -> None:
    keys, authorizer = ApiKeys(table), ApiKeyAuthorizer(table)
    made = keys.create(ApiKeyRequest(owner="arn:aws:iam::111111111111:user/ann"))

    good = authorizer.decide(_request(f"Bearer {made.key}"))
    bare = authorizer.decide(_request(made.key))
    unknown = authorizer.decide(_request("Bearer rk-" + "A" * 43))
    malformed = authorizer.decide(_request("Bearer sk-proj-123"))
    # Same id prefix, other hash: the whole hash is compared, not only the id it is found by.
    forged_id = authorizer.decide(_request("Bearer " + made.key[:-1] + ("A" if made.key[-1] != "A" else "B")))

    assert good == {"isAuthorized": True, "context": {"owner": made.owner, "key_id": made.key_id}} == bare
    assert unknown["context"] == {"rejected": "unknown"} and malformed["context"] == {"rejected": "malformed"}
    assert forged_id["context"] == {"rejected": "unknown"}
    # The API then takes the owner, or refuses the rejection with a 401 before any route.
    assert api_key_owner({"lambda": good["context"]}) == made.owner
    with pytest.raises(ApiKeyRejected):
        api_key_owner({"lambda": unknown["context"]})
    assert api_key_owner({"iam": {"userArn": "x"}}) is None


def test_a_revoked_key_is_rejected_and_revoking_twice_keeps_the_first_time(table: ApiKeyTable) -> None:
    keys, authorizer = ApiKeys(table), ApiKeyAuthorizer(table)
    made = keys.create(ApiKeyRequest(owner="alice"))

    revoked = keys.revoke(made.key_id)
    again = keys.revoke(made.key_id)

    assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at
    assert authorizer.decide(_request(f"Bearer {made.key}"))["context"] == {"rejected": "revoked"}
    with pytest.raises(ApiKeyNotFound):
        keys.revoke("key_" + "0" * 20)
    with pytest.raises(RequestInvalid):
        keys.revoke("not-a-key-id")


class _Ctx:
    function_name = "api"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:api"
    aws_request_id = "req"


def _call(app: Any, method: str, path: str, body: Any = None, authorizer: Any = None) -> tuple[int, Any]:
    event = load_event("api_create_task.json")
    event["headers"] = {"content-type": "application/json"}
    event["rawPath"] = path
    event["routeKey"] = f"{method} {path}"
    event["requestContext"]["http"].update(method=method, path=path)
    event["requestContext"].pop("authorizer", None)
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    event["body"] = json.dumps(body) if body is not None else None
    event.pop("pathParameters", None)
    out = app.resolve(event, _Ctx())
    return out["statusCode"], json.loads(out["body"])


@pytest.fixture
def app(aws: dict[str, str], table: ApiKeyTable) -> Any:
    fake = FakeProvider(config("generate_task"))
    catalog = ProviderCatalog((fake.config,), factory=lambda c: fake)
    service = TaskService(
        DynamoTaskStore("tasks"),
        catalog,
        TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        ResultBucket("results"),
        cursors=CursorSigner(b"c" * 32),
    )
    return build_app(lambda: service, [fake.config])


def test_the_local_gateway_makes_lists_and_revokes_keys_in_the_local_table(table: ApiKeyTable) -> None:
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from reelay_local.local_keys import keys_answer

    keys = ApiKeys(table)

    def answer(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        environ = EnvironBuilder(method=method, path=path, json=body).get_environ()
        response = keys_answer(Request(environ), keys)
        return response.status_code, json.loads(response.get_data())

    status, made = answer("POST", "/_reelay/keys", {"owner": "alice", "name": "ci"})
    listed_status, listed = answer("GET", "/_reelay/keys?owner=alice")
    bad_status, _ = answer("POST", "/_reelay/keys", {"owner": "", "extra": 1})
    revoked_status, revoked = answer("DELETE", f"/_reelay/keys/{made['key_id']}")
    missing_status, _ = answer("DELETE", "/_reelay/keys/key_" + "1" * 20)

    assert status == 201 and made["key"].startswith("rk-") and made["owner"] == "alice"
    assert listed_status == 200 and [k["key_id"] for k in listed["keys"]] == [made["key_id"]]
    assert "key" not in listed["keys"][0] and "key_hash" not in listed["keys"][0]
    assert bad_status == 400 and revoked_status == 200 and revoked["revoked_at"] and missing_status == 404
    assert ApiKeyAuthorizer(table).decide(_request(f"Bearer {made['key']}"))["context"] == {"rejected": "revoked"}


def test_a_rejected_key_is_a_401_before_any_route_or_body_check(app: Any) -> None:
    rejected = {"lambda": {"rejected": "unknown"}}

    tasks_status, tasks = _call(app, "POST", "/v1/tasks", {"not": "valid"}, authorizer=rejected)
    videos_status, videos = _call(app, "GET", "/v1/videos", authorizer=rejected)

    assert tasks_status == 401 and tasks["error"]["code"] == "INVALID_API_KEY"
    assert videos_status == 401 and videos["error"]["code"] == "invalid_api_key"  # OpenAI's shape there
    assert videos["error"]["type"] == "invalid_request_error"
    assert owner_of({"requestContext": {"authorizer": {"lambda": {"owner": "alice", "key_id": "k"}}}}) == "alice"


def test_an_api_key_owner_sees_only_its_own_tasks(app: Any) -> None:
    alice, bob = {"lambda": {"owner": "alice"}}, {"lambda": {"owner": "bob"}}
    status, task = _call(app, "POST", "/v1/tasks", {"provider": "generate_task", "prompt": "a"}, authorizer=alice)
    assert status == 202

    mine = _call(app, "GET", "/v1/tasks", authorizer=alice)[1]["tasks"]
    theirs = _call(app, "GET", "/v1/tasks", authorizer=bob)[1]["tasks"]

    assert [t["id"] for t in mine] == [task["id"]] and theirs == []


# ----------------------------------------------------------------- the local gateway's emulation


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _gateway_event(authorization: str | None) -> dict[str, Any]:
    event = load_event("api_get_video.json")
    event["headers"] = {"authorization": authorization} if authorization else {}
    return event


def test_the_local_gateway_caches_the_authorizers_answer_for_its_ttl_as_api_gateway_does() -> None:
    config = LambdaAuthorizerConfig(
        name="ApiKeyAuthorizer",
        function="AuthorizerFunction",
        identity_sources=("$request.header.Authorization",),
        ttl_seconds=60,
        simple_responses=True,
    )
    clock, calls = _Clock(), []
    answers = {"Bearer good": {"isAuthorized": True, "context": {"owner": "alice"}}}

    def invoke(function: str, event: dict[str, Any]) -> Any:
        calls.append(event["identitySource"])
        return answers.get(event["identitySource"][0], {"isAuthorized": False})

    cache = AuthorizerCache(clock)
    first = authorize(config, _gateway_event("Bearer good"), invoke, cache)
    answers.clear()  # revoked meanwhile: the cached answer still holds until the TTL
    clock.now = 59.9
    cached = authorize(config, _gateway_event("Bearer good"), invoke, cache)
    clock.now = 60.1
    expired = authorize(config, _gateway_event("Bearer good"), invoke, cache)
    missing = authorize(config, _gateway_event(None), invoke, cache)

    assert first.status == cached.status == 200 and cached.context == {"lambda": {"owner": "alice"}}
    assert expired.status == 403 and missing.status == 401
    assert calls == [["Bearer good"], ["Bearer good"]]  # cached once; no call without an identity


def test_the_local_gateway_reads_the_authorizer_from_the_translated_template() -> None:
    from pathlib import Path

    from reelay_local.gateway import routes_from_body
    from reelay_local.template import translate

    cloud = translate(Path(__file__).parents[2] / "template.yaml", {"ClientAuth": "APIKEY"})
    body = next(r for _, r in cloud.of_type("AWS::ApiGatewayV2::Api"))["Properties"]["Body"]
    scheme = body["components"]["securitySchemes"]["ApiKeyAuthorizer"]
    scheme["x-amazon-apigateway-authorizer"]["authorizerUri"] = "arn:x:/functions/authorizer-arn/invocations"
    scheme["x-amazon-apigateway-authorizer"]["authorizerResultTtlInSeconds"] = 60
    for ops in body["paths"].values():
        for op in ops.values():
            op["x-amazon-apigateway-integration"]["uri"] = "arn:x:/functions/api-arn/invocations"
            if isinstance(op.get("security"), dict):  # the template's Fn::If, as APIKEY selects it
                op["security"] = [{"ApiKeyAuthorizer": []}]

    routes = routes_from_body("api", body, lambda uri: uri.split("/functions/")[1].split("/")[0])

    by_path = {(r.method, r.path): r for r in routes}
    videos = by_path[("GET", "/v1/videos")].lambda_authorizer
    assert videos is not None and videos.function == "authorizer-arn" and videos.ttl_seconds == 60
    assert videos.identity_sources == ("$request.header.Authorization",) and videos.simple_responses
    assert all(r.lambda_authorizer is None for r in routes if r.path.startswith("/callbacks/"))
