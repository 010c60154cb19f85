"""A presigned S3 URL checked at the local endpoint as S3 checks it: its signature and its expiry.

moto checks neither, so a client that sends a header the URL did not sign as it was signed (a
``Content-Type`` or ``Content-Length`` other than the upload ticket's ``headers``), or that uses
a URL after it expired, would succeed locally and fail after ``sam deploy``. Here the signature
is computed again from the request as it arrived (Signature Version 4, query form: the canonical
request of the method, the path, every query parameter but the signature, the signed headers and
``UNSIGNED-PAYLOAD``), with the secret key the signer's credentials carry, and compared; the
expiry is ``X-Amz-Date`` plus ``X-Amz-Expires``; a ``Content-MD5`` (a manifest's PUT signs one in)
must be the body's, which moto does not check either. A refusal is S3's: 403
``SignatureDoesNotMatch``, 403 ``AccessDenied`` "Request has expired", 400 ``BadDigest``.

Only presigned requests of the stack's own principals are checked (a function signed them, with
the stack's secret key); a request signed in its headers is made by boto3 itself and is not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
_MAX_EXPIRES = 7 * 24 * 3600  # S3's limit for a SigV4 presigned URL


def presigned_refusal(
    environ: dict[str, Any],
    secret_key: str,
    *,
    body: Callable[[], bytes] = lambda: b"",
    now: datetime | None = None,
) -> tuple[str, bytes] | None:
    """S3's status and body for a presigned request S3 would refuse: its signature, its expiry,
    its parameters, or a body that is not the ``Content-MD5`` it names (None: S3 would take it)."""
    params = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    query = dict(params)
    if query.get("X-Amz-Algorithm") != ALGORITHM or "X-Amz-Signature" not in query:
        return None
    try:
        signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(query["X-Amz-Expires"])
        credential = query["X-Amz-Credential"].split("/")
        _key_id, day, region, service, _terminal = credential
        signed_headers = query["X-Amz-SignedHeaders"].split(";")
    except (KeyError, ValueError):
        return _error(
            "400 Bad Request",
            "AuthorizationQueryParametersError",
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        )
    if not 1 <= expires <= _MAX_EXPIRES:
        return _error(
            "400 Bad Request",
            "AuthorizationQueryParametersError",
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        )
    current = now or datetime.now(UTC)
    if current > signed_at + timedelta(seconds=expires):
        return _error("403 Forbidden", "AccessDenied", "Request has expired")
    expected = signature(environ, params, signed_headers, secret_key, day=day, region=region, service=service)
    if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
        return _error(
            "403 Forbidden",
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
        )
    return _digest_refusal(environ, body)


def _digest_refusal(environ: dict[str, Any], body: Callable[[], bytes]) -> tuple[str, bytes] | None:
    """S3's 400 for a ``Content-MD5`` that is not an MD5, or not the body's."""
    named = environ.get("HTTP_CONTENT_MD5")
    if named is None:
        return None
    try:
        digest = base64.b64decode(named, validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 16:
        return _error("400 Bad Request", "InvalidDigest", "The Content-MD5 you specified was invalid.")
    if hashlib.md5(body()).digest() != digest:
        return _error("400 Bad Request", "BadDigest", "The Content-MD5 you specified did not match what we received.")
    return None


def signature(
    environ: dict[str, Any],
    params: list[tuple[str, str]],
    signed_headers: list[str],
    secret_key: str,
    *,
    day: str,
    region: str,
    service: str,
) -> str:
    """The SigV4 query signature of the request as it arrived."""
    canonical = "\n".join(
        [
            environ.get("REQUEST_METHOD", ""),
            quote(unquote(_raw_path(environ)), safe="/~"),
            "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(params) if k != "X-Amz-Signature"),
            "".join(f"{name}:{_header(environ, name)}\n" for name in signed_headers),
            ";".join(signed_headers),
            "UNSIGNED-PAYLOAD",
        ]
    )
    query = dict(params)
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, query["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _raw_path(environ: dict[str, Any]) -> str:
    """The path as the client sent it (the WSGI ``PATH_INFO`` is already decoded)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    return str(raw).split("?", 1)[0] if raw else quote(environ.get("PATH_INFO", ""), safe="/~")


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _header(environ: dict[str, Any], name: str) -> str:
    if name in ("content-type", "content-length"):
        value = environ.get(name.upper().replace("-", "_"), "")
    else:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"), "")
    return " ".join(str(value).split())


def _error(status: str, code: str, message: str) -> tuple[str, bytes]:
    return status, (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()
