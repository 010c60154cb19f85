"""End-to-end: the real handlers, state machine and S3 bytes, over HTTP on loopback.

One ``DevEnvironment`` per test module (the local stack runs handlers in-process, so one at a
time). The stack serves four providers: the three defaults on the simulator, plus
``sorahk_short``, a second sorahk instance with a 6 s deadline, for the deadline test.
A handler that runs
past its template timeout fails the test it ran in (``tests.lambda_timeouts``), and so does a
call that a function's role does not allow (``tests.access_denials``).
"""

from __future__ import annotations

import contextlib
import time
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from reelay_local import DevEnvironment
from tests import access_denials
from tests.access_denials import _unexpected_access_denials_fail_the_test
from tests.lambda_timeouts import _unexpected_lambda_timeouts_fail_the_test, register_marker
from tests.template_support import REPO

__all__ = ["_unexpected_access_denials_fail_the_test", "_unexpected_lambda_timeouts_fail_the_test"]


def pytest_configure(config: pytest.Config) -> None:
    register_marker(config)
    access_denials.register_marker(config)


E2E_ENV = {
    "REELAY_PROVIDERS": "generate_task,sorahk,openai_videos,sorahk_short",
    "REELAY_SORAHK_SHORT_PROTOCOL": "sorahk",
    "REELAY_SORAHK_SHORT_DEADLINE_SECONDS": "6",
    # A create whose answer takes longer than this is a lost answer (the money tests).
    "REELAY_GENERATE_TASK_TIMEOUT_SECONDS": "2",
    "REELAY_LOG_LEVEL": "WARNING",
    # Reconcile settles held creates and lost callbacks: locally it runs every 2 s.
    "REELAY_RECONCILE_EVERY_SECONDS": "2",
}


class Api:
    """A small client of the reelay API under test."""

    def __init__(self, env: DevEnvironment) -> None:
        self.env = env
        self.http = httpx.Client(base_url=env.stack.api_url, timeout=30)

    def create(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.http.post("/v1/tasks", json=body, headers=headers)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/tasks/{task_id}")
        response.raise_for_status()
        return response.json()

    def wait(self, task_id: str, *, until: tuple[str, ...] = ("succeeded", "failed"), timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in until:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still {task['status']} after {timeout} s: {task}")
            time.sleep(0.2)

    def submit_and_wait(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        response = self.create(body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"], **kw)

    def objects(self, task_id: str) -> list[dict[str, Any]]:
        s3 = boto3.client("s3", endpoint_url=self.env.stack.aws_endpoint)
        return s3.list_objects_v2(Bucket=self.env.stack.bucket, Prefix=f"tasks/{task_id}/").get("Contents", [])

    def object_bytes(self, key: str) -> bytes:
        s3 = boto3.client("s3", endpoint_url=self.env.stack.aws_endpoint)
        return s3.get_object(Bucket=self.env.stack.bucket, Key=key)["Body"].read()

    def sim_requests(self, *, kind: str | None = None, protocol: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.env.sim.requests
            if (kind is None or r.get("kind") == kind) and (protocol is None or r.get("protocol") == protocol)
        ]


@contextlib.contextmanager
def running_api(variables: dict[str, str], **dev_options: Any) -> Iterator[Api]:
    """A started ``DevEnvironment`` (with ``variables`` exported while it runs) and its client."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in variables.items():
            patch.setenv(key, value)
        env = _started(dev_options)
        try:
            client = Api(env)
            yield client
            client.http.close()
        finally:
            env.stop()


def _started(dev_options: dict[str, Any]) -> DevEnvironment:
    """A started ``DevEnvironment``; a start cut short by a stray ``BaseException`` is tried once more.

    An ``Exception`` (a template or configuration error) fails the module as it is. Any other
    ``BaseException`` (``SystemExit``, the local runtime's ``LambdaTimeout``) comes from outside
    the start (a CI run once saw one, unnamed in its log): it is reported as a warning, with its
    traceback, and the start is tried again; a second one fails the module as a ``RuntimeError``,
    since pytest keeps a fixture's error only when it is an ``Exception`` or one of its outcomes
    (anything else leaves the fixture half set up, and every later module on the worker fails on
    pytest's own internal assertion instead).
    """
    for attempt in (1, 2):
        try:
            return DevEnvironment(REPO, **dev_options).start()
        except (Exception, KeyboardInterrupt, pytest.fail.Exception, pytest.skip.Exception):
            raise
        except BaseException as exc:
            described = "".join(traceback.format_exception(exc))
            if attempt == 2:
                raise RuntimeError(f"the local stack did not start, twice: {described}") from exc
            warnings.warn(f"the local stack's start was cut short; starting again: {described}", stacklevel=1)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with running_api(E2E_ENV) as client:
        yield client


@pytest.fixture(autouse=True)
def _fresh_simulator(api: Api) -> Iterator[None]:
    """Each test starts with default knobs and an empty request log, after earlier work settled."""
    # A held task's delayed re-check may still be queued: harmless once the task has settled.
    with contextlib.suppress(TimeoutError):
        api.env.stack.drain(timeout=30, executions=True)
    api.env.sim.reset()
    yield
