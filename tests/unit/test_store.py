"""TaskStore on DynamoDB (moto): conditional transitions, history, idempotency, paging."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from reelay.errors import IdempotencyConflict, TaskNotFound, TransitionConflict
from reelay.models import Task, TaskStatus, utcnow
from reelay.store import DynamoTaskStore
from reelay.tasks import new_task_id


def _task(**kw: object) -> Task:
    now = utcnow()
    fields: dict[str, object] = {
        "id": new_task_id(),
        "provider": "p",
        "protocol": "p",
        "request": {"prompt": "x", "duration": 4},
        "created_at": now,
        "updated_at": now,
    }
    return Task(**(fields | kw))  # type: ignore[arg-type]


def test_transition_records_history_and_bumps_version(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    task, created = store.create(_task())
    assert created
    moved = store.transition(task, TaskStatus.SUBMITTED, reason="accepted", provider_task_id="p-1")
    again = store.get(task.id)
    assert again.status is TaskStatus.SUBMITTED and again.provider_task_id == "p-1"
    assert again.version == task.version + 1 == moved.version
    assert [(h.from_status, h.to_status) for h in again.history] == [(TaskStatus.QUEUED, TaskStatus.SUBMITTED)]
    assert again.request == {"prompt": "x", "duration": 4}


def test_a_stale_writer_loses(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    task, _ = store.create(_task())
    store.transition(task, TaskStatus.SUBMITTED, reason="first")
    with pytest.raises(TransitionConflict):
        store.transition(task, TaskStatus.FAILED, reason="stale")
    assert store.get(task.id).status is TaskStatus.SUBMITTED


def test_terminal_tasks_never_move(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    task, _ = store.create(_task())
    failed = store.transition(task, TaskStatus.FAILED, reason="x")
    for to in TaskStatus:
        with pytest.raises(TransitionConflict):
            store.transition(failed, to, reason="again")
    with pytest.raises(TransitionConflict):
        store.update(failed, progress=50)


def test_concurrent_transitions_have_exactly_one_winner(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    task, _ = store.create(_task(status=TaskStatus.RUNNING))

    def attempt(_: int) -> bool:
        try:
            store.transition(task, TaskStatus.INGESTING, reason="race")
            return True
        except TransitionConflict:
            return False

    with ThreadPoolExecutor(max_workers=16) as pool:
        wins = list(pool.map(attempt, range(32)))
    assert wins.count(True) == 1
    assert len(store.get(task.id).history) == 1


def test_idempotent_create_replays_and_conflicts(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    first, created = store.create(_task(), idempotency_scope="me#k", request_hash="h1")
    replay, created_again = store.create(_task(), idempotency_scope="me#k", request_hash="h1")
    assert created and not created_again and replay.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.create(_task(), idempotency_scope="me#k", request_hash="h2")
    other, created_other = store.create(_task(), idempotency_scope="you#k", request_hash="h2")
    assert created_other and other.id != first.id


def test_missing_task_is_not_found(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    with pytest.raises(TaskNotFound):
        store.get("tsk_nope")


def test_due_index_holds_only_non_terminal_tasks(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    live, _ = store.create(_task())
    done, _ = store.create(_task())
    store.transition(done, TaskStatus.FAILED, reason="x")
    due, cursor = store.due(before=datetime(9999, 1, 1, tzinfo=UTC), limit=10)
    assert due == [live.id] and cursor is None


def test_a_provider_task_is_owned_by_the_first_task_that_claims_it(aws: dict[str, str]) -> None:
    store = DynamoTaskStore("tasks")
    assert store.claim_provider_task("sorahk", "p-1", "tsk_a") == "tsk_a"
    assert store.claim_provider_task("sorahk", "p-1", "tsk_a") == "tsk_a"  # idempotent for its owner
    assert store.claim_provider_task("sorahk", "p-1", "tsk_b") == "tsk_a"  # never a second owner
    assert store.claim_provider_task("openai_videos", "p-1", "tsk_b") == "tsk_b"  # ids are per provider


def _listed(store: DynamoTaskStore, **query: object) -> list[list[str]]:
    pages, after = [], None
    while True:
        tasks, after = store.list(owner="local", limit=2, after=after, **query)  # type: ignore[arg-type]
        pages.append([t.id for t in tasks])
        if after is None:
            return pages


def test_a_filtered_listing_fills_its_pages_from_the_one_owner_index(aws: dict[str, str]) -> None:
    from datetime import timedelta

    store = DynamoTaskStore("tasks")
    start = utcnow()
    ids = []
    for n in range(25):
        at = start + timedelta(seconds=n)
        status = TaskStatus.FAILED if n % 5 == 0 else TaskStatus.QUEUED
        task, _ = store.create(_task(created_at=at, updated_at=at, status=status, provider="a" if n % 2 else "b"))
        ids.append(task.id)
    failed = [ids[n] for n in (20, 15, 10, 5, 0)]  # newest first
    # Full pages of matches, though four in five index entries between them do not match
    assert _listed(store, status=TaskStatus.FAILED, provider=None) == [failed[:2], failed[2:4], failed[4:]]
    both = [ids[n] for n in (15, 5)]  # failed and provider "a" (odd n)
    assert _listed(store, status=TaskStatus.FAILED, provider="a") == [both]
    assert sum(map(len, _listed(store, status=None, provider="b"))) == 13


def test_a_listing_of_rare_matches_stops_at_its_evaluation_cap_and_resumes(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from reelay import store as module

    monkeypatch.setattr(module, "FILTERED_PAGE", 3)
    monkeypatch.setattr(module, "LIST_QUERIES", 2)
    store = DynamoTaskStore("tasks")
    start = utcnow()
    made = []
    for n in range(14):
        at = start + timedelta(seconds=n)
        status = TaskStatus.FAILED if n == 0 else TaskStatus.QUEUED
        made.append(store.create(_task(created_at=at, updated_at=at, status=status))[0].id)
    # Each call evaluates at most 2 x 3 entries: the one match (the oldest) comes on the third page
    pages = _listed(store, status=TaskStatus.FAILED, provider=None)
    assert pages[:2] == [[], []] and [made[0]] in pages


def test_moving_a_due_entry_writes_no_new_version_and_yields_to_a_newer_write(aws: dict[str, str]) -> None:
    from datetime import timedelta

    due = [utcnow() + timedelta(minutes=1)]
    store = DynamoTaskStore("tasks", due=lambda task: due[0])
    task, _ = store.create(_task())
    due[0] = utcnow() + timedelta(minutes=9)
    store.move_due(task)
    moved = store.get(task.id)
    assert moved.version == task.version and moved.stored_due == due[0].isoformat()
    # A writer holding the task from before the move still writes (no conflict)
    store.update(task, progress=5)
    # And a move from a stale copy changes nothing
    due[0] = utcnow() + timedelta(minutes=30)
    store.move_due(task)
    assert store.get(task.id).stored_due != due[0].isoformat()


def test_a_page_longer_than_one_batch_read_is_read_whole(aws: dict[str, str]) -> None:
    # GET /v1/videos?limit=100 asks the store for 101 (to know whether more follow); DynamoDB (and
    # moto) take at most 100 keys in one BatchGetItem
    store = DynamoTaskStore("tasks")
    for _ in range(101):
        store.create(_task())
    tasks, _ = store.list(owner="local", status=None, provider=None, limit=101)
    assert len({t.id for t in tasks}) == 101


def test_a_task_item_keeps_its_keys_plain_and_the_rest_in_one_compressed_document(aws: dict[str, str]) -> None:
    import boto3

    store = DynamoTaskStore("tasks")
    task, _ = store.create(_task(request={"prompt": "a lighthouse at dusk " * 20, "duration": 4}))
    task = store.transition(task, TaskStatus.SUBMITTED, reason="provider accepted", provider_task_id="pt_1")
    table = boto3.resource("dynamodb").Table("tasks")
    item = table.get_item(Key={"pk": f"TASK#{task.id}", "sk": "TASK"})["Item"]
    assert set(item) == {"pk", "sk", "status", "version", "owner", "provider", "doc", "created_key", "due_pk", "due_at"}
    assert item["status"] == "submitted" and item["version"] == task.version
    assert len(item["doc"].value) < 400  # the 400-character prompt and the rest, compressed
    assert store.get(task.id) == task
    # An item written before the document (every field plain) is read as it is, and rewritten
    # in the new layout by its next write.
    legacy = {
        **task.model_dump(mode="json", by_alias=True, exclude_none=True),
        "pk": f"TASK#{task.id}",
        "sk": "TASK",
        "created_key": item["created_key"],
        "due_pk": "DUE",
        "due_at": item["due_at"],
    }
    table.put_item(Item=legacy)
    old = store.get(task.id)
    assert old == task
    assert store.due(before=datetime(9999, 1, 1, tzinfo=UTC), limit=10) == ([task.id], None)  # the legacy partition
    store.transition(old, TaskStatus.RUNNING, reason="progress")
    assert "doc" in table.get_item(Key={"pk": f"TASK#{task.id}", "sk": "TASK"})["Item"]


def test_due_entries_are_spread_over_partitions_and_read_in_turn_with_a_cursor(aws: dict[str, str]) -> None:
    from reelay.store import DUE_SHARDS, due_partition

    store = DynamoTaskStore("tasks")
    tasks = [store.create(_task())[0] for _ in range(40)]
    # Random ids: 40 leave a partition empty ~4 % of the time, so add more until each has one.
    while len({due_partition(t.id) for t in tasks}) < DUE_SHARDS and len(tasks) < 400:
        tasks.append(store.create(_task())[0])
    assert len({due_partition(t.id) for t in tasks}) == DUE_SHARDS
    before = datetime(9999, 1, 1, tzinfo=UTC)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        ids, cursor = store.due(before=before, limit=7, after=cursor)
        assert len(ids) <= 7
        seen += ids
        pages += 1
        if cursor is None:
            break
    assert sorted(seen) == sorted(t.id for t in tasks) and len(seen) == len(tasks) and pages >= 6
    # A run starts from a partition that rotates each minute, so a run cut short leaves a
    # different partition's tail each time.
    firsts = {store.due(before=datetime(2030, 1, 1, 0, m, tzinfo=UTC), limit=1)[0][0] for m in range(DUE_SHARDS)}
    assert len(firsts) > 1


def test_a_write_keeps_an_entry_still_ahead_but_moves_one_about_to_pass(aws: dict[str, str]) -> None:
    from datetime import timedelta

    from reelay.store import PASSING

    now = [utcnow()]
    due = [now[0] + timedelta(minutes=1)]
    store = DynamoTaskStore("tasks", due=lambda task: due[0], clock=lambda: now[0])
    task, _ = store.create(_task())
    entry = task.stored_due
    # A later due time: the entry still ahead stays (no delete and put in the index)
    due[0] = now[0] + timedelta(minutes=9)
    task = store.update(task, progress=5)
    assert task.stored_due == entry
    # Within PASSING of the entry, the next write moves it: kept, a reconcile run would find the
    # task early seconds later
    now[0] = datetime.fromisoformat(str(entry)) - PASSING + timedelta(seconds=1)
    task = store.update(task, progress=6)
    assert task.stored_due == due[0].isoformat() == store.get(task.id).stored_due
