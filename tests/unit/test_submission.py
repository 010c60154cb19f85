"""Submitting to a provider: the paid create happens at most once, 429s never fail a task."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from reelay.aws import PollStarter, ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CreateServerError,
    InsufficientBalance,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRejectedRequest,
    ProviderTaskUnknown,
    ProviderTransientError,
)
from reelay.models import CreateHold, ErrorCode, TaskStatus, VideoRequest, utcnow
from reelay.store import DynamoTaskStore
from reelay.submission import SubmitOutcome, Submitter
from reelay.tasks import TaskService
from reelay.tokens import CallbackTokens
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater
from tests.unit.fakes import FakeProvider, config


class RecordingStarter(PollStarter):
    """Records started executions; ``died`` ones are no longer running."""

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, Any]]] = []
        self.died: set[str] = set()

    def start(self, name: str, payload: dict[str, Any], *, state_machine_arn: str | None = None) -> bool:
        if any(n == name for n, _ in self.started):
            return False
        self.started.append((name, payload))
        return True

    def is_running(self, name: str, *, state_machine_arn: str | None = None) -> bool:
        return any(n == name for n, _ in self.started) and name not in self.died


@pytest.fixture
def world(aws: dict[str, str]) -> Any:
    class World:
        provider = FakeProvider(config("generate_task"))
        store = DynamoTaskStore("tasks")
        catalog = ProviderCatalog((provider.config,), factory=lambda c: World.provider)
        tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]))
        starter = RecordingStarter()
        submitter = Submitter(
            store, catalog, tracker, starter, tokens=CallbackTokens(b"s" * 32), callback_base_url="https://api.example"
        )
        tasks = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results"))

        def queued(self, **kw: Any) -> str:
            return self.tasks.create(VideoRequest(provider="generate_task", prompt="a cat", **kw))[0].id

    return World()


def test_submit_creates_once_with_a_per_task_callback_url(world: Any) -> None:
    task_id = world.queued()
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert world.submitter.submit(task_id) is SubmitOutcome.SKIPPED  # duplicate SQS delivery
    assert len(world.provider.creates) == 1
    sent_id, callback_url = world.provider.creates[0]
    assert sent_id == task_id
    assert callback_url.startswith(f"https://api.example/callbacks/generate_task/{task_id}?t=")
    task = world.store.get(task_id)
    assert task.status is TaskStatus.SUBMITTED and task.provider_task_id == "p-1" and task.cost_cents == 12
    assert world.starter.started == []  # a callback protocol takes no poll path


def test_concurrent_workers_send_one_create(world: Any) -> None:
    task_id = world.queued()

    def deliver(_: int) -> SubmitOutcome | str:
        try:
            return world.submitter.submit(task_id)
        except RetryLater:
            return "retry later"  # it saw another worker's create in flight

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(deliver, range(8)))
    assert len(world.provider.creates) == 1
    assert outcomes.count(SubmitOutcome.SUBMITTED) == 1
    assert set(outcomes) <= {SubmitOutcome.SUBMITTED, SubmitOutcome.SKIPPED, "retry later"}


def test_a_create_claimed_by_a_worker_that_died_is_recovered_not_resent(world: Any) -> None:
    world.provider.finds_lost_creates = True
    task_id = world.queued()
    task = world.store.get(task_id)
    # A worker marked the create sent, then died before recording the answer.
    world.store.update(task, create_sent_at=utcnow() - timedelta(minutes=2), create_attempts=1)
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD  # unknown: looked for, not re-sent
    assert world.provider.creates == []
    assert world.store.get(task_id).create_hold is CreateHold.NO_ANSWER
    world.provider.found = "p-9"
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert world.store.get(task_id).provider_task_id == "p-9" and world.provider.creates == []


def test_poll_protocol_starts_one_execution_named_by_task(world: Any) -> None:
    world.provider.supports_callbacks = False
    task_id = world.queued()
    world.submitter.submit(task_id)
    assert [name for name, _ in world.starter.started] == [task_id]
    payload = world.starter.started[0][1]
    assert payload["task_id"] == task_id and payload["wait_seconds"] >= 1


def test_rate_limited_create_is_retried_later_and_never_fails_the_task(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = ProviderRateLimited("slow down", provider="generate_task", retry_after=7)
    with pytest.raises(RetryLater) as info:
        world.submitter.submit(task_id)
    assert info.value.seconds == 7
    task = world.store.get(task_id)
    assert task.status is TaskStatus.QUEUED and task.create_sent_at is None  # claim released
    world.provider.create_error = None
    assert world.submitter.submit(task_id, attempt=1) is SubmitOutcome.SUBMITTED
    assert len(world.provider.creates) == 2  # the 429'd one made no task at the provider


def test_server_error_is_retried_with_backoff(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = ProviderTransientError("HTTP 503", provider="generate_task")
    with pytest.raises(RetryLater) as info:
        world.submitter.submit(task_id, attempt=3)
    assert 1 <= info.value.seconds <= 300
    assert world.store.get(task_id).status is TaskStatus.QUEUED


def test_lost_create_answer_holds_the_task_and_never_resends(world: Any) -> None:
    world.provider.finds_lost_creates = True
    task_id = world.queued()
    world.provider.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD  # reconcile comes back to look again
    world.provider.create_error = None
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD  # redelivery: still not re-sent
    assert len(world.provider.creates) == 1
    task = world.store.get(task_id)
    assert task.status is TaskStatus.QUEUED and task.create_outcome_unknown
    # The provider's task list finds it: adopted without a second create.
    world.provider.found = "p-found"
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert world.store.get(task_id).provider_task_id == "p-found"
    assert len(world.provider.creates) == 1


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            ProviderAuthError("generate_task rejected reelay's credential (401)", provider="generate_task"),
            ErrorCode.PROVIDER_AUTH,
        ),
        (InsufficientBalance("balance 3 cents, needs 30", provider="generate_task"), ErrorCode.INSUFFICIENT_BALANCE),
        (ProviderRejectedRequest("prompt too long", provider="generate_task"), ErrorCode.PROVIDER_REJECTED),
    ],
)
def test_permanent_create_errors_fail_the_task_with_a_stable_code(
    world: Any, error: Exception, code: ErrorCode
) -> None:
    task_id = world.queued()
    world.provider.create_error = error
    assert world.submitter.submit(task_id) is SubmitOutcome.FAILED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error.code is code
    assert "k-secret" not in task.error.message


def test_preflight_failure_fails_before_any_paid_call(world: Any) -> None:
    task_id = world.queued()
    world.provider.preflight_error = InsufficientBalance("needs 30 cents, balance 3", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.FAILED
    assert world.provider.creates == []
    assert world.store.get(task_id).error.code is ErrorCode.INSUFFICIENT_BALANCE


def _adopted_by_callback(world: Any, task_id: str, provider_task_id: str) -> None:
    """What the callback receiver does when a callback names the task's provider task."""
    task = world.store.get(task_id)
    world.store.claim_provider_task("generate_task", provider_task_id, task_id)
    world.store.transition(
        task, TaskStatus.SUBMITTED, reason="confirmed by callback", provider_task_id=provider_task_id
    )


