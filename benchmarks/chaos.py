"""Chaos run: many tasks on the local stack, faults injected into some, and a verdict on every task.

    .venv/bin/python benchmarks/chaos.py [--tasks 100] [--fault-share 0.3] [--seed 1] [--runs 1]
    make chaos

Starts ``reelay_local.DevEnvironment`` (the real handlers on moto, the provider simulator) with short
timings, submits ``--tasks`` tasks across the three providers through the HTTP API, and injects a
fault into ``--fault-share`` of them, spread over the kinds of ``FAULTS`` (the expectation table):
most faults are simulator prompt directives (``reelay_sim.protocol``, ``reelay_sim.callbacks``);
three are injected by this harness into the local stack, in this process, without touching reelay's
code:

- a 503'd callback: the gateway answers the provider's one callback for the task with 503, as API
  Gateway or a throttled Lambda would; the simulator never retries a callback;
- a failed queue send: moto's SQS ``send_message`` refuses the task's first submit message
  (botocore retries included), then works again: the API's send while its ``POST /v1/tasks`` is
  in flight or, for a task that joined the governor's line there, the send that lets it in when
  a slot frees;
- a worker killed mid-copy: the task's result drips, and the ingest handler's thread gets an
  exception it cannot catch (``ChaosKill``, a ``BaseException``, via
  ``PyThreadState_SetAsyncExc``) a few seconds into the download, so the invocation fails like a
  Lambda that was stopped; the next attempt must resume or restart the copy.

It then waits (``--timeout``, 600 s) until every task is terminal, and prints per fault kind and in
total: tasks, terminal, right (status and code as the table expects), lost (a provider task
succeeded but reelay's task neither succeeded nor failed with an expected reason), partial (objects
under ``tasks/`` whose size or SHA-256 do not match the task's outputs, or objects of tasks that did
not succeed), foreign (a succeeded task whose bytes are not its own provider task's), duplicate
(reelay tasks for which the provider made more than one task, counted by each prompt's unique
``[tag:...]``), and then open multipart uploads and the wall time from the first submit to the last
task's terminal write. Every wrong task is listed. The exit status is 1 when any target is missed:
100 % terminal with the right code, 0 lost, 0 partial, 0 foreign, 0 open uploads, 0 duplicates --
or when a harness fault of the plan did not happen (the ``harness:`` line counts them).

The handlers' logs go to a file (its path is printed), so the report stays readable.

Known limits: the kill is an asynchronous exception, so ``finally`` blocks in the handler still run
(a real kill runs none; an abort-on-error in ``finally`` can hide a leaked multipart upload); it
lands only while the thread runs Python bytecode (the drip keeps the copy doing so). openai_videos'
accepted-then-500 create is not in the table: the money rule allows its one re-send, which this
table would count as a duplicate. The script needs reconcile (``REELAY_RECONCILE_EVERY_SECONDS``)
and the rebuilt ingest to meet its targets; against the code before them, the lost and 503'd
callbacks, held creates, failed sends and gone/always-truncated results never end.

The harness reaches into three private attributes of the local stack (``LocalStack._gateway``,
``LocalStack._runtime`` and its ``_functions``); the hooks it would rather have: a gateway
middleware (``Gateway.add_middleware(fn)``), ``FunctionRuntime.wrap_handler(logical_id, fn)``,
and a fault hook on the moto server for SDK calls.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import boto3
import httpx

REPO = Path(__file__).resolve().parent.parent
GT, SORAHK, OPENAI = "generate_task", "sorahk", "openai_videos"
PROTOCOLS = (GT, SORAHK, OPENAI)
TERMINAL = ("succeeded", "failed")
CREATE_TIMEOUT_SECONDS = 3  # REELAY_<NAME>_TIMEOUT_SECONDS: a create hang must outlast it
HANG_SECONDS = 8  # [sim:create_hang=S], past the create timeout
DRIP_BYTES_PER_SECOND = 16384  # a 256 KiB result takes 16 s to copy: room to kill the copy half-way
KILL_AFTER_SECONDS = 3.0  # into the download


@dataclass(frozen=True)
class Expect:
    """An accepted end of a task: its status and error code (None for success)."""

    status: str
    code: str | None = None

    def __str__(self) -> str:
        return self.status if self.code is None else f"{self.status} {self.code}"


SUCCEEDED = Expect("succeeded")
CREATE_UNCONFIRMED = Expect("failed", "CREATE_UNCONFIRMED")


@dataclass(frozen=True)
class FaultRow:
    """One row of the expectation table: a fault on one protocol and the ends it may have."""

    kind: str
    protocol: str
    directives: str  # simulator prompt directives
    accepted: tuple[Expect, ...]
    harness: str | None = None  # "callback_503" | "fail_send" | "kill_ingest": injected by this script


# The expectation table. Timings of the run: generation 4 s, typical 5 s, deadline 90 s, create
# timeout 3 s, reconcile every 5 s (see ``environment``).
FAULTS: tuple[FaultRow, ...] = (
    # The callback never comes: reconcile checks the status endpoint once twice the typical time has
    # passed since the create was sent, and the task goes on to ingest.
    FaultRow("lost_callback", GT, "[sim:no_callback]", (SUCCEEDED,)),
    # The provider's one callback gets a 503 and is never retried: the same as a lost callback.
    FaultRow("callback_503", GT, "[sim:callback_once]", (SUCCEEDED,), harness="callback_503"),
    # 5xx on create with nothing made: held (no callback names our task, the list shows nothing
    # made after our send), then re-sent once; openai_videos has no way to tell, so it re-sends at
    # most once at once. Either way one provider task, and the task succeeds.
    FaultRow("create_500", GT, "[sim:create_500]", (SUCCEEDED,)),
    FaultRow("create_500", SORAHK, "[sim:create_500]", (SUCCEEDED,)),
    FaultRow("create_500", OPENAI, "[sim:create_500]", (SUCCEEDED,)),
    # 5xx on create after the provider took the job: generate_task's callback names our task and
    # sorahk's list shows it, so reelay adopts it instead of paying twice. (Not on openai_videos:
    # there the money rule allows one re-send, a second charge by design, which this table would
    # have to count as a duplicate.)
    FaultRow("create_500_accepted", GT, "[sim:create_500_accepted]", (SUCCEEDED,)),
    FaultRow("create_500_accepted", SORAHK, "[sim:create_500_accepted]", (SUCCEEDED,)),
    # 429 on create is backoff, never failure.
    FaultRow("create_429", GT, "[sim:create_429=3]", (SUCCEEDED,)),
    FaultRow("create_429", SORAHK, "[sim:create_429=3]", (SUCCEEDED,)),
    FaultRow("create_429", OPENAI, "[sim:create_429=3]", (SUCCEEDED,)),
    # 5xx on status: the poll path's Retry backs off; for generate_task the callback's status
    # check fails (the callback is lost) and reconcile's later checks get through.
    FaultRow("status_500", GT, "[sim:status_500=3]", (SUCCEEDED,)),
    FaultRow("status_500", SORAHK, "[sim:status_500=3]", (SUCCEEDED,)),
    FaultRow("status_500", OPENAI, "[sim:status_500=3]", (SUCCEEDED,)),
    # 429 on status: backoff as well.
    FaultRow("status_429", GT, "[sim:status_429=3]", (SUCCEEDED,)),
    FaultRow("status_429", SORAHK, "[sim:status_429=3]", (SUCCEEDED,)),
    FaultRow("status_429", OPENAI, "[sim:status_429=3]", (SUCCEEDED,)),
    # A create that hangs past the timeout but was accepted; the later callback carries our task id
    # in its URL, so reelay adopts the provider task and the task succeeds.
    FaultRow("create_hang_callback", GT, f"[sim:create_hang={HANG_SECONDS}]", (SUCCEEDED,)),
    # The same hang with no callback on a protocol without a task list: nothing can ever settle it;
    # never re-sent blindly, it fails CREATE_UNCONFIRMED at the deadline ("a charge may exist").
    # Success is accepted only as an adoption of the one provider task (duplicates are counted).
    FaultRow(
        "create_hang_no_callback",
        GT,
        f"[sim:create_hang={HANG_SECONDS}] [sim:no_callback]",
        (CREATE_UNCONFIRMED, SUCCEEDED),
    ),
    FaultRow("create_hang_no_callback", OPENAI, f"[sim:create_hang={HANG_SECONDS}]", (CREATE_UNCONFIRMED, SUCCEEDED)),
    # sorahk has a task list: the held create is found there (created after our send) and adopted.
    FaultRow("create_hang_listed", SORAHK, f"[sim:create_hang={HANG_SECONDS}]", (SUCCEEDED,)),
    # The first download closes early: the upload is aborted and the retry succeeds.
    FaultRow("truncated_once", GT, "[sim:truncate_once]", (SUCCEEDED,)),
    FaultRow("truncated_once", SORAHK, "[sim:truncate_once]", (SUCCEEDED,)),
    FaultRow("truncated_once", OPENAI, "[sim:truncate_once]", (SUCCEEDED,)),
    # Every download closes early: the retries are spent and the task fails INGEST_FAILED.
    FaultRow("truncated_always", GT, "[sim:truncate]", (Expect("failed", "INGEST_FAILED"),)),
    FaultRow("truncated_always", SORAHK, "[sim:truncate]", (Expect("failed", "INGEST_FAILED"),)),
    FaultRow("truncated_always", OPENAI, "[sim:truncate]", (Expect("failed", "INGEST_FAILED"),)),
    # The result answers 404 on every attempt (three over at least a minute): RESULT_EXPIRED.
    FaultRow("result_gone", GT, "[sim:gone]", (Expect("failed", "RESULT_EXPIRED"),)),
    FaultRow("result_gone", SORAHK, "[sim:gone]", (Expect("failed", "RESULT_EXPIRED"),)),
    FaultRow("result_gone", OPENAI, "[sim:gone]", (Expect("failed", "RESULT_EXPIRED"),)),
    # The ingest worker dies half-way through a (slow) copy: the message comes back, the next
    # attempt resumes or restarts, and nothing partial is left behind.
    FaultRow("worker_killed", GT, f"[sim:drip={DRIP_BYTES_PER_SECOND}]", (SUCCEEDED,), harness="kill_ingest"),
    FaultRow("worker_killed", SORAHK, f"[sim:drip={DRIP_BYTES_PER_SECOND}]", (SUCCEEDED,), harness="kill_ingest"),
    FaultRow("worker_killed", OPENAI, f"[sim:drip={DRIP_BYTES_PER_SECOND}]", (SUCCEEDED,), harness="kill_ingest"),
    # The submit message's send fails after the task was stored: reconcile finds the task queued
    # past its due time and enqueues it again.
    FaultRow("queue_send_failed", GT, "", (SUCCEEDED,), harness="fail_send"),
    FaultRow("queue_send_failed", SORAHK, "", (SUCCEEDED,), harness="fail_send"),
    FaultRow("queue_send_failed", OPENAI, "", (SUCCEEDED,), harness="fail_send"),
)
KINDS: tuple[str, ...] = tuple(dict.fromkeys(row.kind for row in FAULTS))
CLEAN = "clean"


@dataclass
class Planned:
    """One task of the run: what it is, what it must end as, and what became of it."""

    number: int
    protocol: str
    row: FaultRow | None
    tag: str
    prompt: str
    task_id: str | None = None
    submit_error: str | None = None
    view: dict[str, Any] | None = None  # the API's last answer for the task
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.row.kind if self.row else CLEAN

    @property
    def accepted(self) -> tuple[Expect, ...]:
        return self.row.accepted if self.row else (SUCCEEDED,)

    @property
    def status(self) -> str | None:
        return self.view["status"] if self.view else None

    @property
    def code(self) -> str | None:
        error = (self.view or {}).get("error") or {}
        return error.get("code")

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def right(self) -> bool:
        return (
            self.terminal and Expect(str(self.status), self.code if self.status == "failed" else None) in self.accepted
        )


def plan(tasks: int, share: float, seed: int, run: int) -> list[Planned]:
    """The run's tasks: ``share`` of them faulty, spread over the kinds (then over each kind's
    protocols), the rest clean and spread over the protocols; shuffled, so faults interleave."""
    rng = random.Random(seed * 1000 + run)
    faulty = min(tasks, round(tasks * share))
    rows_of: dict[str, list[FaultRow]] = {kind: [r for r in FAULTS if r.kind == kind] for kind in KINDS}
    for rows in rows_of.values():
        rng.shuffle(rows)
    start = rng.randrange(len(KINDS))
    chosen: list[FaultRow | None] = []
    for index in range(faulty):
        kind = KINDS[(start + index) % len(KINDS)]
        lap = index // len(KINDS)
        chosen.append(rows_of[kind][lap % len(rows_of[kind])])
    chosen.extend([None] * (tasks - faulty))
    rng.shuffle(chosen)
    clean_protocols = list(PROTOCOLS)
    rng.shuffle(clean_protocols)
    planned = []
    clean = 0
    for number, row in enumerate(chosen, start=1):
        if row is None:
            protocol = clean_protocols[clean % len(clean_protocols)]
            clean += 1
        else:
            protocol = row.protocol
        tag = f"chaos-{seed}-{run}-{number}"
        kind = row.kind if row else CLEAN
        prompt = f"chaos task {number} ({kind}): a lighthouse at dawn [tag:{tag}] {row.directives if row else ''}"
        planned.append(Planned(number, protocol, row, tag, prompt.strip()))
    return planned


# --- faults injected into the local stack -------------------------------------------------------


class ChaosKill(BaseException):
    """Raised inside an ingest handler's thread: a worker that dies. A ``BaseException``, so the
    handler's ``except Exception`` cannot treat it as an error it handles."""


