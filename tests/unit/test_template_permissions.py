"""Each function's role in template.yaml allows the AWS calls its code makes (and no more than
the local stack's check, ``reelay_local.local_iam``, would let through).

The e2e runs enforce the roles on every call they make; this checks, from the translated
template alone, the calls a short e2e run seldom makes: a worker's backoff, a resumed or
abandoned multipart copy, a read of a manifest deleted since its event.
"""

from __future__ import annotations

import json
from functools import cache

import pytest

from reelay_local.local_iam import Policy, state_machine_needs
from reelay_local.template import CloudTemplate, Physical, Resolver, translate
from tests.template_support import TEMPLATE

ACCOUNT, REGION = "123456789012", "us-east-1"
PARAMETERS = {"GenerateTaskBaseUrl": "https://gt.example", "OpenaiVideosBaseUrl": "https://ov.example/sora"}


@cache
def _translated() -> tuple[CloudTemplate, Resolver]:
    cloud = translate(TEMPLATE, PARAMETERS, stack_name="reelay")

    def physical(logical: str) -> Physical:
        kind = cloud.resources[logical]["Type"]
        name = f"reelay-{logical}"
        if kind == "AWS::SQS::Queue":
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            return Physical(f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}", {"Arn": arn, "QueueName": name})
        if kind == "AWS::S3::Bucket":
            return Physical(name, {"Arn": f"arn:aws:s3:::{name}"})
        if kind == "AWS::IAM::Role":
            return Physical(name, {"Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}"})
        if kind == "AWS::StepFunctions::StateMachine":
            return Physical(f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}", {"Name": name})
        if kind == "AWS::Lambda::Function":
            return Physical(name, {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"})
        return Physical(name, {"Arn": f"arn:aws:{kind.split('::')[1].lower()}:{REGION}:{ACCOUNT}:{name}"})

    return cloud, Resolver(cloud, physical, stack_name="reelay")


@cache
def policies() -> dict[str, Policy]:
    cloud, resolver = _translated()
    found = {}
    for logical, role in cloud.of_type("AWS::IAM::Role"):
        props = resolver.resolve(role["Properties"])
        documents = [p["PolicyDocument"] for p in props.get("Policies") or []]
        found[logical.removesuffix("Role")] = Policy.of(logical, documents, props.get("ManagedPolicyArns") or [])
    return found


def queue(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:reelay-{name}"


BUCKET = "arn:aws:s3:::reelay-ResultsBucket"


@pytest.mark.parametrize(
    ("function", "action", "resource"),
    [
        # Each SQS worker hands a message back to its own queue for later (reelay.workers, reelay.polling)
        ("SubmitFunction", "sqs:ChangeMessageVisibility", queue("SubmitQueue")),
        ("IngestFunction", "sqs:ChangeMessageVisibility", queue("IngestQueue")),
        ("NotifyFunction", "sqs:ChangeMessageVisibility", queue("NotifyQueue")),
        ("PollFunction", "sqs:ChangeMessageVisibility", queue("PollQueue")),
        # A freed governor slot sends the next waiting task (reelay.governor)
        ("SubmitFunction", "sqs:SendMessage", queue("SubmitQueue")),
        # and Lambda's poller receives and deletes its messages
        ("NotifyFunction", "sqs:ReceiveMessage", queue("NotifyQueue")),
        ("NotifyFunction", "sqs:DeleteMessage", queue("NotifyQueue")),
        # A resumed copy lists its parts; an abandoned one is aborted (reelay.copier)
        ("IngestFunction", "s3:ListMultipartUploadParts", f"{BUCKET}/tasks/tsk_1/output-0"),
        ("IngestFunction", "s3:AbortMultipartUpload", f"{BUCKET}/tasks/tsk_1/output-0"),
        ("IngestFunction", "s3:PutObject", f"{BUCKET}/previews/tsk_1/thumbnail.jpg"),
        # A manifest deleted since its event reads as missing (404), not forbidden (403)
        ("BatchFunction", "s3:ListBucket", BUCKET),
        ("BatchFunction", "s3:GetObject", f"{BUCKET}/inbox/a.jsonl"),
        ("BatchFunction", "s3:AbortMultipartUpload", f"{BUCKET}/reports/a.jsonl"),
        # The poll execution's task token
        ("PollFunction", "states:SendTaskSuccess", "*"),
    ],
)
def test_a_functions_role_allows_what_its_code_calls(function: str, action: str, resource: str) -> None:
    assert policies()[function].decide(action, resource), f"{function} may not {action} on {resource}"


@pytest.mark.parametrize(
    ("function", "action", "resource"),
    [
        ("BatchFunction", "s3:GetObject", f"{BUCKET}/tasks/tsk_1/output-0"),  # inbox/ only
        ("BatchFunction", "s3:PutObject", f"{BUCKET}/inbox/a.jsonl"),
        ("IngestFunction", "sqs:ChangeMessageVisibility", queue("SubmitQueue")),  # its own queue only
        ("ApiFunction", "s3:PutObject", f"{BUCKET}/tasks/tsk_1/output-0"),  # uploads/ and inbox/ only
        ("AuthorizerFunction", "dynamodb:PutItem", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/reelay-ApiKeyTable"),
    ],
)
def test_a_functions_role_allows_no_more_than_it_needs_there(function: str, action: str, resource: str) -> None:
    assert not policies()[function].decide(action, resource)


def test_every_role_is_fully_understood_by_the_local_check() -> None:
    # No managed policy the local stack does not know, no condition it would not evaluate
    assert {name: policy.problems for name, policy in policies().items() if policy.problems} == {}


def test_the_state_machines_role_allows_what_its_states_call() -> None:
    # Derived from the definition, not listed: each Task state's integration and X-Ray's writes
    cloud, resolver = _translated()
    [(logical, machine)] = cloud.of_type("AWS::StepFunctions::StateMachine")
    props = resolver.resolve(machine["Properties"])
    definition = (TEMPLATE.parent / "statemachine/poll.asl.json").read_text()
    for key, value in props["DefinitionSubstitutions"].items():
        definition = definition.replace("${" + key + "}", str(value))
    needs, unknown = state_machine_needs(
        json.loads(definition), tracing=props["TracingConfiguration"]["Enabled"], region=REGION
    )
    assert unknown == []
    assert {(state, action) for state, action, _ in needs} >= {
        ("Poll", "sqs:SendMessage"),
        ("RecordFailure", "lambda:InvokeFunction"),
        ("(tracing)", "xray:PutTraceSegments"),
    }
    refused = [need for need in needs if not policies()[logical].decide(need[1], need[2])]
    assert refused == []
