"""What a task cost: the provider's charge, the generation time, and reelay's own AWS operations.

reelay counts its AWS operations as they happen, in the adapters that make them (``store``,
``aws``), into the ledger of the running invocation (``invocation()``, opened by
``reelay.observability.observed``). Each operation names its task; at the end of the
invocation the Lambda request and its GB-seconds (and the HTTP API request, for an HTTP
invocation) are shared evenly among the tasks it worked on, and each task's counts are added
to its cost item with one ``UpdateItem ADD`` (``TaskStore.add_costs``).

What the accounting itself costs: that one ``UpdateItem`` per task per invocation, on a small
item outside every index (``COST#<task id>``), so 1 write unit. It is counted, as
``ddb_accounting_wu``, and priced on its own line, so a cost cut can be measured with and
without it. Client reads (``GET`` on the API) are the client's and are not counted.

Prices are us-east-1 list prices (``AWS_PRICES_USD``), in this one module; a counter is a unit
of one price. Provider prices: the protocol's reported cost where it has one (sorahk's
``cost``, kept as ``Task.cost_cents``), else ``PROVIDER_PRICE_CENTS_PER_SECOND``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from reelay.models import Task, TaskStatus

# -- prices ------------------------------------------------------------------------------------

# us-east-1 list prices in USD per unit of each counter (read 2026-12; first pricing tier).
AWS_PRICES_USD: dict[str, Decimal] = {
    # Lambda: $0.20 per million requests; arm64 $0.0000133334 per GB-second.
    "lambda_requests": Decimal("0.0000002"),
    "lambda_gb_s": Decimal("0.0000133334"),
    # HTTP API: $1.00 per million requests.
    "apigw_requests": Decimal("0.000001"),
    # Step Functions standard workflows: $0.025 per 1,000 state transitions.
    "sfn_transitions": Decimal("0.000025"),
    # DynamoDB on-demand: $0.625 per million write request units, $0.125 per million read units.
    "ddb_wu": Decimal("0.000000625"),
    "ddb_ru": Decimal("0.000000125"),
    "ddb_accounting_wu": Decimal("0.000000625"),
    # SQS standard: $0.40 per million requests (64 KB chunks; reelay's messages are tiny).
    "sqs_requests": Decimal("0.0000004"),
    # S3 Standard: PUT, COPY, POST, LIST $0.005 per 1,000; GET and HEAD $0.0004 per 1,000; DELETE free.
    "s3_put_requests": Decimal("0.000005"),
    "s3_get_requests": Decimal("0.0000004"),
    # EventBridge custom events: $1.00 per million (64 KB chunks).
    "events": Decimal("0.000001"),
    # A webhook delivery's AWS work is counted where it runs (Lambda, SQS); this is its data out
    # (≈2 KB at $0.09 per GB).
    "webhook_deliveries": Decimal("0.00000018"),
}
# The price line each counter is shown under in a breakdown.
PRICE_LINES: dict[str, str] = {
    "lambda_requests": "lambda",
    "lambda_gb_s": "lambda",
    "apigw_requests": "api_gateway",
    "sfn_transitions": "step_functions",
    "ddb_wu": "dynamodb",
    "ddb_ru": "dynamodb",
    "ddb_accounting_wu": "accounting",
    "sqs_requests": "sqs",
    "s3_put_requests": "s3",
    "s3_get_requests": "s3",
    "events": "eventbridge",
    "webhook_deliveries": "webhooks",
}
# Provider prices where the protocol reports none, in cents per second of video. Estimates from
# OpenAI's list prices for the models these protocols front (sora-2 $0.10/s; sora-2-pro $0.30/s
# at 720p, $0.50/s above): generate_task is sora-2-pro, openai_videos' sora_video2 is sora-2
# (its ``pro``/``hd`` variants sora-2-pro). sorahk reports its own cost on create.
PROVIDER_PRICE_CENTS_PER_SECOND: dict[str, dict[str, int]] = {
    "generate_task": {"standard": 30, "hd": 50},
    "openai_videos": {"standard": 10, "hd": 30},
}
_DEFAULT_SECONDS = {"generate_task": 4, "openai_videos": 10, "sorahk": 10}

# Per-operation call counts, kept beside the priced counters (names short: the cost item must stay
# under 1 KB, so that its one ADD is one write unit).
CALL_PREFIX = "n_"

Counts = dict[str, Decimal]
Sink = Callable[[str, Mapping[str, Decimal]], None]
_PLACES = Decimal("0.000001")


# -- counting ----------------------------------------------------------------------------------


class Invocation:
    """The AWS operations of one Lambda invocation, per task, until ``close``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counts] = defaultdict(dict)
        self.sink: Sink | None = None

    def add(self, task_id: str, call: str | None, units: Mapping[str, float | int | Decimal]) -> None:
        with self._lock:
            counts = self._counts[task_id]
            if call:
                key = CALL_PREFIX + call
                counts[key] = counts.get(key, Decimal(0)) + 1
            for name, value in units.items():
                if value:
                    counts[name] = counts.get(name, Decimal(0)) + _decimal(value)

    @property
    def tasks(self) -> list[str]:
        with self._lock:
            return list(self._counts)

    def close(self, *, duration_ms: float, memory_mb: int, http: bool) -> dict[str, Counts]:
        """Share the invocation's own cost among its tasks; ``{task id: counts}`` to add (flushed to the sink)."""
        with self._lock:
            counts = {k: dict(v) for k, v in self._counts.items()}
            self._counts.clear()
        if not counts:
            return {}
        share = Decimal(1) / len(counts)
        billed_ms = Decimal(max(1, math.ceil(duration_ms)))
        gb_s = billed_ms / 1000 * Decimal(memory_mb) / 1024
        for task_counts in counts.values():
            shared: dict[str, Decimal] = {"lambda_requests": share, "lambda_gb_s": gb_s * share}
            if http:
                shared["apigw_requests"] = share
            for name, value in shared.items():
                task_counts[name] = task_counts.get(name, Decimal(0)) + value
            # The ADD that records these counts is itself one write unit (see the module doc).
            task_counts["ddb_accounting_wu"] = task_counts.get("ddb_accounting_wu", Decimal(0)) + 1
            for name in task_counts:
                task_counts[name] = task_counts[name].quantize(_PLACES)
        if self.sink is not None:
            for task_id, task_counts in counts.items():
                self.sink(task_id, task_counts)
        return counts


