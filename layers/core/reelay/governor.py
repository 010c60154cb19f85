"""The governor: every provider kept busy, never over its limits (DESIGN.md: Governor).

Two limits per provider key, both shared by every Lambda through conditional writes to
DynamoDB (``reelay.governor_store``):

- **Tasks in flight** ≤ ``max_in_flight`` (``REELAY_<NAME>_MAX_IN_FLIGHT``). A task holds a
  *slot* (one item per slot, ``holder`` = the task id) from before its create until the provider
  reports a final state: ``release`` runs when the task moves to ``ingesting`` and on the one
  terminal path (``TaskTracker`` hooks). A task that finds a free slot and nobody waiting
  takes it at once (no place in the line: the line's writes are saved); a task without a
  slot joins the *waiting line* and stays ``queued``; whoever frees a slot lets the next task
  in (``pump``) and sends its submit message at once, so it moves when a slot frees, not at
  the next schedule tick. While a task waits, reconcile frees the slots of tasks that ended or
  vanished without it (``sweep``) and pumps too; a slot also carries a lease (the provider's
  deadline and ten minutes) after which anyone may take it.
- **Requests** ≤ ``requests_per_minute`` (``REELAY_<NAME>_REQUESTS_PER_MINUTE``) in *any*
  60-second window, for every call made to the provider (creates, status checks, polls,
  reconcile, balance: ``HttpProvider`` asks ``before_request`` before each one; a result
  download that carries the provider's credential, from its own origin, too:
  ``HttpProvider.download_headers``). The request
  log is a sliding-window log, not a bucket with a burst: a send time ``t`` is granted only if
  ``t`` ≥ the ``limit``-th latest grant + the window (60 s plus a second for clocks, transit and
  late wake-ups), and grants are handed out in time order, so any ``limit + 1`` consecutive
  sends span more than 60 s. Grants are also paced (≥ window ÷ limit apart): a burst would
  repeat itself every window and leave the provider idle in between. A caller may be granted a
  time slightly ahead (1 s for a paid create, 3 s for a read) and sleeps until then; one that
  wakes late leaves its grant unused and takes another. Further ahead than that,
  ``ProviderRateLimited`` is raised *before* anything is sent, which every caller already
  treats as a 429 (back off, nothing made). A 429 that still arrives stops requests until its
  ``Retry-After`` and runs the provider at 3/4 of its rate for five minutes. Creates wait at
  most 1 s and reads 3 s, so status checks (which free slots) go ahead of new creates when the
  log is busy; reconcile's calls (``Governor.background``) wait at most 1 s too. A create
  refused for now keeps looking, holding no grant, for up to 18 s before it goes back to the
  queue, so it takes the first time the reads leave free.

**Fairness.** The waiting line is ordered by (class, virtual time): interactive tasks (no
``batch_id``) are class 0 and always go ahead of batch tasks (class 1). Within a class each
flow — a batch, or the owner of interactive tasks — gets virtual times ``max(its last + 1,
the class clock)``, the clock being the virtual time of the last task let in (start-time fair
queuing). A batch of 1,000 lines queued at once takes times v…v+999; a second batch arriving
later starts at the clock, so the two alternate: neither waits for the other to finish.

**Sharding.** Slots are separate items (taking one never contends with taking another). A
request log above 600 requests a minute is split over shards of at most 600 each (a caller
reads all shards in one query and writes the one with the earliest free time), so one item
never takes more than ~10 writes a second.

**For other parts of reelay.** ``free_slots(provider)`` is a provider's free capacity for
routing (one query; ``None``: no concurrency limit) and ``waiting(provider)`` its line's length.
``offer(task)`` takes a new task (an API request) into a free slot, or puts it in the line with
no submit message of its own: only tasks let in get one, so a thousand waiting lines never stand
in the submit queue ahead of an API task's message; ``offer_many(tasks)`` does the same for a
manifest chunk's lines at once.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from aws_lambda_powertools import Logger

from reelay import metrics
from reelay.errors import ProviderRateLimited, QueueSendFailed
from reelay.governor_store import GovernorStore, RateShard, Slot, WaitEntry
from reelay.models import Task, TaskStatus
from reelay.providers.base import ProviderConfig

logger = Logger(child=True)

# The window every grant is spaced by: the provider's 60 s plus a second for clocks and transit.
WINDOW_SECONDS = 61.0
# A grant used later than this after its time is left unused (another is taken).
LATE_SECONDS = 0.5
# How far ahead a caller may be granted a send time (it sleeps until then): reads (status
# checks, which free slots) furthest; creates and background work (reconcile) only when the
# log is nearly free, so they never queue ahead of reads.
CREATE_WAIT_SECONDS = 1.0
READ_WAIT_SECONDS = 3.0
BACKGROUND_WAIT_SECONDS = 1.0
# A create refused for now looks again (holding no grant meanwhile) for up to this long, so
# it takes the first time reads leave free instead of going back to the queue. It holds its
# slot meanwhile, and so does one that went back (to wait in the queue, asking nothing): a few
# creates sharing half the grants wait ~10 s, so 8 s sent many back. The submit function's
# timeout budgets for it (Settings.submit_record_seconds).
CREATE_PATIENCE_SECONDS = 18.0
# After a 429 that still arrived: the rate is cut to this share for this long.
PENALTY_SHARE = 0.75
PENALTY_SECONDS = 300.0
# One shard of a request log takes at most this many requests a minute.
REQUESTS_PER_SHARD = 600
# A slot's lease runs this long past the provider's deadline (a backstop: reconcile sweeps first).
LEASE_GRACE_SECONDS = 600.0
_ATTEMPTS = 10

Dispatch = Callable[[str], None]

# Set while background work (reconcile) calls providers: it takes only a send time free now, so
# it never queues ahead of callbacks' status checks and creates (``Governor.background``).
_BACKGROUND: ContextVar[bool] = ContextVar("reelay_governor_background", default=False)


@dataclass(frozen=True)
class ProviderLimits:
    """One provider key's limits; ``None`` is no limit."""

    max_in_flight: int | None = None
    requests_per_minute: int | None = None
    lease_seconds: float = 3 * 3600.0 + LEASE_GRACE_SECONDS

    @classmethod
    def of(cls, config: ProviderConfig) -> ProviderLimits:
        return cls(config.max_in_flight, config.requests_per_minute, config.deadline_seconds + LEASE_GRACE_SECONDS)

    @property
    def governed(self) -> bool:
        return self.max_in_flight is not None or self.requests_per_minute is not None


