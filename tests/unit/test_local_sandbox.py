"""Each local function's own process state (``reelay_local.sandbox``), without a stack or a network."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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


class _Lines(logging.Handler):
    """Keeps each formatted line, by message."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        line = json.loads(self.format(record))
        self.lines[line["message"]] = line


def _log_line(logger: Any, handler: _Lines, message: str) -> dict[str, Any]:
    logger.info(message)
    return handler.lines[message]


def test_powertools_log_keys_are_per_function_and_per_invocation(installed: None) -> None:
    from aws_lambda_powertools import Logger

    # Given one Logger, made at import inside a function, as the layer's modules are
    handler = _Lines()
    api, submit = Sandbox("ApiFunction", function_env("a")), Sandbox("SubmitFunction", function_env("s"))
    with sandbox.running_as(api):
        logger = Logger(service="sandbox-test", logger_handler=handler)
        logger.append_keys(loaded_by="api")
    # When two invocations of one function and one of another append their request ids at once
    lines: dict[str, dict[str, Any]] = {}
    appended = threading.Barrier(3)

    def invoke(box: Sandbox, request_id: str) -> None:
        with sandbox.running_as(box), sandbox.invocation():
            logger.append_keys(function_request_id=request_id)
            appended.wait(timeout=5)  # every invocation has appended before any logs
            lines[request_id] = _log_line(logger, handler, f"hello from {request_id}")
            appended.wait(timeout=5)

    threads = [threading.Thread(target=invoke, args=args) for args in ((api, "a-1"), (api, "a-2"), (submit, "s-1"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then each line carries its own invocation's id, and its function's import-time keys
    assert lines["a-1"]["function_request_id"] == "a-1" and lines["a-2"]["function_request_id"] == "a-2"
    assert lines["s-1"]["function_request_id"] == "s-1"
    assert lines["a-1"]["loaded_by"] == "api" and "loaded_by" not in lines["s-1"]
    # And a function keeps what its last invocation left (a warm sandbox), the other never saw it
    with sandbox.running_as(api):
        assert _log_line(logger, handler, "later in api")["function_request_id"] in {"a-1", "a-2"}
    with sandbox.running_as(submit):
        line = _log_line(logger, handler, "later in submit")
    assert line["function_request_id"] == "s-1" and "loaded_by" not in line


def test_powertools_metrics_are_flushed_by_the_invocation_that_added_them(installed: None, capsys: Any) -> None:
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    api, submit = Sandbox("ApiFunction", function_env("a")), Sandbox("SubmitFunction", function_env("s"))
    with sandbox.running_as(api):
        metrics = Metrics(namespace="SandboxTest", service="sandbox-test")
    added = threading.Event()
    flushed_by_submit = threading.Event()

    def api_invocation() -> None:
        with sandbox.running_as(api), sandbox.invocation():
            metrics.add_metric(name="ApiOnly", unit=MetricUnit.Count, value=1)
            added.set()
            flushed_by_submit.wait(timeout=5)
            metrics.flush_metrics()

    thread = threading.Thread(target=api_invocation)
    thread.start()
    added.wait(timeout=5)
    # Another function's invocation, flushing while the API's metric is pending, flushes only its own
    with sandbox.running_as(submit), sandbox.invocation():
        metrics.add_metric(name="SubmitOnly", unit=MetricUnit.Count, value=1)
        metrics.flush_metrics()
    flushed_by_submit.set()
    thread.join()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    names = [[m["Name"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]] for blob in blobs]
    assert names == [["SubmitOnly"], ["ApiOnly"]]
