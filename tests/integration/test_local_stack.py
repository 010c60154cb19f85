"""The embedded local stack: resources from the template, and every way a function is invoked.

Most tests run a small fixture application of their own (written to a temporary directory):
a table, a bucket, queues, a state machine, and functions behind routes, SQS mappings and
schedule rules. The handlers record what they receive in the table, so the tests observe the
local stack the way the application does. The last tests run the real template.yaml.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from reelay_local import DevEnvironment, LocalStack
from reelay_local.event_sources import ScheduleExpression
from reelay_local.lambda_runtime import FunctionTimedOut
from reelay_local.template import TemplateError
from tests.template_support import REPO
from tests.template_support import template as sam_template
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

FIXTURE_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting: {Type: String, Default: hello}
  Mode: {Type: String, Default: quiet, AllowedValues: [quiet, loud]}
Conditions:
  Loud: !Equals [!Ref Mode, loud]
Globals:
  Function:
    Runtime: python3.13
    Handler: app.lambda_handler
    Timeout: 7
    MemorySize: 256
    Environment:
      Variables:
        RECORD_TABLE: !Ref RecordTable
        WORK_QUEUE_URL: !Ref WorkQueue
        GREETING: !If [Loud, !Sub "${Greeting}!", !Ref Greeting]
        BUCKET_ARN: !GetAtt Bucket.Arn
Resources:
  RecordTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
        - {AttributeName: kind, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
      GlobalSecondaryIndexes:
        - IndexName: ByKind
          KeySchema: [{AttributeName: kind, KeyType: HASH}, {AttributeName: sk, KeyType: RANGE}]
          Projection: {ProjectionType: ALL}
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
  Bucket:
    Type: AWS::S3::Bucket
    Properties:
      LifecycleConfiguration:
        Rules:
          - {Id: AbortUploads, Status: Enabled, AbortIncompleteMultipartUpload: {DaysAfterInitiation: 1}}
  BucketPolicy:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: !Ref Bucket
      PolicyDocument:
        Statement:
          - Sid: DenyInsecureTransport
            Effect: Deny
            Principal: "*"
            Action: "s3:*"
            Resource: [!GetAtt Bucket.Arn, !Sub "${Bucket.Arn}/*"]
            Condition: {Bool: {"aws:SecureTransport": "false"}}
          - Sid: NoWebsite
            Effect: Deny
            Principal: "*"
            Action: s3:PutBucketWebsite
            Resource: !GetAtt Bucket.Arn
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 300
      RedrivePolicy: {deadLetterTargetArn: !GetAtt WorkDLQ.Arn, maxReceiveCount: 2}
  WorkDLQ:
    Type: AWS::SQS::Queue
  SleepQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 300
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/echo/
      Events:
        GetItem: {Type: HttpApi, Properties: {Path: "/items/{id}", Method: GET}}
        PostItems: {Type: HttpApi, Properties: {Path: /items, Method: POST}}
        Special: {Type: HttpApi, Properties: {Path: /items/special, Method: GET}}
        Files: {Type: HttpApi, Properties: {Path: "/files/{proxy+}", Method: ANY}}
        Behaviour: {Type: HttpApi, Properties: {Path: "/behaviour/{kind}", Method: GET}}
        Hurried: {Type: HttpApi, Properties: {Path: "/hurried/{kind}", Method: GET, TimeoutInMillis: 200}}
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/worker/
      Timeout: 50
      Environment:
        Variables:
          WORKER_ONLY: "1"
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref RecordTable}
        - SQSPollerPolicy: {QueueName: !GetAtt WorkQueue.QueueName}  # its backoff
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
  StepFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/step/
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref RecordTable}
  RecorderFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/recorder/
      Policies:
        - DynamoDBWritePolicy: {TableName: !Ref RecordTable}
      Events:
        Tick: {Type: Schedule, Properties: {Schedule: rate(10 minutes), Input: '{"source": "tick"}'}}
        Tock: {Type: Schedule, Properties: {Schedule: rate(10 minutes)}}
  SleepyFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/sleepy/
      Timeout: 30  # the tests shorten it to 1 s with timeout_overrides
      Policies:
        - DynamoDBWritePolicy: {TableName: !Ref RecordTable}
      Events:
        Sleep: {Type: SQS, Properties: {Queue: !GetAtt SleepQueue.Arn, BatchSize: 2}}
  FlowStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: statemachine/flow.asl.json
      DefinitionSubstitutions:
        StepFunctionArn: !GetAtt StepFunction.Arn
      Policies:
        - LambdaInvokePolicy: {FunctionName: !Ref StepFunction}
"""

FLOW_DEFINITION = {
    "StartAt": "Wait",
    "States": {
        "Wait": {"Type": "Wait", "SecondsPath": "$.wait_seconds", "Next": "Step"},
        "Step": {
            "Type": "Task",
            "Resource": "${StepFunctionArn}",
            "Parameters": {"key.$": "$.key", "fail_times.$": "$.fail_times"},
            "Retry": [{"ErrorEquals": ["FlakyError"], "IntervalSeconds": 1, "BackoffRate": 1.0, "MaxAttempts": 2}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Recovered"}],
            "ResultPath": "$.step",
            "Next": "Integration",
        },
        "Integration": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "${StepFunctionArn}", "Payload": {"key.$": "$.key", "fail_times": 0}},
            "ResultSelector": {"attempts.$": "$.Payload.attempts"},
            "ResultPath": "$.integration",
            "End": True,
        },
        "Recovered": {"Type": "Pass", "End": True},
    },
}

