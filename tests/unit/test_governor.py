"""The governor: slots, the waiting line's fair order, and a request log that holds any 60 s window.

All against moto's in-process DynamoDB (single-item conditional writes only; no transactions are
relied on), with a fake clock whose ``sleep`` moves time on.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import httpx
import pytest

from reelay.aws import TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import ProviderRateLimited
from reelay.governor import (
    CREATE_PATIENCE_SECONDS,
    PENALTY_SECONDS,
    READ_WAIT_SECONDS,
    WINDOW_SECONDS,
    Governor,
    ProviderLimits,
    _shard_limits,
)
from reelay.governor_store import GovernorStore
from reelay.models import ErrorCode, Task, TaskStatus, VideoRequest, utcnow
from reelay.providers.base import ProviderState, ProviderStatus, ResultRef
from reelay.providers.registry import build_provider, provider_config
from reelay.settings import Settings
from reelay.store import DynamoTaskStore
from reelay.submission import SubmitOutcome, Submitter
from reelay.tracking import TaskTracker
from tests.unit.fakes import FakeProvider, config
from tests.unit.test_submission import RecordingStarter


class FakeClock:
    """Time that moves only when someone sleeps (or ``advance`` is called)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    advance = sleep


def governor(limits: dict[str, ProviderLimits], clock: FakeClock, sent: list[str] | None = None) -> Governor:
    dispatch = sent.append if sent is not None else None
    return Governor(GovernorStore("tasks"), limits, dispatch=dispatch, clock=clock, sleep=clock.sleep)


def task(task_id: str, *, provider: str = "gt", batch: str | None = None, owner: str = "local") -> Task:
    return Task(
        id=task_id,
        provider=provider,
        protocol="generate_task",
        request={"provider": provider, "prompt": "p"},
        owner=owner,
        batch_id=batch,
        created_at=utcnow(),
        updated_at=utcnow(),
    )


def windows_hold(grants: list[float], limit: int, window: float = 60.0) -> bool:
    """Whether every 60 s window holds at most ``limit`` of ``grants`` (any window, not per minute)."""
    ordered = sorted(grants)
    return all(ordered[i + limit] - ordered[i] >= window for i in range(len(ordered) - limit))


# ------------------------------------------------------------------------------- request log


def take(gov: Governor, clock: FakeClock, count: int, provider: str = "gt") -> list[float]:
    """``count`` reads, each retried when refused (as a queue redelivery would); their send times."""
    grants = []
    for _ in range(count):
        while True:
            try:
                gov.before_request(provider, paid=False)
                break
            except ProviderRateLimited as wait:
                assert wait.retry_after and wait.retry_after > READ_WAIT_SECONDS
                clock.advance(wait.retry_after - READ_WAIT_SECONDS / 2)
        grants.append(clock())
    return grants


def test_requests_never_exceed_the_limit_in_any_sixty_second_window(aws: dict[str, str]) -> None:
    """Given 5 a minute and callers that keep asking, when 23 requests go out, then no 60 s window
    (sliding, not per minute) holds more than 5, and they are paced, never idle."""
    clock = FakeClock()
    gov = governor({"gt": ProviderLimits(requests_per_minute=5)}, clock)
    grants = take(gov, clock, 23)
    assert windows_hold(grants, 5)
    # A burst bucket would allow 5 at the end of one minute and 5 at the start of the next: not here.
    assert not any(grants[i + 5] - grants[i] < 60 for i in range(len(grants) - 5))
    gaps = [b - a for a, b in pairwise(grants)]
    paced = pytest.approx(WINDOW_SECONDS / 5, abs=0.01)
    assert min(gaps) == paced and max(gaps) == paced


def test_a_create_waits_at_most_a_second_for_a_grant_and_keeps_looking_a_while(aws: dict[str, str]) -> None:
    clock = FakeClock()
    gov = governor({"gt": ProviderLimits(requests_per_minute=1)}, clock)
    gov.before_request("gt", paid=True)
    clock.advance(WINDOW_SECONDS - 2.0 - CREATE_PATIENCE_SECONDS)  # the next grant is 10 s away
    with pytest.raises(ProviderRateLimited) as refused:
        gov.before_request("gt", paid=True)  # more than its patience: back to the queue, unsent
    assert refused.value.retry_after == pytest.approx(2.0, abs=0.1)  # back when 8 s away
    clock.advance(2.0)
    gov.before_request("gt", paid=True)  # now within its patience: it looks again and goes
    assert clock() == pytest.approx(1_000_000.0 + WINDOW_SECONDS, abs=0.01)


