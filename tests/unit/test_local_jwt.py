"""The local JWT issuer and the check API Gateway's JWT authorizer makes (``reelay dev --client-auth jwt``)."""

from __future__ import annotations

import time

import jwt
import pytest

from reelay_local.gateway import routes_from_body
from reelay_local.local_jwt import JwtAuthorizerConfig, LocalJwtIssuer, authorize

ISSUER = "http://127.0.0.1:8787/_reelay/issuer"
CONFIG = JwtAuthorizerConfig(name="JwtAuthorizer", issuer=ISSUER, audiences=("reelay",))


@pytest.fixture(scope="module")
def issuer() -> LocalJwtIssuer:
    return LocalJwtIssuer(ISSUER)


def _check(issuer: LocalJwtIssuer, header: str | None, config: JwtAuthorizerConfig = CONFIG) -> object:
    return authorize(header, config, {issuer.url: issuer.public_keys()})


def test_a_token_of_the_local_issuer_passes_with_its_claims_as_api_gateway_writes_them(issuer: LocalJwtIssuer) -> None:
    token = issuer.issue("alice", scopes=["tasks:read", "tasks:write"])

    context = _check(issuer, f"Bearer {token}")

    assert isinstance(context, dict)
    claims = context["jwt"]["claims"]
    assert (claims["sub"], claims["iss"], claims["aud"]) == ("alice", ISSUER, "reelay")
    assert all(isinstance(v, str) for v in claims.values()) and claims["exp"].isdigit()
    assert context["jwt"]["scopes"] == ["tasks:read", "tasks:write"]
    assert _check(issuer, token) == {**context}  # the Bearer prefix is optional, as at API Gateway


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "expired", "not_yet", "other_audience", "other_issuer", "other_key", "unsigned", "hs256"],
)
def test_anything_but_a_valid_token_is_refused(issuer: LocalJwtIssuer, case: str) -> None:
    now = int(time.time())
    good = {"iss": ISSUER, "aud": "reelay", "sub": "mallory", "iat": now, "nbf": now, "exp": now + 60}
    stranger = LocalJwtIssuer(ISSUER)
    headers = {"kid": issuer.kid}
    private = issuer._key
    tokens = {
        "missing": None,
        "garbage": "Bearer not.a.jwt",
        "expired": jwt.encode({**good, "exp": now - 1}, private, algorithm="RS256", headers=headers),
        "not_yet": jwt.encode({**good, "nbf": now + 60}, private, algorithm="RS256", headers=headers),
        "other_audience": jwt.encode({**good, "aud": "someone-else"}, private, algorithm="RS256", headers=headers),
        "other_issuer": jwt.encode({**good, "iss": "https://evil.test"}, private, algorithm="RS256", headers=headers),
        "other_key": jwt.encode(good, stranger._key, algorithm="RS256", headers=headers),  # same kid, other key
        "unsigned": jwt.encode(good, None, algorithm="none", headers=headers),
        "hs256": jwt.encode(good, "secret" * 6, algorithm="HS256", headers=headers),
    }

    assert _check(issuer, tokens[case]) is None


def test_a_token_for_another_issuers_authorizer_is_refused(issuer: LocalJwtIssuer) -> None:
    config = JwtAuthorizerConfig(name="JwtAuthorizer", issuer="https://issuer.invalid", audiences=("reelay",))

    assert _check(issuer, issuer.issue("alice"), config) is None


def test_the_audience_may_come_as_client_id(issuer: LocalJwtIssuer) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "client_id": "reelay", "sub": "svc", "exp": now + 60}
    token = jwt.encode(claims, issuer._key, algorithm="RS256", headers={"kid": issuer.kid})

    assert _check(issuer, token) is not None


def test_the_jwks_publishes_the_signing_key(issuer: LocalJwtIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    public = jwt.PyJWK(key).key

    assert jwt.decode(issuer.issue("bob"), public, algorithms=["RS256"], audience="reelay")["sub"] == "bob"
    assert issuer.discovery()["jwks_uri"] == f"{ISSUER}/jwks.json"


def test_routes_carry_the_jwt_authorizer_their_security_names() -> None:
    integration = {"x-amazon-apigateway-integration": {"uri": "arn:...:function/Api/invocations"}}
    body = {
        "components": {
            "securitySchemes": {
                "JwtAuthorizer": {
                    "type": "oauth2",
                    "x-amazon-apigateway-authorizer": {
                        "type": "jwt",
                        "identitySource": "$request.header.Authorization",
                        "jwtConfiguration": {"issuer": ISSUER, "audience": ["reelay"]},
                    },
                }
            }
        },
        "paths": {
            "/v1/tasks": {"get": {**integration, "security": [{"JwtAuthorizer": []}]}},
            "/callbacks/{provider}/{task_id}": {"post": integration},
        },
    }

    routes = {r.path: r for r in routes_from_body("api", body, lambda uri: "Api")}

    assert routes["/v1/tasks"].authorizer == CONFIG
    assert routes["/callbacks/{provider}/{task_id}"].authorizer is None