_INVOCATION: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("reelay_invocation", default=None)
_TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("reelay_cost_task", default=None)


@contextlib.contextmanager
def invocation() -> Iterator[Invocation]:
    """The ledger of the invocation running in this context (threads that copy the context share it)."""
    ledger = Invocation()
    token = _INVOCATION.set(ledger)
    try:
        yield ledger
    finally:
        _INVOCATION.reset(token)


@contextlib.contextmanager
def working_on(task_id: str | None) -> Iterator[None]:
    """Operations inside that name no task of their own are this task's (a queue worker's record)."""
    token = _TASK.set(task_id)
    try:
        yield
    finally:
        _TASK.reset(token)


def record(task_id: str | None, call: str | None = None, *, sink: Sink | None = None, **units: float | int) -> None:
    """Count one AWS call ``call`` (e.g. ``"ddb.PutItem"``) and its priced ``units`` for ``task_id``.

    Without a running invocation (unit tests, scripts) nothing is counted. ``task_id`` None
    means the task being worked on (``working_on``), if any; an operation for no task (a Due
    query) is the stack's, not a task's, and is not counted here.
    """
    ledger = _INVOCATION.get()
    if ledger is None:
        return
    if sink is not None and ledger.sink is None:
        ledger.sink = sink
    task_id = task_id or _TASK.get()
    if task_id:
        ledger.add(task_id, call, units)


def bind_sink(sink: Sink) -> None:
    """Where the running invocation's counts go at its end (the task store binds itself)."""
    ledger = _INVOCATION.get()
    if ledger is not None and ledger.sink is None:
        ledger.sink = sink


def current_task() -> str | None:
    return _TASK.get()


_TASK_KEY = re.compile(r"^(?:tasks|previews)/([^/]+)/")