def _async_raise(thread_id: int, exc: type[BaseException] | None) -> int:
    """Raise ``exc`` in another thread at its next bytecode (None cancels a pending one)."""
    target = ctypes.py_object(exc) if exc is not None else None
    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target))


@dataclass
class _Kill:
    task_id: str
    tag: str
    protocol: str
    thread_id: int
    running: bool = True
    sent: bool = False
    landed: bool = False


class Harness:
    """The three faults this script injects into the running local stack (see the module doc)."""

    def __init__(self, env: Any, planned: list[Planned]) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.by_id: dict[str, Planned] = {}
        self.refused_callbacks: dict[str, int] = {}
        self.failed_sends: dict[str, int] = {}
        self.kills: dict[str, _Kill] = {}
        self.fail_next_submit_send = False
        self.fail_first_send_of: set[str] = set()  # fail_send tasks whose POST sent nothing
        self.hooks: list[str] = []
        self._restore: list[Callable[[], None]] = []
        self._submit_queue = str(env.stack.resources["SubmitQueue"]).rsplit("/", 1)[-1]
        self.expected = {
            name: sum(1 for p in planned if p.row and p.row.harness == name)
            for name in ("callback_503", "fail_send", "kill_ingest")
        }

    def register(self, item: Planned) -> None:
        with self.lock:
            if item.task_id:
                self.by_id[item.task_id] = item
                if item.row and item.row.harness == "fail_send" and item.task_id not in self.failed_sends:
                    # It joined the governor's line: its first send is the one that lets it in.
                    self.fail_first_send_of.add(item.task_id)

    def install(self) -> None:
        self._wrap_gateway()
        self._wrap_sqs()
        self._wrap_ingest()

    def uninstall(self) -> None:
        while self._restore:
            self._restore.pop()()

    def injected(self) -> dict[str, int]:
        """How many of each harness fault actually happened (compare with ``expected``)."""
        with self.lock:
            return {
                "callback_503": len(self.refused_callbacks),
                "fail_send": len(self.failed_sends),
                "kill_ingest": sum(1 for k in self.kills.values() if k.landed),
            }

    def summary(self) -> str:
        done = self.injected()
        names = {"callback_503": "503'd callbacks", "fail_send": "failed queue sends", "kill_ingest": "killed copies"}
        return ", ".join(f"{names[k]} {done[k]}/{self.expected[k]}" for k in names)

    # -- a 503 from the gateway for the one callback ---------------------------------------------

    def _wrap_gateway(self) -> None:
        from werkzeug.wrappers import Response

        gateway = getattr(self.env.stack, "_gateway", None)
        if gateway is None or not hasattr(gateway, "_handle"):
            self.hooks.append("no gateway hook: 503'd callbacks not injected")
            return
        original = gateway._handle

        def handle(request: Any) -> Any:
            parts = request.path.strip("/").split("/")
            if request.method == "POST" and len(parts) == 3 and parts[0] == "callbacks":
                with self.lock:
                    item = self.by_id.get(parts[2])
                    refuse = bool(item and item.row and item.row.harness == "callback_503")
                    if refuse:
                        self.refused_callbacks[parts[2]] = self.refused_callbacks.get(parts[2], 0) + 1
                if refuse:
                    return Response('{"message":"Service Unavailable"}', status=503, content_type="application/json")
            return original(request)

        gateway._handle = handle
        self._restore.append(lambda: setattr(gateway, "_handle", original))

    # -- a failed SendMessage for the submit message ----------------------------------------------

    def _wrap_sqs(self) -> None:
        from moto.sqs.exceptions import InvalidParameterValue
        from moto.sqs.models import SQSBackend

        original = SQSBackend.send_message

        def send_message(backend: Any, queue_name: str, message_body: str, *args: Any, **kwargs: Any) -> Any:
            if queue_name == self._submit_queue and (self.fail_next_submit_send or self.fail_first_send_of):
                with contextlib.suppress(ValueError, AttributeError):
                    task_id = str(json.loads(message_body).get("task_id"))
                    with self.lock:
                        # A task this harness does not know yet is the one whose POST is in flight
                        # (tasks are submitted one at a time); reconcile's re-sends name known ones.
                        fail = (self.fail_next_submit_send and task_id not in self.by_id) or (
                            task_id in self.fail_first_send_of
                        )
                        self.fail_first_send_of.discard(task_id)
                        if fail:
                            self.failed_sends[task_id] = self.failed_sends.get(task_id, 0) + 1
                    if fail:
                        # A 400 is not retried by botocore: the API's one send fails at once.
                        raise InvalidParameterValue("chaos: injected SendMessage failure")
            return original(backend, queue_name, message_body, *args, **kwargs)

        SQSBackend.send_message = send_message  # type: ignore[method-assign,assignment]
        self._restore.append(lambda: setattr(SQSBackend, "send_message", original))

    @contextlib.contextmanager
    def failing_submit_send(self) -> Iterator[None]:
        self.fail_next_submit_send = True
        try:
            yield
        finally:
            self.fail_next_submit_send = False

    def failed_send_task(self) -> str | None:
        """The task id of a send failed during the last POST (when the API did not answer 202)."""
        with self.lock:
            unknown = [t for t in self.failed_sends if t not in self.by_id]
        return unknown[-1] if unknown else None

    # -- an ingest worker killed mid-copy ---------------------------------------------------------

    def _wrap_ingest(self) -> None:
        runtime = getattr(self.env.stack, "_runtime", None)
        functions = getattr(runtime, "_functions", None)
        if not isinstance(functions, dict):
            self.hooks.append("no runtime hook: workers not killed")
            return
        ingest = [lid for lid in functions if "ingest" in lid.lower()]
        if not ingest:
            self.hooks.append("no ingest function found: workers not killed")
            return
        loaded = functions[ingest[0]]
        original = loaded.handler

        def handler(event: Any, context: Any) -> Any:
            job = self._claim_kill(event)
            try:
                return original(event, context)
            except ChaosKill:
                if job is not None:
                    job.landed = True
                raise RuntimeError("chaos: the ingest worker was killed mid-copy") from None
            finally:
                if job is not None:
                    with self.lock:
                        job.running = False
                        if job.sent and not job.landed:
                            _async_raise(job.thread_id, None)  # it came too late: cancel it

        loaded.handler = handler
        self._restore.append(lambda: setattr(loaded, "handler", original))

    def _claim_kill(self, event: Any) -> _Kill | None:
        """The kill planned for the first ingest of a marked task in ``event``, started; or None."""
        for record in (event or {}).get("Records", []) if isinstance(event, dict) else []:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                task_id = str(json.loads(record.get("body") or "{}").get("task_id"))
                with self.lock:
                    item = self.by_id.get(task_id)
                    if not item or not item.row or item.row.harness != "kill_ingest" or task_id in self.kills:
                        continue
                    job = _Kill(task_id, item.tag, item.protocol, threading.get_ident())
                    self.kills[task_id] = job
                threading.Thread(target=self._killer, args=(job,), name="chaos-killer", daemon=True).start()
                return job
        return None

    def _killer(self, job: _Kill) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job.running:  # wait for the download to begin
            if self._downloads(job) > 0:
                break
            time.sleep(0.2)
        time.sleep(KILL_AFTER_SECONDS)
        with self.lock:
            if job.running:
                job.sent = _async_raise(job.thread_id, ChaosKill) == 1

    def _downloads(self, job: _Kill) -> int:
        counters = self.env.sim.counters()
        ids = [t["id"] for t in counters["tags"].get(job.tag, [])]
        return sum(counters["downloads"][job.protocol].get(i, 0) for i in ids)


