"""Adapters to AWS messaging and storage (the only module besides ``store`` that uses boto3).

Each adapter is a small class taking its client in the constructor, with a default, so
tests can run them against moto or pass a fake. Each call is counted for its task as it is
made (``reelay.costs.record``; a bucket key names its task, ``tasks/<id>/...``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reelay import costs
from reelay.errors import QueueSendFailed, ReelayError

# Every AWS client reelay makes: a bounded wait, since a function's timeout is the whole budget
# (botocore waits up to 60 s to connect and 60 s for each read), and the standard retry mode
# (3 attempts with jittered backoff and a retry quota; the legacy default tries DynamoDB 10
# times and backs off without jitter).
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 3})


def new_client(service: str, *, config: Config | None = None) -> Any:
    """A boto3 client with ``CLIENT_CONFIG`` (and ``config`` on top of it)."""
    return boto3.client(service, config=CLIENT_CONFIG.merge(config) if config is not None else CLIENT_CONFIG)


def new_resource(service: str) -> Any:
    """A boto3 resource with ``CLIENT_CONFIG``."""
    return boto3.resource(service, config=CLIENT_CONFIG)


class TaskQueue:
    """An SQS queue carrying ``{"task_id": ...}`` messages to the next step."""

    def __init__(self, queue_url: str, *, client: Any = None) -> None:
        self.url = queue_url
        self._sqs = client or new_client("sqs")

    def send(self, task_id: str, *, delay_seconds: int = 0, **extra: Any) -> None:
        """Put a message for ``task_id``; ``QueueSendFailed`` when SQS does not take it.

        The message carries the running invocation's counts for the task, this send included
        (``reelay.costs.carrying``); the step that receives it adds them to its own.
        """
        costs.record(task_id, "sqs.SendMessage", sqs_requests=1)
        body: dict[str, Any] = {"task_id": task_id, **extra}
        try:
            with costs.carrying(task_id) as carried:
                if carried:
                    body["costs"] = carried
                self._sqs.send_message(
                    QueueUrl=self.url, MessageBody=json.dumps(body), DelaySeconds=max(0, min(900, delay_seconds))
                )
        except (ClientError, BotoCoreError) as exc:
            raise QueueSendFailed(f"could not queue task {task_id}: {type(exc).__name__}") from exc

    def retry_later(self, receipt_handle: str, seconds: int) -> None:
        """Make a received message visible again after ``seconds`` (backoff without a DLQ hit)."""
        self._sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, min(43200, seconds))
        )
        costs.record(None, "sqs.ChangeMessageVisibility", sqs_requests=1)


class EventPublishFailed(ReelayError):
    """EventBridge did not take an event (the notify worker retries it from its queue)."""


class EventBus:
    """The stack's EventBridge bus: ``PutEvents`` of reelay's events (source ``reelay``)."""

    SOURCE = "reelay"

    def __init__(self, bus_name: str, *, client: Any = None) -> None:
        self.name = bus_name
        self._events = client or new_client("events")

    def put(self, detail_type: str, detail: dict[str, Any], *, resources: list[str] | None = None) -> str:
        """Put one event; its EventBridge id. ``EventPublishFailed`` when it was not taken."""
        entry = {
            "EventBusName": self.name,
            "Source": self.SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, separators=(",", ":")),
            "Resources": resources or [],
        }
        costs.record(None, "events.PutEvents", events=1)
        try:
            answer = self._events.put_events(Entries=[entry])
        except (ClientError, BotoCoreError) as exc:
            raise EventPublishFailed(f"could not put {detail_type}: {type(exc).__name__}") from exc
        result = (answer.get("Entries") or [{}])[0]
        if answer.get("FailedEntryCount") or not result.get("EventId"):
            raise EventPublishFailed(f"could not put {detail_type}: {result.get('ErrorCode', 'no event id')}")
        return str(result["EventId"])


class PollStarter:
    """Starts the poll state machine for a task; the execution name makes it start once."""

    def __init__(self, state_machine_arn: str | None, *, client: Any = None) -> None:
        self.arn = state_machine_arn
        self._given_client = client

    @cached_property
    def _sfn(self) -> Any:
        # Made on first use: a create for a provider that calls back starts no poll execution.
        return self._given_client or new_client("stepfunctions")

    def start(self, name: str, payload: dict[str, Any], *, state_machine_arn: str | None = None) -> bool:
        """Start an execution named ``name``; False when one of that name already exists.

        The input's ``costs`` carries the running invocation's counts for its task, this start
        included (``reelay.costs.carrying``): the state machine puts them on its first poll message,
        and the poll that receives it adds them to its own (statemachine/poll.asl.json). They go
        back into the ledger when no execution was started.
        """
        arn = state_machine_arn or self.arn
        if not arn:
            raise ReelayError("no poll state machine configured (POLL_STATE_MACHINE_ARN)")
        task_id = str(payload.get("task_id") or "") or None
        # Step Functions bills state transitions (counted by the poll function), not API calls.
        costs.record(task_id, "sfn.StartExecution")
        try:
            with costs.carrying(task_id) as carried:
                body = {**payload, "costs": carried} if carried else payload
                self._sfn.start_execution(stateMachineArn=arn, name=name[:80], input=json.dumps(body))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return False
            raise
        return True

    def is_running(self, name: str, *, state_machine_arn: str | None = None) -> bool:
        """Whether the execution named ``name`` exists and is still running."""
        arn = state_machine_arn or self.arn
        if not arn:
            raise ReelayError("no poll state machine configured (POLL_STATE_MACHINE_ARN)")
        execution_arn = arn.replace(":stateMachine:", ":execution:", 1) + ":" + name[:80]
        costs.record(None, "sfn.DescribeExecution")
        try:
            status = self._sfn.describe_execution(executionArn=execution_arn)["status"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ExecutionDoesNotExist":
                return False
            raise
        return bool(status == "RUNNING")


class PollTokens:
    """The poll execution's task token: heartbeat it, or end its wait (SendTask* calls).

    Each call answers False when no execution waits on the token any more (it timed out,
    ended, or a heartbeat timeout replaced it with a fresh token): that poll chain stops.
    """

    _GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})

    def __init__(self, *, client: Any = None) -> None:
        self._sfn = client or new_client("stepfunctions")

    def heartbeat(self, token: str) -> bool:
        return self._call(self._sfn.send_task_heartbeat, taskToken=token)

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        return self._call(self._sfn.send_task_success, taskToken=token, output=json.dumps(output))

    def fail(self, token: str, *, error: str, cause: str) -> bool:
        return self._call(self._sfn.send_task_failure, taskToken=token, error=error[:256], cause=cause[:32768])

    def _call(self, method: Callable[..., Any], **params: Any) -> bool:
        # SendTask* calls are free API calls (not state transitions); counted so the tally is whole.
        costs.record(None, "sfn." + "".join(w.title() for w in method.__name__.split("_")))
        try:
            method(**params)
        except ClientError as exc:
            if _code(exc) in self._GONE:
                return False
            raise
        return True


class ResultBucket:
    """The results bucket: single PUTs and multipart uploads, every write conditional on the key being new.

    Uploads carry S3 additional checksums (SHA-256 per part); completion is conditional
    (``If-None-Match: *``), so a second copy of the same output is a no-op, not a second object.
    """

    def __init__(
        self, bucket: str, *, client: Any = None, credentials_expiry: Callable[[], datetime | None] | None = None
    ) -> None:
        self.name = bucket
        self._given_client = client
        self._credentials_expiry = credentials_expiry or self._signer_credentials_expiry

    # The clients are made on first use: many requests of the functions that hold a bucket never
    # touch it (a create, a callback, a poll), and an S3 client is one of the costlier to make.
    @cached_property
    def _s3(self) -> Any:
        # Enough pooled connections for every part in flight (the copier's threads share this client).
        # Every body carries a SHA-256 that S3 verifies (ChecksumSHA256), so SigV4 need not hash the
        # payload a second time: botocore already skips it on https when a checksum header is present,
        # this makes plain-http endpoints (the local stack) behave the same.
        # Presigned URLs are SigV4 (buckets made since 2020 refuse SigV2) on the regional endpoint:
        # in us-east-1 botocore would otherwise sign for the global s3.amazonaws.com host.
        # botocore's 60 s read timeout stays: S3 may take a while to answer a large object's
        # CompleteMultipartUpload (it sends whitespace meanwhile).
        return self._given_client or new_client(
            "s3",
            config=Config(
                read_timeout=60,
                signature_version="s3v4",
                max_pool_connections=32,
                s3={"payload_signing_enabled": False, "us_east_1_regional_endpoint": "regional"},
            ),
        )

    @cached_property
    def _presigner(self) -> Any:
        if self._given_client is None and str(self._s3.meta.endpoint_url).endswith(".amazonaws.com"):
            # On AWS, sign for the bucket's virtual host in its region: botocore's "auto" style
            # would presign for the global s3.amazonaws.com host outside us-east-1. (A custom
            # endpoint, the local stack's, keeps path style: 127.0.0.1 has no bucket subdomains.)
            return new_client(
                "s3",
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"},
                ),
            )
        return self._s3

    def put(
        self,
        key: str,
        body: Any,
        *,
        content_type: str,
        metadata: dict[str, str],
        checksum_sha256: str | None = None,
    ) -> bool:
        """Create ``key``; False when it already exists (nothing written)."""
        extra = {"ChecksumSHA256": checksum_sha256} if checksum_sha256 else {}
        _count(key, "s3.PutObject", s3_put_requests=1)
        try:
            self._s3.put_object(
                Bucket=self.name,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata,
                IfNoneMatch="*",
                **extra,
            )
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    def start_multipart(self, key: str, *, content_type: str, metadata: dict[str, str]) -> str:
        _count(key, "s3.CreateMultipartUpload", s3_put_requests=1)
        resp = self._s3.create_multipart_upload(
            Bucket=self.name, Key=key, ContentType=content_type, Metadata=metadata, ChecksumAlgorithm="SHA256"
        )
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, body: Any, *, checksum_sha256: str) -> dict[str, Any]:
        _count(key, "s3.UploadPart", s3_put_requests=1)
        resp = self._s3.upload_part(
            Bucket=self.name,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum_sha256,
        )
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum_sha256}

    def list_parts(self, key: str, upload_id: str) -> list[dict[str, Any]] | None:
        """The parts an open upload holds, in order; None when the upload no longer exists."""
        parts: list[dict[str, Any]] = []
        marker = 0
        try:
            while True:
                _count(key, "s3.ListParts", s3_put_requests=1)
                resp = self._s3.list_parts(Bucket=self.name, Key=key, UploadId=upload_id, PartNumberMarker=marker)
                parts += [
                    {
                        "PartNumber": int(p["PartNumber"]),
                        "ETag": p["ETag"],
                        "Size": int(p["Size"]),
                        "ChecksumSHA256": p.get("ChecksumSHA256"),
                    }
                    for p in resp.get("Parts", [])
                ]
                if not resp.get("IsTruncated"):
                    return sorted(parts, key=lambda p: p["PartNumber"])
                marker = int(resp["NextPartNumberMarker"])
        except ClientError as exc:
            if _code(exc) in ("NoSuchUpload", "404"):
                return None
            raise

    def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> bool:
        """Complete the upload; False when ``key`` already existed (the upload is then aborted)."""
        listed = [{k: p[k] for k in ("PartNumber", "ETag", "ChecksumSHA256") if p.get(k) is not None} for p in parts]
        _count(key, "s3.CompleteMultipartUpload", s3_put_requests=1)
        try:
            self._s3.complete_multipart_upload(
                Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}, IfNoneMatch="*"
            )
        except ClientError as exc:
            code = _code(exc)
            if code in ("PreconditionFailed", "412"):
                self.abort_multipart(key, upload_id)
                return False
            if code == "NoSuchUpload" and self.head(key) is not None:
                return True  # completed by an earlier attempt that died before recording it
            raise
        return True

    def abort_multipart(self, key: str, upload_id: str) -> None:
        _count(key, "s3.AbortMultipartUpload")  # a DELETE: free
        try:
            self._s3.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) not in ("NoSuchUpload", "404"):
                raise

    def delete(self, key: str) -> None:
        _count(key, "s3.DeleteObject")  # free
        self._s3.delete_object(Bucket=self.name, Key=key)

    def head(self, key: str) -> dict[str, Any] | None:
        _count(key, "s3.HeadObject", s3_get_requests=1)
        try:
            return dict(self._s3.head_object(Bucket=self.name, Key=key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read_range(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of an object (image edits send small inputs to providers)."""
        _count(key, "s3.GetObject", s3_get_requests=1)
        resp = self._s3.get_object(Bucket=self.name, Key=key, Range=f"bytes=0-{size - 1}")
        return bytes(resp["Body"].read())

    def reader(self, key: str, *, size: int | None = None) -> S3ObjectReader:
        """A seekable, read-only file over one object (ranged GETs; see ``S3ObjectReader``);
        ``size`` when the caller knows it (it wrote the object) saves a ``HeadObject``."""
        return S3ObjectReader(self._s3, self.name, key, size=size)

    def presign_ttl(self, wanted_seconds: int) -> int:
        """The lifetime a presigned URL really gets: ``wanted_seconds``, capped by SigV4's 7 days and,
        where known, by the expiry of the credentials that sign it (a URL dies with its session)."""
        ttl = min(wanted_seconds, MAX_PRESIGN_SECONDS)
        expiry = self._credentials_expiry()
        if expiry is not None:
            left = int((expiry - datetime.now(UTC)).total_seconds()) - PRESIGN_EXPIRY_MARGIN_SECONDS
            ttl = min(ttl, left)
        return max(1, ttl)

    def presigned_get(self, key: str, ttl_seconds: int) -> str:
        """A SigV4 presigned GET of an output, valid for ``presign_ttl(ttl_seconds)``."""
        return str(
            self._presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=self.presign_ttl(ttl_seconds)
            )
        )

    def presigned_put(
        self, key: str, *, content_type: str, content_length: int, ttl_seconds: int, content_md5: str | None = None
    ) -> str:
        """A SigV4 presigned PUT with Content-Type and Content-Length signed in: another size or type is refused.

        With ``content_md5`` (base64) the MD5 is signed in too: S3 refuses any other body.
        """
        params: dict[str, Any] = {
            "Bucket": self.name,
            "Key": key,
            "ContentType": content_type,
            "ContentLength": content_length,
        }
        if content_md5:
            params["ContentMD5"] = content_md5
        return str(
            self._presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=self.presign_ttl(ttl_seconds))
        )

    def _signer_credentials_expiry(self) -> datetime | None:
        # Refreshable credentials (assumed roles, SSO, container/instance roles) know when they
        # expire; botocore keeps it on a private attribute only. Static keys have no expiry.
        credentials = getattr(getattr(self._presigner, "_request_signer", None), "_credentials", None)
        expiry = getattr(credentials, "_expiry_time", None)
        return expiry if isinstance(expiry, datetime) else None


