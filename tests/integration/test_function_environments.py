"""Each function of template.yaml runs with only its own environment, as deployed.

The local stack (with the simulator for providers) builds every function's environment from the
template with its own resolver; each test imports a function's real handler afresh, in a
``FunctionRuntime`` of its own, with ``os.environ`` set to that environment alone, and invokes
it with its sample events from ``events/`` (see ``events/README.md`` for which file belongs to
which function). The functions come from the template, so a new function is covered, and fails
here until it has a sample event. The samples are about one task, ``SAMPLE_TASK_ID``, which the
module stores first, settled, so each sample reaches the function's code and its clients
without starting paid work.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reelay.errors import ConfigurationError
from reelay.models import Task, TaskStatus, utcnow
from reelay.store import DynamoTaskStore
from reelay_local import DevEnvironment
from reelay_local.lambda_runtime import FunctionRuntime, FunctionSpec
from tests.template_support import REPO
from tests.template_support import template as sam_template

pytestmark = pytest.mark.integration

EVENTS = REPO / "events"
# Optional first word of an event file: the AWS service that sends it (events/README.md).
EVENT_SOURCES = ("sqs", "schedule")
SAMPLE_TASK_ID = "tsk_019a0000000000000000000000ab"  # the task the sample events are about


def template_functions() -> dict[str, str]:
    """Logical id -> folder under functions/ of every AWS::Serverless::Function."""
    return {
        logical_id: Path(str(resource["Properties"]["CodeUri"])).name
        for logical_id, resource in sam_template()["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def function_of_event(path: Path, folders: set[str]) -> str | None:
    """The function folder an event file belongs to: ``[<source>_]<function>[_<case>].json``."""
    words = path.stem.split("_")
    if words[0] in EVENT_SOURCES and len(words) > 1:
        words = words[1:]
    rest = "_".join(words)
    matches = [folder for folder in folders if rest == folder or rest.startswith(folder + "_")]
    return max(matches, key=len) if matches else None


def events_of(folder: str) -> list[Path]:
    folders = set(template_functions().values())
    return sorted(p for p in EVENTS.glob("*.json") if function_of_event(p, folders) == folder)


def load_event(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dev() -> Iterator[DevEnvironment]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REELAY_LOG_LEVEL", "WARNING")
        with DevEnvironment(REPO) as env:
            now = utcnow()
            DynamoTaskStore(env.stack.resources["TaskTable"]).create(
                Task(
                    id=SAMPLE_TASK_ID,
                    provider="generate_task",
                    protocol="generate_task",
                    request={"prompt": "A lighthouse at dawn", "duration": 4},
                    status=TaskStatus.SUCCEEDED,
                    created_at=now,
                    updated_at=now,
                )
            )
            yield env


@pytest.fixture
def runtime() -> Iterator[FunctionRuntime]:
    """A runtime of the test's own, so each test imports its handler module afresh."""
    fresh = FunctionRuntime()
    yield fresh
    fresh.close()


def assert_succeeded(event: dict[str, Any], result: Any) -> None:
    """What success means for the event's kind of caller."""
    if event.get("type") == "REQUEST" and "identitySource" in event:
        # An HTTP API Lambda authorizer (simple responses): a decision, whatever the key
        assert isinstance(result, dict) and isinstance(result.get("isAuthorized"), bool), result
        return
    if "routeKey" in event:
        # API Gateway: an answer, never a 5xx (a sample may well expect a 404 or a 401)
        assert isinstance(result, dict), result
        assert 200 <= int(result["statusCode"]) < 500, result
        return
    records = event.get("Records") or []
    if records and records[0].get("eventSource") == "aws:sqs":
        # SQS: nothing failed, or a partial-batch response naming messages of this batch
        assert result is None or isinstance(result, dict), result
        failures = (result or {}).get("batchItemFailures") or []
        message_ids = {record["messageId"] for record in records}
        assert all(failure.get("itemIdentifier") in message_ids for failure in failures), result


def test_every_sample_event_belongs_to_a_function() -> None:
    # Given the events folder and the template's functions
    folders = set(template_functions().values())

    # Then every sample event names a function, so none is left unused by the tests below
    orphans = [p.name for p in sorted(EVENTS.glob("*.json")) if function_of_event(p, folders) is None]
    assert orphans == []
    assert not [p.name for p in EVENTS.iterdir() if p.suffix not in (".json", ".md")]


@pytest.mark.parametrize("logical_id", sorted(template_functions()))
def test_each_function_handles_its_sample_events_with_only_its_own_environment(
    dev: DevEnvironment, runtime: FunctionRuntime, logical_id: str
) -> None:
    # Given the function's environment as the template resolves it, and its sample events
    spec = dev.stack.functions[logical_id]
    samples = events_of(template_functions()[logical_id])
    assert samples, f"{logical_id} has no sample event in events/ (naming: events/README.md)"

    # When its real handler is imported with that environment alone
    runtime.load(spec)

    # Then it handles each of its sample events
    for sample in samples:
        event = load_event(sample)
        result = runtime.invoke(logical_id, event)
        assert_succeeded(event, result)


# (function, variable its code needs, sample event that reaches the code). Every function needs
# the task table at import; the others are read only when a request or message needs them.
NEEDED_VARIABLES = [
    *[(logical_id, "TASK_TABLE_NAME", None) for logical_id in sorted(template_functions())],
    ("ApiFunction", "SUBMIT_QUEUE_URL", "api_create_task.json"),
    ("SubmitFunction", "SUBMIT_QUEUE_URL", "sqs_submit.json"),
    ("SubmitFunction", "POLL_STATE_MACHINE_ARN", "sqs_submit.json"),
    ("ReconcileFunction", "SUBMIT_QUEUE_URL", "schedule_reconcile.json"),
    ("ReconcileFunction", "POLL_STATE_MACHINE_ARN", "schedule_reconcile.json"),
    ("IngestFunction", "INGEST_QUEUE_URL", None),
    ("CallbackFunction", "RESULTS_BUCKET", None),
]


@pytest.mark.parametrize(("logical_id", "variable", "sample"), NEEDED_VARIABLES)
def test_a_function_fails_naming_a_variable_its_code_needs_when_the_template_drops_it(
    dev: DevEnvironment, runtime: FunctionRuntime, logical_id: str, variable: str, sample: str | None
) -> None:
    # Given the function's environment without one variable
    spec: FunctionSpec = dev.stack.functions[logical_id]
    assert variable in spec.environment
    environment = {k: v for k, v in spec.environment.items() if k != variable}

    # When its handler is imported and invoked with the event that needs the variable
    with pytest.raises(ConfigurationError) as failed:
        runtime.load(dataclasses.replace(spec, environment=environment))
        event = load_event(EVENTS / (sample or events_of(template_functions()[logical_id])[0].name))
        result = runtime.invoke(logical_id, event)
        if "routeKey" in event and isinstance(result, dict):
            # The API maps a ConfigurationError to a 503 once: surface it as the handler saw it
            error = json.loads(result["body"])["error"]
            if error["code"] == ConfigurationError.code:
                raise ConfigurationError(error["message"])

    # Then the failure is a configuration error that names the variable
    assert variable in str(failed.value)
