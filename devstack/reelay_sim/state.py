"""The simulator's memory: tasks, images, recorded requests and callbacks, knobs, rate windows.

Everything lives in one ``SimState`` guarded by one re-entrant lock; handlers never do I/O while
holding it. Task progress is computed from time: ``advance`` moves every unfinished task to where
its clock says it is and queues a ``Transition`` for each change of state, which the simulator's
ticker thread turns into callbacks.

A task's life, with ``g`` its generation time (``generation_seconds`` when created, or a
``[sim:seconds=N]`` prompt directive): ``pending`` (progress 0) for the first 10 % of ``g``, then
``running`` with progress ``floor(100 * elapsed / g)`` (at most 99), then ``succeeded`` (100) at
``g``. A planned failure ends the task earlier: an invalid image at 5 % of ``g`` (still pending,
progress 0), a generic failure at 50 %, a content refusal at 97 % (progress 97, like the sorahk
seed's refusal example). States here are protocol-neutral; each protocol module words them.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from reelay_sim.knobs import PROTOCOLS, Knobs

PENDING_FRACTION = 0.10

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TERMINAL = frozenset({SUCCEEDED, FAILED})

# Protocol-neutral failure kinds and the fraction of the generation time at which they strike.
CONTENT_POLICY = "content_policy"
INVALID_IMAGE = "invalid_image"
GENERATION_FAILED = "generation_failed"
FAIL_AT = {INVALID_IMAGE: 0.05, GENERATION_FAILED: 0.50, CONTENT_POLICY: 0.97}


@dataclass
class Outcome:
    """How a task will end. ``code``/``message`` override the protocol's wording of ``kind``."""

    kind: str | None = None  # None: success; else a failure kind above
    code: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind is None


