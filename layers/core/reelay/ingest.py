"""Ingest: copy every result URL of a task into the results bucket, then mark it succeeded.

``ResultCopier`` streams one URL into one object: multipart in parts of
``part_bytes`` (memory bounded by one part, whatever the size), SHA-256 computed on the
way, the object completed only when every byte arrived (a truncated or failed download
aborts the upload: never a partial object). ``UrlGuard`` refuses result URLs on private,
loopback or link-local addresses (SSRF) unless their ``host:port`` is allowed, on every
redirect hop too; a provider credential is only sent to that provider's own host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import mimetypes
import socket
from collections.abc import Callable, Iterable
from posixpath import splitext
from urllib.parse import urljoin, urlsplit

import httpx
from aws_lambda_powertools import Logger

from reelay.aws import ResultBucket
from reelay.catalog import ProviderCatalog
from reelay.errors import ResultFetchError, UnsafeResultUrl
from reelay.models import ErrorCode, Output, Task, TaskStatus
from reelay.store import TaskStore
from reelay.tracking import TaskTracker
from reelay.workers import RetryLater, backoff_seconds

logger = Logger(child=True)

Resolver = Callable[[str, int], Iterable[str]]
MAX_REDIRECTS = 5


def _resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class UrlGuard:
    """Decides whether reelay may fetch a URL (SSRF guard)."""

    def __init__(self, allowed_hosts: frozenset[str] = frozenset(), resolver: Resolver | None = None) -> None:
        self._allowed = allowed_hosts
        self._resolve = resolver or _resolve

    def check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsafeResultUrl(f"result URL scheme or host not allowed: {parts.scheme}://{parts.hostname or ''}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname.lower()
        if f"{host}:{port}" in self._allowed:
            return
        try:
            addresses = list(self._resolve(host, port))
        except OSError as exc:
            raise ResultFetchError(f"cannot resolve result host {host}") from exc
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global or ip.is_multicast:
                raise UnsafeResultUrl(f"result URL host {host} resolves to a non-public address; refused")


class ResultCopier:
    """Streams one result URL into one S3 object."""

    def __init__(
        self,
        bucket: ResultBucket,
        guard: UrlGuard,
        *,
        client: httpx.Client | None = None,
        part_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self._bucket = bucket
        self._guard = guard
        self._client = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        self._part_bytes = part_bytes

    def copy(self, url: str, key_stem: str, *, headers_for: Callable[[str], dict[str, str]]) -> Output:
        """Copy ``url`` to ``key_stem`` + an extension from its content type."""
        response = self._open(url, headers_for)
        try:
            if response.status_code != 200:
                raise ResultFetchError(f"result download answered HTTP {response.status_code}")
            content_type = response.headers.get("content-type", "").split(";")[0].strip() or _guess_type(url)
            key = key_stem + _extension(content_type, url)
            expected = response.headers.get("content-length")
            size, digest = self._upload(key, content_type, response.iter_bytes(1024 * 1024), expected)
        finally:
            response.close()
        return Output(
            key=key, s3_uri=f"s3://{self._bucket.name}/{key}", bytes=size, sha256=digest, content_type=content_type
        )

    def _open(self, url: str, headers_for: Callable[[str], dict[str, str]]) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            self._guard.check(url)
            request = self._client.build_request("GET", url, headers=headers_for(url))
            try:
                response = self._client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise ResultFetchError(f"result download failed: {type(exc).__name__}") from exc
            if response.is_redirect and "location" in response.headers:
                response.close()
                url = urljoin(url, response.headers["location"])
                continue
            return response
        raise ResultFetchError("too many redirects fetching a result")

    def _upload(self, key: str, content_type: str, chunks: Iterable[bytes], expected: str | None) -> tuple[int, str]:
        sha = hashlib.sha256()
        buffer = bytearray()
        parts: list[dict[str, object]] = []
        upload_id: str | None = None
        size = 0
        try:
            try:
                for chunk in chunks:
                    sha.update(chunk)
                    size += len(chunk)
                    buffer += chunk
                    while len(buffer) >= self._part_bytes:
                        if upload_id is None:
                            upload_id = self._bucket.start_multipart(key, content_type=content_type, metadata={})
                        parts.append(
                            self._bucket.upload_part(key, upload_id, len(parts) + 1, bytes(buffer[: self._part_bytes]))
                        )
                        del buffer[: self._part_bytes]
            except httpx.HTTPError as exc:
                raise ResultFetchError(f"result download broke off after {size} bytes") from exc
            if expected is not None and expected.isdigit() and int(expected) != size:
                raise ResultFetchError(f"result download truncated: {size} of {expected} bytes")
            if size == 0:
                raise ResultFetchError("result download was empty")
            metadata = {"sha256": sha.hexdigest()}
            if upload_id is None:
                self._bucket.put(key, bytes(buffer), content_type=content_type, metadata=metadata)
            else:
                if buffer:
                    parts.append(self._bucket.upload_part(key, upload_id, len(parts) + 1, bytes(buffer)))
                self._bucket.complete_multipart(key, upload_id, parts)
                upload_id = None
        finally:
            if upload_id is not None:
                self._bucket.abort_multipart(key, upload_id)
        return size, sha.hexdigest()


class IngestService:
    """Copies a task's results and marks it succeeded (idempotent per task)."""

    def __init__(
        self, store: TaskStore, providers: ProviderCatalog, copier: ResultCopier, tracker: TaskTracker
    ) -> None:
        self._store = store
        self._providers = providers
        self._copier = copier
        self._tracker = tracker

    def ingest_with_retry(self, task_id: str, attempt: int) -> Task:
        """``ingest`` for the queue worker: a failed download is retried later with backoff."""
        try:
            return self.ingest(task_id)
        except ResultFetchError as exc:
            raise RetryLater(backoff_seconds(attempt, base=10.0, cap=900.0), exc.message) from exc

    def ingest(self, task_id: str) -> Task:
        """Raises ``ResultFetchError`` for a retryable download failure."""
        task = self._store.get(task_id)
        if task.status is not TaskStatus.INGESTING:
            return task  # a duplicate message, or already done
        provider = self._providers.get(task.provider)
        outputs: list[Output] = []
        try:
            for index, url in enumerate(task.result_urls):
                outputs.append(
                    self._copier.copy(url, f"tasks/{task.id}/output-{index}", headers_for=provider.result_headers)
                )
        except UnsafeResultUrl as exc:
            return self._tracker.fail(task, ErrorCode.RESULT_URL_REFUSED, exc.message)
        task = self._tracker.succeed(task, outputs)
        logger.info(
            "task succeeded",
            extra={"task_id": task.id, "outputs": len(outputs), "bytes": sum(o.bytes for o in outputs)},
        )
        return task


def _guess_type(url: str) -> str:
    return mimetypes.guess_type(urlsplit(url).path)[0] or "application/octet-stream"


def _extension(content_type: str, url: str) -> str:
    known = {
        "video/mp4": ".mp4",
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "image/webp": ".webp",
        "video/quicktime": ".mov",
        "video/webm": ".webm",
    }
    if content_type in known:
        return known[content_type]
    ext = splitext(urlsplit(url).path)[1].lower()
    return ext if ext.isascii() and 1 < len(ext) <= 6 and ext[1:].isalnum() else ""
