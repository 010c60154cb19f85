"""Issue 3, judged end to end: sorahk and openai_videos through the real poll state machine."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import httpx

from tests.e2e.conftest import Api

SORAHK = {"provider": "sorahk", "prompt": "a paper boat on a pond", "duration": 10}
OPENAI = {"provider": "openai_videos", "prompt": "a red kite over hills", "orientation": "landscape"}


def _executions(api: Api, task_id: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", endpoint_url=api.env.stack.aws_endpoint)
    arn = api.env.stack.resources["PollStateMachine"]
    found = sfn.list_executions(stateMachineArn=arn)["executions"]
    return sorted((e for e in found if e["name"].startswith(task_id)), key=lambda e: e["name"])


def _history(api: Api, execution_arn: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions", endpoint_url=api.env.stack.aws_endpoint)
    return list(sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"])


def _states_entered(api: Api, execution_arn: str) -> list[str]:
    """The states the execution went through (each one a billed state transition)."""
    return [
        e["stateEnteredEventDetails"]["name"] for e in _history(api, execution_arn) if "stateEnteredEventDetails" in e
    ]


def test_sorahk_succeeds_after_several_polls_with_cost_and_bytes(api: Api) -> None:
    api.env.sim.configure("sorahk", generation_seconds=6)
    task = api.submit_and_wait(SORAHK)
    assert task["status"] == "succeeded", task
    assert task["cost_cents"] == 3  # normal price for 10 s, recorded from the create
    [execution] = _executions(api, task["id"])
    assert execution["name"] == task["id"] and execution["status"] == "SUCCEEDED"
    # Several polls, driven by delayed poll messages, in one state of one execution.
    assert len(api.sim_requests(kind="status", protocol="sorahk")) >= 2
    assert _states_entered(api, execution["executionArn"]) == ["Poll"]
    [output] = task["outputs"]
    assert output["sha256"] == api.env.sim.video_bytes_sha256("sorahk", task["provider_task_id"])
    # The price was checked against the balance before the paid create.
    kinds = [r["kind"] for r in api.sim_requests(protocol="sorahk")]
    assert kinds.index("balance") < kinds.index("create") and kinds.index("pricing") < kinds.index("create")


def test_openai_videos_progress_advances_and_content_is_fetched_with_the_licence(api: Api) -> None:
    api.env.sim.configure("openai_videos", generation_seconds=6)
    task_id = api.create(OPENAI).json()["id"]
    seen = set()
    while (task := api.task(task_id))["status"] not in ("succeeded", "failed"):
        seen.add(task["progress"])
    assert task["status"] == "succeeded", task
    assert any(0 < p < 100 for p in seen), seen
    creates = api.sim_requests(kind="create", protocol="openai_videos")
    assert creates[0]["body"]["model"] == "sora_video2-landscape"
    [content] = api.sim_requests(kind="content")
    assert content["authorized"] is True
    assert task["outputs"][0]["sha256"] == api.env.sim.video_bytes_sha256("openai_videos", task["provider_task_id"])


def test_transient_status_errors_are_retried_by_the_state_machine(api: Api) -> None:
    api.env.sim.configure("sorahk", force={"status": [500, 502]})
    task = api.submit_and_wait(SORAHK, timeout=90)
    assert task["status"] == "succeeded", task
    statuses = [r["status"] for r in api.sim_requests(kind="status", protocol="sorahk")]
    assert statuses[:2] == [500, 502] and statuses[-1] == 200


def test_provider_failures_map_to_stable_codes(api: Api) -> None:
    cases = [
        (SORAHK | {"prompt": "x [sim:refuse]"}, "CONTENT_POLICY"),
        (OPENAI | {"prompt": "x [sim:refuse]"}, "CONTENT_POLICY"),
        (SORAHK | {"prompt": "x [sim:fail]"}, "PROVIDER_FAILED"),
        (OPENAI | {"prompt": "x [sim:fail]"}, "PROVIDER_FAILED"),
    ]
    for body, code in cases:
        task = api.submit_and_wait(body)
        assert (task["status"], task["error"]["code"]) == ("failed", code), (body, task)
        assert task["error"]["message"]
        assert _executions(api, task["id"])[0]["status"] == "SUCCEEDED"  # the machine ended cleanly


def test_the_deadline_ends_a_task_as_failed(api: Api) -> None:
    task = api.submit_and_wait(SORAHK | {"provider": "sorahk_short", "prompt": "slow [sim:seconds=60]"}, timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "DEADLINE_EXCEEDED", task


def test_a_long_task_polls_many_times_in_one_state_of_one_execution(api: Api) -> None:
    task = api.submit_and_wait(OPENAI | {"prompt": "long [sim:seconds=25]"}, timeout=90)
    assert task["status"] == "succeeded", task
    [execution] = _executions(api, task["id"])
    assert execution["status"] == "SUCCEEDED"
    assert len(api.sim_requests(kind="status", protocol="openai_videos")) >= 4
    # The history does not grow with the polls: far from the 25,000-event limit whatever the length.
    assert _states_entered(api, execution["executionArn"]) == ["Poll"]
    assert len(_history(api, execution["executionArn"])) <= 10


def test_a_lost_poll_message_is_sent_again_when_the_heartbeat_times_out(api: Api) -> None:
    sqs = boto3.client("sqs", endpoint_url=api.env.stack.aws_endpoint)
    poll_queue = api.env.stack.resources["PollQueue"]
    task_id = api.create(OPENAI | {"prompt": "lost [sim:seconds=8]"}).json()["id"]
    deadline = time.monotonic() + 30
    while not _executions(api, task_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    sqs.purge_queue(QueueUrl=poll_queue)  # the first poll message, still delayed, is lost
    task = api.wait(task_id, timeout=90)
    [execution] = _executions(api, task_id)
    assert task["status"] == "succeeded", task
    assert execution["status"] == "SUCCEEDED"
    history = [e["type"] for e in _history(api, execution["executionArn"])]
    assert "TaskTimedOut" in history  # the heartbeat noticed the lost message
    assert history.count("TaskSubmitted") == 2  # and the retry sent a fresh one


def test_sorahk_low_balance_fails_before_any_paid_call(api: Api) -> None:
    api.env.sim.configure("sorahk", balance=2)
    task = api.submit_and_wait(SORAHK)
    assert task["status"] == "failed" and task["error"]["code"] == "INSUFFICIENT_BALANCE", task
    assert "balance" in task["error"]["message"]
    assert api.sim_requests(kind="create") == []


def test_sorahk_business_codes_reach_the_client(api: Api) -> None:
    api.env.sim.configure("sorahk", force={"create": [1001]})
    rejected = api.submit_and_wait(SORAHK)
    assert rejected["error"]["code"] == "PROVIDER_REJECTED" and rejected["error"]["message"]
    api.env.sim.configure("sorahk", force={"create": [1012]})
    broke = api.submit_and_wait(SORAHK)
    assert broke["error"]["code"] == "INSUFFICIENT_BALANCE"
    api.env.sim.configure("sorahk", force={"create": [401]})
    denied = api.submit_and_wait(SORAHK)
    assert denied["error"]["code"] == "PROVIDER_AUTH" and "sorahk" in denied["error"]["message"]
    assert "sora-sim-key" not in json.dumps([rejected, broke, denied])


def test_a_sorahk_create_that_failed_after_acceptance_is_found_not_resent(api: Api) -> None:
    api.env.sim.configure("sorahk", fail_next=1, fail_next_accepted=True)
    task = api.submit_and_wait(SORAHK, timeout=60)
    assert task["status"] == "succeeded", task
    assert len(api.env.sim.tasks("sorahk")) == 1  # one provider task: found in the list, not re-created
    assert [r["status"] for r in api.sim_requests(kind="create")] == [500]


def test_invalid_options_are_refused_before_any_paid_call(api: Api) -> None:
    for body, field in [
        (SORAHK | {"duration": 25}, "duration"),  # 25 s needs pro
        (OPENAI | {"duration": 25, "resolution": "1080p"}, "resolution"),  # hd never with 25 s
        ({"provider": "generate_task", "prompt": "x", "duration": 5}, "duration"),
    ]:
        response = api.create(body)
        assert response.status_code == 422, body
        assert field in json.dumps(response.json()["error"])
    assert api.env.sim.requests == []


def test_remix_makes_a_linked_task(api: Api) -> None:
    parent = api.submit_and_wait(OPENAI)
    response = api.http.post(f"/v1/tasks/{parent['id']}/remix", json={"prompt": "now at night"})
    assert response.status_code == 202, response.text
    child = api.wait(response.json()["id"])
    assert child["status"] == "succeeded" and child["parent_task_id"] == parent["id"]
    [remix] = api.sim_requests(kind="remix")
    assert remix["path"].endswith(f"/v1/videos/{parent['provider_task_id']}/remix")
    assert remix["body"]["model"] == "sora_video2-landscape"
    refused = api.http.post(f"/v1/tasks/{api.submit_and_wait(SORAHK)['id']}/remix", json={"prompt": "x"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "NOT_REMIXABLE"


def test_images_generate_and_edit_into_s3(api: Api) -> None:
    response = api.http.post(
        "/v1/images", json={"provider": "openai_videos", "prompt": "a cat", "n": 2, "size": "1536x1024"}
    )
    assert response.status_code == 202, response.text
    task = api.wait(response.json()["id"])
    assert task["status"] == "succeeded" and task["kind"] == "image"
    assert [o["content_type"] for o in task["outputs"]] == ["image/png", "image/png"]
    png = api.object_bytes(task["outputs"][0]["s3_uri"].split("/", 3)[3])
    assert png.startswith(b"\x89PNG")
    # An edit of an image already in the bucket.
    # Inputs given as keys must be the caller's own uploads (POST /v1/uploads).
    ticket = api.http.post("/v1/uploads", json={"content_type": "image/png", "bytes": len(png)}).json()
    assert httpx.put(ticket["url"], content=png, headers=ticket["headers"]).status_code == 200
    edit = api.http.post(
        "/v1/images", json={"provider": "openai_videos", "prompt": "make it blue", "image_keys": [ticket["key"]]}
    )
    assert edit.status_code == 202, edit.text
    assert api.wait(edit.json()["id"])["status"] == "succeeded"
    [sent] = api.sim_requests(kind="images")[-1:]
    assert sent["path"].endswith("/v1/images/edits")
    assert sent["body"]["files"][0]["size"] == len(png)
    missing = api.http.post(
        "/v1/images", json={"provider": "openai_videos", "prompt": "x", "image_keys": ["uploads/none.png"]}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "UPLOAD_NOT_FOUND"
    not_images = api.http.post("/v1/images", json={"provider": "sorahk", "prompt": "x"})
    assert not_images.status_code == 422


def test_providers_lists_capabilities_and_live_account(api: Api) -> None:
    response = api.http.get("/v1/providers")
    assert response.status_code == 200
    providers = {p["name"]: p for p in response.json()["providers"]}
    assert set(providers) == {"generate_task", "sorahk", "openai_videos", "sorahk_short"}
    assert providers["generate_task"]["capabilities"]["callbacks"] is True
    assert providers["sorahk"]["capabilities"]["callbacks"] is False
    assert providers["sorahk"]["account"]["balance_cents"] == 5000
    assert providers["sorahk"]["account"]["pricing"]
    assert providers["openai_videos"]["account"] is None
    assert 25 in providers["openai_videos"]["capabilities"]["durations"]
