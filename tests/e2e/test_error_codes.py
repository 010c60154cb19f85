"""Every documented provider error code, as the client sees it (GET /v1/tasks/{id})."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api

BODIES = {
    "generate_task": {"provider": "generate_task", "prompt": "codes", "duration": 4},
    "sorahk": {"provider": "sorahk", "prompt": "codes", "duration": 10},
    "openai_videos": {"provider": "openai_videos", "prompt": "codes"},
}

# (protocol, forced answers to the create, the task's final status, its error code)
CREATE_CODES = [
    ("generate_task", [400], "failed", "PROVIDER_REJECTED"),
    ("generate_task", [401], "failed", "PROVIDER_AUTH"),
    ("generate_task", [429], "succeeded", None),
    ("generate_task", [500], "succeeded", None),
    ("sorahk", [401], "failed", "PROVIDER_AUTH"),
    ("sorahk", [1001], "failed", "PROVIDER_REJECTED"),
    ("sorahk", [1012], "failed", "INSUFFICIENT_BALANCE"),
    ("sorahk", [429], "succeeded", None),
    ("openai_videos", [400], "failed", "PROVIDER_REJECTED"),
    ("openai_videos", [401], "failed", "PROVIDER_AUTH"),
    ("openai_videos", [429], "succeeded", None),
    ("openai_videos", [502], "succeeded", None),
]


@pytest.mark.parametrize(
    ("protocol", "forced", "status", "code"), CREATE_CODES, ids=[f"{p}-{f[0]}" for p, f, _, _ in CREATE_CODES]
)
def test_create_error_codes(api: Api, protocol: str, forced: list[int], status: str, code: str | None) -> None:
    api.env.sim.configure(protocol, force={"create": forced})
    task = api.submit_and_wait(BODIES[protocol], timeout=90)
    assert task["status"] == status, task
    assert (task["error"] or {}).get("code") == code
    if code:
        assert task["error"]["message"] and api.env.sim.api_keys[protocol] not in task["error"]["message"]


# Failure codes of the status endpoint (a task the provider ended as failed).
FAILURES = [
    ("generate_task", "[sim:refuse]", "CONTENT_POLICY"),
    ("generate_task", "[sim:invalid_image]", "INVALID_IMAGE"),
    ("generate_task", "[sim:fail]", "PROVIDER_FAILED"),
    ("sorahk", "[sim:refuse]", "CONTENT_POLICY"),
    ("openai_videos", "[sim:refuse]", "CONTENT_POLICY"),
]


@pytest.mark.parametrize(("protocol", "directive", "code"), FAILURES, ids=[f"{p}-{c}" for p, _, c in FAILURES])
def test_status_failure_codes(api: Api, protocol: str, directive: str, code: str) -> None:
    task = api.submit_and_wait(BODIES[protocol] | {"prompt": f"codes {directive}"})
    assert (task["status"], task["error"]["code"]) == ("failed", code), task


def test_status_401_and_429_while_polling(api: Api) -> None:
    # 429 on a status call is retried by the state machine; a 401 there fails the task.
    api.env.sim.configure("openai_videos", force={"status": [429]})
    assert api.submit_and_wait(BODIES["openai_videos"], timeout=60)["status"] == "succeeded"
    api.env.sim.configure("openai_videos", force={"status": [401, 401, 401, 401]})
    task = api.submit_and_wait(BODIES["openai_videos"], timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "PROVIDER_AUTH", task