def test_a_read_waits_up_to_three_seconds_and_background_work_one(aws: dict[str, str]) -> None:
    clock = FakeClock()
    gov = governor({"gt": ProviderLimits(requests_per_minute=1)}, clock)
    gov.before_request("gt", paid=False)
    clock.advance(WINDOW_SECONDS - 2.0)  # the next grant is 2 s away
    with gov.background(), pytest.raises(ProviderRateLimited):
        gov.before_request("gt", paid=False)
    before = clock()
    gov.before_request("gt", paid=False)  # a read may wait 2 s (≤ 3): it sleeps, then goes
    assert clock() - before == pytest.approx(2.0, abs=0.01)


def test_a_caller_that_always_wakes_too_late_gives_up_within_one_wait(aws: dict[str, str]) -> None:
    # Given a busy machine where every sleep overruns its grant by a second
    clock = FakeClock()
    gov = Governor(
        GovernorStore("tasks"),
        {"gt": ProviderLimits(requests_per_minute=60)},
        clock=clock,
        sleep=lambda seconds: clock.sleep(seconds + 1.0),
    )
    gov.before_request("gt", paid=False)
    before = clock()
    # Then a read gives up (the caller answers "later") after about one read wait, not a chain of them
    with pytest.raises(ProviderRateLimited):
        gov.before_request("gt", paid=False)
    assert clock() - before <= READ_WAIT_SECONDS + 3.0


def test_a_429_that_still_arrives_honours_retry_after_and_slows_the_provider(aws: dict[str, str]) -> None:
    clock = FakeClock()
    gov = governor({"gt": ProviderLimits(requests_per_minute=8)}, clock)
    gov.before_request("gt", paid=False)
    gov.rate_limited("gt", 30.0)
    with pytest.raises(ProviderRateLimited) as refused:
        gov.before_request("gt", paid=False)
    assert refused.value.retry_after == pytest.approx(30.0)
    clock.advance(30.0)
    slowed = take(gov, clock, 5)
    assert slowed[0] == pytest.approx(clock.now - 4 * WINDOW_SECONDS / 6, abs=0.01)
    # 3/4 of 8 = 6 per window while the penalty lasts, then 8 again.
    assert all(b - a == pytest.approx(WINDOW_SECONDS / 6, abs=0.01) for a, b in pairwise(slowed))
    clock.advance(PENALTY_SECONDS)
    again = take(gov, clock, 3)
    assert all(b - a == pytest.approx(WINDOW_SECONDS / 8, abs=0.01) for a, b in pairwise(again))


def test_a_large_limit_is_sharded_and_the_shards_add_up_to_it(aws: dict[str, str]) -> None:
    assert _shard_limits(1500) == [500, 500, 500] and _shard_limits(60) == [60]
    assert all(sum(_shard_limits(n)) == n and max(_shard_limits(n)) <= 600 for n in (1, 599, 601, 1799, 10_000))
    clock = FakeClock()
    gov = governor({"big": ProviderLimits(requests_per_minute=1500)}, clock)
    for _ in range(30):
        gov.before_request("big", paid=False)
    shards = GovernorStore("tasks").rate_shards("big")
    assert sum(len(s.log) for s in shards.values()) == 30 and len(shards) == 3  # spread over the shards


def test_every_provider_call_passes_the_gate_and_a_429_reaches_it(aws: dict[str, str]) -> None:
    calls: list[tuple[str, object]] = []

    class Gate:
        def before_request(self, provider: str, *, paid: bool) -> None:
            calls.append(("before", paid))

        def rate_limited(self, provider: str, retry_after: float | None) -> None:
            calls.append(("429", retry_after))

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"code": 200, "data": {"taskId": "t-1"}})
        return httpx.Response(429, json={"code": 429, "msg": "slow down"}, headers={"Retry-After": "7"})

    cfg = provider_config("gt", "generate_task", "https://gt.example", "k")
    provider = build_provider(cfg, client=httpx.Client(transport=httpx.MockTransport(answer)), gate=Gate())
    provider.create(VideoRequest(provider="gt", prompt="p"), task_id="t", callback_url=None)
    with pytest.raises(ProviderRateLimited):
        provider.status("t-1")
    assert calls == [("before", True), ("before", False), ("429", 7.0)]


