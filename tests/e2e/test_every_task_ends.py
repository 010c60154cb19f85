"""Every paid task ends: the stuck cases of issue 6, each driven to its terminal state by reconcile.

This module runs its own stack with short provider deadlines (40 s), a 2 s create timeout and
reconcile firing every second (``REELAY_RECONCILE_EVERY_SECONDS``), so each case ends in
seconds. Faults are injected where they happen in AWS: in the simulator (the provider), or in
moto's SQS backend (a failed ``SendMessage``), never by patching reelay.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from moto.sqs import models as sqs_models
from moto.sqs.exceptions import QueueDoesNotExist

from tests.e2e.conftest import Api, running_api
from tests.waiting import wait_for

DEADLINE = 40
ENV = {
    "REELAY_PROVIDERS": "generate_task,sorahk,openai_videos",
    "REELAY_GENERATE_TASK_TIMEOUT_SECONDS": "2",
    "REELAY_OPENAI_VIDEOS_TIMEOUT_SECONDS": "2",
    "REELAY_GENERATE_TASK_DEADLINE_SECONDS": str(DEADLINE),
    "REELAY_OPENAI_VIDEOS_DEADLINE_SECONDS": str(DEADLINE),
    "REELAY_SORAHK_DEADLINE_SECONDS": str(DEADLINE),
    "REELAY_RECONCILE_EVERY_SECONDS": "1",
    "REELAY_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with running_api(ENV, env_overrides={"REELAY_INGEST_STALL_SECONDS": "3"}) as client:
        yield client


@contextlib.contextmanager
def failing_sends(queue_logical_id: str, api: Api, *, times: int = 1) -> Iterator[list[str]]:
    """The next ``times`` SendMessage calls to that queue fail at SQS (moto's backend)."""
    queue_name = str(api.env.stack.resources[queue_logical_id]).rsplit("/", 1)[-1]
    original = sqs_models.SQSBackend.send_message
    failed: list[str] = []
    lock = threading.Lock()

    def send_message(backend: Any, name: str, body: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            fail = name == queue_name and len(failed) < times
            if fail:
                failed.append(body)
        if fail:
            raise QueueDoesNotExist()
        return original(backend, name, body, *args, **kwargs)

    sqs_models.SQSBackend.send_message = send_message  # type: ignore[method-assign]
    try:
        yield failed
    finally:
        sqs_models.SQSBackend.send_message = original  # type: ignore[method-assign]


def creates(api: Api, protocol: str) -> list[dict[str, Any]]:
    return api.sim_requests(kind="create", protocol=protocol)


def assert_one_object_per_output(api: Api, task: dict[str, Any]) -> None:
    assert task["status"] == "succeeded", task["error"]
    assert len(api.objects(task["id"])) == len(task["outputs"]) == 1


def test_a_submit_message_that_failed_to_send_is_sent_again_by_reconcile(api: Api) -> None:
    # Given SQS refusing the API's submit message once, after the task was stored
    with failing_sends("SubmitQueue", api) as failed:
        response = api.create({"provider": "generate_task", "prompt": "lost submit", "duration": 4})
    # Then the client still got its task (it is stored), and reconcile sent the message again
    assert response.status_code == 202, response.text
    assert len(failed) == 1
    task = api.wait(response.json()["id"], timeout=DEADLINE + 20)
    assert_one_object_per_output(api, task)


def test_an_ingest_message_that_failed_to_send_is_sent_again_by_reconcile(api: Api) -> None:
    # Given SQS refusing the ingest message once, after the task moved to ingesting
    with failing_sends("IngestQueue", api) as failed:
        response = api.create({"provider": "generate_task", "prompt": "lost ingest", "duration": 4})
        assert response.status_code == 202, response.text
        # (the send comes a moment after the move to ingesting: wait for the send itself)
        wait_for(lambda: len(failed) == 1, timeout=30)
    # Then reconcile found the stalled ingest and sent it again
    assert len(failed) == 1
    task = api.wait(response.json()["id"], timeout=30)
    assert_one_object_per_output(api, task)


def test_a_callback_that_never_arrives_ends_by_reconciles_status_check(api: Api) -> None:
    # Given a provider that never calls back
    api.env.sim.configure("generate_task", callback_mode="never")
    # When a task runs through it
    task = api.submit_and_wait({"provider": "generate_task", "prompt": "no callback", "duration": 4}, timeout=40)
    # Then reconcile asked the status endpoint and the result landed in S3
    assert_one_object_per_output(api, task)
    assert api.env.sim.callback_deliveries == []
    assert len(creates(api, "generate_task")) == 1


def test_a_task_whose_only_callback_got_a_503_ends_by_reconcile(api: Api) -> None:
    # Given a provider that calls back once, and whose status endpoint fails at that moment
    # (so reelay answers the callback 503), and which never delivers it again
    api.env.sim.configure("generate_task", force={"status": [503]})
    task = api.submit_and_wait({"provider": "generate_task", "prompt": "one callback", "duration": 4}, timeout=40)
    # Then the task still succeeded, through reconcile's status check
    assert_one_object_per_output(api, task)
    assert [d["status_code"] for d in api.env.sim.callback_deliveries] == [503]


def test_a_create_that_hangs_past_its_timeout_is_held_and_adopted_by_the_callback_naming_it(api: Api) -> None:
    # Given a create the provider takes but answers only after reelay's 2 s timeout
    api.env.sim.configure("generate_task", create_hang_seconds=4)
    task = api.submit_and_wait({"provider": "generate_task", "prompt": "slow create", "duration": 4}, timeout=40)
    # Then the task was never re-sent, and the callback that names it settled it
    assert_one_object_per_output(api, task)
    assert len(creates(api, "generate_task")) == 1
    assert [t["id"] for t in api.env.sim.tasks("generate_task")] == [task["provider_task_id"]]


@pytest.mark.parametrize("protocol", ["generate_task", "openai_videos"])
def test_a_create_that_hangs_and_is_never_confirmed_fails_create_unconfirmed_at_the_deadline(
    api: Api, protocol: str
) -> None:
    # Given a create the provider takes but never answers in time, and nothing that names it later
    api.env.sim.configure(protocol, create_hang_seconds=4)
    if protocol == "generate_task":
        api.env.sim.configure(protocol, callback_mode="never")
    body: dict[str, Any] = {"provider": protocol, "prompt": "unconfirmed create"}
    task = api.submit_and_wait(body, timeout=DEADLINE + 30)
    # Then it ends at the provider's deadline with a code and a message that says a charge may exist
    assert task["status"] == "failed"
    assert task["error"]["code"] == "CREATE_UNCONFIRMED"
    assert "a charge may exist" in task["error"]["message"] and protocol in task["error"]["message"]
    assert len(creates(api, protocol)) == 1  # held, never re-sent


def test_two_same_prompt_sorahk_requests_each_get_their_own_video_when_the_second_create_is_a_5xx(
    api: Api,
) -> None:
    # Given a sorahk task for a prompt, already made at the provider
    prompt = "the same prompt, asked twice"
    first = api.create({"provider": "sorahk", "prompt": prompt})
    assert first.status_code == 202, first.text
    api.wait(first.json()["id"], until=("submitted", "running", "ingesting", "succeeded"), timeout=60)
    # When a second request for the same prompt gets a 500 from the create, with nothing made
    api.env.sim.configure("sorahk", fail_next=1)
    second = api.create({"provider": "sorahk", "prompt": prompt})
    assert second.status_code == 202, second.text
    done = [api.wait(r.json()["id"], timeout=60) for r in (first, second)]
    # Then each task ends with its own provider task and its own video: the second was never
    # given the first's (made before its create was sent, and owned by it)
    assert [t["status"] for t in done] == ["succeeded", "succeeded"], [t["error"] for t in done]
    assert done[0]["provider_task_id"] != done[1]["provider_task_id"]
    for task in done:
        expected = api.env.sim.video_bytes_sha256("sorahk", task["provider_task_id"])
        assert [o["sha256"] for o in task["outputs"]] == [expected]
    assert len(creates(api, "sorahk")) == 3  # the first, the 500'd one, and its one re-send
