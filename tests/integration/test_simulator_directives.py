"""The simulator's per-task fault directives, over loopback HTTP, on each protocol that has the thing.

Each test puts a directive in one task's prompt and checks that this task, and only this task,
misbehaves as documented in ``reelay_sim.protocol`` (create, status and download faults) and
``reelay_sim.callbacks`` (callback faults), and that ``Simulator.counters()`` counts what a chaos
harness needs (provider tasks per ``[tag:...]``, create attempts, downloads).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from reelay_sim import Simulator, media
from reelay_sim.protocol import DEFAULT_DRIP_BYTES_PER_SECOND, download_fault
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

FAST = 0.3  # generation seconds in these tests
PROTOCOLS = ("generate_task", "sorahk", "openai_videos")
HTTP = httpx.Client(timeout=10)


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class Receiver:
    """A callback receiver on loopback that answers every POST with ``status`` and records it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status = 200
        self.calls: list[dict[str, Any]] = []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.calls.append({"path": request.path, "body": json.loads(request.get_data())})
            status = self.status
        return Response("answer", status=status)(environ, start_response)

    def paths(self) -> list[str]:
        with self.lock:
            return [c["path"] for c in self.calls]


@pytest.fixture(scope="module")
def sim_server() -> Iterator[Simulator]:
    sim = Simulator(host="127.0.0.1", port=0).start()
    yield sim
    sim.stop()
    HTTP.close()


@pytest.fixture
def sim(sim_server: Simulator) -> Simulator:
    sim_server.reset()
    sim_server.configure("all", generation_seconds=FAST)
    return sim_server


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    with receiver_server.lock:
        receiver_server.calls.clear()
        receiver_server.status = 200
    return receiver_server


# --- one client per protocol ------------------------------------------------------------------


def headers(sim: Simulator, protocol: str) -> dict[str, str]:
    key = sim.api_keys[protocol]
    return {"Authorization": key if protocol == "openai_videos" else f"Bearer {key}"}


def create(
    sim: Simulator, protocol: str, prompt: str, *, callback_url: str | None = None, timeout: float = 10
) -> httpx.Response:
    base = sim.base_urls[protocol]
    if protocol == "generate_task":
        body: dict[str, Any] = {
            "request_type": "callback" if callback_url else "async",
            "provider": "official",
            "input": {"prompt": prompt, "duration": 4},
        }
        if callback_url:
            body["callback_url"] = callback_url
        url = base + "/api/v1/generateTask/sora-2-pro"
    elif protocol == "sorahk":
        body, url = {"prompt": prompt, "duration": 10}, base + "/create"
    else:
        body, url = {"prompt": prompt, "model": "sora_video2"}, base + "/v1/videos"
    return HTTP.post(url, json=body, headers=headers(sim, protocol), timeout=timeout)


def task_id(protocol: str, response: httpx.Response) -> str:
    body = response.json()
    if protocol == "generate_task":
        return str(body["data"]["taskId"])
    if protocol == "sorahk":
        return str(body["data"]["task_id"])
    return str(body["id"])


def status(sim: Simulator, protocol: str, provider_id: str) -> httpx.Response:
    base = sim.base_urls[protocol]
    if protocol == "generate_task":
        url = f"{base}/api/v1/statusTask/sora-2-pro?taskId={provider_id}"
    elif protocol == "sorahk":
        url = f"{base}/tasks/{provider_id}"
    else:
        url = f"{base}/v1/videos/{provider_id}"
    return HTTP.get(url, headers=headers(sim, protocol))


def result(sim: Simulator, protocol: str, provider_id: str) -> tuple[str, dict[str, str]]:
    """The result URL of a finished task and the headers a client sends to it."""
    if protocol == "openai_videos":
        return f"{sim.base_urls[protocol]}/v1/videos/{provider_id}/content", headers(sim, protocol)
    return sim.url + f"/files/{protocol}/{provider_id}.mp4", {}


def finished(sim: Simulator, protocol: str, provider_id: str) -> str:
    """Wait until the simulator's task is terminal; its neutral state."""

    def state() -> str | None:
        found = [t for t in sim.tasks(protocol) if t["id"] == provider_id]
        return found[0]["state"] if found and found[0]["state"] in ("succeeded", "failed") else None

    return str(wait_for(state))