HANDLERS = {
    "echo": """
        import base64
        import json
        import os
        import threading
        import time

        IMPORT_ENVIRON = dict(os.environ)


        def denied():
            import boto3
            from botocore.exceptions import ClientError

            errors = {}

            def attempt(name, call):
                try:
                    call()
                except ClientError as exc:
                    errors[name] = [exc.response["Error"]["Code"], exc.response["Error"]["Message"]]

            table = boto3.resource("dynamodb").Table(os.environ["RECORD_TABLE"])
            attempt("put_item", lambda: table.put_item(Item={"pk": "denied", "sk": "1", "kind": "denied"}))
            # A thread the handler starts signs as the function too
            bucket = os.environ["BUCKET_ARN"].rsplit(":", 1)[-1]
            put = threading.Thread(target=attempt, args=(
                "put_object", lambda: boto3.client("s3").put_object(Bucket=bucket, Key="denied", Body=b"x")))
            put.start()
            put.join()
            return errors


        def lambda_handler(event, context):
            kind = (event.get("pathParameters") or {}).get("kind")
            if kind == "boom":
                raise RuntimeError("boom")
            if kind == "slow":
                time.sleep(0.5)
            if kind == "plain":
                return {"plain": True}
            if kind == "denied":  # EchoFunction's role grants nothing but logs
                return denied()
            if kind == "huge":  # an answer over Lambda's 6 MB
                return {"statusCode": 200, "body": "x" * (6 * 1024 * 1024 + 100)}
            if kind == "binary":
                data = base64.b64encode(bytes(range(256))).decode()
                return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                        "body": data, "isBase64Encoded": True}
            in_thread = {}
            thread = threading.Thread(target=lambda: in_thread.update(os.environ))
            thread.start()
            thread.join()
            seen = {
                "event": event,
                "greeting": IMPORT_ENVIRON["GREETING"],
                "import_environ": IMPORT_ENVIRON,
                "invoke_environ": dict(os.environ),
                "thread_environ": in_thread,
                "context": {
                    "function_name": context.function_name,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "invoked_function_arn": context.invoked_function_arn,
                    "aws_request_id": context.aws_request_id,
                    "remaining_ms": context.get_remaining_time_in_millis(),
                },
            }
            return {"statusCode": 201, "headers": {"content-type": "application/json", "x-echo": "yes"},
                    "cookies": ["a=1; Path=/", "b=2"], "body": json.dumps(seen)}
    """,
    "worker": """
        import json
        import os

        import boto3

        # Read at import, as reelay's handlers do.
        TABLE = boto3.resource("dynamodb").Table(os.environ["RECORD_TABLE"])
        WORK_QUEUE_URL = os.environ["WORK_QUEUE_URL"]
        SQS = boto3.client("sqs")


        def lambda_handler(event, context):
            failures = []
            for record in event["Records"]:
                body = json.loads(record["body"])
                TABLE.put_item(Item={
                    "pk": "work", "sk": f"{body['id']}#{record['attributes']['ApproximateReceiveCount']}",
                    "kind": "work", "batch": len(event["Records"]), "source": record["eventSourceARN"],
                })
                if body.get("backoff"):
                    SQS.change_message_visibility(QueueUrl=WORK_QUEUE_URL,
                                                  ReceiptHandle=record["receiptHandle"], VisibilityTimeout=60)
                if body.get("fail") or body.get("backoff"):
                    failures.append({"itemIdentifier": record["messageId"]})
            return {"batchItemFailures": failures}
    """,
    "step": '''
        import os

        import boto3

        TABLE = boto3.resource("dynamodb").Table(os.environ["RECORD_TABLE"])


        class FlakyError(Exception):
            """Raised while the step has failed fewer times than asked."""


        def lambda_handler(event, context):
            item = TABLE.update_item(
                Key={"pk": "step", "sk": event["key"]}, UpdateExpression="ADD attempts :one",
                ExpressionAttributeValues={":one": 1}, ReturnValues="UPDATED_NEW",
            )
            attempts = int(item["Attributes"]["attempts"])
            if attempts <= int(event["fail_times"]):
                raise FlakyError(f"attempt {attempts} fails")
            return {"attempts": attempts}
    ''',
    "recorder": """
        import json
        import os
        import uuid

        import boto3

        TABLE = boto3.resource("dynamodb").Table(os.environ["RECORD_TABLE"])


        def lambda_handler(event, context):
            source = "tock" if event.get("detail-type") == "Scheduled Event" else event["source"]
            TABLE.put_item(Item={"pk": source, "sk": str(uuid.uuid4()), "kind": source, "event": json.dumps(event)})
    """,
    "sleepy": """
        import json
        import os
        import time

        import boto3

        TABLE = boto3.resource("dynamodb").Table(os.environ["RECORD_TABLE"])


        def lambda_handler(event, context):
            for record in event["Records"]:
                body = json.loads(record["body"])
                attempt = record["attributes"]["ApproximateReceiveCount"]
                TABLE.put_item(Item={"pk": "sleep", "sk": f"{body['id']}#{attempt}#started", "kind": "sleep"})
            # Short sleeps: the timeout's exception arrives between two of them.
            deadline = time.monotonic() + 20
            while any(json.loads(r["body"]).get("sleep") for r in event["Records"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            for record in event["Records"]:
                body = json.loads(record["body"])
                attempt = record["attributes"]["ApproximateReceiveCount"]
                TABLE.put_item(Item={"pk": "sleep", "sk": f"{body['id']}#{attempt}#finished", "kind": "sleep"})
    """,
}