def _age_the_create(world: Any, task_id: str, seconds: float) -> None:
    """Pretend the task's (last) create was sent, and a hold's answer came, ``seconds`` ago."""
    task = world.store.get(task_id)
    ago = utcnow() - timedelta(seconds=seconds)
    world.store.update(task, create_sent_at=ago, first_create_sent_at=ago, held_at=ago if task.held_at else None)


def test_a_5xx_create_the_task_list_never_shows_is_sent_once_more_after_the_hold(world: Any) -> None:
    world.provider.finds_lost_creates = True
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    with pytest.raises(RetryLater) as held:  # the message comes back when the hold ends
        world.submitter.submit(task_id)
    assert held.value.seconds >= 2 * world.provider.config.typical_seconds
    world.provider.create_error = None
    with pytest.raises(RetryLater):  # within the hold: only looked for
        world.submitter.submit(task_id)
    assert len(world.provider.creates) == 1
    _age_the_create(world, task_id, 2 * world.provider.config.typical_seconds + 1)
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert len(world.provider.creates) == 2  # the list showed nothing: the provider never made it
    task = world.store.get(task_id)
    assert task.create_attempts == 2 and not task.possible_duplicate_charge


def test_a_5xx_create_found_in_the_task_list_is_adopted_not_resent(world: Any) -> None:
    world.provider.finds_lost_creates = True
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    world.provider.found = "p-made-anyway"
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert len(world.provider.creates) == 1
    assert world.store.get(task_id).provider_task_id == "p-made-anyway"
    # The list was asked only for tasks made since our first send.
    assert world.provider.find_calls[0] == world.store.get(task_id).first_create_sent_at


