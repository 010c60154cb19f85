"""Callbacks: POSTing task outcomes to ``callback_url`` (generate_task), from background threads.

The body is the status endpoint's wrapped shape, ``{"code": 200, "msg": "success", "data": {...}}``,
sent as ``application/json`` with ``User-Agent: reelay-sim`` and no credential. Each delivery is one
POST with the ``callback_timeout_seconds`` timeout, redirects not followed, never retried; every
attempt is recorded (``Simulator.callback_deliveries``): a failure to deliver is recorded, not
raised. What is sent when a task ends depends on ``callback_mode`` (the knobs in force at the moment the
task changed state count, not those when the callback goes out):

- ``normal``: one terminal callback.
- ``duplicate``: ``callback_copies`` identical terminal callbacks, released at the same moment
  from as many threads.
- ``out_of_order``: the terminal callback, then (after it was answered) a stale ``processing``
  one (progress 50) for the same task.
- ``late``: one terminal callback after ``callback_delay_seconds``.
- ``never``: nothing.

Per-task prompt directives override the mode for one task:

- ``[sim:no_callback]``: this task's callbacks (progress and terminal) are never sent.
- ``[sim:callback_once]``: exactly one terminal callback, whatever ``callback_mode`` says, and no
  progress callback; like every delivery it is not retried, so a 5xx answer (say a 503 from the
  receiver) loses it -- what a provider that never retries does.

With ``callback_progress`` a ``processing`` callback is also sent when the task starts running.
``callback_body_result_url`` replaces the result URL inside terminal callback bodies only.
Work begun before a ``reset`` is dropped, and nothing is sent once the simulator stops.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from reelay_sim.protocol import directives
from reelay_sim.state import RUNNING, TERMINAL, SimState, Task, Transition


class CallbackProtocol(Protocol):
    """What a protocol offering callbacks provides (see ``generate_task.GenerateTask``)."""

    def callback_body(self, task: Task, result_url: str | None = None) -> dict[str, Any]: ...

    def stale_body(self, task: Task) -> dict[str, Any]: ...


class CallbackSender:
    """Turns task transitions into callback deliveries."""

    def __init__(self, state: SimState, stop: threading.Event, protocols: dict[str, CallbackProtocol]) -> None:
        self.state = state
        self.stop = stop
        self.protocols = protocols
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def _http(self) -> httpx.Client:
        """One pooled client for all deliveries (made on first use, thread-safe)."""
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    follow_redirects=False,
                    headers={"User-Agent": "reelay-sim"},
                    limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
                )
            return self._client

    def close(self) -> None:
        """Release the HTTP client (a later delivery makes a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def handle(self, transition: Transition) -> None:
        """React to one transition (called from the simulator's ticker thread; never blocks)."""
        task = transition.task
        protocol = self.protocols.get(task.protocol)
        if protocol is None or not task.callback_url or transition.epoch != self.state.epoch:
            return
        knobs = transition.knobs  # as they were when the task changed state
        mode, copies, delay = knobs.callback_mode, knobs.callback_copies, knobs.callback_delay_seconds
        progress, override = knobs.callback_progress, knobs.callback_body_result_url
        timeout = knobs.callback_timeout_seconds
        url, epoch = task.callback_url, transition.epoch
        found = directives(task.prompt)
        if "no_callback" in found:
            return
        if "callback_once" in found:
            mode, progress = "normal", False
        if task.state not in TERMINAL:
            if task.state == RUNNING and progress:
                self._spawn(lambda: self._deliver(task, url, protocol.callback_body(task), "progress", epoch, timeout))
            return
        body = protocol.callback_body(task, override)
        if mode == "normal":
            self._spawn(lambda: self._deliver(task, url, body, "terminal", epoch, timeout))
        elif mode == "duplicate":
            barrier = threading.Barrier(copies)
            for copy in range(copies):
                self._spawn(functools.partial(self._duplicate, barrier, task, url, body, copy, epoch, timeout))
        elif mode == "out_of_order":
            stale = protocol.stale_body(task)

            def both() -> None:
                self._deliver(task, url, body, "terminal", epoch, timeout)
                self._deliver(task, url, stale, "stale", epoch, timeout)

            self._spawn(both)
        elif mode == "late":

            def later() -> None:
                if not self.stop.wait(delay):
                    self._deliver(task, url, body, "late", epoch, timeout)

            self._spawn(later)

    @staticmethod
    def _spawn(work: Callable[[], None]) -> None:
        threading.Thread(target=work, name="reelay-sim-callback", daemon=True).start()

    def _duplicate(
        self,
        barrier: threading.Barrier,
        task: Task,
        url: str,
        body: dict[str, Any],
        copy: int,
        epoch: int,
        timeout: float,
    ) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5.0)
        self._deliver(task, url, body, f"duplicate-{copy + 1}", epoch, timeout)

    def _deliver(self, task: Task, url: str, body: dict[str, Any], label: str, epoch: int, timeout: float) -> None:
        if self.stop.is_set() or epoch != self.state.epoch:
            return
        entry: dict[str, Any] = {
            "protocol": task.protocol,
            "task_id": task.id,
            "url": url,
            "label": label,
            "state": body.get("data", {}).get("state"),
            "body": body,
            "at": time.time(),
            "status_code": None,
            "error": None,
        }
        try:
            reply = self._http().post(
                url,
                content=json.dumps(body, ensure_ascii=False).encode(),
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
            entry["status_code"] = reply.status_code
            entry["delivered"] = 200 <= reply.status_code < 300
        except httpx.HTTPError as exc:
            entry["error"] = f"{exc.__class__.__name__}: {exc}"
            entry["delivered"] = False
        self.state.record_callback(entry, epoch)
