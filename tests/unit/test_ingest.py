"""Ingest: streamed multipart copies, checksums, no partial objects, SSRF guard, credentials."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import boto3
import httpx
import pytest

from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.errors import ResultFetchError, UnsafeResultUrl
from reelay.ingest import IngestService, ResultCopier, UrlGuard
from reelay.models import ErrorCode, TaskStatus, VideoRequest
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater
from tests.unit.fakes import FakeProvider, config

MiB = 1024 * 1024
PUBLIC = {
    "cdn.example": "93.184.216.34",
    "evil.example": "10.0.0.5",
    "meta.example": "169.254.169.254",
    "v6.example": "::1",
}


def resolver(host: str, port: int) -> list[str]:
    return [PUBLIC[host]]


def _video(size: int) -> bytes:
    return (b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * (size // 256 + 1))[:size]


class Server:
    """A fake result host: serves bodies, optionally truncated, and records request headers."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.redirects: dict[str, str] = {}
        self.seen: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        url = str(request.url)
        if url in self.redirects:
            return httpx.Response(302, headers={"location": self.redirects[url]})
        body = self.bodies.get(url)
        if body is None:
            return httpx.Response(404)
        cut = self.truncate.get(url, len(body))

        def stream() -> Iterator[bytes]:
            for i in range(0, cut, 256 * 1024):
                yield body[i : min(cut, i + 256 * 1024)]

        return httpx.Response(
            200, headers={"content-type": "video/mp4", "content-length": str(len(body))}, content=stream()
        )


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def copier(aws: dict[str, str], server: Server) -> ResultCopier:
    client = httpx.Client(transport=httpx.MockTransport(server.handler))
    return ResultCopier(
        ResultBucket("results"), UrlGuard(frozenset({"sim.local:8080"}), resolver), client=client, part_bytes=5 * MiB
    )


def _no_headers(url: str) -> dict[str, str]:
    return {}


def test_large_result_is_streamed_in_parts_with_its_sha256(copier: ResultCopier, server: Server) -> None:
    body = _video(12 * MiB + 123)
    server.bodies["https://cdn.example/v.mp4"] = body
    out = copier.copy("https://cdn.example/v.mp4", "tasks/t1/output-0", headers_for=_no_headers)
    assert out.key == "tasks/t1/output-0.mp4" and out.bytes == len(body)
    assert out.sha256 == hashlib.sha256(body).hexdigest()
    stored = boto3.client("s3").get_object(Bucket="results", Key=out.key)
    assert stored["ContentType"] == "video/mp4"
    assert stored["Body"].read() == body
    assert "-3" in stored["ETag"]  # three parts: 5 MiB, 5 MiB, the rest


def test_small_result_is_one_put(copier: ResultCopier, server: Server) -> None:
    server.bodies["https://cdn.example/s.mp4"] = _video(1000)
    out = copier.copy("https://cdn.example/s.mp4", "tasks/t1/output-0", headers_for=_no_headers)
    head = boto3.client("s3").head_object(Bucket="results", Key=out.key)
    assert head["ContentLength"] == 1000 and head["Metadata"]["sha256"] == out.sha256


@pytest.mark.parametrize("size", [1000, 11 * MiB])
def test_truncated_download_leaves_no_object_and_no_upload(copier: ResultCopier, server: Server, size: int) -> None:
    server.bodies["https://cdn.example/t.mp4"] = _video(size)
    server.truncate["https://cdn.example/t.mp4"] = size - 10
    with pytest.raises(ResultFetchError, match="truncated"):
        copier.copy("https://cdn.example/t.mp4", "tasks/t1/output-0", headers_for=_no_headers)
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket="results").get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket="results").get("Uploads", []) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example/x.mp4",  # private address
        "http://meta.example/latest/meta-data",  # link-local metadata service
        "http://v6.example/x.mp4",  # loopback v6
        "http://127.0.0.1:9000/x.mp4",
        "file:///etc/passwd",
    ],
)
def test_private_hosts_are_refused(copier: ResultCopier, server: Server, url: str) -> None:
    guard = UrlGuard(frozenset(), lambda h, p: [PUBLIC.get(h, h)])
    copier._guard = guard
    with pytest.raises(UnsafeResultUrl):
        copier.copy(url, "tasks/t1/output-0", headers_for=_no_headers)
    assert server.seen == []


def test_allowed_host_port_may_be_private(copier: ResultCopier, server: Server) -> None:
    server.bodies["http://sim.local:8080/v.mp4"] = _video(100)
    assert copier.copy("http://sim.local:8080/v.mp4", "k", headers_for=_no_headers).bytes == 100


def test_redirects_are_checked_and_credentials_stay_on_the_provider_host(copier: ResultCopier, server: Server) -> None:
    server.redirects["https://cdn.example/a.mp4"] = "http://evil.example/b.mp4"
    with pytest.raises(UnsafeResultUrl):
        copier.copy("https://cdn.example/a.mp4", "k", headers_for=_no_headers)

    def creds(url: str) -> dict[str, str]:
        return {"Authorization": "secret"} if url.startswith("https://cdn.example/") else {}

    PUBLIC["other.example"] = "93.184.216.35"
    server.redirects["https://cdn.example/c.mp4"] = "https://other.example/c.mp4"
    server.bodies["https://other.example/c.mp4"] = _video(50)
    server.seen.clear()
    copier.copy("https://cdn.example/c.mp4", "k", headers_for=creds)
    assert [("authorization" in r.headers) for r in server.seen] == [True, False]


def test_ingest_service_marks_succeeded_once_and_retries_fetch_failures(
    aws: dict[str, str], copier: ResultCopier, server: Server
) -> None:
    provider = FakeProvider(config("generate_task"))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    tracker = TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"]))
    service = IngestService(store, catalog, copier, tracker)
    task = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results")).create(
        VideoRequest(provider="generate_task", prompt="x")
    )[0]
    task = store.transition(task, TaskStatus.INGESTING, reason="t", result_urls=["https://cdn.example/r.mp4"])
    with pytest.raises(RetryLater):
        service.ingest_with_retry(task.id, 0)  # 404: the object is not there yet
    assert store.get(task.id).status is TaskStatus.INGESTING
    server.bodies["https://cdn.example/r.mp4"] = _video(2048)
    done = service.ingest(task.id)
    assert done.status is TaskStatus.SUCCEEDED and done.outputs[0].bytes == 2048
    assert service.ingest(task.id).version == done.version  # a duplicate message changes nothing


def test_ingest_refuses_a_private_result_url_as_a_stable_failure(aws: dict[str, str], copier: ResultCopier) -> None:
    provider = FakeProvider(config("generate_task"))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    service = IngestService(store, catalog, copier, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])))
    task = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results")).create(
        VideoRequest(provider="generate_task", prompt="x")
    )[0]
    store.transition(task, TaskStatus.INGESTING, reason="t", result_urls=["http://evil.example/x.mp4"])
    failed = service.ingest(task.id)
    assert failed.status is TaskStatus.FAILED and failed.error.code is ErrorCode.RESULT_URL_REFUSED
