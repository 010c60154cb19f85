"""``reelay ui``: the web page, served on localhost, and the proxy that speaks to the API for it.

The page (plain HTML/JS/CSS in ``reelay_cli/ui/``, no build step) never holds a credential. It
calls ``/api/v1/...`` on this server; each call is forwarded by one
:class:`~reelay_cli.api_client.ReelayClient`, which signs it exactly as every CLI command does
(SigV4 for an IAM-protected API, ``--token`` as Bearer, nothing for a loopback ``reelay dev``).
The API's answer (errors included) goes back to the page unchanged.

Because this server holds the user's credentials, another web site open in the same browser must
not be able to use it: ``/api/`` wants the ``X-Reelay-UI`` header (a cross-site page cannot set
it without a CORS preflight, which is never granted) and a ``Host`` of the loopback address it
is bound to (no DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from importlib.resources import files
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from reelay_cli.api_client import CliError, ReelayClient

LOG = logging.getLogger(__name__)

DEFAULT_UI_PORT = 8790
"""Where ``reelay ui`` and ``reelay dev`` serve the page unless told otherwise."""
UI_HEADER = "X-Reelay-UI"
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_MAX_BODY = 256 * 1024  # the API's own limit on a JSON body; larger inputs go through uploads


class UiApp:
    """The WSGI application: the page's files, ``/config.json`` and the ``/api/`` proxy.

    ``allowed_hosts`` are the ``Host`` values it answers (its own loopback address and port).
    """

    def __init__(self, client: ReelayClient, allowed_hosts: set[str]) -> None:
        self._client = client
        self._allowed_hosts = allowed_hosts

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = self._handle(Request(environ))
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response(environ, start_response)  # type: ignore[no-any-return]

    def _handle(self, request: Request) -> Response:
        if request.host not in self._allowed_hosts:
            return _json(403, {"message": "Forbidden: unexpected Host"})
        if request.path.startswith("/api/"):
            return self._forward(request)
        if request.path == "/config.json":
            return _json(200, {"api_url": self._client.api_url})
        asset = _ASSETS.get(request.path)
        if asset is None or request.method not in ("GET", "HEAD"):
            return _json(404, {"message": "Not Found"})
        name, content_type = asset
        body = files("reelay_cli.ui").joinpath(name).read_bytes()
        response = Response(body, content_type=content_type)
        # The page runs only its own script and loads media from the presigned URLs it is given.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' http: https: data: blob:; media-src 'self' http: https: blob:; "
            "frame-ancestors 'none'"
        )
        return response

    def _forward(self, request: Request) -> Response:
        if request.headers.get(UI_HEADER) != "1":
            return _json(403, {"message": f"Forbidden: missing {UI_HEADER}"})
        if request.content_length is not None and request.content_length > _MAX_BODY:
            return _json(413, {"error": {"code": "PAYLOAD_TOO_LARGE", "message": "request body over 256 KiB"}})
        path = request.path[len("/api") :]
        if not path.startswith("/v1/"):  # the page needs the API's /v1 routes, nothing else
            return _json(404, {"message": "Not Found"})
        body = request.get_data(cache=False)[: _MAX_BODY + 1] or None
        try:
            answer = self._client.forward(request.method, path, params=dict(request.args), content=body)
        except CliError as exc:
            return _json(502, {"error": {"code": "API_UNREACHABLE", "message": exc.message}})
        response = Response(answer.content, status=answer.status_code)
        response.headers["Content-Type"] = answer.headers.get("content-type", "application/json")
        return response


class UiServer:
    """A threaded werkzeug server on 127.0.0.1 serving :class:`UiApp`."""

    def __init__(self, client: ReelayClient, *, port: int = DEFAULT_UI_PORT) -> None:
        self._client = client
        hosts: set[str] = set()
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", port, UiApp(client, hosts), threaded=True, request_handler=_QuietHandler
        )
        hosts.update({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self._thread = threading.Thread(target=self._server.serve_forever, name="reelay-ui", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> UiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()
        self._client.close()


def serve_ui(client_factory: Callable[[], ReelayClient], port: int) -> UiServer:
    """Start the page's server on ``port``, or on any free port if that one is taken."""
    client = client_factory()
    try:
        server = UiServer(client, port=port)
    except OSError:
        if port == 0:
            raise
        LOG.info("port %s is taken; serving the page on a free port", port)
        server = UiServer(client, port=0)
    return server.start()


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (they would hold presigned-URL-bearing answers' paths)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return
