"""Issue 2, judged end to end: a generate_task video through callbacks into S3."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import Api

GT = {"provider": "generate_task", "prompt": "a lighthouse at dawn", "duration": 4}


def _history(task_id: str, api: Api) -> list[str]:
    from reelay.store import DynamoTaskStore

    store = DynamoTaskStore(api.env.stack.resources["TaskTable"])
    return [h.to_status.value for h in store.get(task_id).history]


def test_a_video_lands_in_s3_with_the_simulators_bytes(api: Api) -> None:
    task = api.submit_and_wait(GT)
    assert task["status"] == "succeeded", task
    [output] = task["outputs"]
    key = output["s3_uri"].split("/", 3)[3]
    body = api.object_bytes(key)
    assert hashlib.sha256(body).hexdigest() == output["sha256"]
    assert output["sha256"] == api.env.sim.video_bytes_sha256("generate_task", task["provider_task_id"])
    assert output["content_type"] == "video/mp4" and body[4:8] == b"ftyp"
    # The presigned URL serves the same bytes.
    assert hashlib.sha256(httpx.get(output["url"]).content).hexdigest() == output["sha256"]
    assert _history(task["id"], api) == ["submitted", "ingesting", "succeeded"]
    creates = api.sim_requests(kind="create", protocol="generate_task")
    assert len(creates) == 1
    assert creates[0]["body"]["request_type"] == "callback"
    assert creates[0]["body"]["callback_url"].startswith(f"{api.env.stack.api_url}/callbacks/generate_task/")


def test_fifty_concurrent_duplicate_callbacks_make_one_transition_one_object(api: Api) -> None:
    api.env.sim.configure("generate_task", callback_mode="duplicate", callback_copies=50)
    task = api.submit_and_wait(GT)
    assert task["status"] == "succeeded"
    # The simulator sends its 50 copies concurrently: the task may end before the last ones are sent.
    deadline = time.monotonic() + 20
    while True:
        deliveries = [d for d in api.env.sim.callback_deliveries if task["provider_task_id"] in str(d)]
        if len(deliveries) >= 50 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(deliveries) >= 50
    history = _history(task["id"], api)
    assert history.count("ingesting") == 1 and history.count("succeeded") == 1
    assert len(api.objects(task["id"])) == 1
    assert len(api.sim_requests(kind="download", protocol="generate_task")) == 1


def test_a_callback_with_a_wrong_or_missing_token_is_401_and_changes_nothing(api: Api) -> None:
    api.env.sim.configure("generate_task", callback_mode="never")
    created = api.create(GT).json()
    task = api.wait(created["id"], until=("submitted", "running"))
    before = api.task(task["id"])
    status_calls = len(api.sim_requests(kind="status"))
    body = {"code": 200, "data": {"taskId": task["provider_task_id"], "state": "success"}}
    for query in ("", "?t=", "?t=forged", f"?t={'A' * 43}"):
        response = api.http.post(f"/callbacks/generate_task/{task['id']}{query}", json=body)
        assert response.status_code == 401, query
    # A token minted for another task does not open this one.
    other = api.http.post(f"/callbacks/generate_task/tsk_{'0' * 28}?t=x", json=body)
    assert other.status_code == 401
    assert len(api.sim_requests(kind="status")) == status_calls  # no request to the provider
    after = api.task(task["id"])
    assert (after["status"], after["updated_at"]) == (before["status"], before["updated_at"])


def test_only_the_status_endpoints_url_is_fetched_never_the_callback_bodys(api: Api) -> None:
    decoy = f"{api.env.sim.url}/files/generate_task/decoy.mp4"
    api.env.sim.configure("generate_task", callback_body_result_url=decoy)
    task = api.submit_and_wait(GT)
    assert task["status"] == "succeeded"
    fetched = [r["path"] for r in api.sim_requests(kind="download")]
    assert fetched == [f"/files/generate_task/{task['provider_task_id']}.mp4"]
    assert not any("decoy" in r["path"] for r in api.env.sim.requests)


def test_out_of_order_and_late_callbacks_still_end_succeeded_once(api: Api) -> None:
    for mode in ("out_of_order", "late"):
        api.env.sim.configure("generate_task", callback_mode=mode, callback_delay_seconds=1.0)
        task = api.submit_and_wait(GT)
        assert task["status"] == "succeeded", (mode, task)
        assert _history(task["id"], api).count("succeeded") == 1


def test_content_refusal_fails_with_a_stable_code(api: Api) -> None:
    task = api.submit_and_wait(GT | {"prompt": "something [sim:refuse]"})
    assert task["status"] == "failed"
    assert task["error"]["code"] == "CONTENT_POLICY" and task["error"]["message"]
    assert api.objects(task["id"]) == []


def test_a_refused_credential_fails_the_task_naming_the_provider(api: Api) -> None:
    api.env.sim.configure("generate_task", force={"create": [401]})
    task = api.submit_and_wait(GT)
    assert task["status"] == "failed" and task["error"]["code"] == "PROVIDER_AUTH"
    assert "generate_task" in task["error"]["message"]
    assert "sim-gt-key" not in str(task)


def test_rate_limits_and_server_errors_back_off_and_never_fail_the_task(api: Api) -> None:
    api.env.sim.configure("generate_task", force={"create": [429, 503]})
    task = api.submit_and_wait(GT, timeout=90)
    assert task["status"] == "succeeded"
    creates = api.sim_requests(kind="create")
    assert [c["status"] for c in creates] == [429, 503, 200]


def test_a_create_whose_answer_is_lost_is_never_sent_twice(api: Api) -> None:
    # The provider takes the task but answers after reelay's 2 s timeout: the outcome is
    # unknown, the task is held, and the callback that carries our task id settles it.
    api.env.sim.configure("generate_task", create_hang_seconds=3.5)
    task = api.submit_and_wait(GT, timeout=60)
    assert task["status"] == "succeeded", task
    assert len(api.sim_requests(kind="create")) == 1
    assert len(api.env.sim.tasks("generate_task")) == 1


def test_a_truncated_download_leaves_no_object_and_is_retried(api: Api) -> None:
    api.env.sim.configure("generate_task", truncate_download_at=1000)
    created = api.create(GT).json()
    api.wait(created["id"], until=("ingesting",))
    deadline = time.monotonic() + 20
    while not api.sim_requests(kind="download") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    assert api.task(created["id"])["status"] == "ingesting"
    assert api.objects(created["id"]) == []
    api.env.sim.configure("generate_task", truncate_download_at=None)
    task = api.wait(created["id"], timeout=60)
    assert task["status"] == "succeeded" and len(api.objects(created["id"])) == 1


def test_idempotency_key_over_http(api: Api) -> None:
    first = api.create(GT, **{"Idempotency-Key": "e2e-1"})
    again = api.create(GT, **{"Idempotency-Key": "e2e-1"})
    other = api.create(GT | {"prompt": "another"}, **{"Idempotency-Key": "e2e-1"})
    assert (first.status_code, again.status_code, other.status_code) == (202, 202, 409)
    assert first.json()["id"] == again.json()["id"]
    api.wait(first.json()["id"])
    assert len(api.sim_requests(kind="create")) == 1


def test_concurrent_requests_are_all_served(api: Api) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda i: api.create(GT | {"prompt": f"p{i}"}), range(8)))
    assert all(r.status_code == 202 for r in responses)
    for r in responses:
        assert api.wait(r.json()["id"], timeout=90)["status"] == "succeeded"


def test_image_to_video_sends_the_image_and_resolution(api: Api) -> None:
    body = GT | {"image_url": api.env.sim.sample_image_url, "resolution": "1080p", "duration": 8}
    task = api.submit_and_wait(body)
    assert task["status"] == "succeeded", task
    [create] = api.sim_requests(kind="create")
    assert create["body"]["input"]["image_urls"] == [api.env.sim.sample_image_url]
    assert create["body"]["input"]["resolution"] == "1080p" and create["body"]["input"]["duration"] == 8
    assert "size" not in create["body"]["input"]
