"""Copying one result URL into one S3 object: pipelined, checksummed, resumable.

The download runs on the calling thread; full parts are handed to a pool of
``parts_in_flight`` upload threads (boto3 clients are thread-safe). Each part is read into
one preallocated ``bytearray`` (a ``memoryview`` slice is filled from the socket's chunks
and the same buffer is uploaded), so memory is bounded by ``(parts_in_flight + 1) *
part_bytes`` whatever the video's size, and no part is copied again. The whole object's
SHA-256 is updated with each chunk as it arrives; each part's own SHA-256 is computed on its
upload thread and sent as ``ChecksumSHA256`` (S3 verifies it). hashlib releases the GIL on
large buffers, so hashing overlaps the network on both sides.

An output of at most ``parts_in_flight`` parts (32 MiB by default) is one ``PutObject`` of the
buffers read so far, its checksum the whole object's SHA-256: one PUT-class request instead of
a create, its parts and a completion. Those buffers are the ones the pipeline would hold anyway;
an output of unknown length that turns out longer sends them as its first parts, and one whose
``Content-Length`` is longer is pipelined from its first part.

Resume: the upload id, key, part size and the source's ETag and length are recorded (via
``on_started``) before the first part is sent. A later attempt asks S3 which parts exist
(``ListParts``), then requests the source with ``Range: bytes=0-`` and ``If-Range: <etag>``:
a 206 with the same ETag and length means the source is unchanged, and parts 1..k are only
hashed (the running SHA-256 has to see every byte: hashlib's state cannot be saved, so the
prefix is re-read at download speed rather than re-uploaded); each re-read part's SHA-256
must equal the checksum S3 holds for it, a second proof that the bytes are the same. A 200
(no range support) or a changed ETag or length aborts the old upload and starts over.
A retryable failure leaves the upload open for the next attempt; only the caller aborts it
(when it gives up on the task).
"""

from __future__ import annotations

import base64
import bisect
import contextvars
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from reelay.aws import ResultBucket
from reelay.errors import ResultFetchError
from reelay.fetch import Body, Fetcher, HeadersFor
from reelay.fetch_policy import MAGIC_BYTES_NEEDED, MEDIA_TYPES, ResultTooLarge, media_type
from reelay.models import Output, OutputUpload

logger = Logger(child=True)

MiB = 1024 * 1024


@dataclass
class CopyStats:
    """What one copy did (the resume tests and the benchmark count these)."""

    parts_uploaded: int = 0
    parts_skipped: int = 0
    resumed: bool = False
    restarted: bool = False


