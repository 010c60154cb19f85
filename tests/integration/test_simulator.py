"""The provider simulator (reelay_sim) over loopback HTTP: every endpoint, every knob, the bytes."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from reelay_sim import Simulator, media
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

GT_CREATE = "/api/v1/generateTask/sora-2-pro"
GT_STATUS = "/api/v1/statusTask/sora-2-pro"
FAST = 0.3  # generation seconds in these tests


# --- fixtures and helpers ---------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class Receiver:
    """A tiny callback receiver on loopback that records every POST."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.calls.append({"at": time.monotonic(), "body": json.loads(request.get_data()), "path": request.path})
        return Response("ok")(environ, start_response)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c["body"] for c in self.calls]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


@pytest.fixture(scope="module")
def sim_server() -> Iterator[Simulator]:
    sim = Simulator(host="127.0.0.1", port=0).start()
    yield sim
    sim.stop()


@pytest.fixture
def sim_clean(sim_server: Simulator) -> Simulator:
    """The module's simulator, reset, with fast tasks."""
    sim_server.reset()
    sim_server.configure("all", generation_seconds=FAST)
    return sim_server


@pytest.fixture(scope="module")
def sim_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def sim_hook(sim_receiver: Receiver) -> Receiver:
    sim_receiver.clear()
    return sim_receiver


HTTP = httpx.Client(timeout=10)  # one client: making one per call costs ~20 ms of CPU


@pytest.fixture(scope="module", autouse=True)
def sim_http_client() -> Iterator[None]:
    yield
    HTTP.close()


def gt_headers(sim: Simulator, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or sim.api_keys['generate_task']}"}


def gt_body(**input_overrides: Any) -> dict[str, Any]:
    payload = {"prompt": "a cat on a skateboard", "duration": 4, "size": "1280*720"}
    payload.update(input_overrides)
    return {"request_type": "async", "provider": "official", "input": payload}


def gt_create(sim: Simulator, body: dict[str, Any] | None = None, key: str | None = None) -> httpx.Response:
    return HTTP.post(sim.base_urls["generate_task"] + GT_CREATE, json=body or gt_body(), headers=gt_headers(sim, key))


def gt_status(sim: Simulator, task_id: str, key: str | None = None) -> httpx.Response:
    return HTTP.get(
        sim.base_urls["generate_task"] + GT_STATUS, params={"taskId": task_id}, headers=gt_headers(sim, key)
    )


def gt_wait(sim: Simulator, task_id: str, states: tuple[str, ...] = ("success", "failed")) -> dict[str, Any]:
    return wait_for(lambda: (d := gt_status(sim, task_id).json()["data"])["state"] in states and d)


def sk(sim: Simulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {sim.api_keys['sorahk']}", **kwargs.pop("headers", {})}
    return HTTP.request(method, sim.base_urls["sorahk"] + path, headers=headers, **kwargs)


def oa(sim: Simulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": sim.api_keys["openai_videos"], **kwargs.pop("headers", {})}
    return HTTP.request(method, sim.base_urls["openai_videos"] + path, headers=headers, **kwargs)


def oa_create(sim: Simulator, prompt: str = "a fox", model: str = "sora_video2") -> dict[str, Any]:
    reply = oa(sim, "POST", "/v1/videos", json={"prompt": prompt, "model": model})
    assert reply.status_code == 200, reply.text
    return reply.json()


def boxes(data: bytes) -> list[tuple[str, int]]:
    """Top-level ISO BMFF boxes (type, size); asserts they tile the file exactly."""
    found, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        assert size >= 8, (kind, size)
        found.append((kind.decode(), size))
        offset += size
    assert offset == len(data)
    return found


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- generate_task -----------------------------------------------------------------------------


def test_generate_task_async_lifecycle_and_result(sim_clean: Simulator) -> None:
    sim = sim_clean
    created = gt_create(sim)
    assert created.status_code == 200
    body = created.json()
    assert body["code"] == 200 and body["msg"] == "success"
    task_id = body["data"]["taskId"]
    first = gt_status(sim, task_id).json()["data"]
    assert first["state"] == "pending" and first["progress"] == 0 and first["completeTime"] is None
    assert "resultJson" not in first and "failCode" not in first
    running = gt_wait(sim, task_id, ("processing",))
    assert 0 < running["progress"] < 100
    done = gt_wait(sim, task_id)
    assert done["state"] == "success" and done["progress"] == 100
    assert done["costTime"] == done["completeTime"] - done["createTime"] > 0
    urls = json.loads(done["resultJson"])["resultUrls"]
    assert urls == [f"{sim.url}/files/generate_task/{task_id}.mp4"]
    video = HTTP.get(urls[0])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    assert hashlib.sha256(video.content).hexdigest() == sim.video_bytes_sha256("generate_task", task_id)
    [record] = sim.tasks("generate_task")
    assert record["params"]["size"] == "1280*720" and record["status"]["state"] == "success"


def test_generate_task_image_to_video_is_accepted(sim_clean: Simulator) -> None:
    body = gt_body(image_urls=["https://example.com/a.png"], resolution="1080p")
    del body["input"]["size"]
    reply = gt_create(sim_clean, body)
    assert reply.status_code == 200, reply.text
    [record] = sim_clean.tasks("generate_task")
    assert record["params"]["mode"] == "image-to-video" and record["params"]["resolution"] == "1080p"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b.pop("request_type"), "request_type"),
        (lambda b: b.update(request_type="callback"), "callback_url"),
        (lambda b: b.update(provider="cheap"), "provider"),
        (lambda b: b.pop("input"), "input"),
        (lambda b: b["input"].pop("prompt"), "prompt"),
        (lambda b: b["input"].pop("duration"), "duration"),
        (lambda b: b["input"].update(duration=10), "duration"),
        (lambda b: b["input"].update(duration="4"), "duration"),
        (lambda b: b["input"].update(size="1920*1080"), "size"),
        (lambda b: b["input"].update(resolution="720p"), "resolution"),
        (lambda b: b["input"].update(image_urls=["not a url"]), "image_urls"),
        (lambda b: b["input"].update(image_urls=["https://x.test/a.png"]), "size"),
        (lambda b: b["input"].update(image_urls=["https://x.test/a.png"], size=None, resolution="4k"), "size"),
    ],
)
def test_generate_task_rejects_bad_parameters(sim_clean: Simulator, mutate: Any, needle: str) -> None:
    body = gt_body()
    mutate(body)
    reply = gt_create(sim_clean, body)
    assert reply.status_code == 400
    assert reply.json()["code"] == 400 and needle in reply.json()["msg"]
    assert sim_clean.tasks("generate_task") == []


