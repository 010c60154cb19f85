"""Ingest: pipelined multipart copies, checksums, resume, all-or-nothing, failure codes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from reelay.aws import ResultBucket, TaskQueue
from reelay.catalog import ProviderCatalog
from reelay.copier import PartBody, ResultCopier
from reelay.errors import RequestInvalid, ResultFetchError, UnsafeResultUrl, UploadNotFound
from reelay.fetch import Fetcher
from reelay.fetch_policy import Limits, ResultNotMedia, ResultTooLarge, UrlPolicy
from reelay.ingest import MAX_RECEIVES, IngestService
from reelay.inputs import ImageInputs
from reelay.models import ErrorCode, ImageRequest, Task, TaskStatus, UploadRequest, VideoRequest, utcnow
from reelay.settings import Settings
from reelay.store import DynamoTaskStore
from reelay.tasks import TaskService, uploads_prefix
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater
from tests.template_support import resource
from tests.unit.fakes import FakeProvider, config

MiB = 1024 * 1024
PART = 5 * MiB
ADDRESSES = {"cdn.example": "93.184.216.34", "other.example": "93.184.216.35", "evil.example": "10.0.0.5"}


def resolver(host: str, port: int) -> list[str]:
    return [ADDRESSES[host]]


def _video(size: int, salt: int = 0) -> bytes:
    block = bytes((i + salt) % 256 for i in range(256))
    return (b"\x00\x00\x00\x18ftypmp42" + block * (size // 256 + 1))[:size]


class Server:
    """A fake result host: bodies with ETags and Range support, truncation, redirects, statuses."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.types: dict[str, str] = {}
        self.truncate: dict[str, int] = {}
        self.redirects: dict[str, str] = {}
        self.status: dict[str, int] = {}
        self.no_ranges: set[str] = set()
        self.no_length: set[str] = set()  # answered without Content-Length (chunked)
        self.seen: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        url = str(request.url)
        if url in self.redirects:
            return httpx.Response(302, headers={"location": self.redirects[url]})
        if url in self.status:
            return httpx.Response(self.status[url])
        body = self.bodies.get(url)
        if body is None:
            return httpx.Response(404)
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        start, status = 0, 200
        headers = {"content-type": self.types.get(url, "video/mp4"), "etag": etag, "accept-ranges": "bytes"}
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if wanted and url not in self.no_ranges and (if_range is None or if_range == etag):
            start, status = int(wanted.split("=")[1].split("-")[0]), 206
            headers["content-range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        if url not in self.no_length:
            headers["content-length"] = str(len(body) - start)
        cut = self.truncate.get(url, len(body))

        def stream() -> Iterator[bytes]:
            for i in range(start, cut, 256 * 1024):
                yield body[i : min(cut, i + 256 * 1024)]

        return httpx.Response(status, headers=headers, content=stream())


class CountingBucket(ResultBucket):
    """The real bucket adapter, counting the parts it sends; ``kill_after`` makes part k+1 onwards die."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sent: list[int] = []
        self.kill_after: int | None = None
        self.checksums: dict[tuple[str, int], str] = {}
        self.checksums_match: list[bool] = []
        self.puts: list[tuple[str, bool]] = []  # (key, checksum = the body's SHA-256)

    def put(self, key: str, body: Any, *, checksum_sha256: str | None = None, **kwargs: Any) -> bool:
        data = body.read()
        body.seek(0)
        self.puts.append((key, base64.b64encode(hashlib.sha256(data).digest()).decode() == checksum_sha256))
        return super().put(key, body, checksum_sha256=checksum_sha256, **kwargs)

    def upload_part(self, key: str, upload_id: str, number: int, body: Any, *, checksum_sha256: str) -> dict[str, Any]:
        if self.kill_after is not None and number > self.kill_after:
            raise WorkerKilled(f"killed before part {number}")
        self.sent.append(number)
        data = body.read()
        self.checksums_match.append(base64.b64encode(hashlib.sha256(data).digest()).decode() == checksum_sha256)
        body.seek(0)
        self.checksums[(upload_id, number)] = checksum_sha256
        return super().upload_part(key, upload_id, number, body, checksum_sha256=checksum_sha256)

    def list_parts(self, key: str, upload_id: str) -> list[dict[str, Any]] | None:
        # moto 5.2.5's ListParts omits ChecksumSHA256; S3 returns it for uploads created with
        # ChecksumAlgorithm=SHA256, so the checksums sent are filled in here as S3 would.
        parts = super().list_parts(key, upload_id)
        for part in parts or []:
            part["ChecksumSHA256"] = self.checksums.get((upload_id, part["PartNumber"]))
        return parts


class WorkerKilled(BaseException):
    """Stands for the process dying: nothing catches it, no cleanup runs."""


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def bucket(aws: dict[str, str]) -> CountingBucket:
    return CountingBucket("results")


def _fetcher(server: Server, **limits: Any) -> Fetcher:
    return Fetcher(
        UrlPolicy(frozenset({"sim.local:8080"}), resolver),
        transport=httpx.MockTransport(server.handler),
        limits=Limits(**limits),
    )


@pytest.fixture
def copier(bucket: CountingBucket, server: Server) -> ResultCopier:
    # Multipart from the second part on (single PUT up to one part), so that the part mechanics
    # are tried on small videos; the default single-PUT size has tests of its own.
    return ResultCopier(bucket, _fetcher(server), part_bytes=PART, parts_in_flight=3, single_put_bytes=PART)


def s3_state() -> tuple[list[str], list[str]]:
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="results").get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket="results").get("Uploads", [])]
    return keys, uploads


def stored(key: str) -> bytes:
    return bytes(boto3.client("s3").get_object(Bucket="results", Key=key)["Body"].read())


# -- the copier ----------------------------------------------------------------------------


def test_large_result_is_streamed_in_checksummed_parts_with_its_sha256(
    copier: ResultCopier, server: Server, bucket: CountingBucket
) -> None:
    # Given a 12 MiB video
    body = _video(12 * MiB + 123)
    server.bodies["https://cdn.example/v.mp4"] = body
    # When it is copied with 5 MiB parts
    record = copier.copy("https://cdn.example/v.mp4", "tasks/t1/output-0")
    # Then it is one object of three parts, each sent with its SHA-256, and the whole hash is right
    assert record.key == "tasks/t1/output-0.mp4" and record.bytes == len(body) and record.completed
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert stored(record.key) == body
    head = boto3.client("s3").head_object(Bucket="results", Key=record.key, ChecksumMode="ENABLED")
    assert head["ContentType"] == "video/mp4" and head["ETag"].endswith('-3"') and head["ChecksumSHA256"]
    assert sorted(bucket.sent) == [1, 2, 3] and bucket.checksums_match == [True, True, True]


def test_small_result_is_one_conditional_put(copier: ResultCopier, server: Server) -> None:
    server.bodies["https://cdn.example/s.mp4"] = _video(1000)
    record = copier.copy("https://cdn.example/s.mp4", "tasks/t1/output-0")
    head = boto3.client("s3").head_object(Bucket="results", Key=record.key)
    assert head["ContentLength"] == 1000 and head["Metadata"]["sha256"] == record.sha256
    # A second copy of the same output is a no-op (If-None-Match: *), not a second write.
    server.bodies["https://cdn.example/s.mp4"] = _video(1000, salt=1)
    copier.copy("https://cdn.example/s.mp4", "tasks/t1/output-0")
    assert stored(record.key) == _video(1000)


@pytest.mark.parametrize("length_known", [True, False])
def test_an_output_up_to_the_parts_in_flight_is_one_put_of_the_held_parts(
    bucket: CountingBucket, server: Server, length_known: bool
) -> None:
    # Given the default single-PUT size: 3 parts in flight of 5 MiB, 15 MiB; a source that says
    # its length, or one that does not (then the parts are held until the stream ends or passes it)
    copier = ResultCopier(bucket, _fetcher(server), part_bytes=PART, parts_in_flight=3)
    if not length_known:
        server.no_length.add("https://cdn.example/v.mp4")
    for size in (12 * MiB + 5, 15 * MiB):
        body = _video(size, salt=size)
        server.bodies["https://cdn.example/v.mp4"] = body
        # When a video of 12 MiB, then one of exactly 15 MiB, is copied
        record = copier.copy("https://cdn.example/v.mp4", f"tasks/{size}/output-0")
        # Then each is one PutObject, with the whole object's SHA-256 as its checksum: no multipart
        assert bucket.puts[-1] == (record.key, True) and bucket.sent == []
        assert record.completed and record.upload_id is None and record.sha256 == hashlib.sha256(body).hexdigest()
        assert stored(record.key) == body and copier.last.parts_uploaded == 1
        head = boto3.client("s3").head_object(Bucket="results", Key=record.key)
        assert "-" not in head["ETag"] and head["Metadata"]["sha256"] == record.sha256
    # And one byte more is multipart: the three held parts, then the fourth
    body = _video(15 * MiB + 1, salt=7)
    server.bodies["https://cdn.example/v.mp4"] = body
    record = copier.copy("https://cdn.example/v.mp4", "tasks/big/output-0")
    assert sorted(bucket.sent) == [1, 2, 3, 4] and all(bucket.checksums_match) and len(bucket.puts) == 2
    assert stored(record.key) == body and record.sha256 == hashlib.sha256(body).hexdigest()
    assert s3_state()[1] == []


def test_part_body_reads_several_buffers_as_one_without_copying_them() -> None:
    views = [memoryview(b"abc"), memoryview(b""), memoryview(b"defg")]
    body = PartBody(*views)
    assert len(body) == 7
    assert [bytes(body.read(2)), bytes(body.read(2)), bytes(body.read(10)), bytes(body.read(1))] == [
        b"ab",
        b"c",
        b"defg",
        b"",
    ]
    body.seek(2)
    assert body.read() == b"cdefg" and body.tell() == 7
    body.seek(-3, 2)
    assert bytes(body.read(3)) == b"efg"


def test_a_second_multipart_completion_of_an_existing_key_is_a_no_op(copier: ResultCopier, server: Server) -> None:
    # moto honours If-None-Match on CompleteMultipartUpload (checked in moto 5.2.5's s3/responses.py).
    server.bodies["https://cdn.example/v.mp4"] = _video(11 * MiB)
    first = copier.copy("https://cdn.example/v.mp4", "k")
    server.bodies["https://cdn.example/v.mp4"] = _video(11 * MiB, salt=3)
    copier.copy("https://cdn.example/v.mp4", "k")
    assert stored(first.key) == _video(11 * MiB)
    assert s3_state()[1] == []  # the losing upload was aborted


@pytest.mark.parametrize("size", [1000, 11 * MiB])
def test_truncated_download_leaves_no_object(copier: ResultCopier, server: Server, size: int) -> None:
    server.bodies["https://cdn.example/t.mp4"] = _video(size)
    server.truncate["https://cdn.example/t.mp4"] = size - 10
    with pytest.raises(ResultFetchError, match="truncated"):
        copier.copy("https://cdn.example/t.mp4", "tasks/t1/output-0")
    assert s3_state()[0] == []


@pytest.mark.parametrize(
    ("content_type", "head", "outcome"),
    [
        ("text/html", b"<html><body>expired</body></html>", ResultNotMedia),
        ("application/json", b'{"error": "gone"}', ResultNotMedia),
        ("application/octet-stream", b"<!doctype html>", ResultNotMedia),
        ("", b"hello world, not a video", ResultNotMedia),
        ("application/octet-stream", b"\x00\x00\x00\x18ftypisom....", ".mp4"),
        ("binary/octet-stream", b"\x89PNG\r\n\x1a\n" + bytes(40), ".png"),
        ("application/octet-stream", b"\x1a\x45\xdf\xa3" + bytes(40), ".webm"),
        ("image/webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", ".webp"),
    ],
)
def test_only_video_and_image_bodies_are_stored(
    copier: ResultCopier, server: Server, content_type: str, head: bytes, outcome: object
) -> None:
    server.bodies["https://cdn.example/r"] = head
    server.types["https://cdn.example/r"] = content_type
    if isinstance(outcome, str):
        assert copier.copy("https://cdn.example/r", "k").key == "k" + outcome
    else:
        with pytest.raises(ResultNotMedia):
            copier.copy("https://cdn.example/r", "k")
        assert s3_state() == ([], [])


def test_an_oversized_result_is_refused_from_its_length_or_its_bytes(bucket: CountingBucket, server: Server) -> None:
    copier = ResultCopier(bucket, _fetcher(server, max_bytes=6 * MiB), part_bytes=PART)
    server.bodies["https://cdn.example/big.mp4"] = _video(7 * MiB)
    with pytest.raises(ResultTooLarge):
        copier.copy("https://cdn.example/big.mp4", "k")
    assert bucket.sent == []  # refused from Content-Length before a byte was stored


def test_redirects_are_checked_and_credentials_stay_on_the_provider_origin(
    copier: ResultCopier, server: Server
) -> None:
    server.redirects["https://cdn.example/a.mp4"] = "https://evil.example/b.mp4"
    with pytest.raises(UnsafeResultUrl):
        copier.copy("https://cdn.example/a.mp4", "k")

    def creds(url: str) -> dict[str, str]:
        return {"Authorization": "Bearer secret"} if url.startswith("https://cdn.example/") else {}

    server.redirects["https://cdn.example/c.mp4"] = "https://other.example/c.mp4"
    server.bodies["https://other.example/c.mp4"] = _video(50)
    server.seen.clear()
    copier.copy("https://cdn.example/c.mp4", "k", headers_for=creds)
    assert [("authorization" in r.headers) for r in server.seen] == [True, False]


# -- resume ---------------------------------------------------------------------------------


def _kill_after(copier: ResultCopier, bucket: CountingBucket, url: str, k: int) -> Any:
    """Copy until part k is done, then 'kill the worker'; returns the record stored at start."""
    started: list[Any] = []
    bucket.kill_after = k
    with pytest.raises(WorkerKilled):
        copier.copy(url, "tasks/t1/output-0", on_started=started.append)
    bucket.kill_after = None
    bucket.sent.clear()
    return started[0]


def test_a_killed_copy_resumes_after_the_last_completed_part(
    copier: ResultCopier, server: Server, bucket: CountingBucket
) -> None:
    # Given a 7-part video whose copy died after part 3
    body = _video(6 * PART + 1234)
    server.bodies["https://cdn.example/v.mp4"] = body
    record = _kill_after(copier, bucket, "https://cdn.example/v.mp4", 3)
    assert record.upload_id and record.source_etag and record.source_length == len(body)
    # When the next attempt runs with the stored record
    done = copier.copy("https://cdn.example/v.mp4", "tasks/t1/output-0", resume=record)
    # Then only parts 4..7 are uploaded, with a Range request, and the object's SHA-256 is the source's
    assert sorted(bucket.sent) == [4, 5, 6, 7]
    assert copier.last.resumed and copier.last.parts_skipped == 3
    assert server.seen[-1].headers["range"] == "bytes=0-" and server.seen[-1].headers["if-range"]
    assert done.sha256 == hashlib.sha256(body).hexdigest() == hashlib.sha256(stored(done.key)).hexdigest()
    assert s3_state()[1] == []


def test_a_killed_copy_starts_over_when_the_source_changed(
    copier: ResultCopier, server: Server, bucket: CountingBucket
) -> None:
    server.bodies["https://cdn.example/v.mp4"] = _video(6 * PART)
    record = _kill_after(copier, bucket, "https://cdn.example/v.mp4", 3)
    # The source changed in between (another ETag): If-Range answers the whole new body
    new = _video(6 * PART, salt=7)
    server.bodies["https://cdn.example/v.mp4"] = new
    done = copier.copy("https://cdn.example/v.mp4", "tasks/t1/output-0", resume=record)
    assert copier.last.restarted and sorted(bucket.sent) == [1, 2, 3, 4, 5, 6]
    assert done.sha256 == hashlib.sha256(new).hexdigest() == hashlib.sha256(stored(done.key)).hexdigest()
    assert s3_state()[1] == []  # the old upload was aborted


def test_a_killed_copy_starts_over_when_the_source_cannot_serve_ranges(
    copier: ResultCopier, server: Server, bucket: CountingBucket
) -> None:
    body = _video(4 * PART)
    server.bodies["https://cdn.example/v.mp4"] = body
    record = _kill_after(copier, bucket, "https://cdn.example/v.mp4", 2)
    server.no_ranges.add("https://cdn.example/v.mp4")
    done = copier.copy("https://cdn.example/v.mp4", "tasks/t1/output-0", resume=record)
    assert copier.last.restarted and sorted(bucket.sent) == [1, 2, 3, 4]
    assert stored(done.key) == body and s3_state()[1] == []


def test_a_resumed_copy_refuses_a_source_whose_bytes_differ_from_the_uploaded_parts(
    copier: ResultCopier, server: Server, bucket: CountingBucket
) -> None:
    # Same ETag and length, other bytes (a misbehaving origin): the parts' SHA-256s catch it
    server.bodies["https://cdn.example/v.mp4"] = _video(4 * PART)
    record = _kill_after(copier, bucket, "https://cdn.example/v.mp4", 2)
    forged = record.model_copy(update={"source_etag": None})
    server.bodies["https://cdn.example/v.mp4"] = _video(4 * PART, salt=9)
    with pytest.raises(ResultFetchError, match="no longer matches"):
        copier.copy("https://cdn.example/v.mp4", "tasks/t1/output-0", resume=forged)
    assert bucket.sent == []


# -- the service ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> Any:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(aws: dict[str, str], copier: ResultCopier, clock: Clock) -> IngestService:
    provider = FakeProvider(config("generate_task"))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    return IngestService(store, catalog, copier, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])), clock=clock)


def _ingesting(aws: dict[str, str], *urls: str) -> Task:
    provider = FakeProvider(config("generate_task"))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    task = TaskService(store, catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), ResultBucket("results")).create(
        VideoRequest(provider="generate_task", prompt="x")
    )[0]
    return store.transition(task, TaskStatus.INGESTING, reason="t", result_urls=list(urls))


def test_the_attempt_budget_is_the_ingest_queues_max_receive_count() -> None:
    assert resource("IngestQueue")["Properties"]["RedrivePolicy"]["maxReceiveCount"] == MAX_RECEIVES


def test_ingest_succeeds_once_and_a_duplicate_message_changes_nothing(
    aws: dict[str, str], service: IngestService, server: Server
) -> None:
    task = _ingesting(aws, "https://cdn.example/r.mp4")
    server.bodies["https://cdn.example/r.mp4"] = _video(2048)
    done = service.ingest(task.id)
    assert done.status is TaskStatus.SUCCEEDED and done.outputs[0].bytes == 2048
    assert service.ingest(task.id).version == done.version


def test_a_killed_worker_is_resumed_by_the_next_message(
    aws: dict[str, str], service: IngestService, server: Server, bucket: CountingBucket
) -> None:
    # Given a task whose worker died after part 2 of 4
    body = _video(3 * PART + 77)
    task = _ingesting(aws, "https://cdn.example/r.mp4")
    server.bodies["https://cdn.example/r.mp4"] = body
    bucket.kill_after = 2
    with pytest.raises(WorkerKilled):
        service.ingest_with_retry(task.id, 0)
    bucket.kill_after, bucket.sent = None, []
    assert DynamoTaskStore("tasks").get(task.id).ingest.uploads[0].upload_id  # type: ignore[union-attr]
    # When the message is delivered again (SQS after the visibility timeout, or reconcile)
    done = service.ingest_with_retry(task.id, 1)
    # Then parts 3 and 4 only are sent and the object is the source
    assert done.status is TaskStatus.SUCCEEDED and sorted(bucket.sent) == [3, 4]
    assert (
        done.outputs[0].sha256
        == hashlib.sha256(body).hexdigest()
        == hashlib.sha256(stored(done.outputs[0].key)).hexdigest()
    )


def test_outputs_appear_together_or_not_at_all(aws: dict[str, str], service: IngestService, server: Server) -> None:
    # Given a task with two results, the second of which is refused
    server.bodies["https://cdn.example/a.mp4"] = _video(6 * MiB)
    task = _ingesting(aws, "https://cdn.example/a.mp4", "https://evil.example/b.mp4")
    # When it is ingested
    failed = service.ingest(task.id)
    # Then it fails and nothing is left: no object, no open upload
    assert failed.status is TaskStatus.FAILED and failed.error.code is ErrorCode.RESULT_URL_REFUSED  # type: ignore[union-attr]
    assert s3_state() == ([], [])


def test_several_outputs_are_completed_together(aws: dict[str, str], service: IngestService, server: Server) -> None:
    server.bodies["https://cdn.example/a.mp4"] = _video(6 * MiB)
    server.bodies["https://cdn.example/b.png"] = b"\x89PNG\r\n\x1a\n" + bytes(100)
    server.types["https://cdn.example/b.png"] = "image/png"
    task = _ingesting(aws, "https://cdn.example/a.mp4", "https://cdn.example/b.png")
    server.truncate["https://cdn.example/b.png"] = 50
    with pytest.raises(RetryLater):
        service.ingest_with_retry(task.id, 0)
    assert s3_state()[0] == []  # the first output is uploaded but not visible
    del server.truncate["https://cdn.example/b.png"]
    server.seen.clear()
    done = service.ingest_with_retry(task.id, 1)
    assert done.status is TaskStatus.SUCCEEDED and [o.content_type for o in done.outputs] == ["video/mp4", "image/png"]
    assert sorted(s3_state()[0]) == [o.key for o in done.outputs] and s3_state()[1] == []
    assert [str(r.url) for r in server.seen] == ["https://cdn.example/b.png"]  # output 0 was not fetched again


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        (lambda s: s.status.__setitem__("https://cdn.example/r.mp4", 500), ErrorCode.INGEST_FAILED),
        (lambda s: s.truncate.__setitem__("https://cdn.example/r.mp4", 100), ErrorCode.INGEST_FAILED),
    ],
)
def test_a_result_that_keeps_failing_ends_ingest_failed_on_the_last_attempt(
    aws: dict[str, str], service: IngestService, server: Server, setup: Any, code: ErrorCode
) -> None:
    server.bodies["https://cdn.example/r.mp4"] = _video(7 * MiB)
    setup(server)
    task = _ingesting(aws, "https://cdn.example/r.mp4")
    for attempt in range(MAX_RECEIVES - 1):
        with pytest.raises(RetryLater):
            service.ingest_with_retry(task.id, attempt)
    failed = service.ingest_with_retry(task.id, MAX_RECEIVES - 1)
    assert failed.status is TaskStatus.FAILED and failed.error.code is code  # type: ignore[union-attr]
    assert s3_state() == ([], [])


def test_a_download_with_the_providers_credential_waits_for_its_request_limit_and_never_gives_up_on_it(
    aws: dict[str, str], copier: ResultCopier, server: Server
) -> None:
    from reelay.errors import ProviderRateLimited
    from reelay.providers.registry import build_provider, provider_config

    # Given a task whose result is on its provider's own origin (openai_videos' content URL:
    # a request on the key), and a governor that holds that provider's requests for now
    asked: list[bool] = []
    held = {"on": True}

    class Gate:
        def before_request(self, provider: str, *, paid: bool) -> None:
            asked.append(paid)
            if held["on"]:
                raise ProviderRateLimited("held to the limit", provider=provider, retry_after=4.2)

        def rate_limited(self, provider: str, retry_after: float | None) -> None:
            raise AssertionError("no 429 here")

    url = "https://cdn.example/v1/videos/v1/content"
    server.bodies[url] = _video(2048)
    cdn = "https://other.example/r.mp4"
    server.bodies[cdn] = _video(1024)
    cfg = provider_config("generate_task", "openai_videos", "https://cdn.example/v1", "k-secret")
    provider = build_provider(cfg, gate=Gate())
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((cfg,), factory=lambda c: provider)
    service = IngestService(store, catalog, copier, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])))
    task = _ingesting(aws, url)
    # When the copy is tried, on any receive, the last one included
    for attempt in (0, MAX_RECEIVES - 1):
        with pytest.raises(RetryLater) as retry:
            service.ingest_with_retry(task.id, attempt)
        # Then nothing was sent, the task waits (not failed) and comes back once a grant is near
        assert retry.value.seconds == 5 and server.seen == []
        assert store.get(task.id).status is TaskStatus.INGESTING and s3_state() == ([], [])
    # When the limit lets it through
    held["on"] = False
    asked.clear()
    done = service.ingest_with_retry(task.id, 1)
    # Then one request was counted for the one download, and it carried the credential
    assert done.status is TaskStatus.SUCCEEDED and asked == [False]
    assert [r.headers.get("Authorization") for r in server.seen] == ["k-secret"]
    # And a download from anywhere else carries no credential and is not the provider's to count
    asked.clear()
    assert provider.result_headers(cdn) == {} and asked == []


def test_a_result_gone_three_times_over_a_minute_is_expired(
    aws: dict[str, str], service: IngestService, server: Server, clock: Clock
) -> None:
    task = _ingesting(aws, "https://cdn.example/gone.mp4")
    delays = []
    for attempt in range(2):
        with pytest.raises(RetryLater) as retry:
            service.ingest_with_retry(task.id, attempt)
        delays.append(retry.value.seconds)
        clock.now += timedelta(seconds=retry.value.seconds)
    assert sum(delays) >= 60  # three attempts span at least a minute
    failed = service.ingest_with_retry(task.id, 2)
    assert failed.status is TaskStatus.FAILED and failed.error.code is ErrorCode.RESULT_EXPIRED  # type: ignore[union-attr]


def test_a_slow_result_is_retried_once_then_fails_too_slow(aws: dict[str, str], bucket: CountingBucket) -> None:
    server = Server()
    server.bodies["https://cdn.example/r.mp4"] = _video(1000)
    copier = ResultCopier(bucket, _fetcher(server, deadline_seconds=0.0001), part_bytes=PART)
    provider = FakeProvider(config("generate_task"))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    service = IngestService(store, catalog, copier, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])))
    task = _ingesting(aws, "https://cdn.example/r.mp4")
    with pytest.raises(RetryLater):
        service.ingest_with_retry(task.id, 0)
    failed = service.ingest_with_retry(task.id, 1)
    assert failed.error.code is ErrorCode.RESULT_TOO_SLOW  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "body", "ctype", "code"),
    [
        ("http://cdn.example:99999/x.mp4", b"", "video/mp4", ErrorCode.RESULT_URL_REFUSED),
        ("https://evil.example/x.mp4", b"", "video/mp4", ErrorCode.RESULT_URL_REFUSED),
        ("https://cdn.example/page", b"<html>expired</html>", "text/html", ErrorCode.RESULT_NOT_MEDIA),
    ],
)
def test_permanent_failures_end_the_task_at_once(
    aws: dict[str, str], service: IngestService, server: Server, url: str, body: bytes, ctype: str, code: ErrorCode
) -> None:
    server.bodies[url] = body
    server.types[url] = ctype
    task = _ingesting(aws, url)
    failed = service.ingest_with_retry(task.id, 0)
    assert failed.status is TaskStatus.FAILED and failed.error.code is code  # type: ignore[union-attr]
    assert s3_state() == ([], [])


def test_an_oversized_result_fails_too_large_at_once(aws: dict[str, str], bucket: CountingBucket) -> None:
    server = Server()
    server.bodies["https://cdn.example/r.mp4"] = _video(6 * MiB)
    copier = ResultCopier(bucket, _fetcher(server, max_bytes=MiB), part_bytes=PART)
    provider = FakeProvider(config("generate_task"))
    store = DynamoTaskStore("tasks")
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    service = IngestService(store, catalog, copier, TaskTracker(store, TaskQueue(aws["INGEST_QUEUE_URL"])))
    failed = service.ingest_with_retry(_ingesting(aws, "https://cdn.example/r.mp4").id, 0)
    assert failed.error.code is ErrorCode.RESULT_TOO_LARGE  # type: ignore[union-attr]


def test_past_the_ingest_deadline_a_redelivered_task_fails_and_cleans_up(
    aws: dict[str, str], service: IngestService, server: Server, bucket: CountingBucket, clock: Clock
) -> None:
    server.bodies["https://cdn.example/r.mp4"] = _video(3 * PART)
    task = _ingesting(aws, "https://cdn.example/r.mp4")
    bucket.kill_after = 1
    with pytest.raises(WorkerKilled):
        service.ingest_with_retry(task.id, 0)
    clock.now += timedelta(hours=2)  # reconcile re-enqueues it much later
    failed = service.ingest_with_retry(task.id, 0)
    assert failed.error.code is ErrorCode.INGEST_FAILED and "within" in failed.error.message  # type: ignore[union-attr]
    assert s3_state() == ([], [])


# -- inputs belong to the caller -------------------------------------------------------------


class ReadRecordingBucket(ResultBucket):
    """The real adapter, recording every key it reads (head or get)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.read: list[str] = []

    def head(self, key: str) -> dict[str, Any] | None:
        self.read.append(key)
        return super().head(key)

    def read_range(self, key: str, size: int) -> bytes:
        self.read.append(key)
        return super().read_range(key, size)


def _image_service(aws: dict[str, str], bucket: ResultBucket) -> TaskService:
    provider = FakeProvider(config("openai_videos", protocol="openai_videos"))
    provider.validate_images = lambda request: None  # type: ignore[method-assign]
    catalog = ProviderCatalog((provider.config,), factory=lambda c: provider)
    return TaskService(DynamoTaskStore("tasks"), catalog, TaskQueue(aws["SUBMIT_QUEUE_URL"]), bucket)


def test_an_upload_ticket_is_a_sigv4_put_bound_to_size_type_and_the_callers_prefix(aws: dict[str, str]) -> None:
    service = _image_service(aws, ResultBucket("results"))
    ticket = service.upload(UploadRequest(content_type="image/webp", bytes=1234), owner="arn:aws:iam::1:user/ann")
    assert ticket.key.startswith(uploads_prefix("arn:aws:iam::1:user/ann")) and ticket.key.endswith(".webp")
    assert uploads_prefix("arn:aws:iam::1:user/ann") != uploads_prefix("arn:aws:iam::1:user/bob")
    query = parse_qs(urlsplit(ticket.url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["900"]
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    assert ticket.headers == {"Content-Type": "image/webp", "Content-Length": "1234"}


@pytest.mark.parametrize(
    "key",
    [
        "tasks/tsk_0123/output-0.mp4",  # another task's output
        "uploads/0000000000000000000000000000000/x.png",  # another owner's upload
        "uploads/x.png",
        "inbox/manifest.jsonl",
    ],
)
def test_image_keys_outside_the_callers_uploads_are_refused_before_any_read(aws: dict[str, str], key: str) -> None:
    bucket = ReadRecordingBucket("results")
    boto3.client("s3").put_object(Bucket="results", Key=key, Body=b"\x89PNG\r\n\x1a\n")
    service = _image_service(aws, bucket)
    request = ImageRequest(provider="openai_videos", prompt="x", image_keys=[key])
    with pytest.raises(UploadNotFound) as refused:
        service.images(request, owner="arn:aws:iam::1:user/ann")
    assert refused.value.field == "image_keys" and bucket.read == []


def test_the_callers_own_upload_is_accepted(aws: dict[str, str]) -> None:
    bucket = ReadRecordingBucket("results")
    service = _image_service(aws, bucket)
    ticket = service.upload(UploadRequest(content_type="image/png", bytes=9), owner="ann")
    boto3.client("s3").put_object(Bucket="results", Key=ticket.key, Body=b"\x89PNG\r\n\x1a\n\x00")
    task, _ = service.images(ImageRequest(provider="openai_videos", prompt="x", image_keys=[ticket.key]), owner="ann")
    assert task.request["image_keys"] == [ticket.key]


def test_the_submit_side_reads_keys_only_under_uploads_and_urls_only_through_the_fetcher(
    aws: dict[str, str], server: Server
) -> None:
    bucket = ReadRecordingBucket("results")
    inputs = ImageInputs(bucket, _fetcher(server))
    with pytest.raises(RequestInvalid):
        inputs.load(ImageRequest(provider="p", prompt="x", image_keys=["tasks/t/output-0.mp4"]))
    assert bucket.read == []
    with pytest.raises(RequestInvalid, match="image_urls"):
        inputs.load(ImageRequest(provider="p", prompt="x", image_urls=["https://evil.example/cat.png"]))
    server.bodies["https://cdn.example/page.png"] = b"<html>login</html>"
    server.types["https://cdn.example/page.png"] = "text/html"
    with pytest.raises(RequestInvalid, match="not a video or image"):
        inputs.load(ImageRequest(provider="p", prompt="x", image_urls=["https://cdn.example/page.png"]))
    server.bodies["https://cdn.example/cat.png"] = b"\x89PNG\r\n\x1a\n" + bytes(10)
    server.types["https://cdn.example/cat.png"] = "image/png"
    [image] = inputs.load(ImageRequest(provider="p", prompt="x", image_urls=["https://cdn.example/cat.png"]))
    assert image.content_type == "image/png" and image.filename == "cat.png"


def test_ingest_settings_are_read_from_their_reelay_names() -> None:
    settings = Settings.from_environ(
        {
            "TASK_TABLE_NAME": "t",
            "RESULTS_BUCKET": "b",
            "INGEST_QUEUE_URL": "q",
            "REELAY_INGEST_PART_BYTES": str(16 * MiB),
            "REELAY_INGEST_PARTS_IN_FLIGHT": "2",
            "REELAY_INGEST_MAX_BYTES": "1000",
            "REELAY_INGEST_DEADLINE_SECONDS": "60",
            "REELAY_INGEST_MIN_BYTES_PER_SECOND": "10",
        }
    )
    assert (settings.ingest_part_bytes, settings.ingest_parts_in_flight, settings.ingest_max_bytes) == (
        16 * MiB,
        2,
        1000,
    )
    assert (settings.ingest_deadline_seconds, settings.ingest_min_bytes_per_second) == (60, 10)
    defaults = Settings.from_environ({"TASK_TABLE_NAME": "t", "RESULTS_BUCKET": "b", "INGEST_QUEUE_URL": "q"})
    assert defaults.ingest_deadline_seconds < resource("IngestFunction")["Properties"]["Timeout"]