# --- the run ------------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The variables ``reelay dev`` reads, for short timings (a variable already set wins)."""
    values = {
        "REELAY_RECONCILE_EVERY_SECONDS": str(args.reconcile_every),
        "REELAY_LOG_LEVEL": "WARNING",
        # The drip that gives the harness time to kill a copy half-way is slower than ingest's
        # default minimum rate (64 KiB/s), which would end those tasks RESULT_TOO_SLOW instead.
        "REELAY_INGEST_MIN_BYTES_PER_SECOND": str(DRIP_BYTES_PER_SECOND // 4),
    }
    for protocol in PROTOCOLS:
        prefix = f"REELAY_{protocol.upper()}_"
        values[prefix + "TYPICAL_SECONDS"] = str(args.typical_seconds)
        values[prefix + "DEADLINE_SECONDS"] = str(args.deadline_seconds)
        values[prefix + "TIMEOUT_SECONDS"] = str(CREATE_TIMEOUT_SECONDS)
    return {key: os.environ.get(key, value) for key, value in values.items()}


@dataclass
class RunReport:
    """What one run found."""

    run: int
    planned: list[Planned]
    open_uploads: list[str]
    stray_objects: list[str]  # objects under tasks/ of no task of this run
    wall_seconds: float | None  # first submit -> last terminal write (None: not all terminal)
    elapsed_seconds: float
    harness: str
    hooks: list[str]
    all_injected: bool  # every harness fault of the plan happened (else the run proves nothing)

    def rows(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for item in self.planned:
            for key in (item.kind, "total"):
                row = table.setdefault(key, dict.fromkeys(COLUMNS, 0))
                row["tasks"] += 1
                row["terminal"] += item.terminal
                row["right"] += item.right
                for problem in ("lost", "partial", "foreign", "duplicate"):
                    row[problem] += any(p.startswith(problem) for p in item.problems)
        return table

    @property
    def ok(self) -> bool:
        total = self.rows().get("total", dict.fromkeys(COLUMNS, 0))
        return (
            total["right"] == total["tasks"]
            and not any(total[p] for p in ("lost", "partial", "foreign", "duplicate"))
            and not self.open_uploads
            and not self.stray_objects
            and self.all_injected
        )


COLUMNS = ("tasks", "terminal", "right", "lost", "partial", "foreign", "duplicate")


def run_once(args: argparse.Namespace, run: int, log: IO[str], out: IO[str]) -> RunReport:
    """One chaos run on a fresh local stack."""
    from reelay_local import DevEnvironment

    planned = plan(args.tasks, args.fault_share, args.seed, run)
    for key, value in environment(args).items():
        os.environ[key] = value
    env = DevEnvironment(REPO)
    began = time.monotonic()
    with contextlib.redirect_stdout(log):  # the handlers' Powertools logs bind sys.stdout at import
        env.start()
    harness: Harness | None = None
    try:
        env.sim.configure("all", generation_seconds=args.generation_seconds)
        harness = Harness(env, planned)
        harness.install()
        with httpx.Client(base_url=env.stack.api_url, timeout=60) as http, contextlib.redirect_stdout(log):
            first_submit = time.time()
            for item in planned:
                submit(http, harness, item)
            progress(out, run, planned, began)
            wait(http, planned, began, args.timeout, out, run)
            for item in planned:
                if item.task_id:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        item.view = http.get(f"/v1/tasks/{item.task_id}").json()
            open_uploads, stray = check(env, planned)
        ends = [_epoch(i.view["updated_at"]) for i in planned if i.terminal and i.view]
        all_done = all(i.terminal for i in planned)
        wall = (max(ends) - first_submit) if ends and all_done else None
        return RunReport(
            run,
            planned,
            open_uploads,
            stray,
            wall,
            time.monotonic() - began,
            harness.summary(),
            harness.hooks,
            harness.injected() == harness.expected,
        )
    finally:
        if harness is not None:
            harness.uninstall()
        with contextlib.redirect_stdout(log):
            env.stop()


def submit(http: httpx.Client, harness: Harness, item: Planned) -> None:
    body = {"provider": item.protocol, "prompt": item.prompt}
    with harness.failing_submit_send() if item.row and item.row.harness == "fail_send" else contextlib.nullcontext():
        try:
            answer = http.post("/v1/tasks", json=body)
        except httpx.HTTPError as exc:
            answer = None
            item.submit_error = f"{type(exc).__name__}: {exc}"
    if answer is not None and answer.status_code == 202:
        item.task_id = answer.json()["id"]
    else:
        if answer is not None:
            item.submit_error = f"POST /v1/tasks answered {answer.status_code}: {answer.text[:200]}"
        # The API may have stored the task before the failed send: the harness saw its id.
        if item.row and item.row.harness == "fail_send":
            item.task_id = harness.failed_send_task()
    harness.register(item)


def wait(http: httpx.Client, planned: list[Planned], began: float, timeout: float, out: IO[str], run: int) -> None:
    """Poll the list endpoint (a page of 100 per call, not a GET per task) until all are terminal."""
    by_id = {item.task_id: item for item in planned if item.task_id}
    last_report = time.monotonic()
    while time.monotonic() - began < timeout:
        cursor: str | None = None
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            while True:
                params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = http.get("/v1/tasks", params=params).json()
                for view in page["tasks"]:
                    if view["id"] in by_id:
                        by_id[view["id"]].view = view
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        if all(item.terminal for item in by_id.values()):
            return
        if time.monotonic() - last_report >= 15:
            progress(out, run, planned, began)
            last_report = time.monotonic()
        time.sleep(2.0)


def progress(out: IO[str], run: int, planned: list[Planned], began: float) -> None:
    terminal = sum(item.terminal for item in planned)
    out.write(f"  run {run}: {time.monotonic() - began:6.1f} s, {terminal}/{len(planned)} terminal\n")
    out.flush()


def check(env: Any, planned: list[Planned]) -> tuple[list[str], list[str]]:
    """Judge every task against the simulator and S3; returns (open uploads, stray objects)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=env.stack.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="reelay-local",
        aws_secret_access_key="reelay-local",
    )
    bucket = env.stack.bucket
    objects: dict[str, tuple[int, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="tasks/"):
        for entry in page.get("Contents", []):
            digest = hashlib.sha256()
            for chunk in s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].iter_chunks(1 << 20):
                digest.update(chunk)
            objects[entry["Key"]] = (int(entry["Size"]), digest.hexdigest())
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    counters = env.sim.counters()
    by_id = {item.task_id: item for item in planned if item.task_id}
    stray = [key for key in objects if key.split("/")[1] not in by_id]
    for item in planned:
        judge(env, item, counters["tags"].get(item.tag, []), objects)
    return uploads, stray


def judge(env: Any, item: Planned, provider_tasks: list[dict[str, Any]], objects: dict[str, tuple[int, str]]) -> None:
    """Record the task's problems: lost, partial, foreign, duplicate (each a line starting so)."""
    if len(provider_tasks) > 1:
        item.problems.append(f"duplicate: {len(provider_tasks)} provider tasks for one reelay task")
        # What the simulator's callbacks for them did (a lost one leaves a held create nothing to find)
        ids = {t["id"] for t in provider_tasks}
        for entry in env.sim.callback_deliveries:
            if entry["task_id"] in ids:
                outcome = entry["status_code"] if entry["error"] is None else entry["error"]
                item.problems.append(f"  callback for {entry['task_id']} ({entry['label']}): {outcome}")
    provider_succeeded = [t for t in provider_tasks if t["state"] == "succeeded"]
    mine = {key: value for key, value in objects.items() if item.task_id and key.split("/")[1] == item.task_id}
    outputs = (item.view or {}).get("outputs") or [] if item.status == "succeeded" else []
    recorded = {o["s3_uri"].split("/", 3)[3]: (int(o["bytes"]), o["sha256"]) for o in outputs}
    for key, (size, sha) in mine.items():
        if recorded.get(key) != (size, sha):
            why = "not an output of the task" if key not in recorded else "size/sha256 differ from the outputs"
            item.problems.append(f"partial: {key} ({size} bytes): {why} (task {item.status})")
    if item.status == "succeeded":
        missing = [key for key in recorded if key not in mine]
        if missing:
            item.problems.append(f"lost: succeeded but {missing[0]} is not in the bucket")
        ours = {t["id"]: t for t in provider_tasks}
        pid = (item.view or {}).get("provider_task_id")
        if pid not in ours:
            item.problems.append(f"foreign: provider task {pid} was not made for this task's request")
        else:
            with contextlib.suppress(ValueError, KeyError):
                expected = env.sim.video_bytes_sha256(ours[pid]["protocol"], pid)
                if any(sha != expected for _, sha in recorded.values()):
                    item.problems.append(f"foreign: the stored bytes are not provider task {pid}'s video")
    elif provider_succeeded and not item.right:
        item.problems.append(
            f"lost: the provider's task {provider_succeeded[0]['id']} succeeded, reelay's is {item.status} {item.code}"
        )


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the report ---------------------------------------------------------------------------------


def render(report: RunReport, out: IO[str]) -> None:
    rows = report.rows()
    out.write(f"\nchaos run {report.run}: {len(report.planned)} tasks\n")
    out.write(f"{'fault kind':<26}" + "".join(f"{c:>10}" for c in COLUMNS) + "\n")
    for kind in (CLEAN, *KINDS, "total"):
        if kind in rows:
            out.write(f"{kind:<26}" + "".join(f"{rows[kind][c]:>10}" for c in COLUMNS) + "\n")
    out.write(f"open multipart uploads: {len(report.open_uploads)}")
    out.write(f" ({', '.join(report.open_uploads[:3])})\n" if report.open_uploads else "\n")
    if report.stray_objects:
        out.write(f"objects of no task: {len(report.stray_objects)} ({', '.join(report.stray_objects[:3])})\n")
    wall = f"{report.wall_seconds:.1f} s" if report.wall_seconds is not None else "n/a (not all terminal)"
    out.write(f"wall time to the last terminal task: {wall} (run took {report.elapsed_seconds:.1f} s)\n")
    out.write(f"harness: {report.harness}{'' if report.all_injected else ' (NOT every fault was injected)'}\n")
    for hook in report.hooks:
        out.write(f"harness warning: {hook}\n")
    wrong = [item for item in report.planned if not item.right or item.problems]
    if wrong:
        out.write("tasks that missed:\n")
    for item in sorted(wrong, key=lambda i: (i.kind, i.protocol, i.number)):
        expected = " | ".join(str(e) for e in item.accepted)
        got = f"{item.status} {item.code or ''}".strip() if item.view else (item.submit_error or "not submitted")
        message = ((item.view or {}).get("error") or {}).get("message") or ""
        out.write(f"  #{item.number:<3} {item.kind:<24} {item.protocol:<14} {item.task_id or '-'}\n")
        out.write(f"       expected {expected}; got {got}{(': ' + message[:140]) if message else ''}\n")
        for problem in item.problems:
            out.write(f"       {problem}\n")
    out.write(f"targets: {'met' if report.ok else 'MISSED'}\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks per run (default 100)")
    parser.add_argument("--fault-share", type=float, default=0.3, help="share of tasks with a fault (default 0.3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault plan (default 1)")
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh stack (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run before giving up (600)")
    parser.add_argument("--generation-seconds", type=float, default=4.0, help="simulated generation time (4)")
    parser.add_argument("--typical-seconds", type=float, default=5.0, help="REELAY_<NAME>_TYPICAL_SECONDS (5)")
    parser.add_argument("--deadline-seconds", type=float, default=90.0, help="REELAY_<NAME>_DEADLINE_SECONDS (90)")
    parser.add_argument("--reconcile-every", type=float, default=5.0, help="REELAY_RECONCILE_EVERY_SECONDS (5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the reports as JSON here")
    args = parser.parse_args(argv)
    if args.tasks < 1 or not 0 <= args.fault_share <= 1 or args.runs < 1:
        parser.error("--tasks and --runs must be positive and --fault-share within 0..1")

    out = sys.stdout
    log_dir = Path(tempfile.mkdtemp(prefix="reelay-chaos-"))
    reports = []
    # One log file for every run: the handlers' Powertools loggers bind the stream they were
    # imported under (run 1's), so a file per run would be closed under run 2's handlers.
    log_path = log_dir / "handlers.log"
    with log_path.open("w") as log:
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        try:
            for run in range(1, args.runs + 1):
                out.write(f"chaos run {run}/{args.runs}: {args.tasks} tasks, fault share {args.fault_share}, ")
                out.write(f"seed {args.seed}; handler logs in {log_path}\n")
                out.flush()
                log.write(f"==== chaos run {run}/{args.runs} ====\n")
                report = run_once(args, run, log, out)
                render(report, out)
                reports.append(report)
        finally:
            logging.getLogger().removeHandler(handler)
    if args.runs > 1:
        out.write("\nall runs:\n")
        for report in reports:
            total = report.rows()["total"]
            wall = f"{report.wall_seconds:.1f} s" if report.wall_seconds is not None else "n/a"
            cells = ", ".join(f"{c} {total[c]}" for c in COLUMNS)
            out.write(f"  run {report.run}: {cells}, open uploads {len(report.open_uploads)}, wall {wall}\n")
    if args.json is not None:
        args.json.write_text(json.dumps([as_json(r) for r in reports], indent=2))
    return 0 if all(r.ok for r in reports) else 1


def as_json(report: RunReport) -> dict[str, Any]:
    return {
        "run": report.run,
        "ok": report.ok,
        "rows": report.rows(),
        "open_uploads": report.open_uploads,
        "stray_objects": report.stray_objects,
        "wall_seconds": report.wall_seconds,
        "elapsed_seconds": report.elapsed_seconds,
        "harness": report.harness,
        "tasks": [
            {
                "number": i.number,
                "kind": i.kind,
                "protocol": i.protocol,
                "task_id": i.task_id,
                "expected": [str(e) for e in i.accepted],
                "status": i.status,
                "code": i.code,
                "right": i.right,
                "problems": i.problems,
                "submit_error": i.submit_error,
            }
            for i in report.planned
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
