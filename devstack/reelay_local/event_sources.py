"""What invokes the functions besides HTTP: SQS mappings and schedule rules.

**SQS.** moto does run SQS event source mappings, but synchronously inside ``SendMessage``, one
record per invocation, ignoring ``batchItemFailures`` (so an HTTP callback that enqueues an ingest
would block on the whole ingest). The local stack therefore creates no mapping in moto and runs
its own pollers, like Lambda's: ``ReceiveMessage`` up to ``BatchSize``, one SQS event per batch,
successful messages deleted (all of them, or all but the reported ``batchItemFailures`` when the
mapping has ``ReportBatchItemFailures``), failed ones left for redelivery. Redelivery waits the
queue's visibility timeout in AWS, often minutes; locally a failed message becomes visible again
after ``redelivery_seconds``, unless the handler already changed its visibility itself (a
deliberate backoff, which is kept). ``maxReceiveCount`` and the dead-letter queue are moto's own.

A handler that runs past its timeout fails the whole batch, as in Lambda: every message of it
is redelivered.

**Schedules.** moto fires no schedules: each ``AWS::Events::Rule`` with a ``ScheduleExpression``
gets a timer thread that follows the expression (``rate``, ``cron``) on a clock running
``speedup`` times faster than real time, and invokes its function asynchronously with the
target's ``Input`` or a Scheduled Event, as EventBridge does.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reelay_local.lambda_runtime import FunctionRuntime
from reelay_local.template import ACCOUNT_ID, REGION

LOG = logging.getLogger(__name__)

# Seconds a poller long-polls per ReceiveMessage; bounds how long stop() waits for it.
_RECEIVE_WAIT_SECONDS = 1

VisibleAt = Callable[[str, str], float | None]


@dataclass(frozen=True)
class QueueMapping:
    """An SQS event source mapping of the template (``AWS::Lambda::EventSourceMapping``)."""

    logical_id: str
    function: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    batching_window_seconds: float = 0.0
    report_batch_item_failures: bool = False
    max_concurrency: int = 4
    enabled: bool = True

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[1]


class SqsPoller:
    """Feeds one queue to one function in batches, as Lambda's SQS poller does."""

    def __init__(
        self,
        mapping: QueueMapping,
        *,
        sqs: Any,
        runtime: FunctionRuntime,
        visible_at: VisibleAt,
        redelivery_seconds: int,
    ) -> None:
        self.mapping = mapping
        self._sqs = sqs
        self._runtime = runtime
        self._visible_at = visible_at
        self._redelivery_seconds = redelivery_seconds
        self._stop = threading.Event()
        self._slots = threading.Semaphore(mapping.max_concurrency)
        self._workers = ThreadPoolExecutor(
            max_workers=mapping.max_concurrency, thread_name_prefix=f"reelay-local-{mapping.logical_id}"
        )
        self._thread = threading.Thread(target=self._run, name=f"reelay-local-poll-{mapping.logical_id}", daemon=True)
        self.batches = 0

    def start(self) -> None:
        if self.mapping.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=_RECEIVE_WAIT_SECONDS + 5)
        self._workers.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                messages = self._receive_batch()
            except Exception:  # a poller outlives a failed receive, as Lambda's does
                self._slots.release()
                if not self._stop.is_set():
                    LOG.exception("receiving from %s failed", self.mapping.queue_name)
                    self._stop.wait(1.0)
                continue
            if not messages:
                self._slots.release()
                continue
            try:
                self._workers.submit(self._process, messages)
            except RuntimeError:  # shut down while receiving: the messages simply reappear
                self._slots.release()
                return

    def _receive_batch(self) -> list[dict[str, Any]]:
        wanted = self.mapping.batch_size
        deadline = time.monotonic() + self.mapping.batching_window_seconds
        messages: list[dict[str, Any]] = []
        while len(messages) < wanted and not self._stop.is_set():
            received = self._sqs.receive_message(
                QueueUrl=self.mapping.queue_url,
                MaxNumberOfMessages=min(10, wanted - len(messages)),
                WaitTimeSeconds=0 if messages else _RECEIVE_WAIT_SECONDS,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(received)
            if not received and (not messages or time.monotonic() >= deadline):
                break
        return messages

    def _process(self, messages: list[dict[str, Any]]) -> None:
        try:
            deadlines = {m["MessageId"]: self._visible_at(self.mapping.queue_name, m["MessageId"]) for m in messages}
            event = {"Records": [self._record(m) for m in messages]}
            failed = self._invoke(event, messages)
            done = [m for m in messages if m["MessageId"] not in failed]
            for start in range(0, len(done), 10):
                chunk = done[start : start + 10]
                self._sqs.delete_message_batch(
                    QueueUrl=self.mapping.queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
                )
            for message in messages:
                if message["MessageId"] in failed:
                    self._reschedule(message, deadlines[message["MessageId"]])
            self.batches += 1
        except Exception:  # keep polling; the messages come back after their timeout
            LOG.exception("processing a batch from %s failed", self.mapping.queue_name)
        finally:
            self._slots.release()

    def _invoke(self, event: dict[str, Any], messages: list[dict[str, Any]]) -> set[str]:
        """The ids of the messages that failed (all of them when the invocation failed)."""
        every = {m["MessageId"] for m in messages}
        result, errored = self._runtime.invoke_for_service(
            self.mapping.function, event, source=f"sqs:{self.mapping.queue_name}"
        )
        if errored:
            return every
        if not self.mapping.report_batch_item_failures or not isinstance(result, dict):
            return set()
        failures = result.get("batchItemFailures") or []
        identifiers = [f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures]
        if any(not i or i not in every for i in identifiers):
            # Lambda treats a malformed or unknown identifier as a failure of the whole batch.
            LOG.error("%s returned invalid batchItemFailures %r", self.mapping.function, failures)
            return every
        return {str(i) for i in identifiers}

    def _reschedule(self, message: dict[str, Any], deadline_after_receive: float | None) -> None:
        now = self._visible_at(self.mapping.queue_name, message["MessageId"])
        if now is None or now != deadline_after_receive:
            return  # deleted, or the handler set its own backoff: keep it
        with contextlib.suppress(Exception):  # the receipt may have expired meanwhile
            self._sqs.change_message_visibility(
                QueueUrl=self.mapping.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=self._redelivery_seconds,
            )

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.mapping.queue_arn,
            "awsRegion": REGION,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """An SQS API message attribute in the shape Lambda's SQS events use (camelCase, base64)."""

    def b64(data: Any) -> str:
        return base64.b64encode(data if isinstance(data, bytes) else str(data).encode()).decode()

    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": [b64(v) for v in value.get("BinaryListValues") or []],
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = b64(value["BinaryValue"])
    return converted


# -- schedules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule rule of the template (``AWS::Events::Rule`` with a ``ScheduleExpression``)."""

    logical_id: str
    arn: str
    expression: str
    function: str  # the logical id of the function the rule targets
    input: Any = None  # the target's fixed Input; None: the Scheduled Event itself
    enabled: bool = True


class ScheduleTimer:
    """Fires one schedule on a clock running ``speedup`` times faster than real time."""

    def __init__(self, spec: ScheduleSpec, runtime: FunctionRuntime, *, speedup: float) -> None:
        if speedup <= 0:
            raise ValueError("schedule speedup must be positive")
        self.spec = spec
        self._expression = ScheduleExpression.parse(spec.expression)
        self._runtime = runtime
        self._speedup = speedup
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reelay-local-schedule-{spec.logical_id}", daemon=True)
        self.fired = 0

    def start(self) -> None:
        if self.spec.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        real_start = time.monotonic()
        virtual_start = datetime.now(UTC)
        previous = virtual_start
        while True:
            fire_at = self._expression.next_after(previous, created=virtual_start)
            if fire_at is None:
                return
            virtual_now = virtual_start + timedelta(seconds=(time.monotonic() - real_start) * self._speedup)
            delay = max(0.0, (fire_at - virtual_now).total_seconds() / self._speedup)
            if self._stop.wait(delay):
                return
            self.fired += 1
            payload = self.spec.input if self.spec.input is not None else self._event(fire_at)
            self._runtime.invoke_async(self.spec.function, payload, source=f"schedule:{self.spec.logical_id}")
            previous = fire_at

    def _event(self, fire_at: datetime) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": ACCOUNT_ID,
            "time": fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [self.spec.arn],
            "detail": {},
        }


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name: i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


