"""The local stack's IAM check (``reelay_local.local_iam``): what a request needs, and the decision.

No network: requests are WSGI environs built here, policies are documents.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from reelay_local.local_iam import MANAGED_POLICIES, LocalIam, Policy, Principal, required, service_may
from reelay_local.template import ACCOUNT_ID

REGION, ACCOUNT = "us-east-1", "123456789012"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/Tasks"
QUEUE = f"arn:aws:sqs:{REGION}:{ACCOUNT}:Work"
QUEUE_URL = f"http://127.0.0.1:5000/{ACCOUNT}/Work"


def needs(service: str, target: str = "", body: Any = None, *, method: str = "POST", path: str = "/", query=None):
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    headers = {"x-amz-target": target} if target else {}
    return required(service, method, path, query or {}, headers, lambda: raw)


@pytest.mark.parametrize(
    ("service", "target", "body", "expected"),
    [
        ("dynamodb", "DynamoDB_20120810.PutItem", {"TableName": "Tasks"}, [("dynamodb:PutItem", TABLE)]),
        (
            "dynamodb",
            "DynamoDB_20120810.Query",
            {"TableName": "Tasks", "IndexName": "Due"},
            [("dynamodb:Query", TABLE + "/index/Due")],
        ),
        # A transaction needs each item's own action on each item's table
        (
            "dynamodb",
            "DynamoDB_20120810.TransactWriteItems",
            {
                "TransactItems": [
                    {"Put": {"TableName": "Tasks"}},
                    {"Update": {"TableName": "Other"}},
                    {"ConditionCheck": {"TableName": "Tasks"}},
                ]
            },
            [
                ("dynamodb:PutItem", TABLE),
                ("dynamodb:UpdateItem", TABLE.replace("Tasks", "Other")),
                ("dynamodb:ConditionCheckItem", TABLE),
            ],
        ),
        (
            "dynamodb",
            "DynamoDB_20120810.BatchWriteItem",
            {"RequestItems": {"Tasks": []}},
            [("dynamodb:BatchWriteItem", TABLE)],
        ),
        ("sqs", "AmazonSQS.SendMessage", {"QueueUrl": QUEUE_URL}, [("sqs:SendMessage", QUEUE)]),
        # A batch is authorized by its single action
        ("sqs", "AmazonSQS.SendMessageBatch", {"QueueUrl": QUEUE_URL}, [("sqs:SendMessage", QUEUE)]),
        (
            "sqs",
            "AmazonSQS.ChangeMessageVisibility",
            {"QueueUrl": QUEUE_URL},
            [("sqs:ChangeMessageVisibility", QUEUE)],
        ),
        # A task token names no resource
        ("states", "AWSStepFunctions.SendTaskSuccess", {"taskToken": "t"}, [("states:SendTaskSuccess", "*")]),
        (
            "states",
            "AWSStepFunctions.StartExecution",
            {"stateMachineArn": "arn:aws:states:us-east-1:1:stateMachine:Poll"},
            [("states:StartExecution", "arn:aws:states:us-east-1:1:stateMachine:Poll")],
        ),
        (
            "events",
            "AWSEvents.PutEvents",
            {"Entries": [{"EventBusName": "reelay"}, {}]},
            [
                ("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/reelay"),
                ("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
            ],
        ),
        (
            "secretsmanager",
            "secretsmanager.GetSecretValue",
            {"SecretId": "arn:aws:secretsmanager:us-east-1:1:secret:keys-AbCdEf"},
            [("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:keys-AbCdEf")],
        ),
        # What the local stack cannot tell is None (refused, not let through)
        ("dynamodb", "DynamoDB_20120810.PutItem", {}, None),
        ("kms", "TrentService.Decrypt", {}, None),
    ],
)
def test_a_json_request_needs_its_actions_on_its_resources(service, target, body, expected) -> None:
    assert needs(service, target, body) == expected


def test_a_query_protocol_request_is_read_from_its_form() -> None:
    body = f"Action=ChangeMessageVisibility&QueueUrl={QUEUE_URL}&ReceiptHandle=r".encode()
    assert needs("sqs", body=body) == [("sqs:ChangeMessageVisibility", QUEUE)]


OBJECT = "arn:aws:s3:::results/tasks/tsk_1/video.mp4"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/results/tasks/tsk_1/video.mp4", {}, [("s3:GetObject", OBJECT)]),
        ("HEAD", "/results/tasks/tsk_1/video.mp4", {}, [("s3:GetObject", OBJECT)]),
        ("PUT", "/results/tasks/tsk_1/video.mp4", {}, [("s3:PutObject", OBJECT)]),
        # Every step of a multipart upload is s3:PutObject, but its parts' listing and its abort
        ("POST", "/results/tasks/tsk_1/video.mp4", {"uploads": [""]}, [("s3:PutObject", OBJECT)]),
        (
            "PUT",
            "/results/tasks/tsk_1/video.mp4",
            {"partNumber": ["2"], "uploadId": ["u"]},
            [("s3:PutObject", OBJECT)],
        ),
        ("POST", "/results/tasks/tsk_1/video.mp4", {"uploadId": ["u"]}, [("s3:PutObject", OBJECT)]),
        ("GET", "/results/tasks/tsk_1/video.mp4", {"uploadId": ["u"]}, [("s3:ListMultipartUploadParts", OBJECT)]),
        ("DELETE", "/results/tasks/tsk_1/video.mp4", {"uploadId": ["u"]}, [("s3:AbortMultipartUpload", OBJECT)]),
        ("DELETE", "/results/tasks/tsk_1/video.mp4", {}, [("s3:DeleteObject", OBJECT)]),
        ("GET", "/results", {"list-type": ["2"], "prefix": ["tasks/"]}, [("s3:ListBucket", "arn:aws:s3:::results")]),
        ("GET", "/results", {"uploads": [""]}, [("s3:ListBucketMultipartUploads", "arn:aws:s3:::results")]),
        ("PUT", "/results", {"website": [""]}, None),
    ],
)
def test_an_s3_request_needs_the_action_iam_names_for_it(method, path, query, expected) -> None:
    assert required("s3", method, path, query, {}, lambda: b"") == expected


def test_a_copy_needs_the_source_read_as_well() -> None:
    headers = {"x-amz-copy-source": "/results/inbox/a.jsonl"}
    assert required("s3", "PUT", "/results/reports/a.jsonl", {}, headers, lambda: b"") == [
        ("s3:PutObject", "arn:aws:s3:::results/reports/a.jsonl"),
        ("s3:GetObject", "arn:aws:s3:::results/inbox/a.jsonl"),
    ]


def role(*statements: dict[str, Any], managed: tuple[str, ...] = ()) -> Policy:
    return Policy.of("arn:aws:iam::1:role/r", [{"Statement": list(statements)}], managed)


def test_an_allow_needs_the_action_and_the_resource() -> None:
    policy = role({"Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Put*"], "Resource": [TABLE]})
    assert policy.decide("dynamodb:PutItem", TABLE)
    assert policy.decide("DynamoDB:getitem", TABLE)  # actions match whatever their case
    assert not policy.decide("dynamodb:DeleteItem", TABLE)
    assert not policy.decide("dynamodb:PutItem", TABLE + "/index/Due")  # an index is its own resource
    assert not policy.decide("dynamodb:PutItem", TABLE.replace("Tasks", "tasks"))  # resources keep theirs


def test_an_explicit_deny_wins_and_not_action_and_not_resource_invert() -> None:
    policy = role(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::results/*"},
        {"Effect": "Deny", "Action": "s3:DeleteObject", "NotResource": "arn:aws:s3:::results/tasks/*"},
        {"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"},
    )
    assert policy.decide("s3:DeleteObject", "arn:aws:s3:::results/tasks/x")
    assert not policy.decide("s3:DeleteObject", "arn:aws:s3:::results/inbox/x")
    assert policy.decide("sqs:SendMessage", QUEUE)
    assert not policy.decide("s3:GetObject", "arn:aws:s3:::other/x")


def test_a_resourceless_action_needs_a_star_resource() -> None:
    scoped = role({"Effect": "Allow", "Action": "states:SendTaskSuccess", "Resource": "arn:aws:states:*"})
    star = role({"Effect": "Allow", "Action": "states:SendTaskSuccess", "Resource": "*"})
    assert not scoped.decide("states:SendTaskSuccess", "*")
    assert star.decide("states:SendTaskSuccess", "*")


def test_sams_sqs_managed_policy_does_not_allow_a_visibility_change() -> None:
    # The policy SAM attaches for an SQS event source: receive, delete, attributes, no backoff
    policy = role(managed=("arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",))
    assert policy.decide("sqs:DeleteMessage", QUEUE)
    assert not policy.decide("sqs:ChangeMessageVisibility", QUEUE)
    assert set(MANAGED_POLICIES) >= {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }


def test_what_the_check_cannot_evaluate_grants_nothing_and_says_so() -> None:
    policy = role(
        {"Effect": "Allow", "Action": "sqs:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
        managed=("arn:aws:iam::aws:policy/AdministratorAccess",),
    )
    assert not policy.decide("sqs:SendMessage", QUEUE)
    assert len(policy.problems) == 2


def environ(key: str, service: str, target: str, body: dict[str, Any]) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={key}/20261207/{REGION}/{service}/aws4_request, x",
        "HTTP_X_AMZ_TARGET": target,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }


def test_the_endpoint_check_refuses_a_function_as_the_service_would_and_leaves_others_alone() -> None:
    policy = role({"Effect": "Allow", "Action": "sqs:SendMessage*", "Resource": QUEUE})
    iam = LocalIam({"LOCALKEYSubmitFunction": Principal("SubmitFunction", "reelay-submit", policy)})
    allowed = environ("LOCALKEYSubmitFunction", "sqs", "AmazonSQS.SendMessage", {"QueueUrl": QUEUE_URL})
    assert iam.check(allowed) is None
    assert json.loads(allowed["wsgi.input"].read())["QueueUrl"] == QUEUE_URL  # the body is put back for moto
    # A function's backoff its role does not grant: SQS's own error, AWS's wording
    refused = iam.check(
        environ("LOCALKEYSubmitFunction", "sqs", "AmazonSQS.ChangeMessageVisibility", {"QueueUrl": QUEUE_URL})
    )
    assert refused is not None and refused.status.startswith("400")
    assert ("x-amzn-query-error", "AccessDenied;Sender") in refused.headers
    body = json.loads(refused.body)
    assert body["__type"] == "AccessDeniedException"
    assert body["message"] == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/r/reelay-submit is not authorized to perform: "
        f"sqs:ChangeMessageVisibility on resource: {QUEUE} because no identity-based policy allows the "
        "sqs:ChangeMessageVisibility action"
    )
    assert iam.denied == [("SubmitFunction", "sqs:ChangeMessageVisibility", QUEUE)]
    # Any other key (the local stack's own, a test's) is not checked
    assert iam.check(environ("testing", "sqs", "AmazonSQS.ChangeMessageVisibility", {"QueueUrl": QUEUE_URL})) is None


def get_object(key: str, path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "HEAD",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={key}/20261207/{REGION}/s3/aws4_request, x",
        "wsgi.input": io.BytesIO(b""),
    }


def test_a_missing_key_is_a_403_to_a_role_that_may_not_list_the_bucket() -> None:
    # Given one role that may read inbox/ only, and one that may also list the bucket
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::results/inbox/*"}
    listing = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::results"}
    iam = LocalIam(
        {
            "LOCALKEYBatch": Principal("BatchFunction", "reelay-batch", role(read)),
            "LOCALKEYIngest": Principal("IngestFunction", "reelay-ingest", role(read, listing)),
        },
        object_exists=lambda bucket, key: (bucket, key) == ("results", "inbox/here.jsonl"),
    )
    # Then either reads a key that exists, and only the lister learns that one does not
    assert iam.check(get_object("LOCALKEYBatch", "/results/inbox/here.jsonl")) is None
    assert iam.check(get_object("LOCALKEYIngest", "/results/inbox/gone.jsonl")) is None
    refused = iam.check(get_object("LOCALKEYBatch", "/results/inbox/gone.jsonl"))
    assert refused is not None and refused.status.startswith("403")
    assert iam.denied == [("BatchFunction", "s3:ListBucket", "arn:aws:s3:::results")]


# -- a state machine's calls ----------------------------------------------------------------------


def test_a_state_machines_needs_are_each_task_states_integration_in_every_branch() -> None:
    from reelay_local.local_iam import state_machine_needs

    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/polls"
    definition = {
        "StartAt": "Send",
        "States": {
            "Send": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": queue, "MessageBody.$": "$"},
                "Next": "Fan",
            },
            "Fan": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "Direct",
                        "States": {
                            "Direct": {
                                "Type": "Task",
                                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f",
                                "End": True,
                            }
                        },
                    },
                    {
                        "StartAt": "Each",
                        "States": {
                            "Each": {
                                "Type": "Map",
                                "ItemProcessor": {
                                    "StartAt": "Invoke",
                                    "States": {
                                        "Invoke": {
                                            "Type": "Task",
                                            "Resource": "arn:aws:states:::lambda:invoke",
                                            "Parameters": {"FunctionName": "g:live"},
                                            "End": True,
                                        },
                                        "Chosen": {
                                            "Type": "Task",
                                            "Resource": "arn:aws:states:::lambda:invoke",
                                            "Parameters": {"FunctionName.$": "$.fn"},
                                            "End": True,
                                        },
                                        "Odd": {
                                            "Type": "Task",
                                            "Resource": "arn:aws:states:::glue:startJobRun",
                                            "End": True,
                                        },
                                    },
                                },
                                "End": True,
                            }
                        },
                    },
                ],
                "End": True,
            },
        },
    }
    needs, unknown = state_machine_needs(definition, tracing=True, region="us-east-1")
    assert needs[:3] == [
        ("Send", "sqs:SendMessage", "arn:aws:sqs:eu-west-1:123456789012:polls"),
        ("Direct", "lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:f"),
        ("Invoke", "lambda:InvokeFunction", f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:g:live"),
    ]
    assert ("(tracing)", "xray:PutTraceSegments", "*") in needs
    # A resource chosen at run time, an integration the check does not know: not told, reported
    assert unknown == [
        "Chosen: arn:aws:states:::lambda:invoke with FunctionName chosen at run time",
        "Odd: arn:aws:states:::glue:startJobRun",
    ]


_RULE = "arn:aws:events:us-east-1:123456789012:rule/manifest"
_QUEUE = "arn:aws:sqs:us-east-1:123456789012:batch"


def _queue_policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


_FROM_THE_RULE = {
    "Effect": "Allow",
    "Principal": {"Service": "events.amazonaws.com"},
    "Action": "sqs:SendMessage",
    "Resource": _QUEUE,
    "Condition": {"ArnEquals": {"aws:SourceArn": _RULE}},
}


@pytest.mark.parametrize(
    ("document", "rule", "allowed"),
    [
        (_queue_policy(_FROM_THE_RULE), _RULE, True),
        (_queue_policy(_FROM_THE_RULE), _RULE + "-other", False),  # the condition names another rule
        (None, _RULE, False),  # no queue policy: a service principal has no identity policy to lean on
        (_queue_policy({**_FROM_THE_RULE, "Principal": {"Service": "sns.amazonaws.com"}}), _RULE, False),
        (_queue_policy({**_FROM_THE_RULE, "Resource": _QUEUE + "-dlq"}), _RULE, False),
        (_queue_policy({**_FROM_THE_RULE, "Action": "sqs:ReceiveMessage"}), _RULE, False),
        (_queue_policy({**_FROM_THE_RULE, "Action": "sqs:*", "Principal": "*"}), _RULE, True),
        (
            _queue_policy({**_FROM_THE_RULE, "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/*"}}}),
            _RULE,
            True,
        ),
        (
            _queue_policy({**_FROM_THE_RULE, "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}}),
            _RULE,
            True,
        ),
        (
            _queue_policy({**_FROM_THE_RULE, "Condition": {"StringEquals": {"aws:SourceAccount": "999999999999"}}}),
            _RULE,
            False,
        ),
        (_queue_policy({**_FROM_THE_RULE, "Condition": {"ArnNotEquals": {"aws:SourceArn": _RULE}}}), _RULE, False),
        # an explicit deny wins over the allow
        (_queue_policy(_FROM_THE_RULE, {**_FROM_THE_RULE, "Effect": "Deny", "Condition": {}}), _RULE, False),
    ],
)
def test_a_queue_policy_admits_the_event_rule_it_names_and_nothing_else(
    document: dict[str, Any] | None, rule: str, allowed: bool
) -> None:
    context = {"aws:SourceArn": rule, "aws:SourceAccount": "123456789012"}
    assert service_may(document, "events.amazonaws.com", "sqs:SendMessage", _QUEUE, context) == (allowed, [])


def test_a_queue_policy_condition_it_cannot_evaluate_is_reported_and_allows_nothing() -> None:
    statement = {**_FROM_THE_RULE, "Sid": "Dated", "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2026-01-01"}}}
    context = {"aws:SourceArn": _RULE}
    assert service_may(_queue_policy(statement), "events.amazonaws.com", "sqs:SendMessage", _QUEUE, context) == (
        False,
        ["Dated"],
    )
