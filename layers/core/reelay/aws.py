"""Adapters to AWS messaging and storage (the only module besides ``store`` that uses boto3).

Each adapter is a small class taking its client in the constructor, with a default, so
tests can run them against moto or pass a fake.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
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


class ResultBucket:
    """The results bucket: multipart uploads that are either completed whole or aborted."""

    def __init__(self, bucket: str, *, client: Any = None) -> None:
        self.name = bucket
        self._s3 = client or boto3.client("s3")

    def put(self, key: str, body: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        self._s3.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type, Metadata=metadata)

    def start_multipart(self, key: str, *, content_type: str, metadata: dict[str, str]) -> str:
        resp = self._s3.create_multipart_upload(Bucket=self.name, Key=key, ContentType=content_type, Metadata=metadata)
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        resp = self._s3.upload_part(Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._s3.complete_multipart_upload(
            Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._s3.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self._s3.head_object(Bucket=self.name, Key=key))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def read_range(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of an object (image edits send small inputs to providers)."""
        resp = self._s3.get_object(Bucket=self.name, Key=key, Range=f"bytes=0-{size - 1}")
        return bytes(resp["Body"].read())

    def presigned_get(self, key: str, ttl_seconds: int) -> str:
        return str(
            self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=ttl_seconds
            )
        )
