"""A local JWT issuer, and the check API Gateway's JWT authorizer makes, for ``reelay dev --client-auth jwt``.

:class:`LocalJwtIssuer` holds an RSA key made fresh per run (API Gateway's JWT authorizers take
RSA keys only) and signs RS256 tokens with ``iss`` = its URL, ``aud`` = the template's
``JwtAudience``, ``sub``, ``iat``, ``nbf``, ``exp`` and a ``kid`` header. It publishes what a real
issuer does (``/.well-known/openid-configuration``, ``jwks.json``) under its URL on the gateway,
and issues tokens at ``POST /_reelay/token`` — served by the gateway on 127.0.0.1 only, for
``reelay token SUBJECT``.

:func:`authorize` is the authorizer's decision for one request, as AWS documents it: the token is
taken from the identity source (``Authorization``, with or without ``Bearer``); it must be a JWT
signed by a key of the configured issuer (matched by ``kid``), with ``iss`` equal to the
configured issuer, ``aud`` or ``client_id`` among the configured audiences, and ``exp``/``nbf``
valid now. Any failure is a 401 ``{"message":"Unauthorized"}``. On success the event carries
``requestContext.authorizer.jwt = {"claims": {...}, "scopes": [...] | None}`` with every claim
as a string, as API Gateway (payload format 2.0) writes them.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TOKEN_PATH = "/_reelay/token"
"""Where the gateway issues local tokens (``POST {"sub": ..., "ttl_seconds"?: ...}``)."""
ISSUER_PATH = "/_reelay/issuer"
"""The issuer's URL path on the gateway; its discovery document and keys are under it."""
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 86400
_LEEWAY_SECONDS = 0  # API Gateway allows no clock skew that it documents; neither do we


@dataclass(frozen=True)
class JwtAuthorizerConfig:
    """One JWT authorizer of the HTTP API (``x-amazon-apigateway-authorizer`` of type ``jwt``)."""

    name: str
    issuer: str
    audiences: tuple[str, ...]

    @classmethod
    def from_scheme(cls, name: str, scheme: Mapping[str, Any]) -> JwtAuthorizerConfig | None:
        """The config of a security scheme of the translated OpenAPI body, None if it is not a JWT one."""
        authorizer = scheme.get("x-amazon-apigateway-authorizer") or {}
        if str(authorizer.get("type", "")).lower() != "jwt":
            return None
        config = authorizer.get("jwtConfiguration") or {}
        audience = config.get("audience") or []
        audiences = (audience,) if isinstance(audience, str) else tuple(str(a) for a in audience)
        return cls(name=name, issuer=str(config.get("issuer", "")), audiences=audiences)


class LocalJwtIssuer:
    """Mints RS256 JWTs with a key made for this run; the gateway trusts it as the issuer at ``url``."""

    def __init__(self, url: str, *, audience: str = "reelay") -> None:
        self.url = url.rstrip("/")
        self.audience = audience
        self.kid = secrets.token_hex(8)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def issue(
        self,
        subject: str,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        scopes: Sequence[str] = (),
        now: float | None = None,
    ) -> str:
        """A bare JWT for ``subject``, valid for ``ttl_seconds`` from ``now``."""
        if not subject or len(subject) > 256:
            raise ValueError("subject must be 1 to 256 characters")
        if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl_seconds must be 1 to {MAX_TTL_SECONDS}")
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl_seconds,
            "jti": secrets.token_hex(8),
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def public_keys(self) -> dict[str, Any]:
        """``kid`` → public key, for :func:`authorize`."""
        return {self.kid: self._key.public_key()}

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set a real issuer publishes at its ``jwks_uri``."""
        key = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**key, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def discovery(self) -> dict[str, Any]:
        """The OpenID discovery document API Gateway reads from ``{issuer}/.well-known/openid-configuration``."""
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks.json",
            "id_token_signing_alg_values_supported": ["RS256"],
        }


def authorize(
    authorization: str | None,
    config: JwtAuthorizerConfig,
    keys_of_issuer: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any] | None:
    """The ``requestContext.authorizer`` of an authorized request, or None (answer 401).

    ``keys_of_issuer`` maps an issuer URL to its keys (``kid`` → public key): the local stack
    fetches no JWKS over the network, so only a local issuer's tokens can pass.
    """
    if not authorization:
        return None
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    keys = keys_of_issuer.get(config.issuer) or {}
    try:
        header = jwt.get_unverified_header(token)
        key = keys.get(str(header.get("kid")))
        if key is None:
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256", "RS384", "RS512"],
            issuer=config.issuer,
            leeway=_LEEWAY_SECONDS,
            options={"require": ["exp", "iss"], "verify_aud": False},
        )
    except jwt.PyJWTError:
        return None
    # API Gateway accepts the audience in `aud` or, for access tokens, in `client_id`.
    audience = claims.get("aud", claims.get("client_id"))
    offered = {audience} if isinstance(audience, str) else set(audience or [])
    if config.audiences and not offered & set(config.audiences):
        return None
    scope = claims.get("scope") or claims.get("scp")
    scopes = scope.split() if isinstance(scope, str) else list(scope) if isinstance(scope, list) else None
    return {"jwt": {"claims": {name: _claim_text(value) for name, value in claims.items()}, "scopes": scopes}}


def _claim_text(value: Any) -> str:
    """A claim as API Gateway puts it in the event: numbers and booleans as text, lists as ``[a b]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_claim_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
