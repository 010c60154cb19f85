"""``Simulator``: the public face of the package -- start, stop, knobs, records, forced outcomes.

The server is werkzeug's threaded WSGI server (one thread per connection, listen backlog 128)
in a daemon thread; a ticker thread advances task clocks every 50 ms and hands state changes to
the callback sender. Binding ``0.0.0.0``/``::`` serves every interface but writes ``127.0.0.1``
into result URLs.
"""

from __future__ import annotations

import logging
import queue
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from reelay_sim.callbacks import CallbackSender
from reelay_sim.protocol import Context
from reelay_sim.server import SimApp
from reelay_sim.state import SimState

DEFAULT_API_KEYS: dict[str, str] = {
    "generate_task": "sim-gt-key",
    "sorahk": "sora-sim-key",
    "openai_videos": "sim-licence",
}
TICK_SECONDS = 0.05

log = logging.getLogger("reelay_sim")


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's handler without its per-request access log."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None

    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("reelay_sim %s: " + message, type, *args)


class _Server(ThreadedWSGIServer):
    request_queue_size = 256

    def log(self, type: str, message: str, *args: Any) -> None:
        log.warning("reelay_sim %s: " + message, type, *args)


class Simulator:
    """The three provider protocols on one loopback port (see the package docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_keys: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self._stop = threading.Event()
        self._state = SimState()
        self._ctx = Context(self._state, {**DEFAULT_API_KEYS, **(api_keys or {})}, self._stop)
        self._app = SimApp(self._ctx)
        self._sender = CallbackSender(self._state, self._stop, {"generate_task": self._app.generate_task})
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind and serve in background threads; returns ``self``."""
        if self._server is not None:
            return self
        self._stop.clear()
        self._server = _Server(self.host, self.port, self._app, handler=_QuietHandler)
        self.port = self._server.server_port
        public_host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in public_host:
            public_host = f"[{public_host}]"
        self._ctx.url = f"http://{public_host}:{self.port}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="reelay-sim-http"),
            threading.Thread(target=self._tick, name="reelay-sim-ticker"),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; pending hangs, slow downloads and late callbacks give up."""
        if self._server is None:
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._sender.close()
        self._server = None
        self._threads = []

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _tick(self) -> None:
        while not self._stop.is_set():
            self._state.advance()
            while True:
                try:
                    transition = self._state.transitions.get_nowait()
                except queue.Empty:
                    break
                try:
                    self._sender.handle(transition)
                except Exception:
                    log.exception("reelay_sim: callback dispatch failed")
            self._stop.wait(TICK_SECONDS)

    # --- addresses -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://<host>:<port>`` (after ``start``)."""
        if not self._ctx.url:
            raise RuntimeError("the simulator is not started")
        return self._ctx.url

    @property
    def host_port(self) -> str:
        """``<host>:<port>`` of ``url``."""
        return self.url.removeprefix("http://")

    @property
    def base_urls(self) -> dict[str, str]:
        """Each protocol's base URL, to configure a provider with."""
        self.url  # noqa: B018 - raises when not started
        return self._app.base_urls()

    @property
    def sample_image_url(self) -> str:
        """A real PNG on this simulator, usable as an image-to-video input URL (no auth)."""
        return f"{self.url}/files/assets/sample.png"

    @property
    def api_keys(self) -> dict[str, str]:
        """Each protocol's accepted API key."""
        return dict(self._ctx.api_keys)

    # --- knobs and records ---------------------------------------------------------------------

    def configure(self, protocol: str, **knobs: Any) -> dict[str, Any]:
        """Change knobs of ``protocol`` (or ``"all"``); raises ``ValueError`` for a bad knob."""
        return self._app.configure(protocol, knobs)

    def reset(self) -> None:
        """Forget tasks, images, requests and callbacks; knobs back to their defaults."""
        self._app.reset()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The recorded requests, oldest first (copies)."""
        return self._app.requests()

    @property
    def callback_deliveries(self) -> list[dict[str, Any]]:
        """Every callback attempt: task, url, label, state, body, status_code or error, at."""
        return self._app.callbacks()

    def counters(self) -> dict[str, Any]:
        """Create attempts per prompt, provider tasks per prompt and per ``[tag:<label>]``, status
        calls and downloads per task (what ``GET /_sim/counters`` shows; see ``SimApp.counters``)."""
        return self._app.counters()

    def tasks(self, protocol: str) -> list[dict[str, Any]]:
        """The simulator's records of ``protocol``'s tasks, oldest first, with their wire ``status``."""
        return self._app.tasks(protocol)

    def state(self) -> dict[str, Any]:
        """What ``GET /_sim/state`` shows."""
        return self._app.snapshot()

    def video_bytes_sha256(self, protocol: str, provider_task_id: str) -> str:
        """SHA-256 (hex) of the MP4 the task's result serves; ``ValueError`` if it has none yet."""
        return self._app.video_sha256(protocol, provider_task_id)

    def complete_now(self, protocol: str, provider_task_id: str) -> dict[str, Any]:
        """End a task successfully now (callbacks follow as usual)."""
        return self._app.complete_now(protocol, provider_task_id)

    def fail_now(
        self, protocol: str, provider_task_id: str, code: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        """End a task failed now; ``code`` is content_policy / invalid_image / generation_failed
        (worded per protocol) or a literal wire code, ``message`` overrides the text."""
        return self._app.fail_now(protocol, provider_task_id, code, message)