def test_a_refusal_from_the_gate_sends_nothing(aws: dict[str, str]) -> None:
    sent: list[httpx.Request] = []
    clock = FakeClock()
    gov = governor({"gt": ProviderLimits(requests_per_minute=1)}, clock)
    cfg = provider_config("gt", "generate_task", "https://gt.example", "k")
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200, json={"code": 200, "data": {}}))
    provider = build_provider(cfg, client=httpx.Client(transport=transport), gate=gov)
    with pytest.raises(Exception):  # noqa: B017 - the first answer is malformed; it was sent
        provider.status("x")
    with pytest.raises(ProviderRateLimited):
        provider.create(VideoRequest(provider="gt", prompt="p"), task_id="t", callback_url=None)
    assert len(sent) == 1


# ------------------------------------------------------------------------------- slots


def test_slots_cap_in_flight_and_a_release_lets_the_next_task_in_at_once(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=2)}, clock, sent)
    assert gov.admit(task("a")) and gov.admit(task("b"))
    assert not gov.admit(task("c"))
    assert not gov.admit(task("c"))  # a redelivery: still one place in the line
    assert gov.free_slots("gt") == 0 and gov.waiting("gt") == 1 and gov.is_waiting(task("c"))
    gov.release(task("a").model_copy(update={"status": TaskStatus.INGESTING}))
    assert sent == ["c"]  # its submit message goes now, not at the next schedule tick
    assert gov.admit(task("c"))  # the message arrives: it holds the slot
    assert not gov.is_waiting(task("c")) and gov.waiting("gt") == 0
    gov.release(task("a").model_copy(update={"status": TaskStatus.SUCCEEDED}))  # again: nothing more
    assert gov.free_slots("gt") == 0 and sent == ["c"]


def test_a_provider_without_limits_is_not_governed(aws: dict[str, str]) -> None:
    gov = governor({"free": ProviderLimits()}, FakeClock())
    assert gov.admit(task("a", provider="free")) and gov.free_slots("free") is None
    gov.before_request("free", paid=True)
    assert gov.governed_providers == []


def test_a_task_that_ends_while_waiting_leaves_the_line(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=1)}, clock, sent)
    gov.admit(task("a"))
    gov.admit(task("b"))
    gov.release(task("b").model_copy(update={"status": TaskStatus.FAILED}))
    assert gov.waiting("gt") == 0
    gov.release(task("a").model_copy(update={"status": TaskStatus.FAILED}))
    assert sent == [] and gov.free_slots("gt") == 1


def test_sweep_frees_the_slot_of_a_task_that_ended_without_freeing_it(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=1)}, clock, sent)
    gov.admit(task("lost"))
    gov.admit(task("next"))
    assert gov.sweep("gt", in_flight=lambda task_id: task_id != "lost") == 1
    assert sent == ["next"]


def test_sweep_reads_no_holder_while_nobody_waits_for_a_slot(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=2)}, clock, sent)
    gov.admit(task("lost"))
    asked: list[str] = []

    def in_flight(task_id: str) -> bool:
        asked.append(task_id)
        return task_id != "lost"

    # A stale slot keeps nobody out yet: no holder is read (each read is a paid read of a task)
    assert gov.sweep("gt", in_flight) == 0 and asked == []
    gov.admit(task("b"))
    gov.admit(task("c"))  # both slots taken: c waits
    assert gov.sweep("gt", in_flight) == 1 and sorted(asked) == ["b", "lost"]
    assert sent == ["c"]


def test_a_slot_whose_lease_ran_out_is_taken_by_the_next_task(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=1, lease_seconds=100)}, clock, sent)
    gov.admit(task("crashed"))
    assert not gov.admit(task("b"))
    clock.advance(101)
    assert gov.free_slots("gt") == 1
    assert gov.admit(task("b"))


# ------------------------------------------------------------------------------- fairness


def _let_in_order(gov: Governor, sent: list[str], first: str, count: int) -> list[str]:
    """Release slots one by one (a holder ending each time); the order tasks are let in."""
    holder = first
    for _ in range(count):
        gov.release(task(holder).model_copy(update={"status": TaskStatus.SUCCEEDED}))
        holder = sent[-1]
        assert gov.admit(task(holder))
    return list(sent)


