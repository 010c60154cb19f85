"""Presigned URLs: SigV4, the lifetime asked for (capped by the credentials), a regional host.

moto checks neither signatures nor expiry, so the properties are asserted on the URL itself,
signed by botocore offline (no network) as in AWS.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from reelay.aws import MAX_PRESIGN_SECONDS, ResultBucket


def _parts(url: str) -> tuple[str, str, dict[str, str]]:
    split = urlsplit(url)
    return split.netloc, split.path, {k: v[0] for k, v in parse_qs(split.query).items()}


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_an_output_url_is_sigv4_with_its_expiry_on_a_regional_virtual_host(
    monkeypatch: pytest.MonkeyPatch, region: str
) -> None:
    # Given the bucket adapter as the API builds it, in a region (us-east-1 is where SigV2 lingered)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_REGION", region)
    bucket = ResultBucket("reelay-results")
    # When it presigns an output GET
    host, path, query = _parts(bucket.presigned_get("tasks/tsk_1/output-0.mp4", 900))
    # Then the signature is SigV4, for that region, valid exactly as long as asked
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].split("/")[2:5] == [region, "s3", "aws4_request"]
    assert query["X-Amz-Expires"] == "900"
    assert "Signature" not in query and "AWSAccessKeyId" not in query  # no SigV2 fields
    # And the host is the bucket's virtual host on the regional endpoint, never the global one
    assert host == f"reelay-results.s3.{region}.amazonaws.com"
    assert path == "/tasks/tsk_1/output-0.mp4"


def test_an_upload_url_is_sigv4_too_with_type_and_length_signed_in() -> None:
    bucket = ResultBucket("reelay-results")
    url = bucket.presigned_put("uploads/ab/c.png", content_type="image/png", content_length=10, ttl_seconds=300)
    host, _, query = _parts(url)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and query["X-Amz-Expires"] == "300"
    assert host == "reelay-results.s3.us-east-1.amazonaws.com"
    assert set(query["X-Amz-SignedHeaders"].split(";")) >= {"host", "content-type", "content-length"}


def test_the_lifetime_is_capped_by_the_signing_credentials_expiry() -> None:
    # Given credentials that expire in five minutes
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    bucket = ResultBucket("reelay-results", credentials_expiry=lambda: expiry)
    # When an hour is asked for, Then the URL lives no longer than its credentials (less a margin)
    _, _, query = _parts(bucket.presigned_get("k", 3600))
    assert 200 <= int(query["X-Amz-Expires"]) <= 240
    # And without a known expiry, SigV4's 7-day ceiling still holds
    unbounded = ResultBucket("reelay-results", credentials_expiry=lambda: None)
    assert unbounded.presign_ttl(30 * 24 * 3600) == MAX_PRESIGN_SECONDS