def test_generate_task_rejects_non_json(sim_clean: Simulator) -> None:
    reply = HTTP.post(sim_clean.base_urls["generate_task"] + GT_CREATE, content=b"nope", headers=gt_headers(sim_clean))
    assert reply.status_code == 400 and reply.json()["code"] == 400


@pytest.mark.parametrize("header", [None, "Bearer wrong", "sim-gt-key", "Basic sim-gt-key"])
def test_generate_task_auth(sim_clean: Simulator, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for reply in (
        HTTP.post(sim_clean.base_urls["generate_task"] + GT_CREATE, json=gt_body(), headers=headers),
        HTTP.get(sim_clean.base_urls["generate_task"] + GT_STATUS, params={"taskId": "x"}, headers=headers),
    ):
        assert reply.status_code == 401
        assert reply.json() == {"code": 401, "msg": "Invalid or missing API Key"}
    assert all(not r["authorized"] for r in sim_clean.requests)
    assert all("Authorization" not in r["headers"] for r in sim_clean.requests)


def test_generate_task_status_errors_and_key_scope(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("generate_task", extra_keys=["second-key"])
    assert gt_status(sim, "gt_nope").status_code == 404
    assert gt_status(sim, "gt_nope").json() == {"code": 404, "msg": "task not found"}
    missing = HTTP.get(sim.base_urls["generate_task"] + GT_STATUS, headers=gt_headers(sim))
    assert missing.status_code == 400 and "taskId" in missing.json()["msg"]
    task_id = gt_create(sim).json()["data"]["taskId"]
    assert gt_status(sim, task_id, key="second-key").status_code == 404
    assert gt_status(sim, task_id).status_code == 200


def test_generate_task_rate_limit_per_key(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("generate_task", rate_limit_per_minute=3, extra_keys=["other"])
    statuses = [gt_status(sim, "gt_x").status_code for _ in range(3)]
    assert statuses == [404, 404, 404]
    limited = gt_create(sim)
    assert limited.status_code == 429
    assert limited.json() == {"code": 429, "msg": "Rate limit exceeded"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert gt_create(sim, key="other").status_code == 200  # another key has its own window


def test_generate_task_concurrency_limit(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("generate_task", max_concurrent=2, generation_seconds=30)
    first = gt_create(sim).json()["data"]["taskId"]
    assert gt_create(sim).status_code == 200
    third = gt_create(sim)
    assert third.status_code == 429 and third.json()["code"] == 429 and "Retry-After" in third.headers
    sim.complete_now("generate_task", first)
    assert gt_create(sim).status_code == 200


@pytest.mark.parametrize(
    ("prompt", "fail_code", "progress"),
    [
        ("a cat [sim:refuse]", "CONTENT_VIOLATION", 97),
        ("a cat [sim:fail]", "GENERATION_FAILED", 50),
        ("a cat [SIM:INVALID_IMAGE]", "INVALID_IMAGE_URL", 0),
    ],
)
def test_generate_task_prompt_directives(sim_clean: Simulator, prompt: str, fail_code: str, progress: int) -> None:
    task_id = gt_create(sim_clean, gt_body(prompt=prompt)).json()["data"]["taskId"]
    done = gt_wait(sim_clean, task_id)
    assert done["state"] == "failed" and done["failCode"] == fail_code and done["failMsg"]
    assert done["progress"] == progress and "resultJson" not in done
    assert HTTP.get(f"{sim_clean.url}/files/generate_task/{task_id}.mp4").status_code == 404


def test_refuse_content_knob(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("all", refuse_content=True)
    gt_id = gt_create(sim).json()["data"]["taskId"]
    sk_id = sk(sim, "POST", "/create", json={"prompt": "a dog"}).json()["data"]["task_id"]
    oa_id = oa_create(sim)["id"]
    assert gt_wait(sim, gt_id)["failCode"] == "CONTENT_VIOLATION"
    sk_done = wait_for(lambda: (d := sk(sim, "GET", f"/tasks/{sk_id}").json()["data"])["status"] == "failed" and d)
    assert "违反" in sk_done["error_msg"] and "video_url" not in sk_done
    oa_done = wait_for(lambda: (d := oa(sim, "GET", f"/v1/videos/{oa_id}").json())["status"] == "failed" and d)
    assert oa_done["error"]["code"] == "content_policy_violation"


def test_seconds_directive_overrides_generation_time(sim_clean: Simulator) -> None:
    sim_clean.configure("generate_task", generation_seconds=60)
    task_id = gt_create(sim_clean, gt_body(prompt="quick [sim:seconds=0.1]")).json()["data"]["taskId"]
    assert gt_wait(sim_clean, task_id)["state"] == "success"


def test_fetch_images_knob(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("generate_task", fetch_images=True)
    good = gt_body(image_urls=[sim.sample_image_url])
    bad = gt_body(image_urls=[f"{sim.url}/files/images/img_missing.png"])
    for body in (good, bad):
        del body["input"]["size"]
    good_id = gt_create(sim, good).json()["data"]["taskId"]
    bad_id = gt_create(sim, bad).json()["data"]["taskId"]
    assert gt_wait(sim, good_id)["state"] == "success"
    failed = gt_wait(sim, bad_id)
    assert failed["failCode"] == "INVALID_IMAGE_URL" and "404" in failed["failMsg"]
    fetched = [r for r in sim.requests if r["path"] == "/files/assets/sample.png"]
    assert len(fetched) == 1 and fetched[0]["protocol"] is None and fetched[0]["status"] == 200
    assert png_size(HTTP.get(sim.sample_image_url).content) == (384, 256)


# --- generate_task callbacks -------------------------------------------------------------------


def cb_body(hook: Receiver, **input_overrides: Any) -> dict[str, Any]:
    body = gt_body(**input_overrides)
    body.update(request_type="callback", callback_url=hook.url)
    return body


def test_callback_normal(sim_clean: Simulator, sim_hook: Receiver) -> None:
    task_id = gt_create(sim_clean, cb_body(sim_hook)).json()["data"]["taskId"]
    [body] = wait_for(sim_hook.bodies)
    time.sleep(0.2)
    assert len(sim_hook.bodies()) == 1
    assert body["code"] == 200 and body["data"]["taskId"] == task_id and body["data"]["state"] == "success"
    assert body["data"] == gt_status(sim_clean, task_id).json()["data"]
    [delivery] = wait_for(lambda: sim_clean.callback_deliveries)
    assert delivery["delivered"] and delivery["status_code"] == 200 and delivery["label"] == "terminal"


def test_callback_for_failure(sim_clean: Simulator, sim_hook: Receiver) -> None:
    gt_create(sim_clean, cb_body(sim_hook, prompt="x [sim:refuse]"))
    [body] = wait_for(sim_hook.bodies)
    assert body["data"]["state"] == "failed" and body["data"]["failCode"] == "CONTENT_VIOLATION"


def test_callback_duplicate(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim_clean.configure("generate_task", callback_mode="duplicate", callback_copies=5)
    gt_create(sim_clean, cb_body(sim_hook))
    bodies = wait_for(lambda: len(sim_hook.bodies()) == 5 and sim_hook.bodies())
    assert all(b == bodies[0] for b in bodies) and bodies[0]["data"]["state"] == "success"
    times = [c["at"] for c in sim_hook.calls]
    assert max(times) - min(times) < 1.0


def test_callback_out_of_order(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim_clean.configure("generate_task", callback_mode="out_of_order")
    task_id = gt_create(sim_clean, cb_body(sim_hook)).json()["data"]["taskId"]
    bodies = wait_for(lambda: len(sim_hook.bodies()) == 2 and sim_hook.bodies())
    assert [b["data"]["state"] for b in bodies] == ["success", "processing"]
    assert "resultJson" not in bodies[1]["data"]
    assert gt_status(sim_clean, task_id).json()["data"]["state"] == "success"


def test_callback_late(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim_clean.configure("generate_task", callback_mode="late", callback_delay_seconds=0.8, generation_seconds=0.1)
    task_id = gt_create(sim_clean, cb_body(sim_hook)).json()["data"]["taskId"]
    gt_wait(sim_clean, task_id)
    time.sleep(0.3)
    assert sim_hook.bodies() == []
    [body] = wait_for(sim_hook.bodies)
    assert body["data"]["state"] == "success"


def test_callback_never_and_async_mode(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim_clean.configure("generate_task", callback_mode="never", generation_seconds=0.05)
    gt_wait(sim_clean, gt_create(sim_clean, cb_body(sim_hook)).json()["data"]["taskId"])
    sim_clean.configure("generate_task", callback_mode="normal")
    async_body = gt_body()
    async_body["callback_url"] = sim_hook.url  # a URL on an async task is not called
    gt_wait(sim_clean, gt_create(sim_clean, async_body).json()["data"]["taskId"])
    time.sleep(0.3)
    assert sim_hook.bodies() == [] and sim_clean.callback_deliveries == []


def test_callback_body_result_url_is_only_in_the_body(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim_clean.configure("generate_task", callback_body_result_url="https://evil.example/steal.mp4")
    task_id = gt_create(sim_clean, cb_body(sim_hook)).json()["data"]["taskId"]
    [body] = wait_for(sim_hook.bodies)
    assert json.loads(body["data"]["resultJson"])["resultUrls"] == ["https://evil.example/steal.mp4"]
    status = gt_status(sim_clean, task_id).json()["data"]
    assert json.loads(status["resultJson"])["resultUrls"] == [f"{sim_clean.url}/files/generate_task/{task_id}.mp4"]


def test_callback_progress(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim_clean.configure("generate_task", callback_progress=True, generation_seconds=0.6)
    gt_create(sim_clean, cb_body(sim_hook))
    bodies = wait_for(lambda: len(sim_hook.bodies()) == 2 and sim_hook.bodies())
    assert [b["data"]["state"] for b in bodies] == ["processing", "success"]


def test_callback_delivery_failure_is_recorded(sim_clean: Simulator) -> None:
    body = gt_body()
    body.update(request_type="callback", callback_url="http://127.0.0.1:9/nowhere")
    gt_create(sim_clean, body)
    [delivery] = wait_for(lambda: sim_clean.callback_deliveries)
    assert delivery["delivered"] is False and delivery["error"] and delivery["status_code"] is None


def test_many_callbacks_while_serving_status(sim_clean: Simulator, sim_hook: Receiver) -> None:
    sim = sim_clean
    sim.configure("generate_task", callback_mode="duplicate", callback_copies=50, rate_limit_per_minute=10_000)
    task_id = gt_create(sim, cb_body(sim_hook)).json()["data"]["taskId"]
    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(lambda _: gt_status(sim, task_id).status_code, range(200)))
    assert codes == [200] * 200
    wait_for(lambda: len(sim_hook.bodies()) == 50)
    assert len([d for d in sim.callback_deliveries if d["delivered"]]) == 50


# --- sorahk ------------------------------------------------------------------------------------


def test_sorahk_lifecycle_cost_and_balance(sim_clean: Simulator) -> None:
    sim = sim_clean
    assert sk(sim, "GET", "/balance").json() == {"code": 200, "message": "操作成功", "data": {"balance": 5000}}
    created = sk(sim, "POST", "/create", json={"prompt": "sunset", "duration": 15, "resolution": "vertical"})
    assert created.status_code == 200
    data = created.json()["data"]
    assert data["status"] == "pending" and data["cost"] == 5  # ceil(3 * 15 / 10)
    assert sk(sim, "GET", "/balance").json()["data"]["balance"] == 4995
    task_id = data["task_id"]
    first = sk(sim, "GET", f"/tasks/{task_id}").json()["data"]
    assert first["status"] in ("pending", "processing") and first["prompt"] == "sunset" and first["is_pro"] is False
    assert first["created_at"].endswith("Z") and "completed_at" not in first
    done = wait_for(lambda: (d := sk(sim, "GET", f"/tasks/{task_id}").json()["data"])["status"] == "completed" and d)
    assert done["progress"] == 100 and done["completed_at"].endswith("Z")
    video = HTTP.get(done["video_url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert hashlib.sha256(video.content).hexdigest() == sim.video_bytes_sha256("sorahk", task_id)


def test_sorahk_pro_25_seconds(sim_clean: Simulator) -> None:
    reply = sk(sim_clean, "POST", "/create", json={"prompt": "p", "is_pro": True, "duration": 25})
    assert reply.json()["code"] == 200 and reply.json()["data"]["cost"] == 75


@pytest.mark.parametrize(
    "body",
    [
        {"duration": 10},
        {"prompt": "  "},
        {"prompt": "p", "duration": 25},
        {"prompt": "p", "duration": 20, "is_pro": True},
        {"prompt": "p", "duration": 12.5},
        {"prompt": "p", "is_pro": "yes"},
        {"prompt": "p", "resolution": "square"},
        {"prompt": "p", "quality": "ultra"},
        {"prompt": "p", "image_url": "file:///etc/passwd"},
        {"prompt": "p", "remove_watermark": "no"},
    ],
)
def test_sorahk_bad_parameters_are_1001(sim_clean: Simulator, body: dict[str, Any]) -> None:
    reply = sk(sim_clean, "POST", "/create", json=body)
    assert reply.status_code == 200
    assert reply.json()["code"] == 1001 and reply.json()["message"] and reply.json()["data"] is None
    assert sim_clean.tasks("sorahk") == []


def test_sorahk_insufficient_balance(sim_clean: Simulator) -> None:
    sim_clean.configure("sorahk", balance=4)
    assert sk(sim_clean, "POST", "/create", json={"prompt": "p"}).json()["data"]["cost"] == 3
    reply = sk(sim_clean, "POST", "/create", json={"prompt": "p"})
    assert reply.status_code == 200 and reply.json()["code"] == 1012
    assert sk(sim_clean, "GET", "/balance").json()["data"]["balance"] == 1


def test_sorahk_list_paged_and_filtered(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("sorahk", generation_seconds=60, extra_keys=["other-key"])
    ids = [sk(sim, "POST", "/create", json={"prompt": f"p{i}"}).json()["data"]["task_id"] for i in range(5)]
    sk(sim, "POST", "/create", json={"prompt": "theirs"}, headers={"Authorization": "Bearer other-key"})
    sim.complete_now("sorahk", ids[0])
    page1 = sk(sim, "GET", "/tasks", params={"page": 1, "page_size": 2}).json()["data"]
    page3 = sk(sim, "GET", "/tasks", params={"page": 3, "page_size": 2}).json()["data"]
    assert page1["total"] == 5 and page1["page"] == 1 and page1["page_size"] == 2
    assert [t["task_id"] for t in page1["tasks"]] == [ids[4], ids[3]]
    assert [t["task_id"] for t in page3["tasks"]] == [ids[0]]
    completed = sk(sim, "GET", "/tasks", params={"status": "completed"}).json()["data"]
    assert [t["task_id"] for t in completed["tasks"]] == [ids[0]] and completed["page_size"] == 20
    for params in ({"status": "done"}, {"page": 0}, {"page_size": "x"}, {"page_size": 101}):
        assert sk(sim, "GET", "/tasks", params=params).json()["code"] == 1001


def test_sorahk_pricing_auth_and_unknown_task(sim_clean: Simulator) -> None:
    sim = sim_clean
    pricing = sk(sim, "GET", "/pricing").json()["data"]
    assert pricing == {"normal_price": 3, "pro_price": 30, "currency": "USD", "unit": "cents"}
    unauthorized = sk(sim, "GET", "/balance", headers={"Authorization": "Bearer nope"})
    assert unauthorized.status_code == 401 and unauthorized.json()["code"] == 401
    assert unauthorized.json()["data"] is None and unauthorized.json()["message"]
    missing = sk(sim, "GET", "/tasks/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and missing.json()["code"] == 404
    unknown_path = sk(sim, "GET", "/nothing-here")
    assert unknown_path.status_code == 404 and unknown_path.json()["code"] == 404
    wrong_method = sk(sim, "GET", "/create")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 405


# --- openai_videos -----------------------------------------------------------------------------


def test_openai_video_lifecycle_and_content(sim_clean: Simulator) -> None:
    sim = sim_clean
    video = oa_create(sim, model="sora_video2-landscape-hd-15s")
    assert video["object"] == "video" and video["status"] == "queued" and video["error"] is None
    assert video["size"] == "1792x1024" and video["seconds"] == "15" and video["remixed_from_video_id"] is None
    not_ready = oa(sim, "GET", f"/v1/videos/{video['id']}/content")
    assert not_ready.status_code == 409 and not_ready.json()["error"]["code"] == "video_not_ready"
    done = wait_for(lambda: (d := oa(sim, "GET", f"/v1/videos/{video['id']}").json())["status"] == "completed" and d)
    assert done["progress"] == 100 and done["completed_at"] >= done["created_at"]
    content = oa(sim, "GET", f"/v1/videos/{video['id']}/content")
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(content.content).hexdigest() == sim.video_bytes_sha256("openai_videos", video["id"])
    assert oa(sim, "GET", f"/v1/videos/{video['id']}/content", headers={"Authorization": "x"}).status_code == 401
    assert HTTP.get(f"{sim.url}/files/openai_videos/{video['id']}.mp4").status_code == 404  # API only
    assert oa(sim, "GET", "/v1/videos/video_nope").status_code == 404


@pytest.mark.parametrize(
    ("model", "ok"),
    [
        ("sora_video2", True),
        ("sora_video", True),
        ("sora_video2-portrait", True),
        ("sora_video2-landscape-hd", True),
        ("sora_video2-hd-portrait-15s", True),
        ("sora_video2-pro-25s", True),
        ("sora_video2-pro-hd", True),
        ("sora_video2-hd-25s", False),
        ("sora_video2-portrait-landscape", False),
        ("sora_video2-15s-25s", False),
        ("sora_video2-hd-hd", False),
        ("sora_video2-4k", False),
        ("sora_video-hd", False),
        ("sora_image", False),
        ("gpt-4o", False),
        ("", False),
    ],
)
def test_openai_model_rules(sim_clean: Simulator, model: str, ok: bool) -> None:
    reply = oa(sim_clean, "POST", "/v1/videos", json={"prompt": "p", "model": model})
    if ok:
        assert reply.status_code == 200, reply.text
    else:
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert error["code"] == "invalid_model" and error["type"] == "invalid_request_error" and error["message"]


def test_openai_create_validation_and_auth(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("openai_videos", generation_seconds=0)
    instant = oa_create(sim)
    assert instant["status"] == "queued" and instant["progress"] == 0
    assert oa(sim, "GET", f"/v1/videos/{instant['id']}").json()["status"] == "completed"
    assert oa(sim, "POST", "/v1/videos", json={"model": "sora_video2"}).status_code == 400
    bad_mark = oa(sim, "POST", "/v1/videos", json={"prompt": "p", "model": "sora_video2", "watermark": "yes"})
    assert bad_mark.status_code == 400
    sized = oa(sim, "POST", "/v1/videos", json={"prompt": "p", "model": "sora_video2", "size": "1280x720"})
    assert sized.json()["size"] == "1280x720"
    bearer = oa(
        sim,
        "POST",
        "/v1/videos",
        json={"prompt": "p", "model": "sora_video2"},
        headers={"Authorization": "Bearer sim-licence"},
    )
    assert bearer.status_code == 401 and bearer.json()["error"]["code"] == "invalid_api_key"


def test_openai_remix(sim_clean: Simulator) -> None:
    sim = sim_clean
    parent = oa_create(sim, model="sora_video2-landscape")
    early = oa(sim, "POST", f"/v1/videos/{parent['id']}/remix", json={"prompt": "more", "model": "sora_video2"})
    assert early.status_code == 400
    sim.complete_now("openai_videos", parent["id"])
    remix = oa(sim, "POST", f"/v1/videos/{parent['id']}/remix", json={"prompt": "more", "model": "sora_video2"})
    assert remix.status_code == 200
    child = remix.json()
    assert child["id"] != parent["id"] and child["remixed_from_video_id"] == parent["id"]
    assert child["size"] == "1280x720"  # keeps the parent's orientation
    no_model = oa(sim, "POST", f"/v1/videos/{parent['id']}/remix", json={"prompt": "more"})
    assert no_model.status_code == 400
    assert (
        oa(sim, "POST", "/v1/videos/video_nope/remix", json={"prompt": "x", "model": "sora_video2"}).status_code == 404
    )


def test_openai_image_generations(sim_clean: Simulator) -> None:
    sim = sim_clean
    reply = oa(
        sim,
        "POST",
        "/v1/images/generations",
        files={"prompt": (None, "cat"), "model": (None, "sora_image"), "n": (None, "3"), "size": (None, "1536x1024")},
    )
    assert reply.status_code == 200, reply.text
    urls = [item["url"] for item in reply.json()["data"]]
    assert len(urls) == 3 and len(set(urls)) == 3 and isinstance(reply.json()["created"], int)
    for url in urls:
        image = HTTP.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        width, height = png_size(image.content)
        assert width * 2 == height * 3  # 3:2
    square = oa(sim, "POST", "/v1/images/generations", data={"prompt": "cat", "model": "sora_image"}).json()
    assert png_size(HTTP.get(square["data"][0]["url"]).content) == (256, 256)
    recorded = next(r for r in sim.requests if r["kind"] == "images")
    assert recorded["body"]["form"]["n"] == "3"


@pytest.mark.parametrize(
    "form",
    [
        {"prompt": "cat", "model": "sora_video2"},
        {"model": "sora_image"},
        {"prompt": "cat", "model": "sora_image", "n": "5"},
        {"prompt": "cat", "model": "sora_image", "n": "0"},
        {"prompt": "cat", "model": "sora_image", "size": "big"},
    ],
)
def test_openai_image_generation_errors(sim_clean: Simulator, form: dict[str, str]) -> None:
    reply = oa(sim_clean, "POST", "/v1/images/generations", data=form)
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"


def test_openai_images_json_refusal_and_failure(sim_clean: Simulator) -> None:
    sim = sim_clean
    as_json = oa(sim, "POST", "/v1/images/generations", json={"prompt": "cat", "model": "sora_image"})
    assert as_json.status_code == 400
    refused = oa(sim, "POST", "/v1/images/generations", data={"prompt": "x [sim:refuse]", "model": "sora_image"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_policy_violation"
    failed = oa(sim, "POST", "/v1/images/generations", data={"prompt": "x [sim:fail]", "model": "sora_image"})
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"


def test_openai_image_edits(sim_clean: Simulator) -> None:
    sim = sim_clean
    tall = media.png_bytes("input", "2:3")
    form = {"prompt": "restyle", "model": "sora_image"}
    reply = oa(sim, "POST", "/v1/images/edits", data=form, files=[("image[]", ("in.png", tall, "image/png"))])
    assert reply.status_code == 200, reply.text
    assert png_size(HTTP.get(reply.json()["data"][0]["url"]).content) == (256, 384)
    text = oa(sim, "POST", "/v1/images/edits", data=form, files=[("image[]", ("in.png", b"hello", "image/png"))])
    assert text.status_code == 400
    none = oa(sim, "POST", "/v1/images/edits", files={"prompt": (None, "restyle"), "model": (None, "sora_image")})
    assert none.status_code == 400
    recorded = next(r for r in sim.requests if r["path"].endswith("/edits"))
    assert recorded["body"]["files"][0] == {
        "field": "image[]",
        "filename": "in.png",
        "content_type": "image/png",
        "size": len(tall),
    }


def test_openai_chat_completions(sim_clean: Simulator) -> None:
    sim = sim_clean
    messages = [{"role": "user", "content": [{"type": "text", "text": "a kitten"}]}]
    image = oa(sim, "POST", "/v1/chat/completions", json={"model": "sora_image", "messages": messages}).json()
    assert image["object"] == "chat.completion"
    content = image["choices"][0]["message"]["content"]
    assert content.startswith("![image](") and HTTP.get(content[9:-1]).status_code == 200
    stream = oa(
        sim, "POST", "/v1/chat/completions", json={"model": "sora_video2", "messages": messages, "stream": True}
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    url = text[text.index("[video](") + 8 : -1]
    video = HTTP.get(url)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    bad = oa(sim, "POST", "/v1/chat/completions", json={"model": "sora_video2", "messages": []})
    assert bad.status_code == 400


# --- knobs shared by all protocols -------------------------------------------------------------


def test_fail_next(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("all", fail_next=2)
    for _ in range(2):
        gt = gt_create(sim)
        assert gt.status_code == 500 and gt.json()["code"] == 500
        sorahk = sk(sim, "POST", "/create", json={"prompt": "p"})
        assert sorahk.status_code == 500 and sorahk.json()["code"] == 500
        openai = oa(sim, "POST", "/v1/videos", json={"prompt": "p", "model": "sora_video2"})
        assert openai.status_code == 500 and openai.json()["error"]["type"] == "server_error"
    assert all(sim.tasks(p) == [] for p in ("generate_task", "sorahk", "openai_videos"))
    assert sk(sim, "GET", "/balance").json()["data"]["balance"] == 5000  # rejected creates cost nothing
    assert gt_create(sim).status_code == 200


def test_fail_next_accepted(sim_clean: Simulator) -> None:
    sim_clean.configure("generate_task", fail_next=1, fail_next_accepted=True)
    assert gt_create(sim_clean).status_code == 500
    [task] = sim_clean.tasks("generate_task")
    assert task["prompt"] == "a cat on a skateboard"


def test_force_statuses(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("generate_task", force={"create": [429, 503], "status": [500]})
    limited = gt_create(sim)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert gt_create(sim).status_code == 503
    task_id = gt_create(sim).json()["data"]["taskId"]
    assert gt_status(sim, task_id).status_code == 500
    assert gt_status(sim, task_id).status_code == 200
    sim.configure("sorahk", force={"*": [401], "create": [1012]})
    assert sk(sim, "GET", "/pricing").status_code == 401
    business = sk(sim, "POST", "/create", json={"prompt": "p"})
    assert business.status_code == 200 and business.json()["code"] == 1012
    sim.configure("openai_videos", force={"content": [404], "images": [429]})
    assert oa(sim, "POST", "/v1/images/generations", data={"prompt": "p", "model": "sora_image"}).status_code == 429
    assert sim.state()["knobs"]["openai_videos"]["force"] == {"content": [404]}


def test_forced_errors_apply_before_auth(sim_clean: Simulator) -> None:
    sim_clean.configure("sorahk", force={"balance": [500]})
    reply = sk(sim_clean, "GET", "/balance", headers={"Authorization": "Bearer wrong"})
    assert reply.status_code == 500 and reply.json()["code"] == 500


def test_create_hang_seconds(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("sorahk", create_hang_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        sk(sim, "POST", "/create", json={"prompt": "lost answer"}, timeout=0.3)
    assert time.monotonic() - started < 0.9
    [task] = sim.tasks("sorahk")
    assert task["prompt"] == "lost answer"
    listed = sk(sim, "GET", "/tasks").json()["data"]["tasks"]
    assert [t["task_id"] for t in listed] == [task["id"]]


def test_configure_validation(sim_clean: Simulator) -> None:
    sim = sim_clean
    cases: list[tuple[str, dict[str, Any]]] = [
        ("nope", {"generation_seconds": 1}),
        ("sorahk", {"no_such_knob": 1}),
        ("sorahk", {"generation_seconds": "fast"}),
        ("sorahk", {"callback_mode": "duplicate"}),
        ("generate_task", {"callback_mode": "sometimes"}),
        ("generate_task", {"force": {"list": [500]}}),
        ("generate_task", {"force": {"create": [200]}}),
        ("generate_task", {"force": {"create": [1012]}}),
        ("all", {"balance": 10}),
    ]
    for protocol, knobs in cases:
        with pytest.raises(ValueError):
            sim.configure(protocol, **knobs)
    assert sim.configure("sorahk", balance=7)["balance"] == 7


def test_control_endpoints(sim_clean: Simulator) -> None:
    sim = sim_clean
    config = HTTP.post(f"{sim.url}/_sim/config", json={"protocol": "sorahk", "balance": 42, "generation_seconds": 60})
    assert config.status_code == 200 and config.json()["knobs"]["balance"] == 42
    assert HTTP.post(f"{sim.url}/_sim/config", json={"protocol": "sorahk", "balance": -1}).status_code == 400
    assert HTTP.post(f"{sim.url}/_sim/config", json={"balance": 1}).status_code == 400
    task_id = sk(sim, "POST", "/create", json={"prompt": "p"}).json()["data"]["task_id"]
    state = HTTP.get(f"{sim.url}/_sim/state").json()
    assert state["base_urls"] == sim.base_urls and state["api_keys"] == sim.api_keys
    assert state["knobs"]["sorahk"]["balance"] == 39 and state["tasks"]["sorahk"][0]["id"] == task_id
    assert "callback_mode" in state["knobs"]["generate_task"] and "callback_mode" not in state["knobs"]["sorahk"]
    failed = HTTP.post(f"{sim.url}/_sim/tasks/sorahk/{task_id}/fail", json={"code": "content_policy"}).json()
    assert failed["state"] == "failed" and "违反" in failed["status"]["error_msg"]
    again = HTTP.post(f"{sim.url}/_sim/tasks/sorahk/{task_id}/complete")
    assert again.status_code == 400
    assert HTTP.post(f"{sim.url}/_sim/tasks/sorahk/nope/complete").status_code == 404
    requests = HTTP.get(f"{sim.url}/_sim/requests").json()
    assert [r["kind"] for r in requests] == ["create"] and requests[0]["body"] == {"prompt": "p"}
    assert HTTP.post(f"{sim.url}/_sim/reset").status_code == 200
    assert sim.tasks("sorahk") == [] and sim.requests == [] and sim.state()["knobs"]["sorahk"]["balance"] == 5000


def test_complete_now_and_fail_now_codes(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("all", generation_seconds=60)
    a = gt_create(sim).json()["data"]["taskId"]
    b = gt_create(sim).json()["data"]["taskId"]
    c = oa_create(sim)["id"]
    sim.complete_now("generate_task", a)
    assert gt_status(sim, a).json()["data"]["state"] == "success"
    sim.fail_now("generate_task", b, code="SOMETHING_ELSE", message="boom")
    data = gt_status(sim, b).json()["data"]
    assert (data["state"], data["failCode"], data["failMsg"]) == ("failed", "SOMETHING_ELSE", "boom")
    sim.fail_now("openai_videos", c, code="invalid_image")
    assert oa(sim, "GET", f"/v1/videos/{c}").json()["error"]["code"] == "invalid_image"
    with pytest.raises(ValueError):
        sim.complete_now("generate_task", a)
    with pytest.raises(KeyError):
        sim.fail_now("sorahk", "missing")
    with pytest.raises(ValueError):
        sim.video_bytes_sha256("generate_task", b)


def test_requests_are_recorded_without_credentials(sim_clean: Simulator) -> None:
    sim = sim_clean
    gt_create(sim)
    sk(sim, "GET", "/balance", params={"x": "1"})
    first, second = sim.requests
    assert first["method"] == "POST" and first["path"] == "/generate-task" + GT_CREATE
    assert first["body"]["input"]["duration"] == 4 and first["authorized"] is True and first["status"] == 200
    assert first["protocol"] == "generate_task" and first["kind"] == "create" and first["at"] > 0
    assert second["query"] == {"x": "1"} and second["body"] is None
    assert all("sim-gt-key" not in json.dumps(r["headers"]) for r in sim.requests)


# --- result bytes and downloads ------------------------------------------------------------------


def finished_gt_task(sim: Simulator, **knobs: Any) -> str:
    sim.configure("generate_task", generation_seconds=60, **knobs)
    task_id = gt_create(sim).json()["data"]["taskId"]
    sim.complete_now("generate_task", task_id)
    return task_id


def test_mp4_structure_and_determinism(sim_clean: Simulator) -> None:
    sim = sim_clean
    first = finished_gt_task(sim, video_bytes=300_000)
    second = finished_gt_task(sim)
    url = f"{sim.url}/files/generate_task/{first}.mp4"
    data = HTTP.get(url).content
    assert len(data) == 300_000
    kinds = [kind for kind, _ in boxes(data)]
    assert kinds[0] == "ftyp" and "moov" in kinds and "mdat" in kinds and kinds[-1] == "free"
    assert HTTP.get(url).content == data
    other = HTTP.get(f"{sim.url}/files/generate_task/{second}.mp4").content
    assert len(other) == len(data) and other != data
    assert sim.video_bytes_sha256("generate_task", first) == hashlib.sha256(data).hexdigest()
    assert sim.video_bytes_sha256("generate_task", first) != sim.video_bytes_sha256("generate_task", second)


def test_video_size_is_clamped_to_a_valid_file(sim_clean: Simulator) -> None:
    task_id = finished_gt_task(sim_clean, video_bytes=10)
    data = HTTP.get(f"{sim_clean.url}/files/generate_task/{task_id}.mp4").content
    assert len(data) == media.min_video_size() and [k for k, _ in boxes(data)][-1] == "free"


def test_video_byte_ranges() -> None:
    whole = b"".join(media.video_chunks("seed", 200_000))
    assert len(whole) == 200_000
    for start, end in [(0, 10), (24_000, 24_500), (65_530, 131_080), (199_990, 200_000), (5, 200_000)]:
        assert b"".join(media.video_chunks("seed", 200_000, start, end)) == whole[start:end]
    huge = 5 * 1024**3
    base = len(media.sample_mp4())
    header = b"".join(media.video_chunks("seed", huge, base, base + 16))
    assert struct.unpack(">I4sQ", header) == (1, b"free", huge - base)


def test_http_range_request(sim_clean: Simulator) -> None:
    task_id = finished_gt_task(sim_clean, video_bytes=100_000)
    url = f"{sim_clean.url}/files/generate_task/{task_id}.mp4"
    whole = HTTP.get(url).content
    part = HTTP.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == whole[1000:2000]
    assert part.headers["content-range"] == "bytes 1000-1999/100000"
    assert HTTP.get(url, headers={"Range": "bytes=200000-"}).status_code == 416


def test_large_download_streams_in_constant_memory(sim_clean: Simulator) -> None:
    size = 100 * 1024 * 1024
    task_id = finished_gt_task(sim_clean, video_bytes=size)
    digest, received = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        with HTTP.stream("GET", f"{sim_clean.url}/files/generate_task/{task_id}.mp4", timeout=30) as reply:
            assert int(reply.headers["content-length"]) == size
            for chunk in reply.iter_bytes():
                digest.update(chunk)
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert peak < 20 * 1024 * 1024, peak
    assert digest.hexdigest() == sim_clean.video_bytes_sha256("generate_task", task_id)


def test_slow_download(sim_clean: Simulator) -> None:
    task_id = finished_gt_task(sim_clean, video_bytes=300_000, download_bytes_per_second=1_000_000)
    started = time.monotonic()
    data = HTTP.get(f"{sim_clean.url}/files/generate_task/{task_id}.mp4").content
    assert len(data) == 300_000 and time.monotonic() - started >= 0.25


def test_truncated_download(sim_clean: Simulator) -> None:
    task_id = finished_gt_task(sim_clean, video_bytes=300_000, truncate_download_at=100_000)
    received = 0
    with (
        pytest.raises(httpx.RemoteProtocolError),
        HTTP.stream("GET", f"{sim_clean.url}/files/generate_task/{task_id}.mp4") as reply,
    ):
        assert reply.headers["content-length"] == "300000"
        for chunk in reply.iter_bytes():
            received += len(chunk)
    assert received == 100_000


def test_download_errors(sim_clean: Simulator) -> None:
    sim = sim_clean
    task_id = finished_gt_task(sim, force={"download": [503]})
    url = f"{sim.url}/files/generate_task/{task_id}.mp4"
    assert HTTP.get(url).status_code == 503
    assert HTTP.get(url).status_code == 200
    for path in ("generate_task/gt_nope.mp4", "elsewhere/x.mp4", "images/img_nope.png", f"generate_task/{task_id}.png"):
        assert HTTP.get(f"{sim.url}/files/{path}").status_code == 404
    pending = gt_create(sim).json()["data"]["taskId"]
    assert HTTP.get(f"{sim.url}/files/generate_task/{pending}.mp4").status_code == 404


def test_video_bytes_fixed_when_task_succeeds(sim_clean: Simulator) -> None:
    sim = sim_clean
    sim.configure("generate_task", generation_seconds=60)
    task_id = gt_create(sim).json()["data"]["taskId"]
    sim.configure("generate_task", video_bytes=123_456)
    sim.complete_now("generate_task", task_id)
    sim.configure("generate_task", video_bytes=999_999)
    reply = HTTP.get(f"{sim.url}/files/generate_task/{task_id}.mp4")
    assert len(reply.content) == 123_456


# --- lifecycle ---------------------------------------------------------------------------------


def test_public_attributes() -> None:
    sim = Simulator(port=0)
    with pytest.raises(RuntimeError):
        _ = sim.url
    with sim:
        port = int(sim.url.rsplit(":", 1)[1])
        assert sim.host_port == f"127.0.0.1:{port}"
        assert sim.base_urls == {
            "generate_task": f"http://127.0.0.1:{port}/generate-task",
            "sorahk": f"http://127.0.0.1:{port}/sorahk/v1",
            "openai_videos": f"http://127.0.0.1:{port}/openai/sora",
        }
        assert sim.api_keys == {"generate_task": "sim-gt-key", "sorahk": "sora-sim-key", "openai_videos": "sim-licence"}
        assert HTTP.get(f"{sim.url}/_sim/state").status_code == 200
    with pytest.raises(httpx.ConnectError):
        HTTP.get(f"http://127.0.0.1:{port}/_sim/state")


def test_stop_interrupts_a_hanging_create() -> None:
    sim = Simulator().start()
    sim.configure("openai_videos", create_hang_seconds=30)
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["reply"] = oa(sim, "POST", "/v1/videos", json={"prompt": "p", "model": "sora_video2"}, timeout=10)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: sim.tasks("openai_videos"))
    started = time.monotonic()
    sim.stop()
    thread.join(timeout=5)
    assert time.monotonic() - started < 3 and not thread.is_alive()


def test_module_entry_point_prints_urls_and_keys() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "reelay_sim", "--port", "0", "--generation-seconds", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        text = "".join(lines)
        assert "sim-gt-key" in text and "sora-sim-key" in text and "sim-licence" in text
        url = text.split("serving on ", 1)[1].split()[0]
        state = HTTP.get(f"{url}/_sim/state").json()
        assert state["knobs"]["sorahk"]["generation_seconds"] == 1.0
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_png_is_well_formed() -> None:
    """Generated PNGs have valid chunk CRCs and a zlib stream of the right size."""
    data = media.png_bytes("x", "3:2")
    stream = io.BytesIO(data[8:])
    idat = b""
    while chunk := stream.read(8):
        length, kind = struct.unpack(">I4s", chunk)
        body = stream.read(length)
        (crc,) = struct.unpack(">I", stream.read(4))
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IDAT":
            idat += body
    assert len(zlib.decompress(idat)) == 256 * (1 + 384 * 3)
