"""Per-task callback URL tokens: an HMAC of the task id under a secret of the stack."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote


class CallbackTokens:
    """Mints and checks the ``t`` token of ``/callbacks/{provider}/{task_id}?t=...``."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("callback key too short")
        self._key = key

    def token(self, provider: str, task_id: str) -> str:
        mac = hmac.new(self._key, f"{provider}\n{task_id}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def verify(self, provider: str, task_id: str, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.token(provider, task_id), token)

    def url(self, base_url: str, provider: str, task_id: str) -> str:
        return (
            f"{base_url.rstrip('/')}/callbacks/{quote(provider, safe='')}/{quote(task_id, safe='')}"
            f"?t={self.token(provider, task_id)}"
        )