@dataclass
class Task:
    """One provider task, as the simulator keeps it."""

    protocol: str
    id: str
    key: str
    prompt: str
    params: dict[str, Any]
    generation_seconds: float
    outcome: Outcome
    created_at: float = field(default_factory=time.time)  # wall clock, seconds
    started: float = field(default_factory=time.monotonic)
    state: str = PENDING
    progress: int = 0
    completed_at: float | None = None  # wall clock, seconds
    video_bytes: int | None = None  # fixed when the task succeeds
    callback_url: str | None = None
    public: bool = True  # result served under /files (CDN-like); False: only through the API
    remixed_from: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def seed(self) -> str:
        """What the task's video bytes derive from."""
        return f"{self.protocol}/{self.id}"

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the record."""
        return {
            "protocol": self.protocol,
            "id": self.id,
            "state": self.state,
            "progress": self.progress,
            "prompt": self.prompt,
            "params": copy.deepcopy(self.params),
            "generation_seconds": self.generation_seconds,
            "outcome": {"kind": self.outcome.kind, "code": self.outcome.code, "message": self.outcome.message},
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "video_bytes": self.video_bytes,
            "callback_url": self.callback_url,
            "public": self.public,
            "remixed_from": self.remixed_from,
        }


@dataclass(frozen=True)
class Transition:
    """A task changed state; ``task`` and ``knobs`` are copies taken at that moment."""

    task: Task
    previous: str
    epoch: int
    knobs: Knobs


class SimState:
    """All mutable simulator state, behind ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.transitions: queue.Queue[Transition] = queue.Queue()
        self.epoch = 0  # bumped by reset, so work started before a reset can tell it is stale
        self._clear()

    def _clear(self) -> None:
        self.knobs: dict[str, Knobs] = {protocol: Knobs() for protocol in PROTOCOLS}
        self.tasks: dict[str, dict[str, Task]] = {protocol: {} for protocol in PROTOCOLS}
        self.images: dict[str, str] = {}  # image id -> aspect ratio
        self.requests: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.windows: dict[tuple[str, str], deque[float]] = {}
        # Per (protocol, key): what the limits saw (``limit_counts``): 429s for each limit, the
        # most unfinished tasks and the most accepted requests in one 60 s window.
        self.limits: dict[tuple[str, str], dict[str, int]] = {}
        # Per-task fault counters (see protocol.py): create attempts per (protocol, prompt), status
        # calls and result downloads per (protocol, task id).
        self.create_attempts: dict[tuple[str, str], int] = {}
        self.status_calls: dict[tuple[str, str], int] = {}
        self.downloads: dict[tuple[str, str], int] = {}

    def reset(self) -> None:
        """Forget everything; knobs back to defaults."""
        with self.lock:
            self.epoch += 1
            self._clear()
            while True:
                try:
                    self.transitions.get_nowait()
                except queue.Empty:
                    break

    # --- tasks ---------------------------------------------------------------------------------

    def add_task(self, task: Task) -> None:
        with self.lock:
            self.tasks[task.protocol][task.id] = task
            self._advance_task(task, time.monotonic())

    def task(self, protocol: str, task_id: str) -> Task | None:
        """The task after bringing it up to date, or None."""
        with self.lock:
            task = self.tasks[protocol].get(task_id)
            if task is not None:
                self._advance_task(task, time.monotonic())
            return task

    def require(self, protocol: str, task_id: str) -> Task:
        task = self.task(protocol, task_id)
        if task is None:
            raise KeyError(f"no {protocol} task {task_id!r}")
        return task

    def advance(self) -> None:
        """Bring every unfinished task up to date with the clock."""
        now = time.monotonic()
        with self.lock:
            for tasks in self.tasks.values():
                for task in tasks.values():
                    if not task.terminal:
                        self._advance_task(task, now)

    def _advance_task(self, task: Task, now: float) -> None:
        if task.terminal:
            return
        elapsed = now - task.started
        g = task.generation_seconds
        if not task.outcome.ok:
            fraction = FAIL_AT.get(task.outcome.kind or "", FAIL_AT[GENERATION_FAILED])
            if elapsed >= fraction * g:  # completion times are when the task was due, not when noticed
                self._finish(task, FAILED, fraction * g, int(100 * fraction) if fraction >= PENDING_FRACTION else 0)
                return
        elif elapsed >= g:
            self._finish(task, SUCCEEDED, g, 100)
            return
        if elapsed >= PENDING_FRACTION * g:
            self._move(task, RUNNING, min(99, int(100 * elapsed / g)))

    def _move(self, task: Task, state: str, progress: int) -> None:
        previous = task.state
        task.state, task.progress = state, progress
        if previous != state:
            knobs = copy.deepcopy(self.knobs[task.protocol])
            self.transitions.put(Transition(copy.deepcopy(task), previous, self.epoch, knobs))

    def _finish(self, task: Task, state: str, elapsed: float, progress: int) -> None:
        task.completed_at = task.created_at + elapsed
        if state == SUCCEEDED:
            task.video_bytes = self.knobs[task.protocol].video_bytes
        self._move(task, state, progress)

    def force_finish(self, protocol: str, task_id: str, outcome: Outcome) -> Task:
        """End a task now with ``outcome`` (``complete_now`` / ``fail_now``); failures keep their progress."""
        with self.lock:
            task = self.require(protocol, task_id)
            if task.terminal:
                raise ValueError(f"{protocol} task {task_id} is already {task.state}")
            task.outcome = outcome
            elapsed = time.monotonic() - task.started
            self._finish(task, SUCCEEDED if outcome.ok else FAILED, elapsed, 100 if outcome.ok else task.progress)
            return task

    def active_count(self, protocol: str, key: str) -> int:
        """Unfinished tasks of one key."""
        with self.lock:
            self.advance()
            return sum(1 for t in self.tasks[protocol].values() if t.key == key and not t.terminal)

    def earliest_finish(self, protocol: str, key: str) -> float:
        """Seconds until the first unfinished task of ``key`` is due to end (0 when none)."""
        now = time.monotonic()
        with self.lock:
            due = [
                t.started + t.generation_seconds - now
                for t in self.tasks[protocol].values()
                if t.key == key and not t.terminal
            ]
        return max(0.0, min(due, default=0.0))

    # --- rate limits ---------------------------------------------------------------------------

    def take_rate(self, protocol: str, key: str, per_minute: int) -> float:
        """Count one request of ``key``; return 0 if allowed, else seconds until a slot frees."""
        now = time.monotonic()
        with self.lock:
            window = self.windows.setdefault((protocol, key), deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= per_minute:
                self._limit(protocol, key)["rate_429s"] += 1
                return max(0.001, window[0] + 60.0 - now)
            window.append(now)
            seen = self._limit(protocol, key)
            seen["requests"] += 1
            seen["max_requests_in_window"] = max(seen["max_requests_in_window"], len(window))
            return 0.0

    def note_concurrency_refusal(self, protocol: str, key: str) -> None:
        """A create was refused because ``key`` had its most unfinished tasks."""
        with self.lock:
            self._limit(protocol, key)["concurrency_429s"] += 1

    def note_in_flight(self, protocol: str, key: str) -> None:
        """A task of ``key`` was made: record the most unfinished tasks seen at once."""
        with self.lock:
            seen = self._limit(protocol, key)
            seen["max_in_flight"] = max(seen["max_in_flight"], self.active_count(protocol, key))

    def _limit(self, protocol: str, key: str) -> dict[str, int]:
        return self.limits.setdefault(
            (protocol, key),
            {"requests": 0, "rate_429s": 0, "concurrency_429s": 0, "max_in_flight": 0, "max_requests_in_window": 0},
        )

    def limit_counts(self) -> dict[str, dict[str, int]]:
        """Per protocol, summed over its keys (maxima: the largest of any key): ``requests`` (accepted
        and counted by the rate limit), ``rate_429s``, ``concurrency_429s`` (violations refused),
        ``max_in_flight`` and ``max_requests_in_window`` (the most seen at once / in 60 s)."""
        with self.lock:
            out: dict[str, dict[str, int]] = {}
            for (protocol, _key), seen in self.limits.items():
                total = out.setdefault(protocol, dict.fromkeys(seen, 0))
                for name, value in seen.items():
                    total[name] = max(total[name], value) if name.startswith("max_") else total[name] + value
            return out

    # --- knobs ---------------------------------------------------------------------------------

    def pop_forced(self, protocol: str, kind: str) -> int | None:
        """The next forced status for a request of ``kind`` (or of ``"*"``), consuming it."""
        with self.lock:
            force = self.knobs[protocol].force
            for name in (kind, "*"):
                codes = force.get(name)
                if codes:
                    code = codes.pop(0)
                    if not codes:
                        del force[name]
                    return code
            return None

    def take_fail_next(self, protocol: str) -> bool:
        """Consume one ``fail_next``; True when this create must fail."""
        with self.lock:
            knobs = self.knobs[protocol]
            if knobs.fail_next > 0:
                knobs.fail_next -= 1
                return True
            return False

    # --- per-task counters ---------------------------------------------------------------------

    def count_create(self, protocol: str, prompt: str) -> int:
        """Count one create attempt carrying ``prompt``; its number, from 1."""
        return self._bump(self.create_attempts, (protocol, prompt))

    def count_status(self, task: Task) -> int:
        """Count one status call of ``task``; its number, from 1."""
        return self._bump(self.status_calls, (task.protocol, task.id))

    def count_download(self, task: Task) -> int:
        """Count one download of ``task``'s result; its number, from 1."""
        return self._bump(self.downloads, (task.protocol, task.id))

    def _bump(self, counter: dict[tuple[str, str], int], key: tuple[str, str]) -> int:
        with self.lock:
            counter[key] = counter.get(key, 0) + 1
            return counter[key]

    # --- records -------------------------------------------------------------------------------

    def record_request(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests.append(entry)
            return entry

    def record_callback(self, entry: dict[str, Any], epoch: int) -> None:
        with self.lock:
            if epoch == self.epoch:
                self.callbacks.append(entry)