@dataclass(frozen=True)
class ScheduleExpression:
    """An EventBridge rule's schedule expression, ``rate(...)`` or ``cron(...)``, in UTC as rules are."""

    period: timedelta | None = None
    cron: tuple[frozenset[int], ...] | None = None  # minutes, hours, days, months, weekdays, years
    cron_any_day: tuple[bool, bool] = (True, True)  # day-of-month, day-of-week are "?" or "*"

    @classmethod
    def parse(cls, expression: str) -> ScheduleExpression:
        text = expression.strip()
        if rate := _RATE.match(text):
            count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            if count <= 0:
                raise ValueError(f"invalid schedule expression {expression!r}")
            return cls(period=timedelta(seconds=count * _UNIT_SECONDS[unit]))
        if cron := _CRON.match(text):
            fields = cron.group(1).split()
            if len(fields) != 6:
                raise ValueError(f"cron needs 6 fields: {expression!r}")
            minutes, hours, days, months, weekdays, years = fields
            parsed = (
                _cron_field(minutes, 0, 59, {}),
                _cron_field(hours, 0, 23, {}),
                _cron_field(days, 1, 31, {}),
                _cron_field(months, 1, 12, _MONTHS),
                _cron_field(weekdays, 1, 7, _WEEKDAYS),
                _cron_field(years, 1970, 2199, {}),
            )
            return cls(cron=parsed, cron_any_day=(days in ("?", "*"), weekdays in ("?", "*")))
        raise ValueError(f"unsupported schedule expression {expression!r}")

    def next_after(self, moment: datetime, *, created: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (None: never again)."""
        if self.period is not None:
            elapsed = (moment - created) // self.period
            return created + self.period * (elapsed + 1)
        return self._next_cron(moment)

    def _next_cron(self, moment: datetime) -> datetime | None:
        assert self.cron is not None
        minutes, hours, days, months, weekdays, years = self.cron
        local = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = local.replace(hour=0, minute=0)
        for _ in range(366 * 5):
            if day.year in years and day.month in months and self._day_matches(day, days, weekdays):
                for hour in sorted(hours):
                    for minute in sorted(minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= local:
                            return candidate
            day = (day + timedelta(days=1)).replace(hour=0, minute=0)
        return None

    def _day_matches(self, day: datetime, days: frozenset[int], weekdays: frozenset[int]) -> bool:
        any_dom, any_dow = self.cron_any_day
        weekday = (day.isoweekday() % 7) + 1  # SUN=1 ... SAT=7
        if any_dom and any_dow:
            return True
        if any_dow:
            return day.day in days
        if any_dom:
            return weekday in weekdays
        return day.day in days and weekday in weekdays


def _cron_field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    if text in ("*", "?"):
        return frozenset(range(low, high + 1))
    values: set[int] = set()
    for part in text.upper().split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", ""):
            first, last = low, high
        elif "-" in base:
            first, last = (_cron_value(v, names) for v in base.split("-", 1))
        else:
            first = _cron_value(base, names)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high):
            raise ValueError(f"cron field {text!r} out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _cron_value(text: str, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise ValueError(f"unsupported cron value {text!r} (L, W and # are not supported locally)")
    return int(text)
