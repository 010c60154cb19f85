"""Tokens under a secret of the stack: per-task callback URL tokens, and signed list cursors.

Both are HMAC-SHA256; a cursor key is derived from the same secret with its own label, so a
callback token can never pass as a cursor signature or the other way round.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from functools import cached_property
from urllib.parse import quote

from reelay.errors import RequestInvalid


class CallbackTokens:
    """Mints and checks the ``t`` token of ``/callbacks/{provider}/{task_id}?t=...``."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("callback key too short")
        self._key = key

    def token(self, provider: str, task_id: str) -> str:
        mac = hmac.new(self._key, f"{provider}\n{task_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def verify(self, provider: str, task_id: str, token: str | bytes | None) -> bool:
        """Whether ``token`` is the one minted for this task; compared as bytes in constant time.

        A token that is not ASCII cannot be one reelay minted: refused, never an exception.
        """
        if not token:
            return False
        try:
            given = token if isinstance(token, bytes) else token.encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(self.token(provider, task_id).encode("ascii"), given)

    def cursor_key(self) -> bytes:
        """The key of list cursors, derived from the callback secret under its own label."""
        return hmac.new(self._key, b"reelay list cursor v1", hashlib.sha256).digest()

    def url(self, base_url: str, provider: str, task_id: str) -> str:
        return (
            f"{base_url.rstrip('/')}/callbacks/{quote(provider, safe='')}/{quote(task_id, safe='')}"
            f"?t={self.token(provider, task_id)}"
        )


_BAD_CURSOR = "cursor is not valid for this query; use next_cursor from the previous page of the same query"


class CursorSigner:
    """Seals a store's page key into an opaque cursor bound to its owner and its query.

    A cursor is ``base64url(json key) . base64url(HMAC(owner, query, key))``. Opening checks
    the MAC first: a tampered, foreign (another owner's, another query's) or malformed cursor
    is ``RequestInvalid`` (a 422), never a 500, and never reaches DynamoDB.
    """

    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        """``key``, or how to get it when a cursor is first sealed or opened (the API's cursor key
        comes from the callback secret: a Secrets Manager read that only listing needs)."""
        self._key_source = key
        if isinstance(key, bytes):
            self._checked(key)

    @staticmethod
    def _checked(key: bytes) -> bytes:
        if len(key) < 16:
            raise ValueError("cursor key too short")
        return key

    @cached_property
    def _key(self) -> bytes:
        source = self._key_source
        return self._checked(source if isinstance(source, bytes) else source())

    def _mac(self, owner: str, query: Mapping[str, str | None], payload: bytes) -> bytes:
        bound = json.dumps({"owner": owner, "query": dict(query)}, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, bound + b"\n" + payload, hashlib.sha256).digest()

    def seal(self, owner: str, query: Mapping[str, str | None], key: Mapping[str, str]) -> str:
        payload = json.dumps(dict(key), sort_keys=True, separators=(",", ":")).encode()
        mac = self._mac(owner, query, payload)
        return f"{_b64(payload)}.{_b64(mac)}"

    def open(self, owner: str, query: Mapping[str, str | None], cursor: str) -> dict[str, str]:
        try:
            payload_part, mac_part = cursor.encode("ascii").split(b".")
            payload, mac = _unb64(payload_part), _unb64(mac_part)
        except (UnicodeEncodeError, ValueError, binascii.Error):
            raise RequestInvalid(_BAD_CURSOR, field="cursor") from None
        if not hmac.compare_digest(self._mac(owner, query, payload), mac):
            raise RequestInvalid(_BAD_CURSOR, field="cursor")
        key = json.loads(payload)  # signed by us: well-formed
        return {str(k): str(v) for k, v in key.items()}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: bytes) -> bytes:
    if not text:
        raise ValueError("empty")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