def task_of_key(key: str) -> str | None:
    """The task an object of the results bucket belongs to (``tasks/<id>/...``, ``previews/<id>/...``), if any."""
    match = _TASK_KEY.match(key)
    return match.group(1) if match else None


# -- DynamoDB capacity units (the rules of the DynamoDB developer guide, "item sizes") --------


def attribute_size(value: Any) -> int:
    """The bytes DynamoDB counts for an attribute value (names are counted by the caller)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(getattr(value, "value", None), bytes):  # boto3's Binary, as a read returns it
        return len(value.value)
    if isinstance(value, int | float | Decimal):
        digits = Decimal(str(value)).normalize().as_tuple().digits
        return (len(digits) + 1) // 2 + 1
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + attribute_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 3 + sum(attribute_size(v) + 1 for v in value)
    return len(str(value).encode())


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size: every attribute's name and value."""
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Write request units of a write of an item of ``size`` bytes (1 KB each, at least 1)."""
    return max(1, math.ceil(size / 1024))


def read_units(size: int, *, consistent: bool) -> Decimal:
    """Read request units of reading ``size`` bytes (4 KB each; an eventually consistent read is half)."""
    units = Decimal(max(1, math.ceil(size / 4096)))
    return units if consistent else units / 2


class IndexSpec(BaseModel):
    """A global secondary index, as far as its write cost goes."""

    name: str
    keys: tuple[str, ...]
    projection: Literal["ALL", "KEYS_ONLY", "INCLUDE"] = "ALL"
    attributes: tuple[str, ...] = ()  # the non-key attributes an INCLUDE projection copies


TABLE_KEYS = ("pk", "sk")


def index_write_units(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, indexes: Iterable[IndexSpec]
) -> int:
    """Write units the table's indexes take for a write from ``old`` to ``new`` (None: absent).

    Per index: an entry added or removed is one write; a key that changes is a delete and a
    put; an unchanged key is one write when a projected attribute changed, else none. Each
    write is sized by the projected entry (index and table keys, or the whole item for ALL).
    """
    total = 0
    for index in indexes:
        before = _index_entry(old, index)
        after = _index_entry(new, index)
        if before is None and after is None:
            continue
        if before is None or after is None:
            total += write_units(item_size(after if after is not None else before or {}))
        elif any(before.get(k) != after.get(k) for k in index.keys):
            total += write_units(item_size(before)) + write_units(item_size(after))
        elif before != after:
            total += write_units(item_size(after))
    return total


def _index_entry(item: Mapping[str, Any] | None, index: IndexSpec) -> dict[str, Any] | None:
    if item is None or any(k not in item for k in index.keys):
        return None
    if index.projection == "ALL":
        return dict(item)
    return {k: item[k] for k in (*TABLE_KEYS, *index.keys, *index.attributes) if k in item}


# -- pricing -----------------------------------------------------------------------------------


class AwsCost(BaseModel):
    """reelay's AWS cost of a task: the total, by price line, and the counted units and calls."""

    usd: float = Field(description="Total, USD, at us-east-1 list prices.")
    lines: dict[str, float] = Field(default_factory=dict, description="USD per price line (lambda, dynamodb, ...).")
    units: dict[str, float] = Field(
        default_factory=dict, description="Counted units: requests, GB-seconds, transitions, write/read units."
    )
    calls: dict[str, float] = Field(default_factory=dict, description="AWS calls by service and operation.")


class TaskCost(BaseModel):
    """What a task cost: the provider's charge and reelay's own AWS operations."""

    provider_cents: int | None = Field(description="The provider's charge in cents; None when unknown (no create).")
    provider_cost_source: Literal["reported", "price_table"] | None = Field(
        default=None, description="`reported` by the protocol (sorahk), or from reelay's price table."
    )
    generation_seconds: float | None = Field(
        default=None, description="From the first create to the provider's result (or its end)."
    )
    aws_usd: float = Field(description="reelay's own AWS operations for this task, USD.")
    aws: AwsCost


