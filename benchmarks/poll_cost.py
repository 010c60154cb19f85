"""What a poll-path task costs in AWS, counted on the local stack and priced at us-east-1 list prices.

Starts the embedded local stack (real handlers, real state machine, moto) and the simulator,
creates poll-path tasks (sorahk and openai_videos, both report progress) that take 3 and 10
minutes at the provider, in real time, with the providers' default typical time (180 s), and
counts every AWS operation the stack makes for each task until it has succeeded:

- Step Functions state transitions, from each execution's history: every state entered, plus
  every retry of a state (a re-scheduled task or Lambda call), as AWS bills them;
- Lambda invocations and their measured durations (rounded up to 1 ms) x the template memory;
- SQS requests: sends (the state machine's and the functions'), receives that returned
  messages, deletes and visibility changes (the event-source mappings' empty long polls are
  per queue, not per task, and are left out);
- DynamoDB write units from the items written (1 KB steps, the table plus each index the item
  is in: an index whose key moved pays a delete and a put, a KEYS_ONLY index whose key did not
  move pays nothing, a transaction pays double, a write that failed its condition 1) and read
  units from the items read (4 KB steps, a strongly consistent read 1, an eventual one 0.5);
- S3 requests (PUT-class, GET-class), Secrets Manager calls, HTTP API requests (the create).

Each operation is attributed to the task ids in its request or answer (split evenly when a
batch carries several); what names no task (reconcile's index reads, cold-start secrets) is
reported as per-stack overhead, not per task. The client's own reads of the task are not
counted (the benchmark reads the table directly), nor are the cold starts (two warm-up tasks
take them first). Durations are those of this machine against
moto, an upper bound for AWS. This is a simple, documented count for comparing designs; the
lead re-measures with reelay's own accounting (``make cost``, issue 10).

    .venv/bin/python benchmarks/poll_cost.py                    # this tree, ~11 min
    PYTHONPATH=<old tree>/layers/core:<old tree>/devstack \\
        .venv/bin/python benchmarks/poll_cost.py --repo <old tree>   # the same count of another tree

Results and the alternatives compared: benchmarks/poll_cost.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import httpx
from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.client import BaseClient

# us-east-1 list prices (December 2026), in $ per unit.
PRICES = {
    "states.transitions": 0.025 / 1000,  # Standard workflows
    "lambda.requests": 0.20 / 1_000_000,
    "lambda.gb_seconds": 0.0000133334,  # arm64
    "sqs.requests": 0.40 / 1_000_000,  # standard queues
    "dynamodb.wru": 0.625 / 1_000_000,  # on-demand
    "dynamodb.rru": 0.125 / 1_000_000,
    "s3.put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3.get": 0.0004 / 1000,  # GET, HEAD and the rest
    "secretsmanager.calls": 0.05 / 10_000,
    "apigw.requests": 1.00 / 1_000_000,  # HTTP API
}
TASK_ID = re.compile(r"tsk_[0-9a-f]{28}")
S3_PUT_CLASS = {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
S3_PUT_CLASS |= {"ListParts", "ListObjectsV2", "ListMultipartUploads"}
HTTP_FUNCTIONS = {"ApiFunction", "CallbackFunction"}
TERMINAL = {"succeeded", "failed"}


class Ledger:
    """Quantities per task id (and per stack, for what names no task), thread-safe."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.stack: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, task_ids: Iterable[str], item: str, quantity: float) -> None:
        ids = sorted(set(task_ids))
        with self._lock:
            if not ids:
                self.stack[item] += quantity
            for task_id in ids:
                self.tasks[task_id][item] += quantity / len(ids)


class DynamoUnits:
    """Write and read units from the items themselves (moto reports no real consumed capacity)."""

    def __init__(self, indexes: list[dict[str, Any]]) -> None:
        self._indexes = indexes
        self._items: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def write(self, table: str, new: dict[str, Any] | None, key: dict[str, Any], *, factor: int = 1) -> float:
        ident = (table, str(key.get("pk")), str(key.get("sk")))
        with self._lock:
            old = self._items.get(ident)
            if new is None:
                self._items.pop(ident, None)
            else:
                self._items[ident] = new
        units = _kb(max(_size(new or {}), _size(old or {})), 1024)
        for index in self._indexes:
            names = [k["AttributeName"] for k in index["KeySchema"]]
            keys_only = index["Projection"]["ProjectionType"] == "KEYS_ONLY"
            was = old is not None and all(n in old for n in names)
            now = new is not None and all(n in new for n in names)
            moved = was and now and any(old[n] != new[n] for n in names)  # type: ignore[index]
            if moved:
                units += _kb(_projected(old, names, keys_only), 1024) + _kb(_projected(new, names, keys_only), 1024)
            elif now and not was:
                units += _kb(_projected(new, names, keys_only), 1024)
            elif was and not now:
                units += _kb(_projected(old, names, keys_only), 1024)
            elif now and not keys_only and old != new:
                units += _kb(_size(new), 1024)
        return units * factor

    def seen(self, table: str, item: dict[str, Any]) -> None:
        with self._lock:
            self._items.setdefault((table, str(item.get("pk")), str(item.get("sk"))), item)


