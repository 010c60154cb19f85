"""The WSGI application: routing, request recording, forced errors, auth, result files, ``/_sim``.

Request flow for a protocol endpoint: record the request, then ``force`` (a queued status for the
request's kind answers at once, before auth), then the key check (401 in the protocol's shape),
then the protocol's account checks (generate_task's rate limit), then the endpoint.

Result files under ``/files/<folder>/<name>`` need no credential: ``generate_task`` and ``sorahk``
videos (``<id>.mp4``), openai_videos videos made through chat, and images (``/files/images/<id>.png``,
counted as openai_videos requests). The ``download`` kind of ``force`` and the download knobs of the
owning protocol apply to them (and to openai_videos ``/content``). ``/files/assets/sample.png`` is a
fixed real PNG to use as an image-to-video input URL (``Simulator.sample_image_url``).

Control endpoints (not recorded, no credential): ``GET /_sim/state`` (knobs, tasks, callbacks),
``GET /_sim/requests``, ``GET /_sim/counters`` (``SimApp.counters``), ``POST /_sim/config``
``{"protocol": ..., <knob>: <value>, ...}``, ``POST /_sim/reset``,
``POST /_sim/tasks/<protocol>/<id>/complete`` and ``POST /_sim/tasks/<protocol>/<id>/fail``
(body ``{"code"?, "message"?}``).

Recorded requests are dicts: ``method``, ``path``, ``query`` (name -> value, or list when repeated),
``headers`` (without ``Authorization``), ``authorized`` (the credential was present and accepted),
``body`` (parsed JSON; for forms ``{"form": {...}, "files": [{field, filename, content_type,
size}]}``; else the raw bytes, or None when empty), ``at`` (Unix seconds), ``protocol``, ``kind``
(the ``force`` kind, None for an unknown path; ``protocol`` is None for ``/files/assets``) and
``status`` (the answer's HTTP status).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from reelay_sim import knobs as knob_rules
from reelay_sim import media
from reelay_sim.generate_task import GenerateTask
from reelay_sim.openai_videos import OpenAIVideos
from reelay_sim.protocol import Context, ProtocolHandler, Route, tags
from reelay_sim.sorahk import SoraHK
from reelay_sim.state import FAIL_AT, GENERATION_FAILED, SUCCEEDED, Outcome, Task
from reelay_sim.web import BadRequest, json_response, read_json_object, video_response

log = logging.getLogger("reelay_sim")

_MAX_RECORDED_BYTES = 64 * 1024
_FAIL_KINDS = frozenset(FAIL_AT)  # content_policy, invalid_image, generation_failed


@lru_cache(maxsize=256)
def _video_sha256(seed: str, size: int) -> str:
    return media.video_sha256(seed, size)


def _plain(status: int) -> Response:
    """A bare CDN-style error answer (statuses outside 400-599 become 500)."""
    status = status if 400 <= status <= 599 else 500
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Response(f"{status} {phrase}", status=status, content_type="text/plain")


def jsonable(value: Any) -> Any:
    """``value`` with bytes made JSON-friendly (base64 up to 64 KiB, else just the length)."""
    if isinstance(value, bytes):
        encoded = base64.b64encode(value).decode() if len(value) <= _MAX_RECORDED_BYTES else None
        return {"$bytes": len(value), "base64": encoded}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


class SimApp:
    """The simulator as a WSGI application plus the control operations ``Simulator`` exposes."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.state = ctx.state
        self.generate_task = GenerateTask(ctx)
        self.handlers: dict[str, ProtocolHandler] = {
            h.name: h for h in (self.generate_task, SoraHK(ctx), OpenAIVideos(ctx))
        }
        self.endpoints: dict[str, tuple[ProtocolHandler, Route]] = {}
        rules = [
            Rule("/_sim/state", methods=["GET"], endpoint="sim_state"),
            Rule("/_sim/requests", methods=["GET"], endpoint="sim_requests"),
            Rule("/_sim/counters", methods=["GET"], endpoint="sim_counters"),
            Rule("/_sim/config", methods=["POST"], endpoint="sim_config"),
            Rule("/_sim/reset", methods=["POST"], endpoint="sim_reset"),
            Rule("/_sim/tasks/<protocol>/<task_id>/complete", methods=["POST"], endpoint="sim_complete"),
            Rule("/_sim/tasks/<protocol>/<task_id>/fail", methods=["POST"], endpoint="sim_fail"),
            Rule("/files/<folder>/<name>", methods=["GET"], endpoint="files"),
        ]
        for handler in self.handlers.values():
            for index, route in enumerate(handler.routes()):
                endpoint = f"{handler.name}:{index}"
                self.endpoints[endpoint] = (handler, route)
                rules.append(Rule(handler.prefix + route.path, methods=[route.method], endpoint=endpoint))
        self.url_map = Map(rules, strict_slashes=False)

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception:
            log.exception("reelay_sim: error serving %s %s", request.method, request.path)
            response = json_response({"error": "simulator error"}, 500)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except (NotFound, MethodNotAllowed) as exc:
            return self._unrouted(request, exc.code or 404)
        if endpoint.startswith("sim_"):
            return self._control(request, endpoint, args)
        if endpoint == "files":
            entry = self._record(request, self._file_protocol(args["folder"]), "download", authorized=False)
            return self._finish(entry, self._file(request, **args))
        handler, route = self.endpoints[endpoint]
        key = handler.credential(request)
        authorized = self.ctx.key_ok(handler.name, key)
        entry = self._record(request, handler.name, route.kind, authorized=authorized)
        forced = self.state.pop_forced(handler.name, route.kind)
        if forced is not None:
            return self._finish(entry, handler.error(forced))
        if not authorized or key is None:
            return self._finish(entry, handler.error(401))
        blocked = handler.before(request, key, route.kind)
        if blocked is not None:
            return self._finish(entry, blocked)
        return self._finish(entry, route.handler(request, key, **args))

    def _unrouted(self, request: Request, status: int) -> Response:
        for handler in self.handlers.values():
            if request.path == handler.prefix or request.path.startswith(handler.prefix + "/"):
                authorized = self.ctx.key_ok(handler.name, handler.credential(request))
                entry = self._record(request, handler.name, None, authorized)
                message = "Not found" if status == 404 else f"Method {request.method} not allowed"
                return self._finish(entry, handler.error(status, message))
        return _plain(status)

    def _finish(self, entry: dict[str, Any], response: Response) -> Response:
        with self.state.lock:
            entry["status"] = response.status_code
        return response

    # --- recording -----------------------------------------------------------------------------

    def _record(self, request: Request, protocol: str | None, kind: str | None, authorized: bool) -> dict[str, Any]:
        query: dict[str, Any] = {k: (v[0] if len(v) == 1 else v) for k, v in request.args.lists()}
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        return self.state.record_request(
            {
                "method": request.method,
                "path": request.path,
                "query": query,
                "headers": headers,
                "authorized": authorized,
                "body": self._body(request),
                "at": time.time(),
                "protocol": protocol,
                "kind": kind,
                "status": None,
            }
        )

    @staticmethod
    def _body(request: Request) -> Any:
        if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            files = []
            for field, upload in request.files.items(multi=True):
                stream = upload.stream
                stream.seek(0, 2)
                size = stream.tell()
                stream.seek(0)
                files.append(
                    {"field": field, "filename": upload.filename, "content_type": upload.content_type, "size": size}
                )
            form = {k: (v[0] if len(v) == 1 else v) for k, v in request.form.lists()}
            return {"form": form, "files": files}
        data = request.get_data(cache=True)
        if not data:
            return None
        if request.mimetype == "application/json" or data[:1] in (b"{", b"["):
            try:
                return json.loads(data)
            except (ValueError, UnicodeDecodeError):
                return data
        return data

    # --- result files --------------------------------------------------------------------------

    @staticmethod
    def _file_protocol(folder: str) -> str | None:
        """Whose download a ``/files/<folder>/...`` request is (images: openai_videos; assets: nobody)."""
        if folder in knob_rules.PROTOCOLS:
            return folder
        return "openai_videos" if folder == "images" else None

    def _file(self, request: Request, folder: str, name: str) -> Response:
        if folder == "assets":
            if name != "sample.png":
                return _plain(404)
            return Response(media.sample_png(), content_type="image/png")
        protocol = self._file_protocol(folder)
        forced = None if protocol is None else self.state.pop_forced(protocol, "download")
        if forced is not None:
            return _plain(forced)
        stem, _, ext = name.rpartition(".")
        if folder == "images" and ext == "png":
            with self.state.lock:
                aspect = self.state.images.get(stem)
            if aspect is None:
                return _plain(404)
            return Response(media.png_bytes(stem, aspect), content_type="image/png")
        if folder not in knob_rules.PROTOCOLS or ext != "mp4":
            return _plain(404)
        task = self.state.task(folder, stem)
        if task is None or not task.public or task.state != SUCCEEDED or task.video_bytes is None:
            return _plain(404)
        fault = self.handlers[folder].download_fault(task)
        if fault.gone:
            return _plain(404)
        return video_response(
            request,
            task.seed,
            task.video_bytes,
            self.ctx.knobs(folder),
            self.ctx.stop,
            truncate=fault.truncate,
            bytes_per_second=fault.bytes_per_second,
        )

    # --- control -------------------------------------------------------------------------------

    def _control(self, request: Request, endpoint: str, args: Mapping[str, Any]) -> Response:
        try:
            if endpoint == "sim_state":
                return json_response(self.snapshot())
            if endpoint == "sim_requests":
                return json_response(jsonable(self.requests()))
            if endpoint == "sim_counters":
                return json_response(self.counters())
            if endpoint == "sim_reset":
                self.reset()
                return json_response({"reset": True})
            body = read_json_object(request) if request.get_data(cache=True) else {}
            if endpoint == "sim_config":
                protocol = body.pop("protocol", None)
                if not isinstance(protocol, str):
                    raise ValueError("protocol is required")
                return json_response({"protocol": protocol, "knobs": self.configure(protocol, body)})
            if endpoint == "sim_complete":
                task = self.complete_now(args["protocol"], args["task_id"])
            else:
                task = self.fail_now(args["protocol"], args["task_id"], body.get("code"), body.get("message"))
            return json_response(task)
        except (BadRequest, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        except KeyError as exc:
            return json_response({"error": str(exc.args[0]) if exc.args else "not found"}, 404)

    def configure(self, protocol: str, updates: dict[str, Any]) -> dict[str, Any]:
        """Validate and set knobs (``protocol`` may be ``"all"``); the protocol's knobs after."""
        targets = list(knob_rules.PROTOCOLS) if protocol == "all" else [knob_rules.check_protocol(protocol)]
        clean = {p: knob_rules.validate(p, updates) for p in targets}
        with self.state.lock:
            for p in targets:
                knob_rules.apply(self.state.knobs[p], clean[p])
            after = {p: knob_rules.as_dict(self.state.knobs[p], p) for p in targets}
        return after if protocol == "all" else after[protocol]

    def reset(self) -> None:
        self.state.reset()

    def requests(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(entry) for entry in self.state.requests]

    def tasks(self, protocol: str) -> list[dict[str, Any]]:
        knob_rules.check_protocol(protocol)
        with self.state.lock:
            self.state.advance()
            return [self._task_view(t) for t in self.state.tasks[protocol].values()]

    def _task_view(self, task: Task) -> dict[str, Any]:
        view = task.snapshot()
        view["status"] = self.handlers[task.protocol].render(task)
        return view

    def callbacks(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(entry) for entry in self.state.callbacks]

    def snapshot(self) -> dict[str, Any]:
        """Everything ``GET /_sim/state`` shows."""
        with self.state.lock:
            return {
                "url": self.ctx.url,
                "base_urls": self.base_urls(),
                "api_keys": dict(self.ctx.api_keys),
                "knobs": {p: knob_rules.as_dict(self.state.knobs[p], p) for p in knob_rules.PROTOCOLS},
                "tasks": {p: self.tasks(p) for p in knob_rules.PROTOCOLS},
                "images": len(self.state.images),
                "requests": len(self.state.requests),
                "callbacks": jsonable(self.callbacks()),
            }

    def counters(self) -> dict[str, Any]:
        """What a fault-injection harness counts, JSON-ready:

        - ``creates``: protocol -> prompt -> create attempts that reached the create (see
          ``protocol``: the attempts the per-task create directives count);
        - ``tasks_per_prompt``: protocol -> prompt -> provider tasks made for it;
        - ``tags``: ``[tag:<label>]`` label -> the provider tasks whose prompt carries it, each
          ``{protocol, id, state, callback_url}`` (two for one label: a duplicate paid task);
        - ``status_calls`` and ``downloads``: protocol -> task id -> count;
        - ``limits``: protocol -> what its rate and concurrency limits saw (``SimState.limit_counts``).
        """
        with self.state.lock:
            self.state.advance()
            creates: dict[str, dict[str, int]] = {p: {} for p in knob_rules.PROTOCOLS}
            for (protocol, prompt), count in self.state.create_attempts.items():
                creates[protocol][prompt] = count
            per_prompt: dict[str, dict[str, int]] = {p: {} for p in knob_rules.PROTOCOLS}
            labelled: dict[str, list[dict[str, Any]]] = {}
            for protocol, tasks in self.state.tasks.items():
                for task in tasks.values():
                    per_prompt[protocol][task.prompt] = per_prompt[protocol].get(task.prompt, 0) + 1
                    for label in tags(task.prompt):
                        entry = {"protocol": protocol, "id": task.id, "state": task.state}
                        labelled.setdefault(label, []).append({**entry, "callback_url": task.callback_url})
            nested: dict[str, dict[str, dict[str, int]]] = {"status_calls": {}, "downloads": {}}
            for name, counter in (("status_calls", self.state.status_calls), ("downloads", self.state.downloads)):
                nested[name] = {p: {} for p in knob_rules.PROTOCOLS}
                for (protocol, task_id), count in counter.items():
                    nested[name][protocol][task_id] = count
            limits = self.state.limit_counts()
            return {"creates": creates, "tasks_per_prompt": per_prompt, "tags": labelled, **nested, "limits": limits}

    def base_urls(self) -> dict[str, str]:
        return {name: handler.base_url for name, handler in self.handlers.items()}

    def complete_now(self, protocol: str, task_id: str) -> dict[str, Any]:
        knob_rules.check_protocol(protocol)
        with self.state.lock:
            return self._task_view(self.state.force_finish(protocol, task_id, Outcome()))

    def fail_now(
        self, protocol: str, task_id: str, code: str | None = None, message: str | None = None
    ) -> dict[str, Any]:
        """Fail a task now. ``code`` is a neutral kind (content_policy, invalid_image,
        generation_failed: worded by each protocol) or a literal wire failure code."""
        knob_rules.check_protocol(protocol)
        if code in _FAIL_KINDS:
            outcome = Outcome(code, message=message)
        else:
            outcome = Outcome(GENERATION_FAILED, code=code, message=message)
        with self.state.lock:
            return self._task_view(self.state.force_finish(protocol, task_id, outcome))

    def video_sha256(self, protocol: str, task_id: str) -> str:
        knob_rules.check_protocol(protocol)
        task = self.state.require(protocol, task_id)
        if task.state != SUCCEEDED or task.video_bytes is None:
            raise ValueError(f"{protocol} task {task_id} has no video yet ({task.state})")
        return _video_sha256(task.seed, task.video_bytes)
