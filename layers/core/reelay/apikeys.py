"""API keys: a client auth mode (``ClientAuth=APIKEY``) for clients that send ``Authorization: Bearer <key>``.

A key is 32 random bytes, shown once when made (``rk-`` and URL-safe base64). reelay stores
only its SHA-256 (a key has 256 bits of entropy, so a fast hash is enough: no one can guess
its way back, and the authorizer checks it in microseconds), with an owner, a name and the
times it was made and revoked. The key's id is the first 20 hex digits of that hash, so the
authorizer finds the record with one ``GetItem`` by id and compares the whole hash in constant
time; no key or hash is ever logged.

The owner is stored as given and is the owner of every task made with the key — the same
owner model as IAM (a principal ARN) and JWT (``jwt:<iss>#<sub>``): an admin may issue a key
for an existing principal so that it sees the same tasks, or for a new name.

``ApiKeyAuthorizer.decide`` is the HTTP API Lambda authorizer's decision (simple responses).
A well-formed, known, unrevoked key is authorized with ``context = {owner, key_id}``. A wrong
key is *also* passed on, with ``context = {rejected: ...}``, and the API answers it 401 before
any route runs: API Gateway answers a refused simple response with 403, which OpenAI's SDK
reads as ``PermissionDeniedError``, while a wrong key is ``AuthenticationError`` (401) there.
API Gateway caches either answer for the authorizer's TTL (keyed by the Authorization header),
so a revoked key is refused at the latest one TTL after its revocation.

Keys are administered by writing the table directly (``ApiKeys`` over ``reelay.aws.ApiKeyTable``),
not through an API route: in AWS, only principals granted DynamoDB writes on ``ApiKeyTable`` can
make keys, whereas an admin route would be reachable by any client whose IAM policy allows
``execute-api:Invoke`` on the whole API — and a key can name any owner.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from reelay.errors import ApiKeyNotFound, ApiKeyRejected, RequestInvalid
from reelay.models import utcnow

KEY_PREFIX = "rk-"
_KEY_PATTERN = re.compile(r"^rk-[A-Za-z0-9_-]{43}$")
KEY_ID_PATTERN = r"^key_[0-9a-f]{20}$"
# What the API reads from ``requestContext.authorizer.lambda`` (simple responses' ``context``).
CONTEXT_OWNER = "owner"
CONTEXT_KEY_ID = "key_id"
CONTEXT_REJECTED = "rejected"

OwnerName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")]
KeyName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x20-\x7e]+$")]


class ApiKey(BaseModel):
    """An API key as stored: never the key itself, only its hash."""

    key_id: str
    key_hash: str
    owner: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class ApiKeyView(BaseModel):
    """An API key as ``reelay keys list`` shows it (no hash)."""

    # The admin tools' models are built on first use, not at the authorizer's or API's cold start.
    model_config = ConfigDict(defer_build=True)

    key_id: str
    owner: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class NewApiKey(ApiKeyView):
    """The answer to making a key: the only time the bare ``key`` is shown."""

    key: str


class ApiKeyList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    keys: list[ApiKeyView]


class ApiKeyRequest(BaseModel):
    """What to make a key for (``reelay keys create``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    owner: OwnerName = Field(description="Who the key's tasks belong to (any owner string: a name, an ARN, ...).")
    name: KeyName = Field(default="default", description="What the key is for (shown in lists).")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key_hash: str) -> str:
    return f"key_{key_hash[:20]}"


def bearer_key(authorization: str | None) -> str | None:
    """The key in an ``Authorization`` value (``Bearer <key>`` or the bare key), if it is shaped as one."""
    if not authorization:
        return None
    value = authorization.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value if _KEY_PATTERN.fullmatch(value) else None


class ApiKeyStore(ABC):
    """Where keys live (one DynamoDB table: ``reelay.aws.ApiKeyTable``)."""

    @abstractmethod
    def put(self, key: ApiKey) -> None:
        """Store a new key (its id must be new)."""

    @abstractmethod
    def get(self, key_id: str) -> ApiKey | None:
        """The key of that id, or None."""

    @abstractmethod
    def all(self) -> list[ApiKey]:
        """Every key (few: they are made by hand)."""

    @abstractmethod
    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Mark the key revoked (once; a second revoke keeps the first time); None if there is none."""


class ApiKeys:
    """Make, list and revoke keys: ``reelay keys`` against a deployed stack's ``ApiKeyTable``
    (the admin's own IAM credentials), and the local gateway's ``/_reelay/keys`` for ``reelay dev``."""

    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    def create(self, request: ApiKeyRequest) -> NewApiKey:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        record = ApiKey(
            key_id=key_id_of(digest), key_hash=digest, owner=request.owner, name=request.name, created_at=utcnow()
        )
        self._store.put(record)
        return NewApiKey(key=key, **_view(record).model_dump())

    def list(self, *, owner: str | None = None) -> list[ApiKeyView]:
        keys = sorted(self._store.all(), key=lambda k: k.created_at, reverse=True)
        return [_view(k) for k in keys if owner is None or k.owner == owner]

    def revoke(self, key_id: str) -> ApiKeyView:
        if not re.fullmatch(KEY_ID_PATTERN, key_id):
            raise RequestInvalid(f"{key_id!r} is not a key id (key_ and 20 hex digits)", field="key_id")
        revoked = self._store.revoke(key_id, utcnow())
        if revoked is None:
            raise ApiKeyNotFound(f"no API key {key_id}")
        return _view(revoked)


def _view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        key_id=key.key_id, owner=key.owner, name=key.name, created_at=key.created_at, revoked_at=key.revoked_at
    )


class ApiKeyAuthorizer:
    """The Lambda authorizer's decision for one request (payload 2.0, simple responses)."""

    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    def decide(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """``{"isAuthorized": True, "context": {...}}``: an owner, or why the key is rejected."""
        sources = event.get("identitySource") or []
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        authorization = str(sources[0]) if sources else headers.get("authorization")
        key = bearer_key(authorization)
        if key is None:
            return _rejected("malformed")
        digest = hash_key(key)
        record = self._store.get(key_id_of(digest))
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            return _rejected("unknown")
        if not record.active:
            return _rejected("revoked")
        return {"isAuthorized": True, "context": {CONTEXT_OWNER: record.owner, CONTEXT_KEY_ID: record.key_id}}


def _rejected(why: str) -> dict[str, Any]:
    return {"isAuthorized": True, "context": {CONTEXT_REJECTED: why}}


def api_key_owner(authorizer: Mapping[str, Any]) -> str | None:
    """The owner a Lambda authorizer's context names; ``ApiKeyRejected`` when it rejected the key.

    None when the request did not pass a Lambda authorizer (another auth mode).
    """
    context = authorizer.get("lambda")
    if context is None:
        return None
    owner = context.get(CONTEXT_OWNER) if isinstance(context, Mapping) else None
    if not owner:
        raise ApiKeyRejected("Incorrect API key provided. Make one with `reelay keys create --owner NAME`.")
    return str(owner)


__all__ = [
    "ApiKey",
    "ApiKeyAuthorizer",
    "ApiKeyList",
    "ApiKeyNotFound",
    "ApiKeyRejected",
    "ApiKeyRequest",
    "ApiKeyStore",
    "ApiKeyView",
    "ApiKeys",
    "NewApiKey",
    "api_key_owner",
    "bearer_key",
    "hash_key",
]
