"""End-to-end ingest on the local stack: gone, failing and refused results end the task; uploads are the caller's.

The stack runs with short ingest timings (``REELAY_INGEST_*``, passed through by the local
stack as ``reelay dev`` does) so a result that stays gone is confirmed over seconds, not a minute.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import boto3
import httpx
import pytest

from reelay_local import DevEnvironment
from tests.e2e.conftest import E2E_ENV, Api
from tests.template_support import REPO

INGEST_ENV = {
    **E2E_ENV,
    "REELAY_INGEST_GONE_CONFIRM_SECONDS": "2",
    "REELAY_INGEST_RETRY_BASE_SECONDS": "1",
}
VIDEO = {"provider": "generate_task", "prompt": "a lighthouse", "duration": 4}


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in INGEST_ENV.items():
            patch.setenv(key, value)
        with DevEnvironment(REPO) as env:
            client = Api(env)
            yield client
            client.http.close()


def open_uploads(api: Api) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=api.env.stack.aws_endpoint)
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=api.env.stack.bucket).get("Uploads", [])]


def test_a_result_that_stays_404_fails_result_expired_with_nothing_stored(api: Api) -> None:
    # Given a provider whose result URL answers 404 every time
    api.env.sim.configure("generate_task", force={"download": [404] * 20})
    # When a task succeeds at the provider
    task = api.submit_and_wait(VIDEO, timeout=90)
    # Then it fails RESULT_EXPIRED after several attempts, with nothing in the bucket
    assert task["status"] == "failed" and task["error"]["code"] == "RESULT_EXPIRED", task
    assert len(api.sim_requests(kind="download")) >= 3
    assert api.objects(task["id"]) == [] and open_uploads(api) == []


def test_a_result_always_truncated_fails_ingest_failed_once_retries_are_spent(api: Api) -> None:
    api.env.sim.configure("generate_task", video_bytes=12 * 1024 * 1024, truncate_download_at=9 * 1024 * 1024)
    task = api.submit_and_wait(VIDEO, timeout=120)
    assert task["status"] == "failed" and task["error"]["code"] == "INGEST_FAILED", task
    assert len(api.sim_requests(kind="download")) == 5  # maxReceiveCount attempts, then failed, not parked
    assert api.objects(task["id"]) == [] and open_uploads(api) == []


@pytest.mark.parametrize("url", ["http://h:99999/x.mp4", "https://127.0.0.2/x.mp4", "https://169.254.169.254/x"])
def test_a_refused_result_url_fails_at_once(api: Api, url: str) -> None:
    api.env.sim.configure("generate_task", status_result_url=url)
    task = api.submit_and_wait(VIDEO, timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "RESULT_URL_REFUSED", task
    assert api.sim_requests(kind="download") == [] and api.objects(task["id"]) == []


def test_an_html_result_fails_not_media(api: Api) -> None:
    url = f"http://{api.env.sim.host_port}/_sim/state"  # JSON, not a video
    api.env.sim.configure("generate_task", status_result_url=url)
    task = api.submit_and_wait(VIDEO, timeout=60)
    assert task["status"] == "failed" and task["error"]["code"] == "RESULT_NOT_MEDIA", task
    assert api.objects(task["id"]) == []


def test_a_large_result_arrives_whole_with_its_sha256(api: Api) -> None:
    api.env.sim.configure("generate_task", video_bytes=20 * 1024 * 1024)
    task = api.submit_and_wait(VIDEO, timeout=90)
    assert task["status"] == "succeeded", task
    [output] = task["outputs"]
    body = api.object_bytes(output["s3_uri"].split("/", 3)[3])
    assert len(body) == output["bytes"] and hashlib.sha256(body).hexdigest() == output["sha256"]
    assert open_uploads(api) == []


def test_image_keys_must_be_the_callers_own_uploads(api: Api) -> None:
    # Given an upload ticket from POST /v1/uploads
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    ticket = api.http.post("/v1/uploads", json={"content_type": "image/png", "bytes": len(png)})
    assert ticket.status_code == 201, ticket.text
    upload = ticket.json()
    assert upload["method"] == "PUT" and upload["key"].startswith("uploads/")
    assert upload["headers"] == {"Content-Type": "image/png", "Content-Length": str(len(png))}
    # And a PUT that is not the ticket's (another type, more bytes than signed) is S3's 403
    for content, headers in ((png, {"Content-Type": "text/html"}), (png + bytes(10), {"Content-Type": "image/png"})):
        wrong = httpx.put(upload["url"], content=content, headers=headers)
        assert wrong.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in wrong.text, wrong.text
    put = httpx.put(upload["url"], content=png, headers=upload["headers"])
    assert put.status_code == 200, put.text
    # When it is used as an image input, it is accepted
    edit = {"provider": "openai_videos", "prompt": "blue", "image_keys": [upload["key"]]}
    ok = api.http.post("/v1/images", json=edit)
    assert ok.status_code == 202, ok.text
    # And another task's output (or any key outside the caller's prefix) is a 404 like a missing
    # upload, never read; a key with a ".." segment is not a key at all (422)
    done = api.submit_and_wait(VIDEO, timeout=60)
    other = done["outputs"][0]["s3_uri"].split("/", 3)[3]
    for key, status in (
        (other, 404),
        ("uploads/someone-else/x.png", 404),
        (upload["key"].replace("uploads/", "uploads/../tasks/"), 422),
    ):
        refused = api.http.post("/v1/images", json={"provider": "openai_videos", "prompt": "x", "image_keys": [key]})
        assert refused.status_code == status, (key, refused.text)
    assert api.wait(ok.json()["id"])["status"] == "succeeded"