def made(sim: Simulator, protocol: str, prompt: str) -> int:
    """Provider tasks the simulator made for ``prompt``."""
    return int(sim.counters()["tasks_per_prompt"][protocol].get(prompt, 0))


def download(url: str, hdrs: dict[str, str], **extra: str) -> tuple[int, int, int | None, bool]:
    """(status, bytes received, announced length, closed early) of one GET."""
    received, early = 0, False
    with HTTP.stream("GET", url, headers={**hdrs, **extra}) as reply:
        announced = int(reply.headers["Content-Length"]) if "Content-Length" in reply.headers else None
        try:
            for chunk in reply.iter_bytes():
                received += len(chunk)
        except httpx.RemoteProtocolError:
            early = True
        return reply.status_code, received, announced, early


# --- callbacks --------------------------------------------------------------------------------


def test_no_callback_silences_only_that_task(sim: Simulator, receiver: Receiver) -> None:
    sim.configure("generate_task", callback_progress=True)
    quiet = task_id(
        "generate_task", create(sim, "generate_task", "a [sim:no_callback]", callback_url=receiver.url + "/q")
    )
    loud = task_id("generate_task", create(sim, "generate_task", "b", callback_url=receiver.url + "/l"))
    finished(sim, "generate_task", quiet)
    finished(sim, "generate_task", loud)
    wait_for(lambda: len([p for p in receiver.paths() if p == "/hook/l"]) >= 2)  # progress + terminal
    time.sleep(0.3)
    assert "/hook/q" not in receiver.paths()
    assert all(d["task_id"] != quiet for d in sim.callback_deliveries)


def test_callback_once_sends_one_terminal_callback_and_never_retries_a_503(sim: Simulator, receiver: Receiver) -> None:
    sim.configure("generate_task", callback_mode="duplicate", callback_copies=3, callback_progress=True)
    receiver.status = 503
    once = task_id("generate_task", create(sim, "generate_task", "c [sim:callback_once]", callback_url=receiver.url))
    finished(sim, "generate_task", once)
    wait_for(lambda: [d for d in sim.callback_deliveries if d["task_id"] == once])
    time.sleep(0.5)  # room for a retry or a duplicate, which must not come
    deliveries = [d for d in sim.callback_deliveries if d["task_id"] == once]
    assert [(d["label"], d["status_code"], d["delivered"]) for d in deliveries] == [("terminal", 503, False)]
    assert deliveries[0]["state"] == "success"


