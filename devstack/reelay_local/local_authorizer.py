"""HTTP API Lambda authorizers, as API Gateway runs them, for the local gateway (``ClientAuth=APIKEY``).

A route whose ``security`` names a scheme with an ``x-amazon-apigateway-authorizer`` of type
``request`` is checked before its function runs, as AWS documents for HTTP APIs:

- every identity source (``$request.header.X``, ``$request.querystring.X``) must be present and
  non-empty, else 401 ``{"message":"Unauthorized"}`` without calling the authorizer;
- the authorizer function (its real handler, in-process) gets a payload 2.0 ``REQUEST`` event
  with ``identitySource`` (the values, in order), ``routeArn``, headers, query and context;
- with ``enableSimpleResponses`` it answers ``{"isAuthorized": bool, "context": {...}}``: true puts
  the context in the route's event at ``requestContext.authorizer.lambda``; false is 403
  ``{"message":"Forbidden"}``; an error or an unreadable answer is 500;
- the answer is cached for ``authorizerResultTtlInSeconds`` per authorizer and identity values
  (0: never cached), so a revoked key keeps working locally exactly as long as in AWS.

Only simple responses are emulated (the template uses nothing else); an IAM-policy answer is a 500.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

Invoke = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class LambdaAuthorizerConfig:
    """One Lambda (``request``) authorizer of the HTTP API's OpenAPI body."""

    name: str
    function: str
    """Logical id of the authorizer function."""
    identity_sources: tuple[str, ...]
    ttl_seconds: int
    simple_responses: bool

    @classmethod
    def from_scheme(
        cls, name: str, scheme: Mapping[str, Any], function_of_uri: Callable[[str], str | None]
    ) -> LambdaAuthorizerConfig | None:
        """The config of a resolved security scheme; None when it is not a Lambda authorizer."""
        authorizer = scheme.get("x-amazon-apigateway-authorizer") or {}
        if str(authorizer.get("type", "")).lower() != "request":
            return None
        uri = authorizer.get("authorizerUri")
        function = function_of_uri(uri) if isinstance(uri, str) else None
        if function is None:
            return None
        sources = authorizer.get("identitySource") or []
        if isinstance(sources, str):
            sources = [s.strip() for s in sources.split(",") if s.strip()]
        return cls(
            name=name,
            function=function,
            identity_sources=tuple(str(s) for s in sources),
            ttl_seconds=int(authorizer.get("authorizerResultTtlInSeconds", 300)),
            simple_responses=bool(authorizer.get("enableSimpleResponses", False)),
        )


@dataclass(frozen=True)
class Decision:
    """What the gateway does: go on with ``context`` in the event, or answer ``status``."""

    status: int
    context: dict[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


class AuthorizerCache:
    """API Gateway's authorizer result cache: per authorizer and identity values, for the TTL."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, tuple[str, ...]], tuple[float, Decision]] = {}

    def get(self, name: str, identity: tuple[str, ...]) -> Decision | None:
        with self._lock:
            entry = self._entries.get((name, identity))
            if entry is None or entry[0] <= self._clock():
                return None
            return entry[1]

    def clear(self) -> None:
        """Forget every cached answer (API Gateway flushes its cache on a redeploy)."""
        with self._lock:
            self._entries.clear()

    def put(self, name: str, identity: tuple[str, ...], decision: Decision, ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            return
        with self._lock:
            self._entries[(name, identity)] = (self._clock() + ttl_seconds, decision)


def identity_values(config: LambdaAuthorizerConfig, event: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The identity sources' values in the route's event; None when one is missing or empty."""
    headers = event.get("headers") or {}
    query = event.get("queryStringParameters") or {}
    values = []
    for source in config.identity_sources:
        if source.startswith("$request.header."):
            value = headers.get(source.removeprefix("$request.header.").lower())
        elif source.startswith("$request.querystring."):
            value = query.get(source.removeprefix("$request.querystring."))
        else:
            value = None  # stage variables and context sources are not used by the template
        if not value:
            return None
        values.append(str(value))
    return tuple(values)


def authorizer_event(event: Mapping[str, Any], identity: tuple[str, ...]) -> dict[str, Any]:
    """The payload 2.0 ``REQUEST`` event API Gateway sends the authorizer for a route's request."""
    context = dict(event.get("requestContext") or {})
    http = context.get("http") or {}
    route_arn = (
        f"arn:aws:execute-api:us-east-1:{context.get('accountId', '')}:{context.get('apiId', '')}/"
        f"{context.get('stage', '$default')}/{http.get('method', 'GET')}{event.get('rawPath', '/')}"
    )
    payload: dict[str, Any] = {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": route_arn,
        "identitySource": list(identity),
        "routeKey": event.get("routeKey"),
        "rawPath": event.get("rawPath"),
        "rawQueryString": event.get("rawQueryString", ""),
        "headers": dict(event.get("headers") or {}),
        "requestContext": context,
    }
    for key in ("cookies", "queryStringParameters", "pathParameters"):
        if key in event:
            payload[key] = event[key]
    return payload


def authorize(
    config: LambdaAuthorizerConfig, event: Mapping[str, Any], invoke: Invoke, cache: AuthorizerCache
) -> Decision:
    """The authorizer's decision for one request (cached as API Gateway caches it)."""
    identity = identity_values(config, event)
    if identity is None:
        return Decision(401)
    cached = cache.get(config.name, identity)
    if cached is not None:
        return cached
    try:
        answer = invoke(config.function, authorizer_event(event, identity))
    except Exception as exc:  # API Gateway answers 500 when the authorizer fails
        LOG.error("authorizer %s failed: %s", config.function, exc)
        return Decision(500)
    if not config.simple_responses or not isinstance(answer, dict) or not isinstance(answer.get("isAuthorized"), bool):
        LOG.error("authorizer %s: not a simple response (only those are emulated)", config.function)
        return Decision(500)
    context = answer.get("context") or {}
    decision = Decision(200, {"lambda": dict(context)}) if answer["isAuthorized"] else Decision(403)
    cache.put(config.name, identity, decision, config.ttl_seconds)
    return decision


MESSAGES = {401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error"}
"""API Gateway's bodies for the authorizer's refusals (``{"message": ...}``)."""
