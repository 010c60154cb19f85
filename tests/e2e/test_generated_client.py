"""A client generated from the served /v1/openapi.json by a standard generator works, typed.

openapi-python-client (pinned in requirements-codegen.txt) generates a package into a temporary
directory (nothing is committed); the test imports it, creates a task with one of the document's
request shapes and reads it back as the generated ``TaskView``, until the video is in S3.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.conftest import Api


@pytest.fixture(scope="module")
def generated(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    out = tmp_path_factory.mktemp("client")
    document = out / "openapi.json"
    document.write_bytes(api.http.get("/v1/openapi.json").content)
    cli = Path(sys.executable).with_name("openapi-python-client")
    run = subprocess.run(
        [str(cli), "generate", "--path", str(document), "--meta", "none", "--output-path", str(out / "reelay_client")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("reelay_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == "reelay_client" or m.startswith("reelay_client.")]:
            del sys.modules[name]


def test_a_generated_client_creates_a_task_and_reads_it_back_typed(api: Api, generated: ModuleType) -> None:
    models: Any = importlib.import_module("reelay_client.models")
    create_task: Any = importlib.import_module("reelay_client.api.default.create_task")
    get_task: Any = importlib.import_module("reelay_client.api.default.get_task")
    list_tasks: Any = importlib.import_module("reelay_client.api.default.list_tasks")
    client = generated.Client(base_url=api.env.stack.api_url, raise_on_unexpected_status=True)

    # Given the generated model of one request shape
    body = models.GenerateTaskTextToVideo(
        provider="generate_task",
        prompt="a lighthouse at dawn",
        duration=models.GenerateTaskTextToVideoDurationType0(4),
        orientation=models.GenerateTaskTextToVideoOrientationType0("landscape"),
    )
    # When the generated client sends it
    created = create_task.sync_detailed(client=client, body=body, idempotency_key="gen-client-1")
    # Then the answer is parsed into the generated TaskView
    assert created.status_code == 202
    task = created.parsed
    assert isinstance(task, models.TaskView)
    assert task.provider == "generate_task" and task.status == models.TaskStatus.QUEUED

    # And reading it back gives the same, typed, until it has succeeded with its video in S3
    deadline = time.monotonic() + 60
    while True:
        read = get_task.sync(client=client, task_id=task.id)
        assert isinstance(read, models.TaskView) and read.id == task.id
        if read.status in (models.TaskStatus.SUCCEEDED, models.TaskStatus.FAILED) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert read.status == models.TaskStatus.SUCCEEDED, read
    assert (
        len(read.outputs) == 1 and read.outputs[0].sha256 and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in read.outputs[0].url
    )
    # And the page type and the error type are the generated ones too
    page = list_tasks.sync(client=client, limit=5)
    assert isinstance(page, models.TaskPage) and task.id in [t.id for t in page.tasks]
    missing = get_task.sync_detailed(client=client, task_id="tsk_" + "0" * 28)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorBody)
    assert missing.parsed.error.code == "NOT_FOUND"
