"""Previews: made at ingest only for a task that asked for them (a thumbnail and a spritesheet)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from reelay import media
from reelay.aws import ResultBucket
from reelay.models import Output, Task, utcnow

SAMPLE = Path(__file__).resolve().parents[2] / "devstack/reelay_sim/assets/sample.mp4"


def _task(**request: object) -> Task:
    now = utcnow()
    return Task(
        id="tsk_01media",
        provider="p",
        protocol="p",
        request={"prompt": "x", **request},
        created_at=now,
        updated_at=now,
    )


def _stored(aws: dict[str, str]) -> Output:
    key = "tasks/tsk_01media/output-0.mp4"
    data = SAMPLE.read_bytes()
    boto3.client("s3").put_object(Bucket="results", Key=key, Body=data)
    return Output(key=key, s3_uri=f"s3://results/{key}", bytes=len(data), sha256="0" * 64, content_type="video/mp4")


def _keys() -> list[str]:
    return sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="results").get("Contents", []))


def test_a_task_that_did_not_ask_for_previews_gets_none(aws: dict[str, str]) -> None:
    output = _stored(aws)
    assert media.PreviewMaker(ResultBucket("results")).make(_task(), [output]) == []
    assert media.PreviewMaker(ResultBucket("results")).make(_task(previews=False), [output]) == []
    assert _keys() == [output.key]


@pytest.mark.skipif(not media.available(), reason="PyAV is optional")
def test_a_task_that_asked_for_previews_gets_a_thumbnail_and_a_spritesheet(aws: dict[str, str]) -> None:
    output = _stored(aws)
    written = media.PreviewMaker(ResultBucket("results")).make(_task(previews=True), [output])
    assert written == [media.preview_key("tsk_01media", v) for v in media.VARIANTS]
    assert _keys() == sorted([output.key, *written])
    body = boto3.client("s3").get_object(Bucket="results", Key=written[0])["Body"].read()
    assert body[:3] == b"\xff\xd8\xff"  # a JPEG
