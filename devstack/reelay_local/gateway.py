"""A local HTTP API (API Gateway v2): HTTP requests in, payload format 2.0 events to handlers.

Routes come from the translated template's ``AWS::ApiGatewayV2::Api`` bodies, where SAM has merged
every ``HttpApi`` event into OpenAPI paths with an ``x-amazon-apigateway-integration`` naming the
function. Matching follows API Gateway: exact paths before paths with variables, a greedy
``{proxy+}`` last, a method route before ``ANY``, then ``$default``; no match is a 404
``{"message":"Not Found"}``.

Authorizers: a route whose ``security`` names a JWT authorizer is enforced when the gateway has
a local issuer (``reelay dev --client-auth jwt``, :mod:`reelay_local.local_jwt`): no valid token,
401 ``{"message":"Unauthorized"}``; a valid one puts its claims in
``requestContext.authorizer.jwt``, as API Gateway does. The gateway then also serves the issuer
(``/_reelay/...``, see ``local_jwt``). Without a local issuer, and for IAM, nothing is enforced
(the event carries no authorizer).

A route whose ``security`` names a Lambda authorizer (``ClientAuth=APIKEY``) is always enforced:
the authorizer function runs first, with API Gateway's identity checks, simple responses and
result cache (:mod:`reelay_local.local_authorizer`). With a key table, the gateway also serves
its administration at ``/_reelay/keys`` (loopback only, :mod:`reelay_local.local_keys`).

Payload quotas as deployed: a body over the HTTP API's 10 MB is a 413 before anything runs; an
event over Lambda's 6 MB (``lambda_runtime.REQUEST_MAX_BYTES``: a binary body counts base64-encoded)
is a 413 ``{"message":"Request Too Long"}`` without the function running; an answer over Lambda's
6 MB fails the invocation, a 500. An integration that has not answered within its timeout
(``timeoutInMillis``, at most and by default 30 s) is a 503 ``{"message":"Service Unavailable"}``;
the function runs on.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from reelay_local.lambda_runtime import RequestTooLarge
from reelay_local.local_authorizer import MESSAGES, AuthorizerCache, LambdaAuthorizerConfig
from reelay_local.local_authorizer import authorize as authorize_lambda
from reelay_local.local_jwt import ISSUER_PATH, TOKEN_PATH, JwtAuthorizerConfig, LocalJwtIssuer, authorize
from reelay_local.local_keys import KEYS_PATH, keys_answer
from reelay_local.template import ACCOUNT_ID

LOG = logging.getLogger(__name__)

Invoke = Callable[[str, dict[str, Any]], Any]

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")
_TEXT_TYPES_EXACT = ("application/x-www-form-urlencoded", "application/graphql")
_VARIABLE = re.compile(r"^\{([^}]+?)(\+?)\}$")
# An HTTP API's payload quota; below it, Lambda's own (``lambda_runtime.REQUEST_MAX_BYTES``, on
# the event with the body base64-encoded when binary) refuses the invocation.
BODY_MAX_BYTES = 10 * 1024 * 1024
# An HTTP API ends an integration after its timeout, at most 30 s: the client gets a 503 while the
# function runs on to its own timeout.
INTEGRATION_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Route:
    """One route of an HTTP API: ``method`` (or ``ANY``) and ``path`` (or ``$default``)."""

    api: str
    method: str
    path: str
    function: str
    stage: str = "$default"
    authorizer: JwtAuthorizerConfig | None = None
    """The JWT authorizer the route's ``security`` names, if any."""
    lambda_authorizer: LambdaAuthorizerConfig | None = None
    """The Lambda authorizer the route's ``security`` names, if any."""
    timeout: float = INTEGRATION_TIMEOUT_SECONDS
    """The integration's timeout (``timeoutInMillis``; an HTTP API's is at most 30 s)."""

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if this route serves ``method path``, else None."""
        if self.stage != "$default":
            prefix = f"/{self.stage}"
            if path != prefix and not path.startswith(prefix + "/"):
                return None
            path = path[len(prefix) :] or "/"
        if self.path == "$default":
            return {}
        if self.method not in ("ANY", method):
            return None
        found = self._pattern().fullmatch(path)
        if found is None:
            return None
        names = self._variable_names()
        return {names[group]: unquote(value) for group, value in found.groupdict().items()}

    def specificity(self) -> tuple[int, int, int, bool]:
        """Sort key: most specific first, as API Gateway chooses among matching routes."""
        if self.path == "$default":
            return (3, 0, 0, False)
        segments = self._segments()
        variables = [_VARIABLE.match(s) for s in segments]
        count = sum(1 for v in variables if v)
        greedy = any(v and v.group(2) for v in variables)
        kind = 2 if greedy else 1 if count else 0
        return (kind, -len(segments), count, self.method == "ANY")

    def _segments(self) -> list[str]:
        return self.path.strip("/").split("/")

    def _variable_names(self) -> dict[str, str]:
        names = {}
        for index, segment in enumerate(self._segments()):
            variable = _VARIABLE.match(segment)
            if variable:
                names[f"v{index}"] = variable.group(1)
        return names

    def _pattern(self) -> re.Pattern[str]:
        parts = []
        for index, segment in enumerate(self._segments()):
            variable = _VARIABLE.match(segment)
            if variable is None:
                parts.append(re.escape(segment))
            else:
                parts.append(f"(?P<v{index}>{'.+' if variable.group(2) else '[^/]+'})")
        return re.compile("/" + "/".join(parts))


def routes_from_body(
    api: str, body: dict[str, Any], function_of_uri: Callable[[str], str | None], *, stage: str = "$default"
) -> list[Route]:
    """The Lambda proxy routes of one OpenAPI body (``x-amazon-apigateway-integration``)."""
    schemes = ((body.get("components") or {}).get("securitySchemes")) or {}
    authorizers = {
        name: config
        for name, scheme in schemes.items()
        if isinstance(scheme, dict) and (config := JwtAuthorizerConfig.from_scheme(name, scheme)) is not None
    }
    lambda_authorizers = {
        name: by_function
        for name, scheme in schemes.items()
        if isinstance(scheme, dict)
        and (by_function := LambdaAuthorizerConfig.from_scheme(name, scheme, function_of_uri)) is not None
    }
    routes = []
    for path, operations in (body.get("paths") or {}).items():
        for method, operation in (operations or {}).items():
            if not isinstance(operation, dict):
                continue
            integration = operation.get("x-amazon-apigateway-integration") or {}
            uri = integration.get("uri")
            function = function_of_uri(uri) if isinstance(uri, str) else None
            if function is None:
                continue
            verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
            named = [
                n
                for requirement in operation.get("security") or []
                if isinstance(requirement, dict)
                for n in requirement
            ]
            authorizer = next((authorizers[n] for n in named if n in authorizers), None)
            by_lambda = next((lambda_authorizers[n] for n in named if n in lambda_authorizers), None)
            millis = integration.get("timeoutInMillis")
            timeout = min(INTEGRATION_TIMEOUT_SECONDS, float(millis) / 1000) if millis else INTEGRATION_TIMEOUT_SECONDS
            routes.append(
                Route(
                    api=api,
                    method=verb,
                    path=path,
                    function=function,
                    stage=stage,
                    authorizer=authorizer,
                    lambda_authorizer=by_lambda,
                    timeout=timeout,
                )
            )
    return routes


class Gateway:
    """A threaded werkzeug server on 127.0.0.1 that invokes the routes' functions in-process."""

    def __init__(self, invoke: Invoke, *, port: int = 0, jwt_issuer: LocalJwtIssuer | None = None) -> None:
        self._invoke = invoke
        self._issuer = jwt_issuer
        self._routes: list[Route] = []
        self.authorizer_cache = AuthorizerCache()
        self.keys: Any = None
        """``reelay.apikeys.ApiKeys`` over the local key table: served at ``/_reelay/keys`` (loopback only)."""
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def add_routes(self, routes: Iterable[Route]) -> None:
        self._routes = sorted([*self._routes, *routes], key=Route.specificity)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="reelay-local-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)  # type: ignore[no-any-return]

    def _handle(self, request: Request) -> Response:
        path = request.path
        if self.keys is not None and (path == KEYS_PATH or path.startswith(KEYS_PATH + "/")):
            if not _is_loopback(request.remote_addr):
                return _json_response(403, {"message": "Forbidden"})
            return keys_answer(request, self.keys)
        if self._issuer is not None and path.startswith("/_reelay/"):
            return self._issuer_answer(request, self._issuer)
        for route in self._routes:
            parameters = route.match(request.method, path)
            if parameters is not None:
                break
        else:
            return _json_response(404, {"message": "Not Found"})
        if (request.content_length or 0) > BODY_MAX_BYTES:
            return _json_response(413, {"message": "Request Entity Too Large"})
        event = self._event(request, route, parameters)
        if route.authorizer is not None and self._issuer is not None:
            context = authorize(
                request.headers.get("Authorization"), route.authorizer, {self._issuer.url: self._issuer.public_keys()}
            )
            if context is None:
                return _json_response(401, {"message": "Unauthorized"})
            event["requestContext"]["authorizer"] = context
        if route.lambda_authorizer is not None:
            decision = authorize_lambda(route.lambda_authorizer, event, self._invoke, self.authorizer_cache)
            if not decision.allowed:
                return _json_response(decision.status, {"message": MESSAGES[decision.status]})
            event["requestContext"]["authorizer"] = decision.context
        try:
            result = self._invoke_within(route, event)
        except _IntegrationTimedOut:
            LOG.warning("%s %s -> %s: no answer within %.1f s", request.method, path, route.function, route.timeout)
            return _json_response(503, {"message": "Service Unavailable"})
        except RequestTooLarge as exc:  # Lambda refused the event: the function never ran
            LOG.warning("%s %s -> %s: %s", request.method, path, route.function, exc)
            return _json_response(413, {"message": "Request Too Long"})
        except Exception as exc:  # API Gateway answers 500 for any function error (a too large answer too)
            LOG.error("%s %s -> %s failed: %s", request.method, path, route.function, exc, exc_info=True)
            return _json_response(500, {"message": "Internal Server Error"})
        response = _response_from_result(result)
        response.headers["apigw-requestid"] = event["requestContext"]["requestId"]
        return response

    def _invoke_within(self, route: Route, event: dict[str, Any]) -> Any:
        """The function's answer, or ``_IntegrationTimedOut`` past the route's integration timeout
        (the invocation runs on in its thread, as Lambda's does)."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = self._invoke(route.function, event)
            except BaseException as exc:  # handed to the waiting request below
                outcome["error"] = exc

        thread = threading.Thread(target=run, name=f"gateway-{route.function}", daemon=True)
        thread.start()
        thread.join(route.timeout)
        if thread.is_alive():
            raise _IntegrationTimedOut(route.timeout)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    def _issuer_answer(self, request: Request, issuer: LocalJwtIssuer) -> Response:
        """The local issuer's endpoints: discovery, keys, and token issuance (loopback callers only)."""
        path = request.path
        if request.method == "GET" and path == f"{ISSUER_PATH}/.well-known/openid-configuration":
            return _json_response(200, issuer.discovery())
        if request.method == "GET" and path == f"{ISSUER_PATH}/jwks.json":
            return _json_response(200, issuer.jwks())
        if request.method == "POST" and path == TOKEN_PATH:
            if not _is_loopback(request.remote_addr):
                return _json_response(403, {"message": "Forbidden"})
            try:
                asked = json.loads(request.get_data(cache=False) or b"{}")
                token = issuer.issue(str(asked["sub"]), ttl_seconds=int(asked.get("ttl_seconds") or 3600))
            except (ValueError, KeyError, TypeError) as exc:
                return _json_response(400, {"message": f"Bad Request: {exc}"})
            return _json_response(200, {"token": token, "issuer": issuer.url, "audience": issuer.audience})
        return _json_response(404, {"message": "Not Found"})

    def _event(self, request: Request, route: Route, parameters: dict[str, str]) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
        raw_query = request.query_string.decode("latin-1")
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        now = time.time()
        request_id = str(uuid.uuid4())
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": request.path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": route.api,
                "domainName": request.host,
                "domainPrefix": request.host.split(".")[0],
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                    "sourceIp": request.remote_addr or "127.0.0.1",
                    "userAgent": request.headers.get("User-Agent", ""),
                },
                "requestId": request_id,
                "routeKey": route.route_key,
                "stage": route.stage,
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if parameters:
            event["pathParameters"] = parameters
        body = request.get_data(cache=False)
        if body:
            if _is_text(request.headers.get("Content-Type", "")) and _is_utf8(body):
                event["body"] = body.decode("utf-8")
            else:
                event["body"] = base64.b64encode(body).decode("ascii")
                event["isBase64Encoded"] = True
        return event


class _IntegrationTimedOut(Exception):
    """The integration gave no answer within its timeout."""


def _response_from_result(result: Any) -> Response:
    """Payload format 2.0: a dict with ``statusCode`` is a response; anything else is JSON 200."""
    if not (isinstance(result, dict) and "statusCode" in result):
        return _json_response(200, result)
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    response = Response(raw, status=int(result["statusCode"]))
    response.headers.remove("Content-Type")
    for name, value in (result.get("headers") or {}).items():
        response.headers[name] = str(value)
    for name, values in (result.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.add(name, str(value))
    for cookie in result.get("cookies") or ():
        response.headers.add("Set-Cookie", cookie)
    return response


def _json_response(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, content_type="application/json")


def _is_text(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    if not media:
        return True
    return media in _TEXT_TYPES_EXACT or any(media.startswith(t) or media.endswith(t) for t in _TEXT_TYPES)


def _is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request; errors still go to the ``werkzeug`` logger."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return