def write_fixture_app(root: Path) -> Path:
    """The fixture application: template, handlers and state machine definition."""
    (root / "template.yaml").write_text(FIXTURE_TEMPLATE)
    for name, code in HANDLERS.items():
        (root / "functions" / name).mkdir(parents=True)
        (root / "functions" / name / "app.py").write_text(textwrap.dedent(code).lstrip())
    (root / "statemachine").mkdir()
    (root / "statemachine" / "flow.asl.json").write_text(json.dumps(FLOW_DEFINITION, indent=2))
    return root


def records(stack: LocalStack, pk: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(stack.resources["RecordTable"])
    return list(table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": pk})["Items"])


@pytest.fixture(scope="class")
def fixture_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = write_fixture_app(tmp_path_factory.mktemp("fixture-app"))
    stack = LocalStack(
        root,
        schedule_speedup=600,  # rate(10 minutes) fires every second
        parameter_overrides={"Greeting": "hi", "Mode": "loud"},
        env_overrides={"EXTRA": "x"},
        timeout_overrides={"SleepyFunction": 1},
        redelivery_seconds=1,
    )
    with stack:
        yield stack


class TestFixtureApplication:
    """Each mechanism of the local stack, on the fixture application."""

    def test_resources_are_built_from_the_template(self, fixture_stack: LocalStack) -> None:
        # Given the fixture template, translated and provisioned
        stack = fixture_stack
        ddb, sqs, s3 = boto3.client("dynamodb"), boto3.client("sqs"), boto3.client("s3")

        # Then the table has the template's keys, index and TTL
        table = ddb.describe_table(TableName=stack.resources["RecordTable"])["Table"]
        assert table["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["ByKind"]
        ttl = ddb.describe_time_to_live(TableName=stack.resources["RecordTable"])["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at"
        # And the queue has its visibility timeout and a redrive policy to the DLQ
        attributes = sqs.get_queue_attributes(QueueUrl=stack.resources["WorkQueue"], AttributeNames=["All"])[
            "Attributes"
        ]
        assert attributes["VisibilityTimeout"] == "300"
        dlq_arn = sqs.get_queue_attributes(QueueUrl=stack.resources["WorkDLQ"], AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
        # And the bucket has its lifecycle rule
        rules = s3.get_bucket_lifecycle_configuration(Bucket=stack.resources["Bucket"])["Rules"]
        assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
        # And the bucket policy holds, except what plain HTTP cannot satisfy
        policy = json.loads(s3.get_bucket_policy(Bucket=stack.resources["Bucket"])["Policy"])
        assert [statement["Sid"] for statement in policy["Statement"]] == ["NoWebsite"]
        # And the state machine's definition carries the local function ARN
        definition = json.loads(
            boto3.client("stepfunctions").describe_state_machine(stateMachineArn=stack.resources["FlowStateMachine"])[
                "definition"
            ]
        )
        assert definition["States"]["Step"]["Resource"] == stack.functions["StepFunction"].arn
        # And the functions' environment is resolved, with parameters, conditions and overrides
        env = stack.functions["EchoFunction"].environment
        assert env["WORK_QUEUE_URL"] == stack.resources["WorkQueue"]
        assert env["GREETING"] == "hi!"
        assert env["BUCKET_ARN"] == f"arn:aws:s3:::{stack.resources['Bucket']}"
        assert env["EXTRA"] == "x"
        assert env["RECORD_TABLE"] == stack.resources["RecordTable"]
        assert stack.unserved == []

    def test_gateway_turns_requests_into_http_api_v2_events(self, fixture_stack: LocalStack) -> None:
        # When a client calls a route with a query, headers, cookies and a JSON body
        response = httpx.post(
            f"{fixture_stack.api_url}/items?x=1&x=2&y=%20z",
            json={"name": "n"},
            headers={"X-Custom": "v", "Cookie": "c1=1; c2=2"},
        )

        # Then the handler got a payload format 2.0 event
        assert response.status_code == 201
        seen = response.json()
        event = seen["event"]
        assert event["version"] == "2.0"
        assert event["routeKey"] == "POST /items"
        assert event["rawPath"] == "/items"
        assert event["rawQueryString"] == "x=1&x=2&y=%20z"
        assert event["queryStringParameters"] == {"x": "1,2", "y": " z"}
        assert event["headers"]["x-custom"] == "v"
        assert "cookie" not in event["headers"]
        assert event["cookies"] == ["c1=1", "c2=2"]
        assert json.loads(event["body"]) == {"name": "n"}
        assert event["isBase64Encoded"] is False
        assert "pathParameters" not in event
        context = event["requestContext"]
        assert context["http"]["method"] == "POST"
        assert context["http"]["path"] == "/items"
        assert context["http"]["sourceIp"] == "127.0.0.1"
        assert context["routeKey"] == "POST /items"
        assert context["stage"] == "$default"
        assert isinstance(context["timeEpoch"], int)
        assert context["requestId"]
        # And the handler's v2 response came back: status, headers, cookies
        assert response.headers["x-echo"] == "yes"
        assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]
        assert seen["greeting"] == "hi!"
        # And the handler ran with a Lambda-like context
        assert seen["context"]["function_name"] == fixture_stack.functions["EchoFunction"].name
        assert seen["context"]["memory_limit_in_mb"] == "256"
        assert seen["context"]["invoked_function_arn"] == fixture_stack.functions["EchoFunction"].arn
        assert 0 < seen["context"]["remaining_ms"] <= 7000

    def test_gateway_matches_routes_like_api_gateway(self, fixture_stack: LocalStack) -> None:
        url = fixture_stack.api_url
        # Path variables are decoded into pathParameters
        event = httpx.get(f"{url}/items/a%20b").json()["event"]
        assert event["pathParameters"] == {"id": "a b"}
        assert event["routeKey"] == "GET /items/{id}"
        # An exact route wins over a path variable
        assert httpx.get(f"{url}/items/special").json()["event"]["routeKey"] == "GET /items/special"
        # A greedy {proxy+} takes the rest of the path, for any method
        event = httpx.delete(f"{url}/files/a/b/c.txt").json()["event"]
        assert event["pathParameters"] == {"proxy": "a/b/c.txt"}
        assert event["routeKey"] == "ANY /files/{proxy+}"
        # No route, or no such method on a route, is API Gateway's 404
        for response in (httpx.get(f"{url}/nowhere"), httpx.put(f"{url}/items")):
            assert response.status_code == 404
            assert response.content == b'{"message":"Not Found"}'

    def test_gateway_bodies_errors_and_bare_results(self, fixture_stack: LocalStack) -> None:
        url = fixture_stack.api_url
        # A binary request body arrives base64-encoded
        event = httpx.request(
            "POST", f"{url}/files/upload", content=b"\xff\x00\xfe", headers={"Content-Type": "application/octet-stream"}
        ).json()["event"]
        assert event["isBase64Encoded"] is True
        assert event["body"] == "/wD+"
        # A base64 response body is decoded
        assert httpx.get(f"{url}/behaviour/binary").content == bytes(range(256))
        # A result without statusCode is a 200 JSON response
        plain = httpx.get(f"{url}/behaviour/plain")
        assert (plain.status_code, plain.json()) == (200, {"plain": True})
        # A handler exception is API Gateway's 500
        boom = httpx.get(f"{url}/behaviour/boom")
        assert (boom.status_code, boom.json()) == (500, {"message": "Internal Server Error"})

    def test_gateway_keeps_api_gateways_and_lambdas_payload_quotas(self, fixture_stack: LocalStack) -> None:
        url = fixture_stack.api_url
        binary = {"Content-Type": "application/octet-stream"}
        # A binary body of 4.5 MB is an event of 6.0 MB once base64-encoded: it still reaches the function
        assert httpx.post(f"{url}/files/upload", content=bytes(4_500_000), headers=binary).status_code == 201
        # 4.8 MB is too much for Lambda: API Gateway's 413, and the function never runs
        too_long = httpx.post(f"{url}/files/upload", content=bytes(4_800_000), headers=binary)
        assert (too_long.status_code, too_long.json()) == (413, {"message": "Request Too Long"})
        # A body over the HTTP API's 10 MB is refused before anything
        too_large = httpx.post(f"{url}/files/upload", content=bytes(10 * 1024 * 1024 + 1), headers=binary)
        assert (too_large.status_code, too_large.json()) == (413, {"message": "Request Entity Too Large"})
        # An answer over Lambda's 6 MB fails the invocation: a 500
        huge = httpx.get(f"{url}/behaviour/huge")
        assert (huge.status_code, huge.json()) == (500, {"message": "Internal Server Error"})

    def test_gateway_ends_an_integration_at_its_timeout(self, fixture_stack: LocalStack) -> None:
        url = fixture_stack.api_url
        # Given a route whose integration times out after 200 ms (TimeoutInMillis), 30 s for the others
        hurried = next(r for r in fixture_stack.routes if r.path == "/hurried/{kind}")
        assert hurried.timeout == 0.2
        assert {r.timeout for r in fixture_stack.routes if r.path != "/hurried/{kind}"} == {30.0}
        # When its function takes half a second, the client gets API Gateway's 503 at 200 ms
        started = time.monotonic()
        late = httpx.get(f"{url}/hurried/slow")
        assert (late.status_code, late.json()) == (503, {"message": "Service Unavailable"})
        assert time.monotonic() - started < 0.45
        # And an answer in time comes through
        assert httpx.get(f"{url}/hurried/plain").json() == {"plain": True}

    def test_gateway_serves_concurrent_requests(self, fixture_stack: LocalStack) -> None:
        # Given a route whose handler takes half a second
        url = f"{fixture_stack.api_url}/behaviour/slow"
        started = time.monotonic()

        # When 16 clients call it at once
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(lambda _: httpx.get(url, timeout=10).status_code, range(16)))

        # Then all are served, in parallel
        assert statuses == [201] * 16
        assert time.monotonic() - started < 4

    def test_sqs_mapping_batches_and_honours_partial_failures(self, fixture_stack: LocalStack) -> None:
        # Given a batch of messages of which one always fails
        sqs = boto3.client("sqs")
        entries = [{"Id": str(i), "MessageBody": json.dumps({"id": f"ok{i}"})} for i in range(4)]
        entries.append({"Id": "bad", "MessageBody": json.dumps({"id": "bad", "fail": True})})
        sqs.send_message_batch(QueueUrl=fixture_stack.resources["WorkQueue"], Entries=entries)

        # When the stack drains the queue
        fixture_stack.drain(timeout=30)

        # Then each good message was handled once, in batches, with real SQS records
        seen = {item["sk"]: item for item in records(fixture_stack, "work")}
        assert {f"ok{i}#1" for i in range(4)} <= set(seen)
        assert not any(sk.startswith("ok") and not sk.endswith("#1") for sk in seen)
        assert max(int(item["batch"]) for item in seen.values()) > 1
        assert seen["ok0#1"]["source"].endswith(fixture_stack.resources["WorkQueue"].rsplit("/", 1)[1])
        # And the failing one was redelivered until maxReceiveCount, then moved to the DLQ
        assert {"bad#1", "bad#2"} <= set(seen)
        dead = sqs.receive_message(QueueUrl=fixture_stack.resources["WorkDLQ"], WaitTimeSeconds=1)["Messages"]
        assert [json.loads(m["Body"])["id"] for m in dead] == ["bad"]

    def test_sqs_mapping_keeps_a_backoff_the_handler_set(self, fixture_stack: LocalStack) -> None:
        # Given a message whose handler fails it after backing it off for 60 seconds itself
        sqs = boto3.client("sqs")
        sqs.send_message(
            QueueUrl=fixture_stack.resources["WorkQueue"], MessageBody=json.dumps({"id": "patient", "backoff": True})
        )
        wait_for(lambda: [i for i in records(fixture_stack, "work") if i["sk"].startswith("patient#")], 15)

        # When more than the local redelivery delay passes
        time.sleep(2.5)

        # Then it was not redelivered: the handler's backoff stands
        assert [i["sk"] for i in records(fixture_stack, "work") if i["sk"].startswith("patient#")] == ["patient#1"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=fixture_stack.resources["WorkQueue"], AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"
        sqs.purge_queue(QueueUrl=fixture_stack.resources["WorkQueue"])

    def test_state_machine_runs_the_real_handler_with_retry(self, fixture_stack: LocalStack) -> None:
        # Given an execution whose task fails twice with a typed error
        sfn = boto3.client("stepfunctions")
        arn = sfn.start_execution(
            stateMachineArn=fixture_stack.resources["FlowStateMachine"],
            name="retry",
            input=json.dumps({"key": "retry", "fail_times": 1, "wait_seconds": 1}),
        )["executionArn"]

        # When it finishes
        result = wait_for(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d, 30)

        # Then the Retry re-ran the real handler until it succeeded
        assert result["status"] == "SUCCEEDED"
        output = json.loads(result["output"])
        assert output["step"] == {"attempts": 2}
        # And the lambda:invoke integration ran it once more, through the same handler
        assert output["integration"] == {"attempts": 3}
        history = [e["type"] for e in sfn.get_execution_history(executionArn=arn)["events"]]
        assert history.count("LambdaFunctionFailed") == 1
        assert "WaitStateExited" in history

    def test_state_machine_catches_an_error_that_outlasts_its_retries(self, fixture_stack: LocalStack) -> None:
        sfn = boto3.client("stepfunctions")
        arn = sfn.start_execution(
            stateMachineArn=fixture_stack.resources["FlowStateMachine"],
            name="caught",
            input=json.dumps({"key": "caught", "fail_times": 9, "wait_seconds": 0}),
        )["executionArn"]

        result = wait_for(lambda: (d := sfn.describe_execution(executionArn=arn))["status"] != "RUNNING" and d, 30)

        # The error name Retry/Catch match on is the handler's exception class
        assert result["status"] == "SUCCEEDED"
        error = json.loads(result["output"])["error"]
        assert error["Error"] == "FlakyError"
        assert json.loads(error["Cause"])["errorMessage"] == "attempt 3 fails"

    def test_unnamed_executions_each_get_a_name(self, fixture_stack: LocalStack) -> None:
        # moto alone names an unnamed execution "None", so a second one "already exists"
        sfn = boto3.client("stepfunctions")
        arns = [
            sfn.start_execution(
                stateMachineArn=fixture_stack.resources["FlowStateMachine"],
                input=json.dumps({"key": f"unnamed-{i}", "fail_times": 0, "wait_seconds": 0}),
            )["executionArn"]
            for i in range(2)
        ]
        assert len(set(arns)) == 2
        fixture_stack.drain(timeout=30, executions=True)
        assert {sfn.describe_execution(executionArn=arn)["status"] for arn in arns} == {"SUCCEEDED"}

    def test_schedules_fire_on_a_sped_up_clock(self, fixture_stack: LocalStack) -> None:
        # rate(10 minutes) at 600x fires about every second
        ticks = wait_for(lambda: len(records(fixture_stack, "tick")) >= 2 and records(fixture_stack, "tick"), 15)
        tocks = wait_for(lambda: len(records(fixture_stack, "tock")) >= 2 and records(fixture_stack, "tock"), 15)
        assert fixture_stack.schedule_fire_counts["RecorderFunctionTick"] >= 2
        assert json.loads(ticks[0]["event"]) == {"source": "tick"}  # the target's Input
        # Without an Input, the function gets EventBridge's Scheduled Event, naming the rule
        event = json.loads(tocks[0]["event"])
        assert (event["source"], event["detail-type"], event["detail"]) == ("aws.events", "Scheduled Event", {})
        assert event["resources"] == [s.arn for s in fixture_stack.schedules if s.logical_id == "RecorderFunctionTock"]

    @pytest.mark.expect_access_denied
    def test_a_call_the_functions_role_does_not_allow_fails_as_in_aws(self, fixture_stack: LocalStack) -> None:
        # Given EchoFunction, whose template entry attaches no policy (its role has SAM's
        # logging and tracing managed policies only)
        # When it writes the table, and uploads to the bucket from a thread it starts
        errors = httpx.get(f"{fixture_stack.api_url}/behaviour/denied").json()

        # Then both calls fail as IAM fails them, naming the role's session and what was needed
        echo = fixture_stack.functions["EchoFunction"]
        table_arn = f"arn:aws:dynamodb:us-east-1:123456789012:table/{fixture_stack.resources['RecordTable']}"
        code, message = errors["put_item"]
        assert code == "AccessDeniedException"
        assert "assumed-role/reelay-local-EchoFunctionRole-" in message and f"/{echo.name} " in message
        assert f"is not authorized to perform: dynamodb:PutItem on resource: {table_arn}" in message
        assert errors["put_object"][0] == "AccessDenied"
        bucket = fixture_stack.resources["Bucket"]
        denied = [(f, a, r) for f, a, r in fixture_stack.iam.denied if f == "EchoFunction"]
        assert ("EchoFunction", "dynamodb:PutItem", table_arn) in denied
        assert ("EchoFunction", "s3:PutObject", f"arn:aws:s3:::{bucket}/denied") in denied
        # And nothing was written
        assert records(fixture_stack, "denied") == []
        assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="denied")

    def test_each_function_imports_and_runs_with_exactly_its_own_environment(self, fixture_stack: LocalStack) -> None:
        # Given a function whose template entry has a variable of its own (WorkerFunction)
        # When another function's handler is imported and invoked
        seen = httpx.get(f"{fixture_stack.api_url}/items/1").json()

        # Then its import saw exactly its own resolved environment: nothing of the process,
        # nothing of WorkerFunction's
        echo = fixture_stack.functions["EchoFunction"]
        assert seen["import_environ"] == dict(echo.environment)
        assert "WORKER_ONLY" not in seen["import_environ"]
        assert fixture_stack.functions["WorkerFunction"].environment["WORKER_ONLY"] == "1"
        # And it carries what Lambda itself sets, and the local endpoint in place of AWS's
        assert seen["import_environ"]["AWS_LAMBDA_FUNCTION_NAME"] == echo.name
        assert seen["import_environ"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
        assert seen["import_environ"]["_HANDLER"] == "app.lambda_handler"
        assert seen["import_environ"]["LAMBDA_TASK_ROOT"] == str(echo.code_dir)
        assert seen["import_environ"]["AWS_ENDPOINT_URL"] == fixture_stack.aws_endpoint
        assert seen["import_environ"]["MOTO_PORT"] == fixture_stack.aws_endpoint.rsplit(":", 1)[1]
        # And it runs with the same, also in a thread it starts (what a library reads late, such
        # as boto3 making a client on first use, is the function's, as in its own sandbox)
        assert seen["invoke_environ"] == dict(echo.environment)
        assert seen["thread_environ"] == dict(echo.environment)
        # While the process's own environment (the local stack's, outside every function) holds
        # no function's variables
        assert not {"RECORD_TABLE", "GREETING", "WORKER_ONLY", "EXTRA"} & set(os.environ)
        assert "AWS_ENDPOINT_URL" in os.environ

    @pytest.mark.expect_lambda_timeouts
    def test_a_handler_past_its_timeout_fails_and_its_message_is_redelivered(self, fixture_stack: LocalStack) -> None:
        # Given SleepyFunction, its 30 s template timeout shortened to 1 s, fed by an SQS mapping
        assert fixture_stack.functions["SleepyFunction"].timeout == 1
        assert fixture_stack.functions["SleepyFunction"].environment["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "1"
        before = len(fixture_stack.timeouts)

        # When a message makes it sleep past the timeout
        boto3.client("sqs").send_message(
            QueueUrl=fixture_stack.resources["SleepQueue"], MessageBody=json.dumps({"id": "slow", "sleep": True})
        )

        # Then the invocation failed and the message came back: a second attempt started
        wait_for(lambda: {"slow#1#started", "slow#2#started"} <= {i["sk"] for i in records(fixture_stack, "sleep")}, 15)
        timed_out = fixture_stack.timeouts[before]
        assert (timed_out.function, timed_out.timeout) == ("SleepyFunction", 1.0)
        # with where its handler was when the time ran out
        assert "functions/sleepy/app.py" in timed_out.where and "time.sleep(0.05)" in timed_out.where
        # And the handler's thread was stopped, not left to finish its work
        wait_for(lambda: timed_out.stopped, timeout=5)
        assert not [i for i in records(fixture_stack, "sleep") if i["sk"].endswith("#finished")]
        boto3.client("sqs").purge_queue(QueueUrl=fixture_stack.resources["SleepQueue"])

    @pytest.mark.expect_lambda_timeouts
    def test_a_synchronous_caller_sees_lambdas_timeout_error(self, fixture_stack: LocalStack) -> None:
        event = {
            "Records": [
                {"body": json.dumps({"id": "sync", "sleep": True}), "attributes": {"ApproximateReceiveCount": "1"}}
            ]
        }
        # stack.invoke raises the timeout, in Lambda's words
        started = time.monotonic()
        with pytest.raises(FunctionTimedOut, match=r"^Task timed out after 1\.00 seconds$"):
            fixture_stack.invoke("SleepyFunction", event)
        assert time.monotonic() - started < 3
        # lambda:Invoke answers with Lambda's error payload, what Step Functions Retry/Catch match on
        answer = boto3.client("lambda").invoke(
            FunctionName=fixture_stack.functions["SleepyFunction"].name, Payload=json.dumps(event)
        )
        assert answer["FunctionError"]
        payload = json.loads(answer["Payload"].read())
        assert (payload["errorType"], payload["errorMessage"]) == (
            "Sandbox.Timedout",
            "Task timed out after 1.00 seconds",
        )
        assert [t.function for t in fixture_stack.timeouts[-2:]] == ["SleepyFunction", "SleepyFunction"]

    def test_invoke_and_the_lambda_api_run_the_handler(self, fixture_stack: LocalStack) -> None:
        # stack.invoke runs the handler directly
        result = fixture_stack.invoke("StepFunction", {"key": "direct", "fail_times": 0})
        assert result == {"attempts": 1}
        # and its exception propagates
        with pytest.raises(Exception, match="attempt 2 fails") as raised:
            fixture_stack.invoke("StepFunction", {"key": "direct", "fail_times": 5})
        assert type(raised.value).__name__ == "FlakyError"
        # lambda:Invoke through moto runs the same handler; a failure is Lambda's error payload
        client = boto3.client("lambda")
        name = fixture_stack.functions["StepFunction"].name
        answer = client.invoke(FunctionName=name, Payload=json.dumps({"key": "direct", "fail_times": 0}))
        assert json.loads(answer["Payload"].read()) == {"attempts": 3}
        failed = client.invoke(FunctionName=name, Payload=json.dumps({"key": "direct", "fail_times": 9}))
        assert failed["FunctionError"]
        assert json.loads(failed["Payload"].read())["errorType"] == "FlakyError"
        # An asynchronous invoke returns at once and runs in the background
        queued = client.invoke(
            FunctionName=name, InvocationType="Event", Payload=json.dumps({"key": "async", "fail_times": 0})
        )
        assert queued["StatusCode"] == 202
        fixture_stack.drain()
        assert [i["attempts"] for i in records(fixture_stack, "step") if i["sk"] == "async"] == [1]


def test_a_function_whose_environment_is_over_lambdas_4_kb_does_not_start(tmp_path: Path) -> None:
    # Given the fixture application with a parameter every function's environment carries (Globals),
    # given a value that takes the environment past Lambda's 4 KB
    root = write_fixture_app(tmp_path)
    # When the stack starts: it refuses as CreateFunction would, naming the function and the variable
    with pytest.raises(TemplateError) as refused:
        LocalStack(root, parameter_overrides={"Greeting": "g" * 4096}).start()
    message = str(refused.value)
    assert "exceeded the 4KB limit" in message and "GREETING" in message
    # And with a value that fits, it starts
    with LocalStack(root, parameter_overrides={"Greeting": "g" * 1024}) as stack:
        assert stack.functions


def test_a_state_machine_whose_role_may_not_call_its_states_integrations_does_not_start(tmp_path: Path) -> None:
    # Given the fixture application with its state machine's invoke policy taken out: moto would
    # make its Lambda calls in-process, past the endpoint's check, and every execution would pass
    # locally and fail at its Step and Integration states after sam deploy
    root = write_fixture_app(tmp_path)
    template = root / "template.yaml"
    policy = "      Policies:\n        - LambdaInvokePolicy: {FunctionName: !Ref StepFunction}\n"
    assert policy in template.read_text()
    template.write_text(template.read_text().replace(policy, ""))
    # When the stack starts: it refuses, naming each call the role may not make
    with pytest.raises(TemplateError) as refused:
        LocalStack(root).start()
    message = str(refused.value)
    assert "FlowStateMachine: its role may not lambda:InvokeFunction on arn:aws:lambda:us-east-1:" in message
    assert "(Step)" in message and "(Integration)" in message


def test_schedule_expressions() -> None:
    start = datetime(2026, 1, 5, 10, 7, tzinfo=UTC)  # a Monday
    rate = ScheduleExpression.parse("rate(5 minutes)")
    assert rate.next_after(start, created=start) == datetime(2026, 1, 5, 10, 12, tzinfo=UTC)
    cron = ScheduleExpression.parse("cron(0/15 9-17 ? * MON-FRI *)")
    assert cron.next_after(start, created=start) == datetime(2026, 1, 5, 10, 15, tzinfo=UTC)
    weekend = ScheduleExpression.parse("cron(30 6 ? * SAT *)")
    assert weekend.next_after(start, created=start) == datetime(2026, 1, 10, 6, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="unsupported"):
        ScheduleExpression.parse("at(2026-01-05T11:00:00)")  # EventBridge Scheduler's, not a rule's


# -- the real template -----------------------------------------------------------------------


def _served_route_keys(stack: LocalStack) -> set[tuple[str, str]]:
    return {(route.route_key, route.function) for route in stack.routes}


def test_every_template_function_and_route_is_served() -> None:
    """Fails when template.yaml gains a function, route, mapping or schedule the stack misses."""
    sam = sam_template()
    with LocalStack(REPO) as stack:
        assert stack.unserved == []
        routes = _served_route_keys(stack)
        mappings = {(m.function, m.queue_arn) for m in stack.queue_mappings}
        schedules = {(s.logical_id, s.function) for s in stack.schedules}
        for logical_id, resource in sam["Resources"].items():
            if resource["Type"] == "AWS::Serverless::StateMachine":
                assert logical_id in stack.state_machines
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            # Every function runs locally, from its own code
            assert logical_id in stack.functions, logical_id
            for event_id, event in (resource["Properties"].get("Events") or {}).items():
                kind, props = event["Type"], event.get("Properties") or {}
                if kind == "HttpApi":
                    key = "$default" if "Path" not in props else f"{props.get('Method', 'ANY').upper()} {props['Path']}"
                    assert (key, logical_id) in routes, f"{logical_id}.{event_id}: route {key} not served"
                elif kind == "SQS":
                    queue_id = props["Queue"]["Fn::GetAtt"][0]
                    queue_name = stack.resources[queue_id].rsplit("/", 1)[1]
                    assert (logical_id, f"arn:aws:sqs:us-east-1:123456789012:{queue_name}") in mappings
                elif kind == "Schedule":
                    assert (f"{logical_id}{event_id}", logical_id) in schedules
                else:
                    pytest.fail(f"{logical_id}.{event_id}: event type {kind} is not served by the local stack")
        # And a client route answers through the real handler
        response = httpx.get(f"{stack.api_url}/v1/openapi.json")
        assert response.status_code == 200
        assert "/v1/tasks" in response.json()["paths"]


def test_real_template_environment_points_at_local_resources() -> None:
    with LocalStack(REPO, env_overrides={"CALLBACK_SECRET": "s3cret"}) as stack:
        env = stack.functions["SubmitFunction"].environment
        assert env["TASK_TABLE_NAME"] == stack.resources["TaskTable"]
        assert env["RESULTS_BUCKET"] == stack.bucket
        assert env["INGEST_QUEUE_URL"] == stack.resources["IngestQueue"]
        assert env["SUBMIT_QUEUE_URL"] == stack.resources["SubmitQueue"]
        assert env["POLL_STATE_MACHINE_ARN"] == stack.resources["PollStateMachine"]
        assert env["CALLBACK_BASE_URL"] == stack.api_url  # the API's AWS URL, made local
        assert env["CALLBACK_SECRET"] == "s3cret"
        # A variable the template gives one function only is not in another's environment
        assert "POLL_STATE_MACHINE_ARN" not in stack.functions["ApiFunction"].environment
        assert "SUBMIT_QUEUE_URL" not in stack.functions["NotifyFunction"].environment
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=env["CALLBACK_SECRET_ARN"])
        assert len(secret["SecretString"]) == 48
        assert stack.aws_endpoint.startswith("http://127.0.0.1:")
    # stop() leaves the process as it found it
    assert stack.aws_endpoint not in json.dumps(dict(__import__("os").environ))


def test_dev_environment_uses_configured_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given every provider configured in the environment (so no simulator is needed)
    for name in ("GENERATE_TASK", "SORAHK", "OPENAI_VIDEOS"):
        monkeypatch.setenv(f"REELAY_{name}_BASE_URL", f"http://127.0.0.1:9/{name.lower()}")
        monkeypatch.setenv(f"REELAY_{name}_API_KEY", f"key-{name.lower()}")
    monkeypatch.setenv("REELAY_ALLOWED_RESULT_HOSTS", "media.example:443")

    with DevEnvironment(REPO) as env:
        # Then the functions use them, call back to the local gateway, with a per-run secret
        assert env.sim is None
        functions = env.stack.functions["ApiFunction"].environment
        assert functions["REELAY_SORAHK_BASE_URL"] == "http://127.0.0.1:9/sorahk"
        assert functions["REELAY_SORAHK_API_KEY"] == "key-sorahk"
        assert functions["CALLBACK_BASE_URL"] == env.stack.api_url
        assert len(functions["CALLBACK_SECRET"]) >= 32
        assert functions["REELAY_ALLOWED_RESULT_HOSTS"] == "media.example:443"


def test_dev_environment_simulates_unconfigured_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    simulator = pytest.importorskip("reelay_sim")
    if not hasattr(simulator, "Simulator"):
        pytest.skip("reelay_sim.Simulator is not available yet")
    for name in ("GENERATE_TASK", "SORAHK", "OPENAI_VIDEOS"):
        monkeypatch.delenv(f"REELAY_{name}_BASE_URL", raising=False)
    monkeypatch.delenv("REELAY_PROVIDERS", raising=False)
    monkeypatch.delenv("REELAY_ALLOWED_RESULT_HOSTS", raising=False)

    with DevEnvironment(REPO) as env:
        assert env.sim is not None
        functions = env.stack.functions["ApiFunction"].environment
        for provider in ("generate_task", "sorahk", "openai_videos"):
            assert functions[f"REELAY_{provider.upper()}_BASE_URL"] == env.sim.base_urls[provider]
        assert functions["REELAY_ALLOWED_RESULT_HOSTS"] == env.sim.host_port
        providers = httpx.get(f"{env.stack.api_url}/v1/providers", timeout=30)
        assert providers.status_code == 200


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("drop", "has no queue policy"),  # the queue policy taken out
        ("other-rule", "has a policy that does not admit it"),  # it admits another rule only
    ],
)
def test_an_event_rule_whose_queue_policy_does_not_admit_it_does_not_start(
    tmp_path: Path, change: str, why: str
) -> None:
    # Given template.yaml with the batch queue's policy taken out, or naming another rule:
    # moto would deliver the manifests' events anyway, and after sam deploy EventBridge would
    # drop every one (the queue refuses events.amazonaws.com), so no batch would ever start
    text = (REPO / "template.yaml").read_text()
    condition = 'Condition: {ArnEquals: {"aws:SourceArn": !GetAtt ManifestArrivedRule.Arn}}'
    assert condition in text
    if change == "drop":
        start = text.index("  BatchQueuePolicy:\n")
        end = text.index("\n\n", start)
        text = text[:start] + text[end + 2 :]
    else:
        text = text.replace(
            condition, condition.replace("!GetAtt ManifestArrivedRule.Arn", '!Sub "${ManifestArrivedRule.Arn}-old"')
        )
    for entry in REPO.iterdir():  # the code the template names, beside the changed template
        if entry.name != "template.yaml" and not entry.name.startswith("."):
            (tmp_path / entry.name).symlink_to(entry)
    (tmp_path / "template.yaml").write_text(text)
    # When the stack starts: it refuses, naming the rule and the queue
    with pytest.raises(TemplateError) as refused:
        LocalStack(tmp_path).start()
    message = str(refused.value)
    assert "event rules whose queues may not receive their events" in message
    assert "ManifestArrivedRule -> arn:aws:sqs:us-east-1:" in message and why in message