# --- create faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_create_500_makes_nothing_once(sim: Simulator, protocol: str) -> None:
    prompt = f"{protocol} [sim:create_500]"
    first = create(sim, protocol, prompt)
    assert first.status_code == 500
    assert made(sim, protocol, prompt) == 0
    second = create(sim, protocol, prompt)
    assert second.status_code == 200, second.text
    assert made(sim, protocol, prompt) == 1
    assert sim.counters()["creates"][protocol][prompt] == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_create_500_accepted_makes_a_task_that_runs(sim: Simulator, protocol: str) -> None:
    prompt = f"{protocol} [sim:create_500_accepted] [tag:acc-{protocol}]"
    assert create(sim, protocol, prompt).status_code == 500
    [made_task] = sim.counters()["tags"][f"acc-{protocol}"]
    assert finished(sim, protocol, made_task["id"]) == "succeeded"
    again = create(sim, protocol, prompt)  # a blind re-send: answered, and a second paid task
    assert again.status_code == 200
    assert len(sim.counters()["tags"][f"acc-{protocol}"]) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_create_429_refuses_the_first_n_attempts(sim: Simulator, protocol: str) -> None:
    prompt = f"{protocol} [sim:create_429=2]"
    answers = [create(sim, protocol, prompt) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert made(sim, protocol, prompt) == 1
    assert create(sim, protocol, "plain").status_code == 200  # other prompts are untouched


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_create_hang_records_the_task_before_the_late_answer(sim: Simulator, protocol: str) -> None:
    prompt = f"{protocol} [sim:create_hang=1.5]"
    began = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        create(sim, protocol, prompt, timeout=0.5)
    assert made(sim, protocol, prompt) == 1  # the provider took the job although the client gave up
    assert time.monotonic() - began < 1.4
    quick = time.monotonic()
    assert create(sim, protocol, prompt).status_code == 200  # only the first attempt hangs
    assert time.monotonic() - quick < 1.0


# --- status faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_429_then_500_for_the_first_calls_of_that_task(sim: Simulator, protocol: str) -> None:
    faulty = task_id(protocol, create(sim, protocol, "s [sim:status_429=1] [sim:status_500=2]"))
    healthy = task_id(protocol, create(sim, protocol, "t"))
    codes = [status(sim, protocol, faulty).status_code for _ in range(4)]
    assert codes == [429, 500, 500, 200]
    assert status(sim, protocol, healthy).status_code == 200
    assert sim.counters()["status_calls"][protocol][faulty] == 4


# --- download faults --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncate_closes_every_download_early(sim: Simulator, protocol: str) -> None:
    provider_id = task_id(protocol, create(sim, protocol, "u [sim:truncate]"))
    assert finished(sim, protocol, provider_id) == "succeeded"
    url, hdrs = result(sim, protocol, provider_id)
    for extra in ({}, {"Range": "bytes=1000-"}, {}):
        code, received, announced, early = download(url, hdrs, **extra)
        assert code in (200, 206) and early and announced is not None
        assert received == announced // 2
    assert sim.counters()["downloads"][protocol][provider_id] == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncate_once_spoils_only_the_first_download(sim: Simulator, protocol: str) -> None:
    provider_id = task_id(protocol, create(sim, protocol, "v [sim:truncate_once]"))
    finished(sim, protocol, provider_id)
    url, hdrs = result(sim, protocol, provider_id)
    first, second = download(url, hdrs), download(url, hdrs)
    assert first[3] and first[1] < (first[2] or 0)
    assert not second[3] and second[1] == second[2] == media.video_size(256 * 1024)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gone_result_answers_404_while_status_says_done(sim: Simulator, protocol: str) -> None:
    provider_id = task_id(protocol, create(sim, protocol, "w [sim:gone]"))
    assert finished(sim, protocol, provider_id) == "succeeded"
    url, hdrs = result(sim, protocol, provider_id)
    assert HTTP.get(url, headers=hdrs).status_code == 404
    assert HTTP.get(url, headers=hdrs).status_code == 404  # permanently
    assert status(sim, protocol, provider_id).status_code == 200
    other = task_id(protocol, create(sim, protocol, "x"))
    finished(sim, protocol, other)
    assert HTTP.get(result(sim, protocol, other)[0], headers=hdrs).status_code == 200


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_drip_slows_that_task_download(sim: Simulator, protocol: str) -> None:
    provider_id = task_id(protocol, create(sim, protocol, "y [sim:drip=16384]"))
    finished(sim, protocol, provider_id)
    url, hdrs = result(sim, protocol, provider_id)
    began = time.monotonic()
    received = 0
    with HTTP.stream("GET", url, headers=hdrs) as reply:
        for chunk in reply.iter_bytes():
            received += len(chunk)
            if received >= 32 * 1024:
                break
    assert time.monotonic() - began >= 1.5  # 32 KiB at 16 KiB/s


def test_drip_default_rate_and_fault_plans() -> None:
    assert download_fault("[sim:drip]", 1).bytes_per_second == DEFAULT_DRIP_BYTES_PER_SECOND
    assert download_fault("[sim:truncate_once]", 2).truncate is False
    assert download_fault("[SIM:GONE]", 5).gone is True


# --- counters ---------------------------------------------------------------------------------


def test_counters_group_provider_tasks_by_tag_across_protocols(sim: Simulator, receiver: Receiver) -> None:
    create(sim, "sorahk", "one [tag:run-1]")
    create(sim, "openai_videos", "two [tag:run-1]")
    create(sim, "generate_task", "three [tag:run-2]", callback_url=receiver.url + "/tsk_9")
    tags = sim.counters()["tags"]
    assert sorted(t["protocol"] for t in tags["run-1"]) == ["openai_videos", "sorahk"]
    assert [t["callback_url"] for t in tags["run-2"]] == [receiver.url + "/tsk_9"]
    over_http = HTTP.get(sim.url + "/_sim/counters").json()
    assert set(over_http) == {"creates", "tasks_per_prompt", "tags", "status_calls", "downloads", "limits"}
    assert len(over_http["tags"]["run-1"]) == 2