def test_an_interactive_task_goes_ahead_of_a_waiting_batch(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=1)}, clock, sent)
    gov.admit(task("first"))
    for i in range(20):
        gov.admit(task(f"batch-{i}", batch="b1"))
    gov.admit(task("api"))
    assert _let_in_order(gov, sent, "first", 3) == ["api", "batch-0", "batch-1"]


def test_two_batches_share_a_provider_neither_waits_for_the_other(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=1)}, clock, sent)
    gov.admit(task("first"))
    for i in range(10):
        gov.admit(task(f"A{i}", batch="A"))
    order = _let_in_order(gov, sent, "first", 2)  # A runs alone for a while
    for i in range(10):
        gov.admit(task(f"B{i}", batch="B", owner="someone-else"))
    order = _let_in_order(gov, sent, order[-1], 8)
    # B starts at the line's clock (where A is now), so from here the two alternate.
    assert order == ["A0", "A1", "B0", "A2", "B1", "A3", "B2", "A4", "B3", "A5"]


# ------------------------------------------------------------------------------- wiring


def test_submit_without_a_free_slot_waits_queued_and_sends_no_create(aws: dict[str, str]) -> None:
    provider = FakeProvider(config("gt", max_in_flight=1))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=1)}, clock, sent)
    tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]), on_terminal=[gov.release])
    starter = RecordingStarter()
    submitter = Submitter(store, catalog, tracker, starter, tokens=None, callback_base_url=None, governor=gov)
    first, second = (store.create(task(n, provider="gt"))[0] for n in ("t-1", "t-2"))
    assert submitter.submit(first.id) is SubmitOutcome.SUBMITTED
    assert submitter.submit(second.id) is SubmitOutcome.WAITING
    assert len(provider.creates) == 1 and store.get(second.id).status is TaskStatus.QUEUED
    tracker.fail(store.get(first.id), ErrorCode.PROVIDER_FAILED, "gone")  # the one terminal path
    assert sent == [second.id]
    assert submitter.submit(second.id) is SubmitOutcome.SUBMITTED and len(provider.creates) == 2


def test_the_slot_is_freed_when_the_provider_reports_success_before_the_copy(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    released: list[TaskStatus] = []
    tracker = TaskTracker(
        store, TaskQueue(aws["INGEST_QUEUE_URL"]), on_provider_final=[lambda t: released.append(t.status)]
    )
    stored = store.create(task("t-1"))[0]
    stored = store.transition(stored, TaskStatus.SUBMITTED, reason="test", provider_task_id="p-1")
    done = ProviderStatus(
        provider_task_id="p-1", state=ProviderState.SUCCEEDED, results=[ResultRef(url="https://x.example/v.mp4")]
    )
    tracker.apply(stored, done)
    tracker.apply(store.get("t-1"), done)  # a duplicate report: the hook ran once
    assert released == [TaskStatus.INGESTING]


def test_limits_come_from_the_environment_with_the_seeds_defaults_for_generate_task() -> None:
    base: dict[str, Any] = {
        "TASK_TABLE_NAME": "t",
        "RESULTS_BUCKET": "b",
        "INGEST_QUEUE_URL": "q",
        "REELAY_PROVIDERS": "generate_task,other",
        "REELAY_GENERATE_TASK_BASE_URL": "https://gt.example",
        "REELAY_OTHER_BASE_URL": "https://o.example",
        "REELAY_OTHER_PROTOCOL": "generate_task",
        "REELAY_OTHER_MAX_IN_FLIGHT": "3",
        "REELAY_OTHER_REQUESTS_PER_MINUTE": "0",
    }
    settings = Settings.from_environ(base)
    gt, other = settings.provider("generate_task"), settings.provider("other")
    assert gt and (gt.max_in_flight, gt.requests_per_minute) == (10, 60)
    assert other and (other.max_in_flight, other.requests_per_minute) == (3, None)


def test_the_callback_budget_holds_one_governor_wait_and_one_status_call() -> None:
    cfg = provider_config("gt", "generate_task", "https://gt.example", "k")
    assert cfg.call_seconds + READ_WAIT_SECONDS <= 30  # the HTTP API's integration limit


def test_offer_queues_bulk_tasks_and_sends_messages_only_to_those_let_in(aws: dict[str, str]) -> None:
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=2), "free": ProviderLimits()}, clock, sent)
    for i in range(5):
        gov.offer(task(f"line-{i}", batch="b"))
    gov.offer(task("unlimited", provider="free"))
    assert sent == ["line-0", "line-1", "unlimited"] and gov.waiting("gt") == 3


