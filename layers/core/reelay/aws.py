"""Adapters to AWS messaging and storage (the only module besides ``store`` that uses boto3).

Each adapter is a small class taking its client in the constructor, with a default, so
tests can run them against moto or pass a fake.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reelay.errors import QueueSendFailed, ReelayError


class TaskQueue:
    """An SQS queue carrying ``{"task_id": ...}`` messages to the next step."""

    def __init__(self, queue_url: str, *, client: Any = None) -> None:
        self.url = queue_url
        self._sqs = client or boto3.client("sqs")

    def send(self, task_id: str, *, delay_seconds: int = 0, **extra: Any) -> None:
        """Put a message for ``task_id``; ``QueueSendFailed`` when SQS does not take it."""
        try:
            self._sqs.send_message(
                QueueUrl=self.url,
                MessageBody=json.dumps({"task_id": task_id, **extra}),
                DelaySeconds=max(0, min(900, delay_seconds)),
            )
        except (ClientError, BotoCoreError) as exc:
            raise QueueSendFailed(f"could not queue task {task_id}: {type(exc).__name__}") from exc

    def retry_later(self, receipt_handle: str, seconds: int) -> None:
        """Make a received message visible again after ``seconds`` (backoff without a DLQ hit)."""
        self._sqs.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, min(43200, seconds))
        )


class PollStarter:
    """Starts the poll state machine for a task; the execution name makes it start once."""

    def __init__(self, state_machine_arn: str | None, *, client: Any = None) -> None:
        self.arn = state_machine_arn
        self._sfn = client or boto3.client("stepfunctions")

    def start(self, name: str, payload: dict[str, Any], *, state_machine_arn: str | None = None) -> bool:
        """Start an execution named ``name``; False when one of that name already exists."""
        arn = state_machine_arn or self.arn
        if not arn:
            raise ReelayError("no poll state machine configured (POLL_STATE_MACHINE_ARN)")
        try:
            self._sfn.start_execution(stateMachineArn=arn, name=name[:80], input=json.dumps(payload))
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
        self._sfn = client or boto3.client("stepfunctions")

    def heartbeat(self, token: str) -> bool:
        return self._call(self._sfn.send_task_heartbeat, taskToken=token)

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        return self._call(self._sfn.send_task_success, taskToken=token, output=json.dumps(output))

    def fail(self, token: str, *, error: str, cause: str) -> bool:
        return self._call(self._sfn.send_task_failure, taskToken=token, error=error[:256], cause=cause[:32768])

    def _call(self, method: Callable[..., Any], **params: Any) -> bool:
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
        # Enough pooled connections for every part in flight (the copier's threads share this client).
        # Every body carries a SHA-256 that S3 verifies (ChecksumSHA256), so SigV4 need not hash the
        # payload a second time: botocore already skips it on https when a checksum header is present,
        # this makes plain-http endpoints (the local stack) behave the same.
        # Presigned URLs are SigV4 (buckets made since 2020 refuse SigV2) on the regional endpoint:
        # in us-east-1 botocore would otherwise sign for the global s3.amazonaws.com host.
        self._s3 = client or boto3.client(
            "s3",
            config=Config(
                signature_version="s3v4",
                max_pool_connections=32,
                s3={"payload_signing_enabled": False, "us_east_1_regional_endpoint": "regional"},
            ),
        )
        self._presigner = self._s3
        if client is None and str(self._s3.meta.endpoint_url).endswith(".amazonaws.com"):
            # On AWS, sign for the bucket's virtual host in its region: botocore's "auto" style
            # would presign for the global s3.amazonaws.com host outside us-east-1. (A custom
            # endpoint, the local stack's, keeps path style: 127.0.0.1 has no bucket subdomains.)
            self._presigner = boto3.client(
                "s3",
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"},
                ),
            )
        self._credentials_expiry = credentials_expiry or self._signer_credentials_expiry

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
        resp = self._s3.create_multipart_upload(
            Bucket=self.name, Key=key, ContentType=content_type, Metadata=metadata, ChecksumAlgorithm="SHA256"
        )
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, body: Any, *, checksum_sha256: str) -> dict[str, Any]:
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
        try:
            self._s3.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) not in ("NoSuchUpload", "404"):
                raise

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.name, Key=key)

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self._s3.head_object(Bucket=self.name, Key=key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read_range(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of an object (image edits send small inputs to providers)."""
        resp = self._s3.get_object(Bucket=self.name, Key=key, Range=f"bytes=0-{size - 1}")
        return bytes(resp["Body"].read())

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

    def presigned_put(self, key: str, *, content_type: str, content_length: int, ttl_seconds: int) -> str:
        """A SigV4 presigned PUT with Content-Type and Content-Length signed in: another size or type is refused."""
        return str(
            self._presigner.generate_presigned_url(
                "put_object",
                Params={"Bucket": self.name, "Key": key, "ContentType": content_type, "ContentLength": content_length},
                ExpiresIn=self.presign_ttl(ttl_seconds),
            )
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


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