def test_a_timed_out_create_the_task_list_never_shows_fails_unconfirmed_and_is_never_resent(world: Any) -> None:
    world.provider.finds_lost_creates = True
    task_id = world.queued()
    world.provider.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD
    _age_the_create(world, task_id, 2 * world.provider.config.typical_seconds + 1)
    assert world.submitter.submit(task_id) is SubmitOutcome.FAILED
    task = world.store.get(task_id)
    assert len(world.provider.creates) == 1
    assert task.error.code is ErrorCode.CREATE_UNCONFIRMED and "no charge is likely" in task.error.message


def test_a_provider_task_owned_by_another_reelay_task_is_never_adopted(world: Any) -> None:
    world.provider.finds_lost_creates = True
    first = world.queued()
    assert world.submitter.submit(first) is SubmitOutcome.SUBMITTED  # owns p-1
    second = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    world.provider.found = "p-1"  # the list shows the first task's job: same prompt, right time
    with pytest.raises(RetryLater):
        world.submitter.submit(second)
    assert world.store.get(second).provider_task_id is None


def test_a_5xx_create_on_a_callback_protocol_is_held_then_resent_once(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 502", provider="generate_task")
    with pytest.raises(RetryLater):  # held: a callback naming our task may come
        world.submitter.submit(task_id)
    world.provider.create_error = None
    _age_the_create(world, task_id, 2 * world.provider.config.typical_seconds + 1)
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert len(world.provider.creates) == 2


def test_a_5xx_create_answered_slowly_is_held_twice_the_typical_time_from_its_answer(world: Any) -> None:
    # Given a create the provider took long to answer with a 500 (it may have made the task,
    # whose callback is then due about a typical time after the answer, not after the send)
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    world.provider.create_error = None
    hold = 2 * world.provider.config.typical_seconds
    ago = utcnow() - timedelta(seconds=hold + 1)  # sent long ago: the answer came just now
    world.store.update(world.store.get(task_id), create_sent_at=ago, first_create_sent_at=ago)
    # Then the hold still runs, counted from the answer: no second create
    with pytest.raises(RetryLater) as held:
        world.submitter.submit(task_id)
    assert hold - 1 <= held.value.seconds <= hold + 1
    assert len(world.provider.creates) == 1
    # And once the hold has passed since the answer, the create is sent once more
    task = world.store.get(task_id)
    world.store.update(task, held_at=utcnow() - timedelta(seconds=hold + 1))
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert len(world.provider.creates) == 2
    assert world.store.get(task_id).held_at is None


def test_a_callback_hint_outlives_the_hold_written_while_its_status_check_ran(world: Any) -> None:
    from reelay.callbacks import CallbackReceiver

    # Given a create in flight whose provider task calls back before its 5xx answer is in: the
    # callback reads the task, its status check is held back by the request limit, and the
    # submit worker writes the hold meanwhile
    task_id = world.queued()
    task = world.store.get(task_id)
    world.store.update(task, create_sent_at=utcnow(), first_create_sent_at=utcnow(), create_attempts=1)
    tokens = CallbackTokens(b"s" * 32)
    receiver = CallbackReceiver(world.store, world.catalog, tokens, world.tracker)

    def submitter_holds(_: str) -> None:
        current = world.store.get(task_id)
        world.store.update(current, create_outcome_unknown=True, create_hold=CreateHold.SERVER_ERROR, held_at=utcnow())

    world.provider.on_status = submitter_holds
    world.provider.status_error = ProviderRateLimited("slow down", provider="generate_task")
    body = json.dumps({"taskId": "p-made", "state": "success"}).encode()
    with pytest.raises(ProviderRateLimited):
        receiver.receive("generate_task", task_id, tokens.token("generate_task", task_id), body)
    # Then the hint is kept on the held task, and when the hold ends the named task is adopted
    # instead of a second create being sent
    held = world.store.get(task_id)
    assert held.create_hold is CreateHold.SERVER_ERROR and held.callback_provider_task_id == "p-made"
    world.provider.on_status = None
    world.provider.status_error = None
    world.provider.succeed("https://cdn.example/v.mp4")
    world.store.update(held, held_at=utcnow() - timedelta(seconds=2 * world.provider.config.typical_seconds + 1))
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert world.store.get(task_id).provider_task_id == "p-made"
    assert world.provider.creates == []


def test_a_newer_callback_hint_written_while_an_unknown_one_is_checked_is_checked_next(world: Any) -> None:
    # Given a held create whose callback hint the provider does not know, and a second callback
    # naming the real task while that hint's status is asked
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    world.provider.create_error = None
    world.store.update(world.store.get(task_id), callback_provider_task_id="p-stale")

    def unknown_then_a_newer_hint(provider_task_id: str) -> None:
        if provider_task_id == "p-stale":
            world.store.update(world.store.get(task_id), callback_provider_task_id="p-made")
            raise ProviderTaskUnknown("no such task", provider="generate_task")

    world.provider.on_status = unknown_then_a_newer_hint
    # Then the stale read's write is not forced: the step comes back, keeping the newer hint
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    assert world.store.get(task_id).callback_provider_task_id == "p-made"
    # And the next look adopts the task it names, with no second create
    world.provider.succeed("https://cdn.example/v.mp4")
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert world.store.get(task_id).provider_task_id == "p-made"
    assert len(world.provider.creates) == 1  # the 5xx'd one


def test_reconciles_last_look_at_a_held_create_keeps_a_hint_written_while_it_checked_another(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD
    world.store.update(world.store.get(task_id), callback_provider_task_id="p-stale")

    def unknown_then_a_newer_hint(provider_task_id: str) -> None:
        world.store.update(world.store.get(task_id), callback_provider_task_id="p-made")
        raise ProviderTaskUnknown("no such task", provider="generate_task")

    world.provider.on_status = unknown_then_a_newer_hint
    assert world.submitter.recover(world.store.get(task_id), final=True) is SubmitOutcome.SKIPPED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.QUEUED and task.callback_provider_task_id == "p-made"


def test_a_5xx_create_where_nothing_can_tell_is_resent_at_most_once_recording_a_possible_second_charge(
    world: Any,
) -> None:
    world.provider.supports_callbacks = False  # no callbacks, no task list: like openai_videos
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    assert world.store.get(task_id).possible_duplicate_charge
    assert world.submitter.submit(task_id, attempt=1) is SubmitOutcome.FAILED  # a second 5xx: not a third
    task = world.store.get(task_id)
    assert len(world.provider.creates) == 2
    assert task.error.code is ErrorCode.CREATE_UNCONFIRMED and "up to 2 tasks" in task.error.message


def test_a_held_create_nothing_settles_fails_unconfirmed_at_the_deadline(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD
    outcome = world.submitter.recover(world.store.get(task_id), final=True)
    assert outcome is SubmitOutcome.FAILED
    task = world.store.get(task_id)
    assert task.error.code is ErrorCode.CREATE_UNCONFIRMED and "a charge may exist" in task.error.message
    assert len(world.provider.creates) == 1


def test_a_callback_adopting_the_task_during_its_create_changes_nothing_and_keeps_the_cost(world: Any) -> None:
    task_id = world.queued()

    # The provider called back (and reelay adopted p-1) before the create's answer arrived.
    world.provider.on_create = lambda _: _adopted_by_callback(world, task_id, "p-1")
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.SUBMITTED and task.provider_task_id == "p-1" and task.cost_cents == 12
    assert len(world.provider.creates) == 1


def test_content_refusal_at_create_is_a_content_policy_failure(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = ContentRefused("refused by moderation", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.FAILED
    assert world.store.get(task_id).error.code is ErrorCode.CONTENT_POLICY


def test_a_redelivered_message_starts_a_poll_execution_that_failed_to_start(world: Any) -> None:
    world.provider.supports_callbacks = False
    task_id = world.queued()

    class Broken(RecordingStarter):
        def start(self, name: str, payload: dict[str, Any], *, state_machine_arn: str | None = None) -> bool:
            raise RuntimeError("states unavailable")

    world.submitter._poll = Broken()
    with pytest.raises(RuntimeError):
        world.submitter.submit(task_id)
    assert world.store.get(task_id).status is TaskStatus.SUBMITTED
    world.submitter._poll = world.starter
    assert world.submitter.submit(task_id) is SubmitOutcome.SKIPPED  # no second create...
    assert [name for name, _ in world.starter.started] == [task_id]  # ...but the poll path runs
    assert len(world.provider.creates) == 1


def test_a_held_create_is_settled_later_by_the_task_a_callback_named_when_its_status_check_failed(
    world: Any, aws: dict[str, str]
) -> None:
    import json

    from reelay.callbacks import CallbackReceiver

    # Given a create whose answer was lost, and the provider's one callback arriving while its
    # status endpoint is rate limiting (reelay answers the callback 503; it is never re-sent)
    task_id = world.queued()
    world.provider.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD
    receiver = CallbackReceiver(world.store, world.catalog, CallbackTokens(b"s" * 32), world.tracker)
    world.provider.status_error = ProviderRateLimited("slow down", provider="generate_task")
    body = json.dumps({"taskId": "p-made", "state": "success"}).encode()
    with pytest.raises(ProviderRateLimited):
        receiver.receive("generate_task", task_id, CallbackTokens(b"s" * 32).token("generate_task", task_id), body)
    held = world.store.get(task_id)
    assert held.status is TaskStatus.QUEUED and held.callback_provider_task_id == "p-made"
    # When the held task is looked at again, with the status endpoint back
    world.provider.status_error = None
    world.provider.succeed("https://cdn.example/v.mp4")
    assert world.submitter.recover(world.store.get(task_id)) is SubmitOutcome.SUBMITTED
    # Then the named task was confirmed, adopted and followed to ingest, with no second create
    task = world.store.get(task_id)
    assert task.provider_task_id == "p-made" and task.status is TaskStatus.INGESTING
    assert len(world.provider.creates) == 1


def test_a_callback_adopting_the_task_before_its_create_times_out_leaves_it_adopted_not_held(world: Any) -> None:
    task_id = world.queued()

    world.provider.on_create = lambda _: _adopted_by_callback(world, task_id, "p-1")
    world.provider.create_error = CreateOutcomeUnknown("read timeout", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.SUBMITTED and not task.create_outcome_unknown


def test_a_held_5xx_create_whose_callback_hint_cannot_be_checked_now_is_not_resent(world: Any) -> None:
    task_id = world.queued()
    world.provider.create_error = CreateServerError("HTTP 500", provider="generate_task")
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    task = world.store.get(task_id)
    world.store.update(task, callback_provider_task_id="p-named")
    _age_the_create(world, task_id, 2 * world.provider.config.typical_seconds + 1)
    world.provider.create_error = None
    world.provider.status_error = ProviderRateLimited("slow down", provider="generate_task")
    assert world.submitter.submit(task_id) is SubmitOutcome.HELD  # a callback said it exists
    assert len(world.provider.creates) == 1


def test_a_429_create_releases_its_claim_even_when_reconcile_wrote_the_task_meanwhile(world: Any) -> None:
    # Given reconcile recording a look at the task while its create is being answered 429
    task_id = world.queued()

    def reconcile_looks(_: str) -> None:
        task = world.store.get(task_id)
        world.store.update(task, reconciled_at=utcnow(), reconcile_count=task.reconcile_count + 1)

    world.provider.on_create = reconcile_looks
    world.provider.create_error = ProviderRateLimited("slow down", provider="generate_task", retry_after=3)
    with pytest.raises(RetryLater):
        world.submitter.submit(task_id)
    # Then the claim is released (nothing was made), so the next delivery sends the create
    task = world.store.get(task_id)
    assert task.create_sent_at is None and task.create_attempts == 0 and not task.create_outcome_unknown
    world.provider.on_create = None
    world.provider.create_error = None
    assert world.submitter.submit(task_id, attempt=1) is SubmitOutcome.SUBMITTED


def test_a_create_answered_while_reconcile_wrote_the_task_is_recorded_not_lost(world: Any) -> None:
    # Given reconcile recording a look at the task while its create is being answered (accepted)
    task_id = world.queued()

    def reconcile_looks(_: str) -> None:
        task = world.store.get(task_id)
        world.store.update(task, reconciled_at=utcnow(), reconcile_count=task.reconcile_count + 1)

    world.provider.on_create = reconcile_looks
    # Then the answer is recorded on the task as it now stands: submitted with its provider task
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.SUBMITTED and task.provider_task_id == "p-1" and task.reconcile_count == 1
    assert len(world.provider.creates) == 1


def test_a_write_that_claims_nothing_does_not_stop_the_create(world: Any) -> None:
    # Given reconcile recording a look between the worker's read and its claim
    task_id = world.queued()
    real_update = world.store.update
    looked = []

    def update(task: Any, **changes: Any) -> Any:
        if "create_sent_at" in changes and not looked:
            looked.append(real_update(world.store.get(task_id), reconciled_at=utcnow()))
        return real_update(task, **changes)

    world.store.update = update
    # Then the claim is retried on the fresh task, and the create is sent once
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert len(world.provider.creates) == 1 and looked


def test_a_look_message_asks_a_callback_tasks_status_once_and_applies_it(world: Any) -> None:
    # The callback receiver hands over a status check its request limit held back.
    task_id = world.queued()
    assert world.submitter.submit(task_id) is SubmitOutcome.SUBMITTED
    assert world.submitter.submit(task_id) is SubmitOutcome.SKIPPED  # a duplicate submit asks nothing
    assert world.provider.status_calls == []
    world.provider.status_error = ProviderRateLimited("held", provider="generate_task", retry_after=1.4)
    with pytest.raises(RetryLater) as retry:
        world.submitter.look(task_id, attempt=1)
    assert retry.value.seconds == 2  # back when the log has room (rounded up, never early)
    world.provider.status_error = None
    world.provider.succeed("https://cdn.provider.example/v.mp4")
    assert world.submitter.look(task_id, attempt=2) is SubmitOutcome.LOOKED
    task = world.store.get(task_id)
    assert task.status is TaskStatus.INGESTING and task.result_urls == ["https://cdn.provider.example/v.mp4"]
    assert len(world.provider.creates) == 1  # a look never creates
    assert world.submitter.look(task_id) is SubmitOutcome.SKIPPED  # no longer at the provider: nothing asked
    assert len(world.provider.status_calls) == 2
    # Held back too often: left to reconcile, which looks at every overdue task.
    other = world.queued()
    world.submitter.submit(other)
    world.provider.status_error = ProviderRateLimited("held", provider="generate_task", retry_after=1.0)
    assert world.submitter.look(other, attempt=5) is SubmitOutcome.SKIPPED
    assert world.store.get(other).status is TaskStatus.SUBMITTED


def test_a_queue_worker_sends_a_message_of_a_kind_to_that_kinds_step_and_drops_an_unknown_kind(
    aws: dict[str, str],
) -> None:
    from reelay.workers import run_batch

    def record(n: int, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": f"m{n}",
            "receiptHandle": f"r{n}",
            "body": json.dumps(body),
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        }

    seen: list[tuple[str, str]] = []
    event = {
        "Records": [
            record(1, {"task_id": "tsk_a"}),
            record(2, {"task_id": "tsk_b", "kind": "look"}),
            record(3, {"task_id": "tsk_c", "kind": "unheard-of"}),
        ]
    }
    answer = run_batch(
        event,
        None,
        queue=TaskQueue(aws["SUBMIT_QUEUE_URL"]),
        handle=lambda task_id, attempt: seen.append(("submit", task_id)),
        by_kind={"look": lambda task_id, attempt: seen.append(("look", task_id))},
    )
    assert seen == [("submit", "tsk_a"), ("look", "tsk_b")]
    assert answer == {"batchItemFailures": []}  # the unknown kind is dropped, not retried forever
