"""Where ``reelay keys`` makes, lists and revokes API keys.

- A deployed stack: straight in its ``ApiKeyTable`` (``--table NAME``, or ``--stack NAME`` to read the
  table from the stack's ``ApiKeyTableName`` output), with your AWS credentials — only principals
  allowed to write that table can make keys; the API has no route for it.
- A ``reelay dev`` on loopback (``--api-url``): its gateway's ``/_reelay/keys``, which writes the
  local table the same way.
Both go through ``reelay.apikeys.ApiKeys`` (the hash, the id, the conditional put are in one place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from reelay.apikeys import ApiKeyRequest, ApiKeys, ApiKeyView, NewApiKey
from reelay.errors import ReelayError
from reelay_cli.api_client import CliError, ReelayClient, is_loopback

T = TypeVar("T")


class KeyAdmin(Protocol):
    def create_key(self, owner: str, name: str | None = None) -> NewApiKey: ...

    def list_keys(self, *, owner: str | None = None) -> list[ApiKeyView]: ...

    def revoke_key(self, key_id: str) -> ApiKeyView: ...


class TableKeyAdmin:
    """``KeyAdmin`` on a deployed stack's key table (boto3, the caller's credentials)."""

    def __init__(self, table_name: str) -> None:
        from reelay.aws import ApiKeyTable

        self._keys = ApiKeys(ApiKeyTable(table_name))  # type: ignore[arg-type]

    def create_key(self, owner: str, name: str | None = None) -> NewApiKey:
        asked = ApiKeyRequest(owner=owner, name=name) if name else ApiKeyRequest(owner=owner)
        return _guarded(lambda: self._keys.create(asked))

    def list_keys(self, *, owner: str | None = None) -> list[ApiKeyView]:
        return _guarded(lambda: self._keys.list(owner=owner))

    def revoke_key(self, key_id: str) -> ApiKeyView:
        return _guarded(lambda: self._keys.revoke(key_id))


def stack_key_table(stack: str) -> str:
    """The ``ApiKeyTableName`` output of a deployed stack."""
    import boto3

    outputs = _guarded(lambda: boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0])
    for output in outputs.get("Outputs") or []:
        if output.get("OutputKey") == "ApiKeyTableName":
            return str(output["OutputValue"])
    raise CliError(f"stack {stack} has no ApiKeyTableName output", hint="is it a reelay stack of this version?")


def key_admin(
    api_url: str, *, table: str | None, stack: str | None, client: Callable[[], ReelayClient]
) -> KeyAdmin | ReelayClient:
    """The table (``--table`` / ``--stack``), else a loopback ``reelay dev``; anything else is a usage error."""
    if table or stack:
        return TableKeyAdmin(table or stack_key_table(str(stack)))
    if is_loopback(api_url):
        return client()
    raise CliError(
        f"{api_url} is not a local `reelay dev`: a deployed stack's keys are written to its key table",
        exit_code=2,
        hint="pass --stack STACK_NAME (or --table TABLE_NAME); your AWS credentials need write access to it",
    )


def _guarded(call: Callable[[], T]) -> T:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CliError(f"AWS refused: {error.get('Code', '?')}: {error.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise CliError(f"cannot reach AWS: {exc}", exit_code=2) from exc
    except ReelayError as exc:
        raise CliError(exc.message) from exc
