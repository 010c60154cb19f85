"""End-to-end: signed webhooks verified by the ``standardwebhooks`` library, and one event per ended task.

The stack runs with two loopback receivers (``benchmarks/webhooks.py``): one listed in
``REELAY_ALLOWED_WEBHOOK_HOSTS``, one not. ``REELAY_WEBHOOK_RETRY_SECONDS`` makes the schedule
1 s per wait; ``REELAY_LOCAL_EVENTS_FILE`` records the bus.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.webhooks import Receiver, environment, run, targets_missed
from tests.e2e.conftest import E2E_ENV, Api, running_api

# Webhooks are under test here, not generate_task's limits (the governor's own tests keep them):
# 100 tasks at 60 requests a minute would take minutes of a CI run. "0" is no limit.
UNGOVERNED = {"REELAY_GENERATE_TASK_REQUESTS_PER_MINUTE": "0", "REELAY_GENERATE_TASK_MAX_IN_FLIGHT": "0"}


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[Receiver, Receiver, Path]]:
    receiver, refused = Receiver().start(), Receiver().start()
    events_file = Path(tempfile.mkdtemp(prefix="reelay-e2e-webhooks-")) / "events.jsonl"
    events_file.touch()
    yield receiver, refused, events_file
    receiver.stop()
    refused.stop()


@pytest.fixture(scope="module")
def api(receivers: tuple[Receiver, Receiver, Path]) -> Iterator[Api]:
    receiver, _, events_file = receivers
    with running_api({**E2E_ENV, **environment(receiver, events_file), **UNGOVERNED}) as client:
        yield client


@pytest.mark.timeout(600)
def test_a_hundred_tasks_each_get_one_verified_delivery_across_failures_and_a_rotation(
    api: Api, receivers: tuple[Receiver, Receiver, Path]
) -> None:
    receiver, refused, events_file = receivers
    api.env.sim.configure("generate_task", rate_limit_per_minute=100000, max_concurrent=100000)
    # Given 100 tasks over the three providers, 30 % on a receiver path failing their first two
    # attempts, 10 % failing at the provider, and the owner's secret rotated half-way through
    counts = run(api.http, receiver, refused, events_file, tasks=100, flaky_share=0.3, failed_share=0.1, timeout=420)
    print(json.dumps(counts, indent=1))
    # Then every task ended, and each got exactly one accepted delivery by webhook-id, none to refused
    # URLs, one EventBridge event each on the stack's bus, and the flaky ones show three attempts
    assert targets_missed(counts) == [], counts
    assert counts["flaky"] == 30 and counts["failed"] == 10
    assert counts["dual_signed_verified_by_each"] > 0  # deliveries after the rotation carried both


def test_the_events_file_holds_each_event_as_one_eventbridge_json_line(
    api: Api, receivers: tuple[Receiver, Receiver, Path]
) -> None:
    _, _, events_file = receivers
    body = {"provider": "generate_task", "prompt": "one more", "duration": 4}
    task = api.submit_and_wait(body)
    api.env.stack.drain(timeout=30)
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    mine = [e for e in lines if e["detail"].get("id") == task["id"]]
    assert len(mine) == 1
    (event,) = mine
    assert set(event) >= {"version", "id", "detail-type", "source", "account", "time", "region", "detail"}
    assert (event["source"], event["detail-type"]) == ("reelay", "Task Succeeded")
    assert event["detail"]["outputs"] and all("url" not in o for o in event["detail"]["outputs"])
    assert event in api.env.stack.bus_events  # the stack keeps what it wrote


def test_a_webhook_that_answers_410_is_not_tried_again(api: Api, receivers: tuple[Receiver, Receiver, Path]) -> None:
    receiver, _, _ = receivers
    gone: list[str] = []
    # Given the listed receiver answering 410 on one path
    original = receiver.handle

    def handle(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        if path.startswith("/gone/"):
            gone.append(path)
            return 410, {}
        return original(path, headers, body)

    receiver.handle = handle  # type: ignore[method-assign]
    try:
        body = {"provider": "generate_task", "prompt": "gone", "duration": 4, "webhook_url": receiver.url("/gone/1")}
        task = api.submit_and_wait(body)
        view: dict[str, Any] = {}
        for _ in range(100):
            view = api.task(task["id"])
            if (view.get("webhook") or {}).get("outcome") == "gone":
                break
            time.sleep(0.2)
        time.sleep(3)  # longer than the 1 s schedule: a retry would have come by now
        assert view["webhook"]["outcome"] == "gone"
        assert [a["status"] for a in api.task(task["id"])["webhook"]["attempts"]] == [410]
        assert gone == ["/gone/1"]
    finally:
        receiver.handle = original  # type: ignore[method-assign]


def test_webhook_secret_routes_answer_newest_first(api: Api) -> None:
    before = api.http.get("/v1/webhook-secret").json()["secrets"]
    after = httpx.post(f"{api.env.stack.api_url}/v1/webhook-secret/rotate").json()["secrets"]
    assert after[1] == before[0] and len(after) == 2
