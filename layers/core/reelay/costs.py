"""What a task cost: the provider's charge, the generation time, and reelay's own AWS operations.

reelay counts its AWS operations as they happen, in the adapters that make them (``store``,
``aws``), into the ledger of the running invocation (``invocation()``, opened by
``reelay.observability.observed``). Each operation names its task; at the end of the
invocation the Lambda request and its GB-seconds (and the HTTP API request, for an HTTP
invocation) are shared evenly among the tasks it worked on, and each task's counts are added
to its cost item with one ``UpdateItem ADD`` (``TaskStore.add_costs``).

Most steps end by sending the task on (the API to submit, a callback or the last poll to ingest,
ingest to notify, a poll to the next poll). Such a step's counts ride on that message instead
(``carrying``, used by ``reelay.aws.TaskQueue.send``, and by ``reelay.aws.PollStarter.start``
for submit's start of a poll execution, whose input the state machine puts on its first poll
message): everything counted for the task so far,
its share of the invocation's request, and the GB-seconds up to the send. The step that receives
the message adds them to its own (``received``), and only a step that sends its task nowhere
writes the ADD, so a task's counts take a couple of ADDs, not one per step. What a carrying step
counts for the task after the send still goes into an ADD at its end; its GB-seconds after the
send are not counted (a few milliseconds, as the ADD's own time is not). A step that fails gives
back the counts it received, and its redelivered message brings them again; a message parked in
the DLQ takes its counts with it.

What the accounting itself costs: each ADD is one ``UpdateItem`` on a small item outside every
index (``COST#<task id>``), so 1 write unit, and a carried message grows by its counts (well
under SQS's 64 KB billing chunk). The ADDs are counted, as
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
import time
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
_MOST_CARRIED = Decimal(10**9)  # far above any one task's count; a larger value is not a count


# -- counting ----------------------------------------------------------------------------------


class Invocation:
    """The AWS operations of one Lambda invocation, per task, until ``close``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, Counts] = defaultdict(dict)
        self.sink: Sink | None = None
        # Carrying (``begin``): when the invocation started, its memory, and the tasks its event names.
        self._started: float | None = None
        self._memory_mb = 0
        self._http = False
        self._named: frozenset[str] = frozenset()
        self._given: dict[str, tuple[Decimal, Decimal]] = {}  # task: (request share, GB-s) carried off
        self._carries: dict[str, int] = defaultdict(int)

    def begin(self, *, memory_mb: int, http: bool, tasks: Iterable[str]) -> None:
        """Let counts be carried on messages: the invocation's memory, and the tasks its event names.

        A task's share of the invocation is then known before its end: one over the tasks the
        event names (an HTTP request that names none, such as a create: all of it).
        """
        with self._lock:
            self._started = time.perf_counter()
            self._memory_mb = memory_mb
            self._http = http
            self._named = frozenset(tasks)

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

    def carry(self, task_id: str) -> Counts | None:
        """The task's counts so far and its share of the invocation, taken out to ride on its message.

        None when they cannot be carried: the ledger was not begun (unit tests, scripts), or the
        event did not name the task, so its share is not known yet (a freed slot's next task, a
        reconcile run).
        """
        with self._lock:
            if self._started is None or not self._memory_mb:
                return None
            if task_id not in self._named and (self._named or not self._http):
                return None
            counts = self._counts.pop(task_id, {})
            if task_id not in self._given:
                share = Decimal(1) / (len(self._named) or 1)
                billed_ms = Decimal(max(1, math.ceil((time.perf_counter() - self._started) * 1000)))
                gb_s = (billed_ms / 1000 * Decimal(self._memory_mb) / 1024 * share).quantize(_PLACES)
                self._given[task_id] = (share, gb_s)
                shared = {"lambda_requests": share, "lambda_gb_s": gb_s} | (
                    {"apigw_requests": share} if self._http else {}
                )
                for name, value in shared.items():
                    counts[name] = counts.get(name, Decimal(0)) + value
            self._carries[task_id] += 1
            return {name: value.quantize(_PLACES) for name, value in counts.items() if value}

    def restore(self, task_id: str, counts: Mapping[str, Decimal]) -> None:
        """Counts ``carry`` took that never left (the message was not sent): back into the ledger."""
        with self._lock:
            _merge(self._counts[task_id], counts)

    def take(self, task_id: str, counts: Mapping[str, Decimal]) -> int:
        """A received message's carried counts, added to the task's (see ``received``)."""
        with self._lock:
            _merge(self._counts[task_id], counts)
            return self._carries[task_id]

    def give_back(self, task_id: str, counts: Mapping[str, Decimal], carries: int) -> None:
        """Undo ``take`` for a step that failed, unless the counts were carried on since."""
        with self._lock:
            if self._carries[task_id] == carries:
                _merge(self._counts[task_id], counts, sign=-1)

    def close(self, *, duration_ms: float, memory_mb: int, http: bool) -> dict[str, Counts]:
        """Share the invocation's own cost among its tasks; ``{task id: counts}`` to add (flushed to the sink).

        A task whose counts were carried off gets no ADD, unless something was counted for it
        after the send, or its share turned out other than the one it carried (the invocation
        worked on tasks its event did not name): then the ADD holds the difference.
        """
        with self._lock:
            counts = {k: {n: v for n, v in c.items() if v} for k, c in self._counts.items()}
            self._counts.clear()
            given = dict(self._given)
            self._given.clear()
        tasks = set(counts) | set(given)
        if not tasks:
            return {}
        share = Decimal(1) / len(tasks)
        billed_ms = Decimal(max(1, math.ceil(duration_ms)))
        gb_s = billed_ms / 1000 * Decimal(memory_mb) / 1024
        for task_id in sorted(tasks):
            task_counts = counts.get(task_id, {})
            if task_id in given:
                given_share, given_gb_s = given[task_id]
                if not task_counts and given_share == share:
                    counts.pop(task_id, None)
                    continue
                shared = {"lambda_requests": share - given_share, "lambda_gb_s": gb_s * share - given_gb_s}
            else:
                shared = {"lambda_requests": share, "lambda_gb_s": gb_s * share}
            if http:
                shared["apigw_requests"] = shared["lambda_requests"]
            for name, value in shared.items():
                task_counts[name] = task_counts.get(name, Decimal(0)) + value
            counts[task_id] = task_counts
        for task_counts in counts.values():
            # The ADD that records these counts is itself one write unit (see the module doc).
            task_counts["ddb_accounting_wu"] = task_counts.get("ddb_accounting_wu", Decimal(0)) + 1
            for name in list(task_counts):
                task_counts[name] = task_counts[name].quantize(_PLACES)
                if not task_counts[name]:
                    del task_counts[name]
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