def price(counts: Mapping[str, Decimal | float | int]) -> AwsCost:
    """Price counted units at ``AWS_PRICES_USD``."""
    lines: dict[str, Decimal] = defaultdict(Decimal)
    units: dict[str, float] = {}
    calls: dict[str, float] = {}
    for name, value in counts.items():
        amount = _decimal(value)
        if name.startswith(CALL_PREFIX):
            calls[name.removeprefix(CALL_PREFIX)] = float(amount)
        elif name in AWS_PRICES_USD:
            units[name] = float(amount)
            lines[PRICE_LINES[name]] += amount * AWS_PRICES_USD[name]
    total = sum(lines.values(), Decimal(0))
    return AwsCost(
        usd=float(total),
        lines={k: float(v) for k, v in sorted(lines.items())},
        units=dict(sorted(units.items())),
        calls=dict(sorted(calls.items())),
    )


def provider_cents(task: Task) -> tuple[int | None, Literal["reported", "price_table"] | None]:
    """The provider's charge: reported by the protocol, else from the price table; None before a create."""
    if task.cost_cents is not None:
        return task.cost_cents, "reported"
    if task.first_create_sent_at is None and task.provider_task_id is None:
        return None, None
    if task.status is TaskStatus.FAILED and task.provider_task_id is None:
        return None, None  # no provider task was made (or none is known): no charge to show
    table = PROVIDER_PRICE_CENTS_PER_SECOND.get(task.protocol)
    if table is None:
        return None, None
    seconds = int(task.request.get("duration") or _DEFAULT_SECONDS.get(task.protocol, 10))
    size = str(task.request.get("size") or "")
    hd = bool(task.request.get("pro")) or task.request.get("resolution") == "1080p" or "1792" in size
    return seconds * table["hd" if hd else "standard"], "price_table"


def generation_seconds(task: Task) -> float | None:
    """From the first create to the provider's result (entering ``ingesting``), or to the task's end."""
    start = task.first_create_sent_at
    end = task.entered(TaskStatus.INGESTING) or (task.updated_at if task.status is TaskStatus.FAILED else None)
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def task_cost(task: Task, counts: Mapping[str, Decimal | float | int]) -> TaskCost:
    """A task's cost from the task and its counted operations."""
    cents, source = provider_cents(task)
    aws = price(counts)
    return TaskCost(
        provider_cents=cents,
        provider_cost_source=source,
        generation_seconds=generation_seconds(task),
        aws_usd=aws.usd,
        aws=aws,
    )


class CostTotals(BaseModel):
    """Costs summed over tasks (a batch, a period): the batch report and ``reelay cost`` show these."""

    tasks: int
    provider_cents: int
    aws_usd: float
    aws_lines: dict[str, float] = Field(default_factory=dict)
    units: dict[str, float] = Field(default_factory=dict)
    generation_seconds: float = 0.0


def sum_costs(costs: Iterable[TaskCost]) -> CostTotals:
    """The totals of a list of tasks' costs (for the batch report)."""
    count = 0
    cents = 0
    seconds = 0.0
    lines: dict[str, float] = defaultdict(float)
    units: dict[str, float] = defaultdict(float)
    for cost in costs:
        count += 1
        cents += cost.provider_cents or 0
        seconds += cost.generation_seconds or 0.0
        for name, value in cost.aws.lines.items():
            lines[name] += value
        for name, value in cost.aws.units.items():
            units[name] += value
    return CostTotals(
        tasks=count,
        provider_cents=cents,
        aws_usd=sum(lines.values()),
        aws_lines=dict(sorted(lines.items())),
        units=dict(sorted(units.items())),
        generation_seconds=round(seconds, 3),
    )


class CostCounts(Protocol):
    """Where counted units are kept (``reelay.store.TaskStore.costs``)."""

    def costs(self, task_ids: list[str]) -> dict[str, dict[str, Decimal]]: ...


def costs_of(tasks: Iterable[Task], counts: CostCounts) -> list[TaskCost]:
    """Each task's cost, its counts read in batches (for the batch report, then ``sum_costs``)."""
    tasks = list(tasks)
    found = counts.costs([t.id for t in tasks])
    return [task_cost(t, found.get(t.id, {})) for t in tasks]


def _decimal(value: Decimal | float | int) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
