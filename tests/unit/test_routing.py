"""Routing `auto` requests: capable providers by priority, free capacity and price; failover only
where the refusing provider made nothing, so a task never makes two paid creates."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from reelay.aws import PollStarter, ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.deadlines import Deadlines
from reelay.errors import (
    ConfigurationError,
    ContentRefused,
    CreateOutcomeUnknown,
    CreateServerError,
    InsufficientBalance,
    NoCapacity,
    ProviderAuthError,
    ProviderRateLimited,
    RequestInvalid,
)
from reelay.models import ErrorCode, TaskStatus, VideoRequest, utcnow
from reelay.providers.registry import build_provider, provider_config
from reelay.reconcile import Reconciler
from reelay.routing import AUTO, Router, allows_failover, auto_cells
from reelay.settings import Settings
from reelay.store import DynamoTaskStore
from reelay.submission import SubmitOutcome, Submitter
from reelay.tasks import TaskService
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from reelay.variants import video_body
from reelay.workers import RetryLater
from tests.unit.conftest import drain
from tests.unit.fakes import FakeProvider, config


class Starter(PollStarter):
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, name: str, payload: dict[str, Any], *, state_machine_arn: str | None = None) -> bool:
        self.started.append(name)
        return True

    def is_running(self, name: str, *, state_machine_arn: str | None = None) -> bool:
        return name in self.started


class EightOnly(FakeProvider):
    """A provider that can only make 8-second videos."""

    def validate(self, request: VideoRequest) -> None:
        if request.duration != 8:
            raise RequestInvalid("duration must be 8 for eight", field="duration")


class Quoted(FakeProvider):
    def __init__(self, *args: Any, price: int | None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.price = price
        self.quotes = 0

    def quote_cents(self, request: VideoRequest) -> int | None:
        self.quotes += 1
        return self.price


def catalog(*providers: FakeProvider) -> ProviderCatalog:
    by_name = {p.name: p for p in providers}
    return ProviderCatalog(tuple(p.config for p in providers), factory=lambda c: by_name[c.name])


def auto(**kw: Any) -> VideoRequest:
    return VideoRequest(provider=AUTO, prompt="a cat", **kw)


# ----------------------------------------------------------------- ranking


def test_auto_ranks_capable_providers_by_priority_lower_first_and_unset_last() -> None:
    # Given three providers: b priority 1, a unset, c priority 2, and one that cannot do 4 s
    providers = catalog(
        FakeProvider(config("a")),
        FakeProvider(config("b", priority=1)),
        FakeProvider(config("c", priority=2)),
        EightOnly(config("e", priority=0)),
    )
    # When an auto request for 4 s is planned
    routing = Router(providers).plan(auto(duration=4))
    # Then only the capable ones are candidates, by priority, the unset one last
    assert [c.provider for c in routing.candidates] == ["b", "c", "a"]
    assert routing.reason.startswith("b ranks first of 3 capable providers")


def test_equal_priorities_go_to_more_free_capacity_then_to_the_lower_price() -> None:
    cheap = Quoted(config("cheap", priority=1), price=10)
    dear = Quoted(config("dear", priority=1), price=50)
    busy = Quoted(config("busy", priority=1), price=1)
    free = {"cheap": 3, "dear": 3, "busy": 0}
    routing = Router(catalog(busy, dear, cheap), free_capacity=free.get).plan(auto())
    # More free capacity first; between equal capacity, the lower price
    assert [c.provider for c in routing.candidates] == ["cheap", "dear", "busy"]
    assert routing.candidates[0].price_cents == 10 and routing.candidates[0].free_capacity == 3
    # Price is asked only where it breaks a tie: busy ranks last by capacity alone
    assert busy.quotes == 0 and cheap.quotes == 1


def test_unknown_price_ranks_after_a_known_one_and_a_failing_quote_never_fails_the_request() -> None:
    class Failing(FakeProvider):
        def quote_cents(self, request: VideoRequest) -> int | None:
            raise ProviderRateLimited("busy", provider=self.name)

    routing = Router(
        catalog(Failing(config("failing")), Quoted(config("none"), price=None), Quoted(config("known"), price=99))
    ).plan(auto())
    assert routing.candidates[0].provider == "known"


def test_a_request_no_provider_can_do_is_refused_naming_what_each_one_can() -> None:
    providers = catalog(FakeProvider(config("a")), EightOnly(config("e")))
    with pytest.raises(RequestInvalid) as refused:
        Router(providers).plan(auto(duration=12))
    assert refused.value.field == "provider"
    assert "a: duration must be 4 or 8 for fake" in refused.value.message
    assert "e: duration must be 8 for eight" in refused.value.message


@pytest.mark.parametrize(
    ("error", "fails_over"),
    [
        (InsufficientBalance("low", provider="p"), True),
        (ProviderAuthError("401", provider="p"), True),
        (NoCapacity("full", provider="p", waited_seconds=30), True),
        (ProviderRateLimited("429", provider="p"), False),
        (CreateOutcomeUnknown("lost", provider="p"), False),
        (CreateServerError("500", provider="p"), False),
        (ContentRefused("no", provider="p"), False),
    ],
)
def test_only_refusals_that_prove_nothing_was_made_allow_failover(error: Exception, fails_over: bool) -> None:
    assert allows_failover(error) is fails_over


# ----------------------------------------------------------------- the task records it, the worker fails over


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    class World:
        first = FakeProvider(config("first", priority=1))
        second = FakeProvider(config("second", priority=2))
        providers = catalog(first, second)
        store = DynamoTaskStore("tasks")
        tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]))
        submitter = Submitter(
            store,
            providers,
            tracker,
            Starter(),
            tokens=CallbackTokens(b"s" * 32),
            callback_base_url="https://api.example",
        )
        tasks = TaskService(store, providers, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))

        def queued(self, provider: str = AUTO) -> str:
            return self.tasks.create(VideoRequest(provider=provider, prompt="a cat"))[0].id

        def submit_until_done(self, task_id: str) -> SubmitOutcome:
            for attempt in range(5):
                try:
                    return self.submitter.submit(task_id, attempt=attempt)
                except RetryLater as retry:
                    assert retry.seconds == 0, retry.reason  # a failover goes straight back to the queue
            raise AssertionError("never done")

    return World()


def test_an_auto_task_is_served_by_the_first_candidate_and_its_view_says_why(world: Any) -> None:
    task_id = world.queued()
    task = world.store.get(task_id)
    assert task.provider == "first" and task.protocol == "fake"
    view = world.tasks.view(task)
    assert view.provider == "first" and view.request["provider"] == AUTO
    assert view.routing is not None and [c.provider for c in view.routing.candidates] == ["first", "second"]


def test_out_of_balance_before_the_create_fails_over_with_one_paid_create_in_all(world: Any) -> None:
    # Given the first provider's preflight says its balance cannot pay
    world.first.preflight_error = InsufficientBalance("balance 0", provider="first")
    task_id = world.queued()
    # When the submit worker takes it
    assert world.submit_until_done(task_id) is SubmitOutcome.SUBMITTED
    # Then the second provider made it, and only it was asked to create
    task = world.store.get(task_id)
    assert task.provider == "second" and task.status is TaskStatus.SUBMITTED
    assert world.first.creates == [] and len(world.second.creates) == 1
    assert task.create_attempts == 1
    assert task.routing.failovers[0].provider == "first" and task.routing.failovers[0].code == "INSUFFICIENT_BALANCE"
    assert "failed over to second" in task.routing.reason
    # and the callback URL is the second provider's
    assert "/callbacks/second/" in world.second.creates[0][1]


@pytest.mark.parametrize(
    "refusal", [InsufficientBalance("1012", provider="first"), ProviderAuthError("401", provider="first")]
)
def test_a_create_answered_with_a_refusal_fails_over_and_does_not_count_as_sent(world: Any, refusal: Exception) -> None:
    world.first.create_error = refusal
    task_id = world.queued()
    assert world.submit_until_done(task_id) is SubmitOutcome.SUBMITTED
    task = world.store.get(task_id)
    assert task.provider == "second" and len(world.first.creates) == 1 and len(world.second.creates) == 1
    assert task.create_attempts == 1  # the refused create made nothing


def test_a_create_whose_outcome_is_unknown_never_fails_over(world: Any) -> None:
    world.first.create_error = CreateOutcomeUnknown("read timeout", provider="first")
    task_id = world.queued()
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD
    task = world.store.get(task_id)
    assert task.provider == "first" and task.create_outcome_unknown and world.second.creates == []


def test_a_5xx_create_the_provider_list_does_not_show_fails_over_instead_of_being_resent(world: Any) -> None:
    # Given the first provider can list its tasks, and answered the create with a 500
    world.first.finds_lost_creates = True
    world.first.create_error = CreateServerError("500", provider="first")
    task_id = world.queued()
    with pytest.raises(RetryLater):  # held: the message comes back when the hold ends
        world.submitter.submit(task_id)
    # When its hold has ended and the list shows nothing
    task = world.store.get(task_id)
    world.store.update(task, create_sent_at=utcnow() - timedelta(hours=1), held_at=utcnow() - timedelta(hours=1))
    with pytest.raises(RetryLater):
        world.submitter.recover(world.store.get(task_id))
    # Then it was not sent to the first again: the second makes it
    assert world.submit_until_done(task_id) is SubmitOutcome.SUBMITTED
    task = world.store.get(task_id)
    assert len(world.first.creates) == 1 and len(world.second.creates) == 1 and task.provider == "second"
    assert task.create_hold is None and not task.create_outcome_unknown


def test_a_5xx_create_held_by_a_provider_without_a_task_list_stays_with_it(world: Any) -> None:
    world.first.create_error = CreateServerError("500", provider="first")
    task_id = world.queued()
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    task = world.store.get(task_id)
    world.store.update(task, create_sent_at=utcnow() - timedelta(hours=1), held_at=utcnow() - timedelta(hours=1))
    # After the hold, a provider without a task list has it sent once more, to itself (the money rule's re-send)
    world.first.create_error = None
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    task = world.store.get(task_id)
    assert task.provider == "first" and len(world.first.creates) == 2 and world.second.creates == []


def test_no_capacity_fails_an_auto_task_over_but_a_named_task_waits(world: Any) -> None:
    world.first.preflight_error = NoCapacity("no slot after 30 s", provider="first", waited_seconds=30)
    named = world.queued("first")
    with pytest.raises(RetryLater) as retry:
        world.submitter.submit(named)
    assert retry.value.seconds > 0 and world.store.get(named).provider == "first"
    routed = world.queued()
    assert world.submit_until_done(routed) is SubmitOutcome.SUBMITTED
    assert world.store.get(routed).routing.failovers[0].code == "PROVIDER_AT_CAPACITY"


@pytest.mark.parametrize("wait", [0.0, 300.0])
def test_an_auto_task_waiting_for_a_slot_past_the_capacity_wait_fails_over_and_a_named_one_waits_on(
    aws: dict[str, str], wait: float
) -> None:
    from reelay.governor import Governor, ProviderLimits
    from reelay.governor_store import GovernorStore

    # Given a first provider with one slot, taken, whose capacity wait is ``wait`` seconds
    first = FakeProvider(config("first", priority=1, capacity_wait_seconds=wait))
    second = FakeProvider(config("second", priority=2))
    providers = catalog(first, second)
    store = DynamoTaskStore("tasks", due=Deadlines((first.config, second.config)).due)
    sent: list[str] = []
    governor = Governor(GovernorStore("tasks"), {"first": ProviderLimits(max_in_flight=1)}, dispatch=sent.append)
    tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]))
    submitter = Submitter(
        store, providers, tracker, Starter(), tokens=None, callback_base_url=None, governor=governor
    )  # fmt: skip
    tasks = TaskService(store, providers, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
    holder = tasks.create(VideoRequest(provider="first", prompt="a cat"))[0].id
    assert submitter.submit(holder) is SubmitOutcome.SUBMITTED
    routed = tasks.create(VideoRequest(provider=AUTO, prompt="a dog"))[0].id
    named = tasks.create(VideoRequest(provider="first", prompt="a fox"))[0].id
    assert submitter.submit(routed) is SubmitOutcome.WAITING and submitter.submit(named) is SubmitOutcome.WAITING
    # When reconcile looks at the waiting tasks (at their due time: twice the typical time)
    deadlines = Deadlines((first.config, second.config))
    reconciler = Reconciler(
        store,
        providers,
        tracker,
        submitter,
        deadlines,
        submit_queue=TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        ingest_queue=TaskQueue(aws["INGEST_QUEUE_URL"]),
        governor=governor,
        clock=lambda: utcnow() + timedelta(minutes=7),
    )
    drain(aws["SUBMIT_QUEUE_URL"])
    counts = reconciler.run()
    assert governor.is_waiting(store.get(named))  # a named task never fails over
    if wait:
        # Then, before the wait is over, the auto task waits on in its place
        assert counts == {"waiting_for_slot": 2, "status_checked": 1}  # and the holder's callback check
        assert governor.is_waiting(store.get(routed)) and store.get(routed).provider == "first"
        return
    # Then, past it, the auto task left the first's line for the second, without a create at the first
    assert counts == {"capacity_failover": 1, "waiting_for_slot": 1, "status_checked": 1}
    assert [m["task_id"] for m in drain(aws["SUBMIT_QUEUE_URL"])] == [routed]
    task = store.get(routed)
    assert task.provider == "second" and not governor.is_waiting(task)
    assert task.routing is not None and task.routing.failovers[0].code == "PROVIDER_AT_CAPACITY"
    assert "no free slot at first" in task.routing.failovers[0].message
    assert submitter.submit(routed) is SubmitOutcome.SUBMITTED
    assert len(first.creates) == 1 and len(second.creates) == 1  # the holder's, and the failed-over task's
    # and the slot the holder frees goes to the named task, not to the task that left
    governor.release(store.get(holder).model_copy(update={"status": TaskStatus.FAILED}))
    assert sent == [named]


def test_a_named_provider_out_of_balance_fails_without_failover(world: Any) -> None:
    world.first.preflight_error = InsufficientBalance("balance 0", provider="first")
    task_id = world.queued("first")
    assert world.submitter.submit(task_id) is SubmitOutcome.FAILED
    task = world.store.get(task_id)
    assert task.error.code is ErrorCode.INSUFFICIENT_BALANCE and world.second.creates == []


def test_when_every_candidate_refuses_the_task_fails_with_each_refusal_recorded(world: Any) -> None:
    world.first.preflight_error = InsufficientBalance("balance 0", provider="first")
    world.second.preflight_error = InsufficientBalance("balance 1", provider="second")
    task_id = world.queued()
    assert world.submit_until_done(task_id) is SubmitOutcome.FAILED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is ErrorCode.INSUFFICIENT_BALANCE
    assert [f.provider for f in task.routing.failovers] == ["first"] and task.provider == "second"


def test_a_content_refusal_is_the_request_fault_and_does_not_fail_over(world: Any) -> None:
    world.first.create_error = ContentRefused("no", provider="first")
    task_id = world.queued()
    assert world.submitter.submit(task_id) is SubmitOutcome.FAILED
    assert world.second.creates == []


# ----------------------------------------------------------------- the auto shapes and the settings

# Distinct priorities: a tie would ask sorahk's pricing, over the network.
REAL = tuple(
    provider_config(n, n, "https://x.example", "k", priority=i)
    for i, n in enumerate(("generate_task", "sorahk", "openai_videos"))
)


@pytest.mark.parametrize("configs", [REAL, REAL[:1], REAL[1:2], REAL[2:]], ids=["all", "gt", "sorahk", "openai"])
def test_an_auto_body_fits_a_shape_exactly_when_routing_finds_a_capable_provider(configs: Any) -> None:
    shapes = TypeAdapter(video_body(list(configs)))
    router = Router(ProviderCatalog(configs, factory=lambda c: build_provider(c)))
    for image, pro, resolution, orientation, duration in itertools.product(
        (None, "https://example.com/i.png"),
        (False, True),
        (None, "720p", "1080p"),
        (None, "portrait", "landscape"),
        (None, *range(1, 31)),
    ):
        body = {"provider": AUTO, "prompt": "x", "pro": pro}
        for field, value in (("image_url", image), ("resolution", resolution), ("orientation", orientation)):
            if value is not None:
                body[field] = value
        if duration is not None:
            body["duration"] = duration
        try:
            router.plan(VideoRequest.model_validate(body))
            routable = True
        except RequestInvalid:
            routable = False
        try:
            shapes.validate_python(body)
            fits = True
        except ValidationError:
            fits = False
        assert fits is routable, body


@pytest.mark.parametrize("bad", [{"resolution": {}}, {"orientation": ["portrait"]}, {"resolution": "4k"}])
def test_an_auto_body_with_needs_of_the_wrong_type_is_a_validation_error_not_a_crash(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(video_body(list(REAL))).validate_python({"provider": AUTO, "prompt": "x"} | bad)


def test_the_auto_cells_are_disjoint_and_few() -> None:
    seen: set[tuple[Any, ...]] = set()
    cells = auto_cells(REAL)
    for cell in cells:
        for key in itertools.product([cell.image], cell.pros, cell.resolutions, cell.orientations):
            assert key not in seen
            seen.add(key)
    assert len(cells) <= 8  # merged: each shape costs the document (and the fuzzer) a oneOf branch


def test_priorities_come_from_the_environment_and_an_empty_one_is_unset() -> None:
    environ = {
        "TASK_TABLE_NAME": "t",
        "RESULTS_BUCKET": "b",
        "INGEST_QUEUE_URL": "q",
        "REELAY_PROVIDERS": "sorahk,generate_task",
        "REELAY_SORAHK_BASE_URL": "https://s.example",
        "REELAY_SORAHK_PRIORITY": "2",
        "REELAY_GENERATE_TASK_BASE_URL": "https://g.example",
        "REELAY_GENERATE_TASK_PRIORITY": "",
    }
    settings = Settings.from_environ(environ)
    assert settings.provider("sorahk").priority == 2 and settings.provider("generate_task").priority is None
    with pytest.raises(ConfigurationError):
        Settings.from_environ(environ | {"REELAY_SORAHK_PRIORITY": "first"})
    with pytest.raises(ConfigurationError):
        Settings.from_environ(environ | {"REELAY_PROVIDERS": "auto"})


# ----------------------------------------------------------------- the CLI


def test_the_cli_sends_provider_auto_and_shows_why_the_task_went_where_it_did() -> None:
    import json

    import httpx

    from tests.unit.test_cli import FakeApi, reelay, task

    routing = {
        "requested": "auto",
        "candidates": [{"provider": "sorahk", "priority": 1}, {"provider": "generate_task", "priority": 2}],
        "reason": "sorahk refused before anything was made (INSUFFICIENT_BALANCE); failed over to generate_task",
        "failovers": [
            {
                "provider": "sorahk",
                "code": "INSUFFICIENT_BALANCE",
                "message": "needs 30 cents, balance 0",
                "at": "2025-01-01T00:00:30+00:00",
            }
        ],
    }
    api = FakeApi().on("POST", "/v1/tasks", httpx.Response(202, json=task(routing=routing)))
    run = reelay(api, "submit", "--provider", "auto", "--prompt", "a cat", "--duration", "10")
    assert run.code == 0, run.err
    (sent,) = api.sent("POST", "/v1/tasks")
    assert json.loads(sent.content) == {"provider": "auto", "prompt": "a cat", "duration": 10}
    assert "routing\tsorahk refused before anything was made" in run.out
    assert "refused by\tsorahk: INSUFFICIENT_BALANCE: needs 30 cents, balance 0" in run.out


def test_a_task_waiting_in_line_past_its_providers_deadline_is_not_failed_and_is_sent_when_let_in(
    aws: dict[str, str],
) -> None:
    from reelay.governor import Governor, ProviderLimits
    from reelay.governor_store import GovernorStore

    # Given a provider with one slot (deadline one hour) whose holder is still running, and a
    # task waiting in its line
    first = FakeProvider(config("first", deadline_seconds=3600))
    first.running(10)
    providers = catalog(first)
    deadlines = Deadlines((first.config,))
    now = [utcnow()]
    store = DynamoTaskStore("tasks", due=deadlines.due, clock=lambda: now[0])
    sent: list[str] = []
    governor = Governor(GovernorStore("tasks"), {"first": ProviderLimits(max_in_flight=1)}, dispatch=sent.append)
    tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]), on_terminal=[governor.release])
    submitter = Submitter(
        store, providers, tracker, Starter(), tokens=None, callback_base_url=None, governor=governor
    )  # fmt: skip
    tasks = TaskService(store, providers, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))
    holder = tasks.create(VideoRequest(provider="first", prompt="a cat"))[0].id
    assert submitter.submit(holder) is SubmitOutcome.SUBMITTED
    waiter = tasks.create(VideoRequest(provider="first", prompt="a dog"))[0].id
    assert submitter.submit(waiter) is SubmitOutcome.WAITING
    reconciler = Reconciler(
        store,
        providers,
        tracker,
        submitter,
        deadlines,
        submit_queue=TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        ingest_queue=TaskQueue(aws["INGEST_QUEUE_URL"]),
        governor=governor,
        clock=lambda: now[0],
    )
    drain(aws["SUBMIT_QUEUE_URL"])
    # When reconcile runs past the provider's deadline of both
    now[0] = utcnow() + timedelta(seconds=3601)
    counts = reconciler.run()
    # Then the holder, which reached the provider, fails DEADLINE_EXCEEDED; the waiter, which did
    # not, is not failed (still in line, or let in by the slot the holder freed, whichever this
    # run looked at first): its deadline starts again from the look
    assert counts.pop("deadline_exceeded") == 1 and list(counts.values()) == [1]
    assert set(counts) <= {"waiting_for_slot", "submit_resent"}
    assert store.get(holder).error.code is ErrorCode.DEADLINE_EXCEEDED
    waiting = store.get(waiter)
    assert waiting.status is TaskStatus.QUEUED and waiting.line_seen_at == now[0]
    assert deadlines.deadline(waiting) == now[0] + timedelta(seconds=3600)
    # and the freed slot lets it in: it is sent, with nothing of its wait charged to its deadline
    assert sent == [waiter] and governor.holds_slot(waiting)
    assert submitter.submit(waiter) is SubmitOutcome.SUBMITTED and len(first.creates) == 2