class ResultCopier:
    """Streams one result URL into one S3 object (see the module docstring)."""

    def __init__(
        self,
        bucket: ResultBucket,
        fetcher: Fetcher,
        *,
        part_bytes: int = 8 * MiB,
        parts_in_flight: int = 4,
        single_put_bytes: int | None = None,
    ) -> None:
        self._bucket = bucket
        self._fetcher = fetcher
        self._part_bytes = part_bytes
        self._in_flight = max(1, parts_in_flight)
        # An output up to this size is one PutObject, not a create, its parts and a completion
        # (4 PUT-class requests for a 16 MiB video where 1 does): as many whole parts as are in
        # flight by default, so the parts held before anything is sent are buffers the pipeline
        # would hold anyway, and memory stays (parts_in_flight + 1) * part_bytes.
        default = self._in_flight * part_bytes
        self._single_put_parts = max(1, (default if single_put_bytes is None else single_put_bytes) // part_bytes)
        self.last = CopyStats()

    def copy(
        self,
        url: str,
        key_stem: str,
        *,
        index: int = 0,
        headers_for: HeadersFor | None = None,
        resume: OutputUpload | None = None,
        on_started: Callable[[OutputUpload], None] | None = None,
        complete: bool = True,
    ) -> OutputUpload:
        """Copy ``url`` to ``key_stem`` + an extension from its media type; the finished upload's record.

        ``resume`` is the record of an earlier attempt; ``on_started`` is called with the new
        record once a multipart upload exists (to store it on the task). With ``complete=False``
        every output is uploaded as multipart and left open (``bytes``/``sha256`` set), for the
        caller to complete together with the task's other outputs.
        """
        self.last = CopyStats()
        if resume is not None and resume.upload_id and resume.bytes is None:
            record = self._resume(url, resume, headers_for, on_started, complete)
            if record is not None:
                return record
        body = self._fetcher.open(url, headers_for=headers_for)
        try:
            if body.response.status_code != 200:
                raise ResultFetchError(f"result download answered HTTP {body.response.status_code}")
            return self._fresh(body, key_stem, index, on_started, complete)
        finally:
            body.close()

    # -- the two starts ------------------------------------------------------------------

    def _fresh(
        self,
        body: Body,
        key_stem: str,
        index: int,
        on_started: Callable[[OutputUpload], None] | None,
        complete: bool,
    ) -> OutputUpload:
        headers = body.response.headers
        length = _int(headers.get("content-length"))
        if length is not None and length > self._fetcher.limits.max_bytes:
            raise ResultTooLarge(f"the result is {length} bytes, over the cap of {self._fetcher.limits.max_bytes}")
        chunks = _Pushback(body.chunks())
        sha = hashlib.sha256()
        first = bytearray(self._part_bytes)
        filled, ended = _fill(memoryview(first), chunks, sha, minimum=MAGIC_BYTES_NEEDED)
        if filled == 0:
            raise ResultFetchError("result download was empty")
        kind = media_type(headers.get("content-type"), memoryview(first)[:filled])
        record = OutputUpload(
            index=index,
            key=key_stem + MEDIA_TYPES[kind],
            content_type=kind,
            part_bytes=self._part_bytes,
            source_etag=headers.get("etag"),
            source_length=length,
        )
        if not ended:
            more, ended = _fill(memoryview(first)[filled:], chunks, sha)
            filled += more
        held = [(first, filled)]
        # Whole parts are held, up to the single-PUT size, before anything is sent; not when the
        # length says the output is longer (the pipeline starts at once, uploads overlapping the
        # download from the first part on).
        single = complete and (length is None or length <= self._single_put_parts * self._part_bytes)
        while single and not ended and len(held) < self._single_put_parts:
            buffer = bytearray(self._part_bytes)
            got, ended = _fill(memoryview(buffer), chunks, sha)
            if got:
                held.append((buffer, got))
        if single and not ended:
            ended = chunks.at_end()  # exactly the single-PUT size, or more
        if ended and complete:
            # An output up to the single-PUT size: one PUT of the held buffers, its checksum the
            # whole object's SHA-256 (already computed).
            size = sum(n for _, n in held)
            _check_length(size, length)
            self._bucket.put(
                record.key,
                PartBody(*(memoryview(b)[:n] for b, n in held)),
                content_type=kind,
                metadata={"sha256": sha.hexdigest()},
                checksum_sha256=base64.b64encode(sha.digest()).decode(),
            )
            self.last.parts_uploaded = 1
            return record.model_copy(update={"bytes": size, "sha256": sha.hexdigest(), "completed": True})
        record.upload_id = self._bucket.start_multipart(record.key, content_type=kind, metadata={})
        if on_started is not None:
            on_started(record)
        return self._pipeline(record, chunks, sha, first=held, first_ended=ended, skip=[], complete=complete)

    def _resume(
        self,
        url: str,
        record: OutputUpload,
        headers_for: HeadersFor | None,
        on_started: Callable[[OutputUpload], None] | None,
        complete: bool,
    ) -> OutputUpload | None:
        """Continue ``record``'s upload; None when it must start over (the old upload is then aborted)."""
        assert record.upload_id is not None
        listed = self._bucket.list_parts(record.key, record.upload_id)
        if listed is None:
            logger.info("open upload is gone; starting over", extra={"key": record.key})
            return None
        # Only the unbroken run of full parts from part 1 counts: with several parts in
        # flight a later part may exist while an earlier one never finished.
        done: list[dict[str, Any]] = []
        for part in listed:
            if part["PartNumber"] != len(done) + 1 or part["Size"] != record.part_bytes:
                break
            done.append(part)
        headers = {"Range": "bytes=0-"}
        if record.source_etag:
            headers["If-Range"] = record.source_etag
        body = self._fetcher.open(url, headers=headers, headers_for=headers_for)
        try:
            response = body.response
            total = _content_range_total(response.headers.get("content-range"))
            unchanged = (
                response.status_code == 206
                and total is not None
                and (record.source_length is None or total == record.source_length)
                and (record.source_etag is None or response.headers.get("etag") == record.source_etag)
            )
            if not unchanged:
                logger.info(
                    "source cannot resume (no range, or changed); starting over",
                    extra={"key": record.key, "status": response.status_code},
                )
                self._bucket.abort_multipart(record.key, record.upload_id)
                if response.status_code != 200:
                    return None
                restarted = self._fresh(body, record.key.rsplit(".", 1)[0], record.index, on_started, complete)
                self.last.restarted = True
                return restarted
            self.last.resumed = True
            return self._pipeline(
                record, _Pushback(body.chunks()), hashlib.sha256(), first=[], skip=done, complete=complete
            )
        finally:
            body.close()

    # -- the pipeline --------------------------------------------------------------------

    def _pipeline(
        self,
        record: OutputUpload,
        chunks: Iterator[bytes],
        sha: Any,
        *,
        first: list[tuple[bytearray, int]],
        first_ended: bool = False,
        skip: list[dict[str, Any]],
        complete: bool,
    ) -> OutputUpload:
        """Upload the rest of the stream as parts, ``parts_in_flight`` at a time; the finished record.

        ``first`` are parts already read (buffer, bytes), sent first; ``first_ended`` says the
        stream ended with the last of them."""
        assert record.upload_id is not None
        upload_id = record.upload_id
        size = 0
        parts: list[dict[str, Any]] = []
        # Parts the upload already holds: re-read them (the hash must see them), check them, send nothing.
        for held in skip:
            part_sha = hashlib.sha256()
            got = _discard(chunks, record.part_bytes, sha, part_sha)
            if got != record.part_bytes:
                raise ResultFetchError(f"result download truncated while re-reading part {held['PartNumber']}")
            if held.get("ChecksumSHA256") and base64.b64encode(part_sha.digest()).decode() != held["ChecksumSHA256"]:
                raise ResultFetchError("the source no longer matches the uploaded parts")
            parts.append(held)
            size += got
            self.last.parts_skipped += 1
        free: list[bytearray] = []
        pending: deque[tuple[Future[dict[str, Any]], bytearray]] = deque()
        ended = False
        with ThreadPoolExecutor(max_workers=self._in_flight, thread_name_prefix="part") as pool:
            try:
                while not ended:
                    if first:
                        buffer, filled = first.pop(0)
                        ended = first_ended and not first
                    else:
                        buffer = self._buffer(free, pending, parts)
                        filled, ended = _fill(memoryview(buffer), chunks, sha)
                    if filled == 0:
                        free.append(buffer)
                        break
                    number = len(parts) + len(pending) + 1
                    # The part's S3 request is counted in the invocation's ledger: the thread runs in its context.
                    future = pool.submit(
                        contextvars.copy_context().run, self._send_part, record.key, upload_id, number, buffer, filled
                    )
                    pending.append((future, buffer))
                    size += filled
                while pending:
                    future, buffer = pending.popleft()
                    parts.append(future.result())
            finally:
                for future, _ in pending:
                    future.cancel()
        self.last.parts_uploaded = len(parts) - len(skip)
        _check_length(size, record.source_length)
        if size == 0:
            raise ResultFetchError("result download was empty")
        record = record.model_copy(update={"bytes": size, "sha256": sha.hexdigest()})
        if complete:
            self._bucket.complete_multipart(record.key, upload_id, parts)
            record.completed = True
        return record

    def _buffer(
        self,
        free: list[bytearray],
        pending: deque[tuple[Future[dict[str, Any]], bytearray]],
        parts: list[dict[str, Any]],
    ) -> bytearray:
        """A buffer for the next part: a free one, a new one while under the limit, or the oldest part's once sent."""
        while pending and pending[0][0].done():
            future, buffer = pending.popleft()
            parts.append(future.result())  # raises the part's error here, early
            free.append(buffer)
        if free:
            return free.pop()
        if len(pending) < self._in_flight:
            return bytearray(self._part_bytes)
        future, buffer = pending.popleft()
        parts.append(future.result())
        return buffer

    def _send_part(self, key: str, upload_id: str, number: int, buffer: bytearray, filled: int) -> dict[str, Any]:
        view = memoryview(buffer)[:filled]
        return self._bucket.upload_part(key, upload_id, number, PartBody(view), checksum_sha256=_b64sha(view))

    def complete(self, record: OutputUpload) -> OutputUpload:
        """Complete an upload left open by ``copy(complete=False)`` (parts as S3 lists them)."""
        if record.completed or record.upload_id is None:
            return record
        parts = self._bucket.list_parts(record.key, record.upload_id)
        if parts is None:
            if self._bucket.head(record.key) is None:
                raise ResultFetchError(f"the upload of {record.key} vanished before completion")
        else:
            self._bucket.complete_multipart(record.key, record.upload_id, parts)
        return record.model_copy(update={"completed": True})

    def discard(self, record: OutputUpload) -> None:
        """Remove whatever ``record`` wrote: abort its open upload, delete its object if completed."""
        if record.upload_id and not record.completed:
            self._bucket.abort_multipart(record.key, record.upload_id)
        if record.completed:
            self._bucket.delete(record.key)

    def output(self, record: OutputUpload) -> Output:
        """The task's ``Output`` for a finished record."""
        assert record.bytes is not None and record.sha256 is not None
        return Output(
            key=record.key,
            s3_uri=f"s3://{self._bucket.name}/{record.key}",
            bytes=record.bytes,
            sha256=record.sha256,
            content_type=record.content_type,
        )


def _fill(view: memoryview, chunks: Iterator[bytes], sha: Any, *, minimum: int | None = None) -> tuple[int, bool]:
    """Fill ``view`` from ``chunks`` (hashing as it goes); ``(bytes filled, stream ended)``.

    Stops when ``view`` is full, or (with ``minimum``) once that many bytes are in. A chunk
    that does not fit is split: the rest is pushed back via ``_Pushback``.
    """
    want = len(view) if minimum is None else min(minimum, len(view))
    pos = 0
    stream = chunks if isinstance(chunks, _Pushback) else None
    while pos < want:
        chunk = next(chunks, None)
        if chunk is None:
            return pos, True
        room = len(view) - pos
        if len(chunk) > room:
            head = memoryview(chunk)[:room]
            view[pos:] = head
            sha.update(head)
            if stream is None:
                raise AssertionError("chunks must be wrapped in _Pushback")
            stream.push(memoryview(chunk)[room:])
            return len(view), False
        view[pos : pos + len(chunk)] = chunk
        sha.update(chunk)
        pos += len(chunk)
    return pos, False


def _discard(chunks: Iterator[bytes], count: int, sha: Any, part_sha: Any) -> int:
    """Read ``count`` bytes from ``chunks`` into the hashes only; how many came."""
    got = 0
    while got < count:
        chunk = next(chunks, None)
        if chunk is None:
            return got
        view = memoryview(chunk)
        if len(view) > count - got:
            assert isinstance(chunks, _Pushback)
            chunks.push(view[count - got :])
            view = view[: count - got]
        sha.update(view)
        part_sha.update(view)
        got += len(view)
    return got


class _Pushback(Iterator[bytes]):
    """An iterator of chunks where the unused tail of a chunk can be put back (no copy: a memoryview)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._back: Any = None

    def push(self, rest: memoryview) -> None:
        self._back = rest

    def at_end(self) -> bool:
        """Whether no chunk is left (a chunk read to find out is put back)."""
        if self._back is not None:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            return True
        self._back = memoryview(chunk)
        return False

    def __next__(self) -> bytes:
        if self._back is not None:
            back, self._back = self._back, None
            return back  # type: ignore[no-any-return]
        return next(self._chunks)


class PartBody:
    """A body's bytes (one buffer or several, in order) as the file object botocore wants,
    read out of the buffers without a copy.

    botocore takes bytes, a bytearray or a file as a body, not a memoryview; slicing the
    buffers into bytes would copy every part. ``read`` hands out memoryview slices (within one
    buffer at a time), which the HTTP layer sends as they are (``socket.sendall`` takes any buffer).
    """

    def __init__(self, *views: memoryview) -> None:
        self._views = [v for v in views if len(v)]
        self._starts = list(itertools.accumulate((len(v) for v in self._views), initial=0))
        self._size = self._starts[-1]
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes | memoryview:
        if size is None or size < 0:
            # Only a whole-body read copies (moto's in-process mock does it; the HTTP path reads in blocks).
            rest = b"".join(self._rest())
            self._pos = self._size
            return rest
        if self._pos >= self._size or size == 0:
            return b""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        offset = self._pos - self._starts[index]
        chunk = self._views[index][offset : offset + size]
        self._pos += len(chunk)
        return chunk

    def _rest(self) -> Iterator[memoryview]:
        for view, start in zip(self._views, self._starts, strict=False):
            if start + len(view) > self._pos:
                yield view[max(0, self._pos - start) :]

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos


def _b64sha(view: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(view).digest()).decode()


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _check_length(size: int, expected: int | None) -> None:
    if expected is not None and size != expected:
        raise ResultFetchError(f"result download truncated: {size} of {expected} bytes")


def _content_range_total(value: str | None) -> int | None:
    """The total of ``bytes a-b/total`` (None when absent or unknown)."""
    if not value or "/" not in value:
        return None
    return _int(value.rsplit("/", 1)[1].strip())