@contextlib.contextmanager
def carrying(task_id: str | None) -> Iterator[dict[str, str] | None]:
    """The running invocation's counts for ``task_id`` as a message's ``"costs"`` field (None: none to carry).

    Taken off the ledger (``Invocation.carry``) for the block that sends the message; if the
    block raises, the message was not sent, and they go back (``Invocation.restore``) into the
    ADD at the invocation's end.
    """
    ledger = _INVOCATION.get()
    counts = ledger.carry(task_id) if ledger is not None and task_id else None
    try:
        yield {name: str(value) for name, value in counts.items()} if counts else None
    except BaseException:
        if ledger is not None and counts and task_id:
            ledger.restore(task_id, counts)
        raise


def carried(body: Any) -> Counts:
    """The counts a message body carries (``TaskQueue.send``): known counters with plausible values only."""
    found = body.get("costs") if isinstance(body, Mapping) else None
    if not isinstance(found, Mapping):
        return {}
    counts: Counts = {}
    for name, value in found.items():
        if not isinstance(name, str) or not (name in AWS_PRICES_USD or name.startswith(CALL_PREFIX)):
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        try:
            amount = Decimal(str(value))
        except ArithmeticError:
            continue
        if amount.is_finite() and 0 < amount < _MOST_CARRIED:
            counts[name] = amount.quantize(_PLACES)
    return counts


@contextlib.contextmanager
def received(task_id: str, body: Any) -> Iterator[None]:
    """The step run inside works on a message for ``task_id``: the counts it carries join this invocation's.

    A step that raises gives them back (its message comes back with them), unless it already
    carried them on with a message of its own.
    """
    ledger = _INVOCATION.get()
    counts = carried(body)
    if ledger is None or not counts:
        yield
        return
    carries = ledger.take(task_id, counts)
    try:
        yield
    except BaseException:
        ledger.give_back(task_id, counts, carries)
        raise


def _merge(into: Counts, counts: Mapping[str, Decimal], *, sign: int = 1) -> None:
    for name, value in counts.items():
        into[name] = into.get(name, Decimal(0)) + sign * value


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