def test_a_new_task_takes_a_free_slot_or_joins_the_line_without_a_submit_message(aws: dict[str, str]) -> None:
    from reelay.aws import ResultBucket
    from reelay.tasks import TaskService
    from tests.unit.conftest import drain

    # Given a provider with two slots, and the API's task service with the governor
    provider = FakeProvider(config("gt", max_in_flight=2))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    queue = TaskQueue(aws["SUBMIT_QUEUE_URL"])
    gov = Governor(GovernorStore("tasks"), {"gt": ProviderLimits(max_in_flight=2)}, dispatch=queue.send)
    tasks = TaskService(store, catalog, queue, ResultBucket("results"), governor=gov)
    # When five tasks are created
    ids = [tasks.create(VideoRequest(provider="gt", prompt=f"shot {i}"))[0].id for i in range(5)]
    # Then the first two hold the slots and have a submit message; the other three wait in
    # line with none (a submit worker reads no message only to put its task in the line)
    assert [m["task_id"] for m in drain(aws["SUBMIT_QUEUE_URL"])] == ids[:2]
    assert sorted(s.holder for s in GovernorStore("tasks").slots("gt")) == sorted(ids[:2])
    assert gov.waiting("gt") == 3 and all(gov.is_waiting(store.get(i)) for i in ids[2:])
    # and a freed slot sends the next in line its message
    gov.release(store.get(ids[0]).model_copy(update={"status": TaskStatus.FAILED}))
    assert [m["task_id"] for m in drain(aws["SUBMIT_QUEUE_URL"])] == [ids[2]]


def test_a_task_given_a_place_but_not_in_the_line_is_not_waiting(aws: dict[str, str]) -> None:
    # Given a task whose joining the line was cut short after its place was marked
    clock = FakeClock()
    gov = governor({"gt": ProviderLimits(max_in_flight=1)}, clock, [])
    gov.offer(task("holder"))
    cut = task("cut")
    GovernorStore("tasks").mark_place("gt", cut.id, f"0#{0:012d}#{cut.id}")
    # Then it does not count as waiting (reconcile sends it its submit message), and joining
    # again puts it in the line
    assert not gov.is_waiting(cut)
    gov.offer(cut)
    assert gov.is_waiting(cut) and gov.waiting("gt") == 1


def test_a_chunk_of_lines_offered_together_keeps_the_fair_order_of_one_by_one(aws: dict[str, str]) -> None:
    # Given two slots and a batch already waiting two lines
    clock, sent = FakeClock(), []
    gov = governor({"gt": ProviderLimits(max_in_flight=2), "free": ProviderLimits()}, clock, sent)
    gov.offer_many([task("a-1", batch="a"), task("a-2", batch="a"), task("a-3", batch="a"), task("a-4", batch="a")])
    # Then the first two walked into the slots and only they were sent their message
    assert sent == ["a-1", "a-2"] and gov.waiting("gt") == 2
    # When a second batch's chunk arrives (and an unlimited provider's line)
    gov.offer_many([task("b-1", batch="b"), task("b-2", batch="b"), task("free-1", provider="free", batch="b")])
    assert sent[2:] == ["free-1"] and gov.waiting("gt") == 4
    # Then the freed slots let the batches in alternately, as one-by-one offers would
    for holder in ["a-1", "a-2", "a-3", "b-1", "a-4", "b-2"]:
        gov.release(task(holder).model_copy(update={"status": TaskStatus.FAILED}))
    assert sent[3:] == ["a-3", "b-1", "a-4", "b-2"]
    assert gov.waiting("gt") == 0


def test_the_simulator_counts_what_its_limits_refused_and_the_most_it_saw() -> None:
    from reelay_sim.state import SimState

    state = SimState()
    assert [state.take_rate("generate_task", "k", 2) == 0 for _ in range(3)] == [True, True, False]
    state.note_concurrency_refusal("generate_task", "k")
    seen = state.limit_counts()["generate_task"]
    assert seen["requests"] == 2 and seen["rate_429s"] == 1 and seen["concurrency_429s"] == 1
    assert seen["max_requests_in_window"] == 2
