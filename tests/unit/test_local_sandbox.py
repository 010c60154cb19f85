"""Each local function's own process state (``reelay_local.sandbox``), without a stack or a network."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from reelay_local import sandbox
from reelay_local.sandbox import Sandbox


def function_env(key: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        **extra,
    }


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PROCESS_ONLY", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "process-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "process-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    sandbox.install()
    try:
        yield
    finally:
        sandbox.uninstall()


def test_inside_a_function_os_environ_is_its_own_exactly(installed: None) -> None:
    api = Sandbox("ApiFunction", function_env("api-key", API_ONLY="1"))
    with sandbox.running_as(api):
        assert dict(os.environ) == api.environ
        assert os.getenv("PROCESS_ONLY") is None and os.environ["API_ONLY"] == "1"
        os.environ["WRITTEN"] = "inside"  # stays in the function, as in its sandbox
    assert os.environ["PROCESS_ONLY"] == "1"
    assert "API_ONLY" not in os.environ and "WRITTEN" not in os.environ
    assert api.environ["WRITTEN"] == "inside"


def test_a_thread_a_function_starts_runs_as_the_function(installed: None) -> None:
    api = Sandbox("ApiFunction", function_env("api-key", API_ONLY="1"))
    seen: dict[str, object] = {}

    def look(name: str) -> None:
        seen[name] = (os.environ.get("API_ONLY"), sandbox.current())

    with sandbox.running_as(api):
        thread = threading.Thread(target=look, args=("thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(2) as pool:  # its workers start inside the function
            pool.submit(look, "pool").result()
    outside = threading.Thread(target=look, args=("outside",))
    outside.start()
    outside.join()
    assert seen == {"thread": ("1", api), "pool": ("1", api), "outside": (None, None)}


def test_each_function_signs_with_its_own_credentials(installed: None) -> None:
    api, poll = Sandbox("ApiFunction", function_env("api-key")), Sandbox("PollFunction", function_env("poll-key"))
    keys = {}
    for box in (api, poll):
        with sandbox.running_as(box):
            client = boto3.client("sqs")
            keys[box.name] = client._request_signer._credentials.access_key
            assert client.meta.endpoint_url == "http://127.0.0.1:9"
            assert boto3._get_default_session() is box.session()  # one default session per function
    assert keys == {"ApiFunction": "api-key", "PollFunction": "poll-key"}
    assert boto3.client("sqs")._request_signer._credentials.access_key == "process-key"


def test_powertools_default_providers_are_per_function(installed: None) -> None:
    from aws_lambda_powertools.utilities.parameters import constants, secrets

    api = Sandbox("ApiFunction", function_env("api-key"))
    with sandbox.running_as(api):
        secrets.DEFAULT_PROVIDERS["secrets"] = "api's provider"
    assert "secrets" not in secrets.DEFAULT_PROVIDERS and "secrets" not in constants.DEFAULT_PROVIDERS
    assert api.providers == {"secrets": "api's provider"}


def test_uninstall_puts_the_process_back() -> None:
    real_environ, real_start, real_session = os.environ, threading.Thread.start, boto3._get_default_session
    sandbox.install()
    sandbox.install()  # nested: the last uninstall restores
    sandbox.uninstall()
    assert os.environ is not real_environ
    sandbox.uninstall()
    assert os.environ is real_environ
    assert threading.Thread.start is real_start
    assert boto3._get_default_session is real_session


def test_os_environ_keeps_what_os_environ_offers_besides_a_mapping(installed: None) -> None:
    api = Sandbox("ApiFunction", function_env("api-key"))
    with sandbox.running_as(api):
        merged = os.environ | {"EXTRA": "1"}
        assert merged == {**api.environ, "EXTRA": "1"}
        assert os.environ.copy() == api.environ
        assert os.environ.get("PROCESS_ONLY", "absent") == "absent"
