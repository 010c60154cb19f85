"""The template's EventBridge buses, locally: moto takes ``PutEvents``; this records what was put.

moto stores a custom bus and answers ``PutEvents`` (delivering to rules, of which the template
has none on its bus). The local stack also needs to *see* every event: ``BusRecorder`` wraps
moto's ``put_events`` in this process (moto runs in a thread here) and, for each event it
accepted on one of the stack's buses, keeps it in memory (``events``, for tests) and appends it
as one JSON line, shaped as EventBridge delivers it to a target (``version``, ``id``,
``detail-type``, ``source``, ``account``, ``time``, ``region``, ``resources``, ``detail``, plus
``event-bus-name``), to ``REELAY_LOCAL_EVENTS_FILE`` when that is set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reelay_local.template import ACCOUNT_ID, REGION


class BusRecorder:
    """Records every event accepted on the named buses; ``install()`` hooks moto, ``restore()`` unhooks."""

    def __init__(self, bus_names: set[str], *, events_file: Path | None = None) -> None:
        self.bus_names = set(bus_names)
        self.events_file = events_file
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._restore: Callable[[], None] | None = None

    def install(self) -> None:
        from moto.events.models import EventsBackend

        original = EventsBackend.put_events
        recorder = self

        def put_events(backend: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            entries = original(backend, events)
            for event, entry in zip(events, entries, strict=False):
                if entry.get("EventId"):
                    recorder.record(event, str(entry["EventId"]))
            return entries

        EventsBackend.put_events = put_events  # type: ignore[method-assign,assignment]

        def restore() -> None:
            EventsBackend.put_events = original  # type: ignore[method-assign]

        self._restore = restore

    def restore(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None

    def record(self, event: dict[str, Any], event_id: str) -> None:
        bus = str(event.get("EventBusName") or "default").rsplit("/", 1)[-1]
        if bus not in self.bus_names:
            return
        delivered = {
            "version": "0",
            "id": event_id,
            "detail-type": event.get("DetailType"),
            "source": event.get("Source"),
            "account": ACCOUNT_ID,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": list(event.get("Resources") or []),
            "detail": json.loads(event.get("Detail") or "{}"),
            "event-bus-name": bus,
        }
        with self._lock:
            self.events.append(delivered)
            if self.events_file is not None:
                with self.events_file.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(delivered, separators=(",", ":")) + "\n")
