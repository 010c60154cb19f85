"""`provider: auto` end to end: the real API, submit worker and callbacks against the simulator.

The stack ranks sorahk first, generate_task second, openai_videos third (REELAY_<NAME>_PRIORITY).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import E2E_ENV, Api, running_api

ROUTED_ENV = E2E_ENV | {
    "REELAY_PROVIDERS": "generate_task,sorahk,openai_videos",
    "REELAY_SORAHK_PRIORITY": "1",
    "REELAY_GENERATE_TASK_PRIORITY": "2",
    "REELAY_OPENAI_VIDEOS_PRIORITY": "3",
}


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with running_api(ROUTED_ENV) as client:
        yield client


def test_auto_with_the_first_provider_out_of_balance_is_served_by_the_second_with_one_paid_create(api: Api) -> None:
    # Given sorahk (priority 1) has no balance left
    api.env.sim.configure("sorahk", balance=0)
    prompt = "a lighthouse at dusk [tag:routing-balance]"
    # When an auto task is asked for, with needs both sorahk and generate_task can serve
    response = api.create({"provider": "auto", "prompt": prompt, "orientation": "landscape"})
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["provider"] == "sorahk"  # ranked first when it was stored
    task = api.wait(created["id"], timeout=90)
    # Then generate_task served it, and the task says why
    assert task["status"] == "succeeded", task
    assert task["provider"] == "generate_task"
    routing = task["routing"]
    assert [c["provider"] for c in routing["candidates"]] == ["sorahk", "generate_task", "openai_videos"]
    assert [(f["provider"], f["code"]) for f in routing["failovers"]] == [("sorahk", "INSUFFICIENT_BALANCE")]
    assert "failed over to generate_task" in routing["reason"]
    # with one paid create in all: none reached sorahk's create, one provider task exists
    counters = api.env.sim.counters()
    assert counters["creates"]["sorahk"].get(prompt, 0) == 0
    assert counters["creates"]["generate_task"][prompt] == 1
    assert [t["protocol"] for t in counters["tags"]["routing-balance"]] == ["generate_task"]
    assert len(api.objects(task["id"])) == 1


def test_auto_goes_to_the_top_ranked_provider_that_can_do_the_needs(api: Api) -> None:
    # Given 4 s is a duration only generate_task offers
    task = api.submit_and_wait({"provider": "auto", "prompt": "a red kite", "duration": 4}, timeout=90)
    assert task["status"] == "succeeded" and task["provider"] == "generate_task"
    assert [c["provider"] for c in task["routing"]["candidates"]] == ["generate_task"]
    assert task["routing"]["failovers"] == []
    assert api.sim_requests(protocol="sorahk") == []


def test_auto_needs_no_provider_can_serve_are_a_422_before_any_provider_call(api: Api) -> None:
    # 25 s at 720p: sorahk's 25 s is pro (always 1080p), openai_videos' 25 s is 720p but not with an image,
    # generate_task stops at 12 s.
    response = api.create(
        {
            "provider": "auto",
            "prompt": "x",
            "duration": 25,
            "resolution": "720p",
            "image_url": api.env.sim.sample_image_url,
        }
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_FAILED" and "duration" in error["message"]
    assert api.env.sim.requests == []


def test_the_openapi_document_offers_auto_and_the_task_shape_shows_routing(api: Api) -> None:
    document = api.http.get("/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert any(name.startswith("AutoTextToVideo") for name in schemas)
    assert "routing" in schemas["TaskView"]["properties"]
    assert {"candidates", "failovers", "reason"} <= set(schemas["Routing"]["properties"])
