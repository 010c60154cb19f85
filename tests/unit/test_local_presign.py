"""The local endpoint checks a presigned S3 URL as S3 does: signature (headers as signed) and expiry."""

from __future__ import annotations

import base64
import hashlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from reelay_local.local_presign import presigned_refusal

SECRET = "local-secret"


def _presign(method: str, key: str, *, expires: int = 900, **params: Any) -> str:
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:5000",
        region_name="us-east-1",
        aws_access_key_id="LOCALKEY",
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    operation = {"PUT": "put_object", "GET": "get_object"}[method]
    return s3.generate_presigned_url(operation, Params={"Bucket": "b", "Key": key, **params}, ExpiresIn=expires)


def _environ(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes = b"") -> dict[str, Any]:
    """The WSGI environ of the request as werkzeug's server hands it on (the raw URI kept)."""
    parts = urlsplit(url)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": parts.path,
        "RAW_URI": parts.path + "?" + parts.query,
        "QUERY_STRING": parts.query,
        "HTTP_HOST": parts.netloc,
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in (headers or {}).items():
        if name.lower() in ("content-type", "content-length"):
            environ[name.upper().replace("-", "_")] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def test_a_put_as_signed_is_taken_and_one_with_another_header_or_length_is_refused() -> None:
    # Given an upload ticket's URL: type and length signed in
    url = _presign("PUT", "uploads/o/a b+ü.png", ContentType="image/png", ContentLength=4)
    signed = {"Content-Type": "image/png", "Content-Length": "4"}
    # Then the PUT it was signed for passes
    assert presigned_refusal(_environ("PUT", url, headers=signed, body=b"abcd"), SECRET) is None
    # And another type, another length, another method, path or secret is S3's SignatureDoesNotMatch
    cases = [
        _environ("PUT", url, headers=signed | {"Content-Type": "text/html"}, body=b"abcd"),
        _environ("PUT", url, headers=signed | {"Content-Length": "5"}, body=b"abcde"),
        _environ("POST", url, headers=signed, body=b"abcd"),
        _environ("PUT", url.replace("a%20b", "a%20c"), headers=signed, body=b"abcd"),
    ]
    for environ in cases:
        refused = presigned_refusal(environ, SECRET)
        assert refused is not None and refused[0] == "403 Forbidden" and b"SignatureDoesNotMatch" in refused[1]
    assert presigned_refusal(_environ("PUT", url, headers=signed, body=b"abcd"), "other") is not None


def test_a_url_used_after_it_expired_or_with_its_expiry_changed_is_refused() -> None:
    url = _presign("GET", "tasks/t/0.mp4", expires=60)
    assert presigned_refusal(_environ("GET", url), SECRET) is None
    later = datetime.now(UTC) + timedelta(seconds=120)  # now, not at import: xdist runs a test minutes later
    expired = presigned_refusal(_environ("GET", url), SECRET, now=later)
    assert expired is not None and expired[0] == "403 Forbidden" and b"Request has expired" in expired[1]
    stretched = presigned_refusal(_environ("GET", url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")), SECRET)
    assert stretched is not None and b"SignatureDoesNotMatch" in stretched[1]


@pytest.mark.parametrize(("drop", "expires"), [("X-Amz-Date", None), (None, "0"), (None, "604801"), (None, "soon")])
def test_a_url_without_its_parameters_or_with_an_expiry_s3_does_not_allow_is_a_400(
    drop: str | None, expires: str | None
) -> None:
    url = _presign("GET", "tasks/t/0.mp4")
    parts = urlsplit(url)
    params = [p for p in parts.query.split("&") if drop is None or not p.startswith(drop + "=")]
    if expires is not None:
        params = [f"X-Amz-Expires={expires}" if p.startswith("X-Amz-Expires=") else p for p in params]
    refused = presigned_refusal(
        _environ("GET", f"{parts.scheme}://{parts.netloc}{parts.path}?{'&'.join(params)}"), SECRET
    )
    assert (
        refused is not None and refused[0] == "400 Bad Request" and b"AuthorizationQueryParametersError" in refused[1]
    )


def test_a_request_that_is_not_presigned_is_not_this_checks_business() -> None:
    assert presigned_refusal(_environ("GET", "http://127.0.0.1:5000/b/k?list-type=2"), SECRET) is None


def test_a_body_that_is_not_the_content_md5_signed_in_is_s3s_bad_digest() -> None:
    # Given a manifest ticket's URL: its MD5 signed in
    manifest = b'{"provider": "sorahk", "prompt": "a"}\n'
    md5 = base64.b64encode(hashlib.md5(manifest).digest()).decode()
    url = _presign("PUT", "inbox/o/shots.jsonl", ContentMD5=md5, ContentLength=len(manifest))
    headers = {"Content-MD5": md5, "Content-Length": str(len(manifest))}

    def refused(body: bytes, named: str = md5) -> Any:
        environ = _environ("PUT", url, headers=headers | {"Content-MD5": named}, body=body)
        return presigned_refusal(environ, SECRET, body=lambda: body)

    # Then the manifest passes, other bytes of the same length do not, nor an MD5 that is none
    assert refused(manifest) is None
    bad = refused(manifest.replace(b'"a"', b'"b"'))
    assert bad is not None and bad[0] == "400 Bad Request" and b"<Code>BadDigest</Code>" in bad[1]
    # And an MD5 that is none, sent without being signed in, is S3's InvalidDigest
    plain = _presign("PUT", "inbox/o/shots.jsonl")
    environ = _environ("PUT", plain, headers={"Content-MD5": "not-an-md5"}, body=manifest)
    invalid = presigned_refusal(environ, SECRET, body=lambda: manifest)
    assert invalid is not None and b"<Code>InvalidDigest</Code>" in invalid[1]