# SigV4 presigned URLs live at most 7 days; leave a minute between a URL's end and its credentials'.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
PRESIGN_EXPIRY_MARGIN_SECONDS = 60


def _count(key: str, call: str, *, s3_put_requests: int = 0, s3_get_requests: int = 0) -> None:
    task_id = costs.task_of_key(key)
    costs.record(task_id, call, s3_put_requests=s3_put_requests, s3_get_requests=s3_get_requests)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ApiKeyTable:
    """``reelay.apikeys.ApiKeyStore`` on the ``ApiKeyTable`` of template.yaml (hash key ``key_id``)."""

    def __init__(self, table_name: str, *, resource: Any = None) -> None:
        self._table = (resource or new_resource("dynamodb")).Table(table_name)

    def put(self, key: Any) -> None:
        item = key.model_dump(mode="json", exclude_none=True)
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(key_id)")

    def get(self, key_id: str) -> Any:
        from reelay.apikeys import ApiKey

        item = self._table.get_item(Key={"key_id": key_id}).get("Item")
        return ApiKey.model_validate(item) if item else None

    def all(self) -> list[Any]:
        from reelay.apikeys import ApiKey

        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {}
        while True:
            page = self._table.scan(**query)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return [ApiKey.model_validate(i) for i in items]
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def revoke(self, key_id: str, at: datetime) -> Any:
        from reelay.apikeys import ApiKey

        try:
            answer = self._table.update_item(
                Key={"key_id": key_id},
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :at)",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeValues={":at": at.isoformat()},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return ApiKey.model_validate(answer["Attributes"])


class S3ObjectReader(io.RawIOBase):
    """A read-only, seekable file over one S3 object, by ranged GETs (media libraries seek in MP4s).

    Reads are buffered in blocks of ``block_bytes``, so memory stays bounded whatever the size.
    """

    def __init__(
        self, client: Any, bucket: str, key: str, *, size: int | None = None, block_bytes: int = 1024 * 1024
    ) -> None:
        super().__init__()
        self._s3 = client
        self._bucket = bucket
        self._key = key
        if size is None:
            _count(key, "s3.HeadObject", s3_get_requests=1)
            size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        self._size = size
        self._position = 0
        self._block_bytes = block_bytes
        self._block_start = -1
        self._block = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size:
            return 0
        start = self._position - self._position % self._block_bytes
        if start != self._block_start:
            end = min(self._size, start + self._block_bytes) - 1
            _count(self._key, "s3.GetObject", s3_get_requests=1)
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={start}-{end}")["Body"]
            self._block, self._block_start = body.read(), start
        offset = self._position - self._block_start
        chunk = self._block[offset : offset + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)