def flow_of(task: Task) -> tuple[int, str]:
    """The task's class (0 interactive, 1 batch) and flow (its batch, or its owner)."""
    if task.batch_id:
        return 1, f"b:{task.batch_id}"
    return 0, f"o:{task.owner}"


class Governor:
    """Slots, the waiting line and the request log of every governed provider."""

    def __init__(
        self,
        store: GovernorStore,
        limits: Mapping[str, ProviderLimits],
        *,
        dispatch: Dispatch | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._limits = {name: limit for name, limit in limits.items() if limit.governed}
        self._dispatch = dispatch
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()

    @classmethod
    def for_providers(cls, store: GovernorStore, configs: tuple[ProviderConfig, ...], **kwargs: object) -> Governor:
        return cls(store, {c.name: ProviderLimits.of(c) for c in configs}, **kwargs)  # type: ignore[arg-type]

    def limits(self, provider: str) -> ProviderLimits:
        return self._limits.get(provider, ProviderLimits())

    @property
    def governed_providers(self) -> list[str]:
        return sorted(self._limits)

    # ================================================================ slots

    def free_slots(self, provider: str) -> int | None:
        """Slots free now (``None``: no concurrency limit) — the router's "free capacity"."""
        limit = self.limits(provider).max_in_flight
        if limit is None:
            return None
        return max(0, limit - len(self._live(self._store.slots(provider))))

    def waiting(self, provider: str) -> int:
        """Tasks waiting for a slot of ``provider``."""
        if self.limits(provider).max_in_flight is None:
            return 0
        return self._store.waiting_count(provider)

    def admit(self, task: Task) -> bool:
        """Whether ``task`` may be sent now: it holds a slot, or was just given one in fair order.

        ``False``: it is in the waiting line and stays ``queued``; the task that frees a slot
        sends its submit message again.
        """
        limit = self.limits(task.provider).max_in_flight
        if limit is None:
            return True
        slots = self._store.slots(task.provider)
        if any(s.holder == task.id for s in slots):
            return True
        if self._walk_in(task, slots):
            return True
        self._enqueue(task)
        admitted = task.id in self.pump(task.provider, own=task.id)
        if not admitted:
            metrics.governor_waited(task.provider)
        return admitted

    def _walk_in(self, task: Task, slots: list[Slot]) -> bool:
        """Nobody waits and a slot is free: take it at once, without a place in the line (the
        fair order only matters between tasks that wait; this saves the line's four writes)."""
        limits = self.limits(task.provider)
        now = self._clock()
        busy = {s.index for s in self._live(slots, now)}
        free = [i for i in range(limits.max_in_flight or 0) if i not in busy]
        if not free or self._store.head(task.provider, 1) or self._store.place_of(task.provider, task.id):
            return False
        return self._take_slot(task.provider, task.id, free, now, limits.lease_seconds)

    def offer(self, task: Task) -> None:
        """A new queued task (``TaskService.create``: an API request): it walks into a free slot
        and is sent its submit message, or joins the line without one (``offer_many``).

        Only the tasks that hold a slot get a submit message, so a thousand waiting tasks put no
        thousand messages in the submit queue ahead of the ones let in (which a submit worker
        would each have to read and put in the line before reaching them). A provider without a
        concurrency limit gets the message at once.
        """
        self.offer_many([task])

    def offer_many(self, tasks: Sequence[Task]) -> None:
        """``offer`` for many new tasks at once (a manifest chunk's lines): those that find a free
        slot and nobody waiting walk in; the rest get one reservation of virtual times per flow
        and their places written in batches, then one ``pump``. Per line that is two batched
        items instead of a place lookup, a contended flow update and a slot read each."""
        by_provider: dict[str, list[Task]] = {}
        for task in tasks:
            by_provider.setdefault(task.provider, []).append(task)
        for provider, group in by_provider.items():
            if self.limits(provider).max_in_flight is None:
                for task in group:
                    self._send(task.id)
                continue
            rest = list(group)
            while rest and self._walk_in(rest[0], self._store.slots(provider)):
                self._send(rest.pop(0).id)
            by_flow: dict[tuple[int, str], list[Task]] = {}
            for task in rest:
                by_flow.setdefault(flow_of(task), []).append(task)
            entries = []
            for (rank, flow), members in by_flow.items():
                first = self._reserve(provider, rank, flow, len(members))
                entries += [WaitEntry(t.id, _place(rank, first + k, t.id)) for k, t in enumerate(members)]
            if not entries:
                continue
            self._store.put_places(provider, entries)
            let_in = set(self.pump(provider))
            for entry in entries:
                if entry.task_id not in let_in:
                    metrics.governor_waited(provider)

    def holds_slot(self, task: Task) -> bool:
        """Whether ``task`` holds a live slot of its provider (let in, or sent and not yet final)."""
        if self.limits(task.provider).max_in_flight is None:
            return False
        return any(s.holder == task.id for s in self._live(self._store.slots(task.provider)))

    def is_waiting(self, task: Task) -> bool:
        """Whether ``task`` is in its provider's waiting line."""
        if self.limits(task.provider).max_in_flight is None:
            return False
        place = self._store.place_of(task.provider, task.id)
        # A place given but no entry in the line: being let in now, or its joining was cut short
        # (it has no submit message of its own either way: reconcile sends it one).
        return place is not None and self._store.is_in_line(task.provider, place)

    def leave(self, task: Task) -> bool:
        """Take a waiting ``task`` out of its provider's line (to fail it over). False when it is
        not in the line (any more): a freed slot is letting it in, and it goes on where it is."""
        if self.limits(task.provider).max_in_flight is None:
            return False
        place = self._store.place_of(task.provider, task.id)
        if place is None or not self._store.take_from_line(task.provider, place):
            return False
        self._store.forget_place(task.provider, task.id)
        return True

    def release(self, task: Task) -> None:
        """The provider reported a final state, or the task ended: free its slot, leave the line.

        Registered as a ``TaskTracker`` hook; idempotent. A freed slot is given to the next
        waiting task at once.
        """
        provider = task.provider
        if self.limits(provider).max_in_flight is None:
            return
        freed = False
        for slot in self._store.slots(provider):
            if slot.holder == task.id:
                freed = self._store.free_slot(provider, slot.index, task.id) or freed
        if task.status.terminal:
            place = self._store.place_of(provider, task.id)
            if place is not None:
                self._store.take_from_line(provider, place)
                self._store.forget_place(provider, task.id)
        if freed:
            logger.info("slot released", extra={"task_id": task.id, "provider": provider})
            self.pump(provider)

    def sweep(self, provider: str, in_flight: Callable[[str], bool]) -> int:
        """While a task waits for a slot: free the slots whose holders are no longer in flight
        (reconcile), then let tasks in."""
        if self.limits(provider).max_in_flight is None:
            return 0
        if not self._store.head(provider, 1):
            # Nobody waits for a slot: a stale one keeps no task out yet, and checking each holder
            # would read every task in flight (and write its cost record) at every run. The first
            # run after a task joins the line frees them.
            return 0
        freed = 0
        for slot in self._store.slots(provider):
            if not in_flight(slot.holder) and self._store.free_slot(provider, slot.index, slot.holder):
                logger.warning("freed a slot its task no longer needed", extra={"task_id": slot.holder})
                freed += 1
        self.pump(provider)
        return freed

    def pump(self, provider: str, *, own: str | None = None) -> list[str]:
        """Give free slots to waiting tasks, in fair order; the ids let in.

        Each is sent its submit message, except ``own`` (the caller's task, which goes on).
        A line entry is taken by one caller only (a conditional delete) before its slot is.
        """
        limits = self.limits(provider)
        limit = limits.max_in_flight
        if limit is None:
            return []
        let_in: list[str] = []
        for _ in range(limit + _ATTEMPTS):
            now = self._clock()
            taken = self._live(self._store.slots(provider), now)
            busy = {s.index for s in taken}
            free = [i for i in range(limit) if i not in busy]
            if len(taken) >= limit or not free:
                break
            head = self._store.head(provider, 1)
            if not head:
                break
            entry = head[0]
            if not self._store.take_from_line(provider, entry.place):
                continue  # another caller is letting it in
            if any(s.holder == entry.task_id for s in taken):
                self._store.forget_place(provider, entry.task_id)
                continue
            if not self._take_slot(provider, entry.task_id, free, now, limits.lease_seconds):
                self._store.put_waiting(provider, entry)  # back in its place: the slots went meanwhile
                break
            self._store.forget_place(provider, entry.task_id)
            self._store.advance_clock(provider, _clock_flow(entry.place), _vtime(entry.place))
            let_in.append(entry.task_id)
            if entry.task_id != own:
                self._send(entry.task_id)
        return let_in

    def _take_slot(self, provider: str, task_id: str, free: list[int], now: float, lease: float) -> bool:
        order = free[:]
        self._rng.shuffle(order)  # concurrent takers spread over the free slots
        return any(self._store.take_slot(provider, i, task_id, now=now, lease_until=now + lease) for i in order)

    def _send(self, task_id: str) -> None:
        if self._dispatch is None:
            logger.warning("no submit queue here: reconcile sends this task's message", extra={"task_id": task_id})
            return
        try:
            self._dispatch(task_id)
        except QueueSendFailed:
            logger.warning("submit message not sent; reconcile sends it", extra={"task_id": task_id})

    def _enqueue(self, task: Task) -> None:
        """Put ``task`` in the line once (its place is kept across redeliveries)."""
        provider = task.provider
        place = self._store.place_of(provider, task.id)
        if place is None:
            rank, flow = flow_of(task)
            place = self._store.mark_place(
                provider, task.id, _place(rank, self._reserve(provider, rank, flow, 1), task.id)
            )
        elif self._store.is_in_line(provider, place):
            return
        self._store.put_waiting(provider, WaitEntry(task.id, place))

    def _reserve(self, provider: str, rank: int, flow: str, count: int) -> int:
        """The first of ``count`` consecutive virtual times for ``flow``: ``max(its last + 1, the
        class clock)`` (start-time fair queuing), the flow's last moved past them conditionally."""
        first = 0
        for _ in range(_ATTEMPTS):
            last, clock = self._store.flow_times(provider, flow, _class_clock(rank))
            first = int(max(last + 1 if last is not None else 0, clock))
            if self._store.advance_flow(provider, flow, expected=last, to=first + count - 1):
                break
        return first

    def _live(self, slots: list[Slot], now: float | None = None) -> list[Slot]:
        moment = self._clock() if now is None else now
        return [s for s in slots if s.lease_until >= moment]

    # ================================================================ requests

    @staticmethod
    @contextlib.contextmanager
    def background(on: bool = True) -> Iterator[None]:
        """Provider calls made inside take only send times free now (reconcile's looks): a
        background sweep never fills the request log ahead of the calls that move tasks.
        ``background(False)`` restores the normal waits inside it (a deadline's last look)."""
        token = _BACKGROUND.set(on)
        try:
            yield
        finally:
            _BACKGROUND.reset(token)

    def before_request(self, provider: str, *, paid: bool) -> None:
        """Wait for a send time within the window; ``ProviderRateLimited`` when none is near."""
        limit = self.limits(provider).requests_per_minute
        if limit is None:
            return
        background = _BACKGROUND.get()
        horizon = BACKGROUND_WAIT_SECONDS if background else CREATE_WAIT_SECONDS if paid else READ_WAIT_SECONDS
        patient_until = self._clock() + (CREATE_PATIENCE_SECONDS if paid and not background else 0.0)
        # However often a grant is lost or woken up to late, the wait never runs past this: a
        # caller's function timeout (a callback's 30 s) is budgeted for one wait, not a chain.
        give_up_at = patient_until + horizon + 2 * LATE_SECONDS
        shards = _shard_limits(limit)
        for _ in range(4 * _ATTEMPTS):
            now = self._clock()
            if now > give_up_at:
                break
            written = self._store.rate_shards(provider)
            candidates = [
                (_earliest(written.get(i, RateShard(i)), share, now), written.get(i, RateShard(i)), share)
                for i, share in enumerate(shards)
            ]
            at, shard, share = min(candidates, key=lambda c: (c[0], self._rng.random()))
            wait = at - now
            if wait > horizon and at - horizon <= patient_until:
                self._sleep(max(0.05, min(wait - horizon, 1.0)))  # look again; reads may go first
                continue
            if wait > horizon:
                metrics.governor_waited(provider, wait)
                raise ProviderRateLimited(
                    f"reelay holds requests to provider {provider} to its limit of {limit} a minute; "
                    f"next free in {wait:.1f} s",
                    provider=provider,
                    # A create comes back when its grant is within its patience.
                    retry_after=max(1.0, wait - (patient_until - now)),
                )
            if not self._store.write_rate_shard(provider, shard, (*shard.log, at)[-share:]):
                continue  # another caller took it first: read again
            if wait > 0:
                metrics.governor_waited(provider, wait)
                self._sleep(wait)
            if self._clock() - at <= LATE_SECONDS:
                return
            logger.info("woke too late for a request grant; taking another", extra={"provider": provider})
        raise ProviderRateLimited(
            f"reelay's request log for provider {provider} is busy", provider=provider, retry_after=1.0
        )

    def rate_limited(self, provider: str, retry_after: float | None) -> None:
        """A 429 still arrived: nothing before ``Retry-After`` (1 s if none), 3/4 of the rate for a while."""
        limit = self.limits(provider).requests_per_minute
        if limit is None:
            return
        now = self._clock()
        wait = retry_after if retry_after is not None and retry_after > 0 else 1.0
        logger.warning("provider answered 429: slowing down", extra={"provider": provider, "retry_after": wait})
        for index in range(len(_shard_limits(limit))):
            self._store.penalize(provider, index, not_before=now + wait, penalty_until=now + PENALTY_SECONDS)


def _shard_limits(limit: int) -> list[int]:
    """Each shard's share of ``limit`` (they add up to it)."""
    count = max(1, math.ceil(limit / REQUESTS_PER_SHARD))
    return [limit // count + (1 if i < limit % count else 0) for i in range(count)]


def _earliest(shard: RateShard, share: int, now: float) -> float:
    """The first send time this shard can grant: in order, paced, and ``share`` grants per window.

    Paced: grants are at least a window ÷ ``share`` apart. The window rule alone would let a
    burst through, and a burst repeats itself one window later, leaving the provider idle in
    between (and reads waiting longer than they may); paced grants never cluster.
    """
    allowed = share if now >= shard.penalty_until else max(1, math.floor(share * PENALTY_SHARE))
    at = max(now, shard.not_before)
    if shard.log:
        at = max(at, shard.log[-1] + WINDOW_SECONDS / allowed)
    if len(shard.log) >= allowed:
        at = max(at, shard.log[-allowed] + WINDOW_SECONDS)
    return at


def _place(rank: int, vtime: int, task_id: str) -> str:
    """A place in the line: its sort key orders by class, then virtual time."""
    return f"{rank}#{vtime:012d}#{task_id}"


def _class_clock(rank: int) -> str:
    return f"#clock{rank}"


def _clock_flow(place: str) -> str:
    return _class_clock(int(place.split("#", 1)[0]))


def _vtime(place: str) -> int:
    return int(place.split("#")[1])


def in_flight_statuses() -> frozenset[TaskStatus]:
    """Statuses in which a task may hold a slot."""
    return frozenset({TaskStatus.QUEUED, TaskStatus.SUBMITTED, TaskStatus.RUNNING})