class Counting:
    """Counts every boto3 call and every handler invocation of this process into a ``Ledger``."""

    def __init__(self, ledger: Ledger, units: DynamoUnits) -> None:
        self.ledger = ledger
        self.units = units
        self._local = threading.local()
        self._receipts: dict[str, list[str]] = {}

    def paused(self) -> Any:
        counting = self

        class _Paused:
            def __enter__(self) -> None:
                counting._local.off = True

            def __exit__(self, *exc: object) -> None:
                counting._local.off = False

        return _Paused()

    def install(self) -> None:
        from reelay_local.lambda_runtime import FunctionRuntime

        counting = self
        original_call = BaseClient._make_api_call
        original_invoke = FunctionRuntime.invoke

        def _make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if getattr(counting._local, "off", False):
                return original_call(client, operation, params)
            service = client.meta.service_model.service_name
            try:
                result = original_call(client, operation, params)
            except Exception as exc:
                counting.record(service, operation, params, None, failed=exc)
                raise
            counting.record(service, operation, params, result)
            return result

        def invoke(runtime: Any, function: str, event: Any) -> Any:
            spec = runtime._find(function).spec
            started = time.perf_counter()
            result: Any = None
            try:
                result = original_invoke(runtime, function, event)
                return result
            finally:
                seconds = math.ceil((time.perf_counter() - started) * 1000) / 1000
                ids = TASK_ID.findall(_text(event) + _text(result))
                if spec.logical_id == "ReconcileFunction":
                    ids = []  # a scheduled run: per stack
                counting.ledger.add(ids, "lambda.requests", 1)
                counting.ledger.add(ids, "lambda.gb_seconds", seconds * spec.memory_size / 1024)
                counting.ledger.add(ids, f"lambda.invocations.{spec.logical_id}", 1)
                if spec.logical_id in HTTP_FUNCTIONS:
                    counting.ledger.add(ids, "apigw.requests", 1)

        BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]
        FunctionRuntime.invoke = invoke  # type: ignore[method-assign]

    def record(self, service: str, operation: str, params: dict[str, Any], result: Any, *, failed: Any = None) -> None:
        ids = TASK_ID.findall(_text(params) + _text(result))
        if threading.current_thread().name.startswith("reelay-local-ReconcileFunction"):
            ids = []
        if service == "sqs":
            self._sqs(operation, params, result, ids)
        elif service == "dynamodb":
            self._dynamodb(operation, params, result, ids, failed)
        elif service == "s3":
            self.ledger.add(ids, "s3.put" if operation in S3_PUT_CLASS else "s3.get", 1)
        elif service == "secretsmanager":
            self.ledger.add(ids, "secretsmanager.calls", 1)
        elif service == "stepfunctions":
            self.ledger.add(ids, f"states.api.{operation}", 1)  # free: Standard bills transitions only

    def _sqs(self, operation: str, params: dict[str, Any], result: Any, ids: list[str]) -> None:
        if operation == "ReceiveMessage":
            messages = (result or {}).get("Messages") or []
            if not messages:
                return  # an empty long poll of the event-source mapping: per queue
            for message in messages:
                self._receipts[message["ReceiptHandle"]] = TASK_ID.findall(message.get("Body", ""))
        handles = [params.get("ReceiptHandle")] + [e.get("ReceiptHandle") for e in params.get("Entries") or []]
        for handle in filter(None, handles):
            ids = ids + self._receipts.get(handle, [])
        self.ledger.add(ids, "sqs.requests", 1)
        self.ledger.add(ids, f"sqs.{operation}", 1)

    def _dynamodb(self, operation: str, params: dict[str, Any], result: Any, ids: list[str], failed: Any) -> None:
        table = str(params.get("TableName", ""))
        self.ledger.add(ids, f"dynamodb.{operation}", 1)
        if failed is not None and operation in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"):
            self.ledger.add(ids, "dynamodb.wru", 1)  # a failed condition still costs a unit
            return
        if operation == "PutItem":
            item = _plain(params["Item"])
            self.ledger.add(ids, "dynamodb.wru", self.units.write(table, item, item))
        elif operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (kind, body), *_ = entry.items()
                item = _plain(body.get("Item") or body.get("Key") or {})
                if kind == "Put":
                    self.ledger.add(ids, "dynamodb.wru", self.units.write(body["TableName"], item, item, factor=2))
                elif kind in ("Update", "Delete", "ConditionCheck"):
                    self.ledger.add(ids, "dynamodb.wru", 2)
        elif operation in ("UpdateItem", "DeleteItem"):
            self.ledger.add(ids, "dynamodb.wru", 1)
        elif operation == "GetItem":
            item = _plain((result or {}).get("Item") or {})
            if item:
                self.units.seen(table, item)
            self.ledger.add(ids, "dynamodb.rru", _kb(_size(item), 4096) * (1 if params.get("ConsistentRead") else 0.5))
        elif operation in ("Query", "Scan"):
            items = [_plain(i) for i in (result or {}).get("Items") or []]
            size = sum(_size(i) for i in items)
            self.ledger.add(ids, "dynamodb.rru", _kb(size, 4096) * (1 if params.get("ConsistentRead") else 0.5))


