"""Provider keys from Secrets Manager: read on first use, not at cold start, and re-read after their TTL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters

from reelay.errors import ConfigurationError
from reelay.providers import base
from reelay.settings import Settings


@pytest.fixture
def environ(aws: dict[str, str]) -> dict[str, str]:
    parameters.clear_caches()
    return {
        **aws,
        "REELAY_PROVIDERS": "generate_task,sorahk",
        "REELAY_GENERATE_TASK_BASE_URL": "https://gt.example",
        "REELAY_SORAHK_BASE_URL": "https://hk.example",
        "REELAY_SORAHK_API_KEY": "sk-own",
        "REELAY_PROVIDER_KEYS_SECRET_ARN": "reelay/provider-keys",
    }


def _put(value: Any) -> None:
    client = boto3.client("secretsmanager")
    body = value if isinstance(value, str) else json.dumps(value)
    try:
        client.put_secret_value(SecretId="reelay/provider-keys", SecretString=body)
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name="reelay/provider-keys", SecretString=body)


def test_settings_read_no_secret_and_the_first_use_does(environ: dict[str, str]) -> None:
    # Given a stack whose keys secret does not even exist yet: the function still starts
    settings = Settings.from_environ(environ)
    gt, hk = settings.providers
    assert hk.key() == "sk-own" and hk.api_key_secret_arn is None  # its own key wins; no secret read
    # Then the key is read when first needed
    _put({"generate_task": "gt-secret"})
    assert gt.key() == "gt-secret"
    assert "gt-secret" not in repr(gt)


def test_a_key_filled_in_after_the_deploy_is_picked_up_after_the_ttl(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _put({})
    (gt, _) = Settings.from_environ(environ).providers
    assert gt.key() == ""  # not filled in yet
    _put({"generate_task": "gt-new"})
    assert gt.key() == ""  # cached for KEY_TTL_SECONDS
    # When the TTL has passed (Powertools' cache reads its clock as datetime.now())
    from aws_lambda_powertools.utilities.parameters import base as cache

    later = datetime.now() + timedelta(seconds=base.KEY_TTL_SECONDS + 1)

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return later

    monkeypatch.setattr(cache, "datetime", Later)
    assert gt.key() == "gt-new"


def test_a_keys_secret_that_is_not_a_json_object_is_a_configuration_error(environ: dict[str, str]) -> None:
    _put("not json")
    (gt, _) = Settings.from_environ(environ).providers
    with pytest.raises(ConfigurationError, match="not a JSON object"):
        gt.key()
