"""An independent count of the AWS work a local run does, from outside reelay's code.

reelay counts its own operations (``reelay.costs``, in its adapters). This module counts the
same work where the local stack serves it, to check those counts:

- every request the moto server answers, by service and operation (from the SigV4 credential
  scope and ``X-Amz-Target``, or the S3 method and query), attributed to the task id its body or
  path names (``tsk_...``; a DynamoDB key, a queue message, an execution name, a bucket key);
- every Lambda invocation the local runtime runs, by function, shared evenly among the tasks its
  event names (a path parameter, the state machine's input, each queue record), with its wall time;
  an event that names none (reconcile's schedule) is shared among the tasks its requests named,
  told by the function's own access key while it is that function's only invocation running;
- Step Functions state transitions, from each execution's history (one per state entered).

Requests signed with the access key ``OBSERVER_KEY`` are the observer's own and are not counted.
A client's read (an HTTP ``GET``) is not counted either, as reelay does not count it.

Install it before the stack starts (the gateway keeps the runtime's ``invoke`` it was given)::

    with AwsCallCounter() as counter, DevEnvironment(...) as env:
        ...
        counter.transitions(env.stack)
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from reelay_local.local_iam import SCOPE as _SCOPE
from reelay_local.local_iam import function_of_key
from reelay_local.local_iam import peek_body as _peek_body

OBSERVER_KEY = "observer"

_TASK_ID = re.compile(rb"tsk_[A-Za-z0-9]+")
_SERVICES = {"dynamodb": "ddb", "sqs": "sqs", "states": "sfn", "s3": "s3", "events": "events", "lambda": "lambda"}


@dataclass
class Invocations:
    """Lambda invocations per task (shared among an event's tasks) and per function."""

    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    http: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gb_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_function: Counter[str] = field(default_factory=Counter)
    gb_s_by_function: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unattributed: Counter[str] = field(default_factory=Counter)


class AwsCallCounter:
    """Counts requests at the moto server and invocations at the local runtime (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str | None, str]] = Counter()
        self._tokens: dict[str, str] = {}  # a Step Functions task token -> its task (from poll messages)
        # Function -> the tasks named by the requests of each of its running invocations whose event
        # names no task (a schedule's): the tasks such an invocation is shared among.
        self._unnamed: dict[str, list[set[str]]] = defaultdict(list)
        self.invocations = Invocations()
        self._restore: list[Any] = []
        self.counting = True

    # -- installing ------------------------------------------------------------------------------

    def __enter__(self) -> AwsCallCounter:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        from reelay_local.lambda_runtime import FunctionRuntime

        counter = self
        served = DomainDispatcherApplication.__call__
        invoke = FunctionRuntime.invoke

        def counted_request(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
            counter._request(environ)
            return served(app, environ, start_response)

        def counted_invoke(runtime: Any, function: str, event: Any) -> Any:
            spec = runtime._find(function).spec
            touched: set[str] | None = None
            if not _event_tasks(event) and not (isinstance(event, dict) and "requestContext" in event):
                touched = set()
                with counter._lock:
                    counter._unnamed[spec.logical_id].append(touched)
            started = time.perf_counter()
            result = None
            try:
                result = invoke(runtime, function, event)
                return result
            finally:
                seconds = time.perf_counter() - started
                if touched is not None:
                    with counter._lock:
                        running = counter._unnamed[spec.logical_id]
                        running[:] = [t for t in running if t is not touched]  # by identity: sets compare equal
                counter._invocation(spec.logical_id, spec.memory_size, event, result, seconds, touched or set())

        DomainDispatcherApplication.__call__ = counted_request  # type: ignore[method-assign,assignment]
        FunctionRuntime.invoke = counted_invoke  # type: ignore[method-assign,assignment]
        self._restore = [
            lambda: setattr(DomainDispatcherApplication, "__call__", served),
            lambda: setattr(FunctionRuntime, "invoke", invoke),
        ]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while self._restore:
            self._restore.pop()()

    # -- counting --------------------------------------------------------------------------------

    def stop_counting(self) -> None:
        """Count nothing from now on (the reads that check the counts are not part of the run)."""
        self.counting = False

    def _request(self, environ: dict[str, Any]) -> None:
        if not self.counting:
            return
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is None or scope.group(1) == OBSERVER_KEY:
            return
        service = _SERVICES.get(scope.group(2), scope.group(2))
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if service == "s3":
            operation = _s3_operation(environ.get("REQUEST_METHOD", ""), path, parse_qs(query, keep_blank_values=True))
            tasks = _TASK_ID.findall(path.encode())
        else:
            body = _peek_body(environ)
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            operation = target.rsplit(".", 1)[-1] if target else _form_action(body)
            tasks = _TASK_ID.findall(body)
            if service == "sqs":
                self._learn_token(body)
            elif not tasks and service == "sfn":
                tasks = self._token_tasks(body)
        # Each distinct task named shares nothing: a request naming two tasks (a batch read) counts for each.
        names = sorted({t.decode() for t in tasks}) or [None]
        function = function_of_key(scope.group(1))
        with self._lock:
            for task in names:
                self.calls[(task, f"{service}.{operation}")] += 1
            running = self._unnamed.get(function or "")
            if running and len(running) == 1:  # two at once: whose request it is cannot be told
                running[0].update(t for t in names if t)

    def _learn_token(self, body: bytes) -> None:
        """A poll message names its task and its execution's task token: remember which is whose."""
        try:
            message = json.loads(json.loads(body).get("MessageBody") or "{}")
        except (ValueError, AttributeError):
            return
        if isinstance(message, dict) and message.get("token") and message.get("task_id"):
            with self._lock:
                self._tokens[str(message["token"])] = str(message["task_id"])

    def _token_tasks(self, body: bytes) -> list[bytes]:
        """A heartbeat or a task token's result names only the token: its task, as learnt."""
        try:
            token = json.loads(body).get("taskToken")
        except (ValueError, AttributeError):
            return []
        with self._lock:
            task = self._tokens.get(str(token)) if token else None
        return [task.encode()] if task else []

    def _invocation(
        self, function: str, memory_mb: int, event: Any, result: Any, seconds: float, touched: set[str]
    ) -> None:
        if _client_read(event) or not self.counting:
            return
        tasks = sorted((_event_tasks(event) | _result_tasks(event, result)) or touched)
        gb_s = max(1, round(seconds * 1000)) / 1000 * memory_mb / 1024
        with self._lock:
            self.invocations.by_function[function] += 1
            self.invocations.gb_s_by_function[function] += gb_s
            if not tasks:
                self.invocations.unattributed[function] += 1
                return
            for task in tasks:
                self.invocations.requests[task] += 1 / len(tasks)
                self.invocations.gb_s[task] += gb_s / len(tasks)
                if isinstance(event, dict) and "requestContext" in event:
                    self.invocations.http[task] += 1 / len(tasks)

    # -- reading -----------------------------------------------------------------------------------

    def task_calls(self, task_id: str) -> Counter[str]:
        with self._lock:
            return Counter({op: n for (task, op), n in self.calls.items() if task == task_id})

    def totals(self) -> Counter[str]:
        """Calls by operation over everything counted (attributed or not)."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (_, op), n in self.calls.items():
                totals[op] += n
        return totals

    @staticmethod
    def transitions(stack: Any, task_ids: Iterator[str] | list[str]) -> dict[str, int]:
        """State transitions per task: the states entered in every execution named after it."""
        import boto3

        sfn = boto3.client(
            "stepfunctions",
            endpoint_url=stack.aws_endpoint,
            aws_access_key_id=OBSERVER_KEY,
            aws_secret_access_key=OBSERVER_KEY,
            region_name="us-east-1",
        )
        wanted = set(task_ids)
        found: dict[str, int] = dict.fromkeys(wanted, 0)
        for arn in stack.state_machines.values():
            paginator = sfn.get_paginator("list_executions")
            for page in paginator.paginate(stateMachineArn=arn):
                for execution in page["executions"]:
                    task = execution["name"].split("-", 1)[0]
                    if task not in wanted:
                        continue
                    events = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)
                    found[task] += sum(1 for e in events["events"] if e["type"].endswith("StateEntered"))
        return found


def _form_action(body: bytes) -> str:
    values = parse_qs(body.decode(errors="replace"))
    return values.get("Action", ["?"])[0]


def _s3_operation(method: str, path: str, query: dict[str, list[str]]) -> str:
    has_key = path.strip("/").count("/") >= 1
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else ("PutObject" if has_key else "CreateBucket")
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        return "CompleteMultipartUpload" if "uploadId" in query else "PostObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        return "GetObject" if has_key else "ListObjects"
    return method


def _client_read(event: Any) -> bool:
    http = (event.get("requestContext") or {}).get("http") if isinstance(event, dict) else None
    return isinstance(http, dict) and str(http.get("method", "")).upper() == "GET"


def _event_tasks(event: Any) -> set[str]:
    if not isinstance(event, dict):
        return set()
    if isinstance(event.get("Records"), list):
        found: set[str] = set()
        for record in event["Records"]:
            found |= {t.decode() for t in _TASK_ID.findall(str(record.get("body", "")).encode())}
        return found
    path = event.get("pathParameters") or {}
    task = (path.get("task_id") if isinstance(path, dict) else None) or event.get("task_id")
    return {str(task)} if task else set()


def _result_tasks(event: Any, result: Any) -> set[str]:
    """A task an API call created: the id in its answer (``POST /v1/tasks``)."""
    if not isinstance(event, dict) or not isinstance(result, dict) or "requestContext" not in event:
        return set()
    if (event.get("pathParameters") or {}).get("task_id"):
        return set()
    try:
        body = json.loads(result.get("body") or "{}")
    except ValueError:
        return set()
    task = body.get("id") if isinstance(body, dict) else None
    return {str(task)} if isinstance(task, str) and task.startswith("tsk_") else set()


# Not compared per task: moto's own Lambda calls (Step Functions invoking the poll function),
# and visibility changes, whose request names a receipt handle, not a task (compared in total).
_NOT_PER_TASK = ("lambda.", "sqs.ChangeMessageVisibility")


def compare_task(task_id: str, cost: dict[str, Any], counter: AwsCallCounter, transitions: int) -> list[str]:
    """Where a task's ``cost`` (as ``GET /v1/tasks/{id}`` shows it) differs from the independent count."""
    aws = cost["aws"]
    units: dict[str, float] = aws["units"]
    ours = {op: round(n) for op, n in aws["calls"].items() if not op.startswith(_NOT_PER_TASK)}
    flushes = round(units.get("ddb_accounting_wu", 0))
    if flushes:  # the cost record's ADD, one per invocation, besides the task's own UpdateItems
        ours["ddb.UpdateItem"] = ours.get("ddb.UpdateItem", 0) + flushes
    seen = {op: n for op, n in counter.task_calls(task_id).items() if not op.startswith(_NOT_PER_TASK)}
    problems = []
    if ours != seen:
        diff = {op: (ours.get(op, 0), seen.get(op, 0)) for op in sorted(set(ours) | set(seen))}
        problems.append(
            f"{task_id}: calls (reelay, seen) differ: { ({k: v for k, v in diff.items() if v[0] != v[1]}) }"
        )
    pairs = {
        "lambda_requests": counter.invocations.requests.get(task_id, 0.0),
        "apigw_requests": counter.invocations.http.get(task_id, 0.0),
        "sfn_transitions": float(transitions),
    }
    for name, seen_value in pairs.items():
        if abs(units.get(name, 0.0) - seen_value) > 1e-4:
            problems.append(f"{task_id}: {name} reelay {units.get(name, 0.0)} seen {seen_value}")
    return problems