def _projected(item: dict[str, Any] | None, keys: list[str], keys_only: bool) -> int:
    item = item or {}
    return _size({n: item[n] for n in [*keys, "pk", "sk"] if n in item}) if keys_only else _size(item)


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """A python item, from either the resource layer (python values) or DynamoDB JSON."""
    if item and all(isinstance(v, dict) and len(v) == 1 and next(iter(v)) in _TYPES for v in item.values()):
        return {k: _DESERIALIZE.deserialize(v) for k, v in item.items()}
    return item


_TYPES = {"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"}
_DESERIALIZE = TypeDeserializer()


def _size(value: Any) -> int:
    """DynamoDB's item size rules, roughly: names + values, numbers ~ half their digits."""
    if isinstance(value, dict):
        return sum(len(str(k).encode()) + _size(v) + 1 for k, v in value.items()) + 3
    if isinstance(value, list | tuple | set | frozenset):
        return sum(_size(v) + 1 for v in value) + 3
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, Binary):  # the resource layer's binary (the task item's compressed document)
        return len(value.value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float | Decimal):
        return len(str(value)) // 2 + 2
    return len(str(value))


def _kb(size: int, step: int) -> int:
    return max(1, math.ceil(size / step))


def _text(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def transitions(history: list[dict[str, Any]]) -> int:
    """Billed state transitions: every state entered, and every retry of a state."""
    entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
    attempts = sum(1 for e in history if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled"))
    task_states = sum(1 for e in history if e["type"] == "TaskStateEntered")
    return entered + max(0, attempts - task_states)


def run(repo: Path, cells: dict[str, int], per_cell: dict[str, int], timeout: float) -> dict[str, Any]:
    """Create the tasks of each cell on one stack, wait for them, return the ledger per cell."""
    from reelay_local import DevEnvironment
    from reelay_local.template import load_yaml

    template = load_yaml((repo / "template.yaml").read_text())
    indexes = template["Resources"]["TaskTable"]["Properties"]["GlobalSecondaryIndexes"]
    ledger = Ledger()
    os.environ.setdefault("REELAY_PROVIDERS", "generate_task,sorahk,openai_videos")
    for name in ("SORAHK", "OPENAI_VIDEOS"):
        os.environ.setdefault(f"REELAY_{name}_TYPICAL_SECONDS", "180")  # the providers' default
    os.environ.setdefault("REELAY_LOG_LEVEL", "WARNING")
    counting = Counting(ledger, DynamoUnits(indexes))
    counting.install()  # before the stack starts: its gateway binds the runtime's invoke
    with DevEnvironment(repo) as env:
        bodies: dict[str, dict[str, Any]] = {
            "sorahk": {"provider": "sorahk", "duration": 10},
            "openai_videos": {"provider": "openai_videos", "orientation": "landscape"},
        }
        created: dict[str, list[str]] = defaultdict(list)
        table = boto3.resource("dynamodb", endpoint_url=env.stack.aws_endpoint).Table(env.stack.resources["TaskTable"])
        with httpx.Client(base_url=env.stack.api_url, timeout=30) as http:
            # Warm-up: each function's cold start (module imports) lands on these, in no cell.
            warm = [
                http.post("/v1/tasks", json=body | {"prompt": "warm-up [sim:seconds=5]"}).json()["id"]
                for body in bodies.values()
            ]
            _wait(counting, table, warm, time.monotonic() + 300)
            for cell, seconds in cells.items():
                for i in range(per_cell[cell]):
                    provider = ("sorahk", "openai_videos")[i % 2]
                    body = bodies[provider] | {"prompt": f"{cell} task {i} [sim:seconds={seconds}]"}
                    response = http.post("/v1/tasks", json=body)
                    response.raise_for_status()
                    created[cell].append(response.json()["id"])
        statuses = _wait(counting, table, [t for ids in created.values() for t in ids], time.monotonic() + timeout)
        with counting.paused():
            env.stack.drain(timeout=60, executions=True)
            sfn = boto3.client("stepfunctions", endpoint_url=env.stack.aws_endpoint)
            machine = env.stack.resources["PollStateMachine"]
            for execution in sfn.list_executions(stateMachineArn=machine)["executions"]:
                history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
                task_id = TASK_ID.findall(execution["name"])
                ledger.add(task_id, "states.transitions", transitions(history))
                ledger.add(task_id, "states.history_events", len(history))
    result: dict[str, Any] = {"cells": {}, "stack": dict(ledger.stack), "statuses": statuses}
    for cell, ids in created.items():
        per_task = [ledger.tasks[t] for t in ids]
        items = sorted({k for c in per_task for k in c})
        result["cells"][cell] = {
            "tasks": len(ids),
            "succeeded": sum(1 for t in ids if statuses.get(t) == "succeeded"),
            "mean": {k: statistics.mean(c.get(k, 0.0) for c in per_task) for k in items},
        }
    return result


def _wait(counting: Counting, table: Any, task_ids: list[str], deadline: float) -> dict[str, str]:
    """Each task's status once all are terminal (or at ``deadline``), read without being counted."""
    statuses: dict[str, str] = {}
    while True:
        with counting.paused():
            for task_id in task_ids:
                item = table.get_item(Key={"pk": f"TASK#{task_id}", "sk": "TASK"}).get("Item") or {}
                statuses[task_id] = str(item.get("status"))
        if all(s in TERMINAL for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(2)


def priced(mean: dict[str, float]) -> dict[str, float]:
    """$ per 1,000 tasks by service."""
    out: dict[str, float] = defaultdict(float)
    for item, price in PRICES.items():
        out[item.split(".")[0]] += mean.get(item, 0.0) * price * 1000
    return dict(out)


def report(result: dict[str, Any], label: str) -> str:
    lines = [
        f"### {label}",
        "",
        "| cell | tasks (succeeded) | transitions | Lambda calls | GB-s | SQS req | DynamoDB WRU | RRU | S3 PUT | "
        "$ SFN | $ Lambda | $ SQS | $ DynamoDB | $ S3 | $ other | **$ per 1,000 tasks** |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, data in result["cells"].items():
        m = data["mean"]
        p = priced(m)
        other = p.get("secretsmanager", 0) + p.get("apigw", 0)
        counts = [m.get(k, 0.0) for k in ("states.transitions", "lambda.requests")]
        counts += [m.get("lambda.gb_seconds", 0.0)]
        counts += [m.get(k, 0.0) for k in ("sqs.requests", "dynamodb.wru", "dynamodb.rru", "s3.put")]
        dollars = [p.get(k, 0.0) for k in ("states", "lambda", "sqs", "dynamodb", "s3")] + [other]
        cells = [f"{counts[0]:.1f}", f"{counts[1]:.1f}", f"{counts[2]:.3f}", *(f"{c:.1f}" for c in counts[3:])]
        cells += [f"{d:.4f}" for d in dollars]
        lines.append(
            f"| {cell} | {data['tasks']} ({data['succeeded']}) | {' | '.join(cells)} | **{sum(p.values()):.3f}** |"
        )
    invocations = {
        cell: {k.rsplit(".", 1)[1]: round(v, 1) for k, v in d["mean"].items() if k.startswith("lambda.invocations.")}
        for cell, d in result["cells"].items()
    }
    lines += ["", f"Invocations per task: `{json.dumps(invocations)}`"]
    writes = {
        cell: {k[9:]: round(v, 1) for k, v in d["mean"].items() if k.startswith("dynamodb.") and k[9].isupper()}
        for cell, d in result["cells"].items()
    }
    lines += [f"DynamoDB calls per task: `{json.dumps(writes)}`"]
    history = {cell: round(d["mean"].get("states.history_events", 0), 1) for cell, d in result["cells"].items()}
    lines += [f"Execution history events per task: `{json.dumps(history)}`"]
    lines += [f"Per stack, not per task (reconcile runs, cold-start reads): `{json.dumps(result['stack'])}`"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--tasks", type=int, default=4, help="tasks per cell (half sorahk, half openai_videos)")
    parser.add_argument("--label", default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the counts as JSON here")
    parser.add_argument("--short", action="store_true", help="30 s and 60 s tasks (a quick check, not the figure)")
    args = parser.parse_args()
    cells = {"poll, 3-minute task": 180, "poll, 10-minute task": 600}
    if args.short:
        cells = {"poll, 30 s task": 30, "poll, 60 s task": 60}
    per_cell = dict.fromkeys(cells, args.tasks)
    result = run(args.repo.resolve(), cells, per_cell, timeout=max(cells.values()) + 600)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))
    print(report(result, args.label or str(args.repo)))


if __name__ == "__main__":
    main()
