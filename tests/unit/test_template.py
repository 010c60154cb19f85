"""The properties of template.yaml that matter, asserted (sam validate checks the rest)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.template_support import REPO, resource, template

RES = template()["Resources"]
FUNCTIONS = {k: v for k, v in RES.items() if v["Type"] == "AWS::Serverless::Function"}
GLOBAL_TIMEOUT = template()["Globals"]["Function"]["Timeout"]


def _timeout(fn: dict[str, Any]) -> int:
    return int(fn["Properties"].get("Timeout", GLOBAL_TIMEOUT))


def test_runtime_is_python313_on_arm64() -> None:
    glob = template()["Globals"]["Function"]
    assert glob["Runtime"] == "python3.13" and glob["Architectures"] == ["arm64"]
    assert all("Runtime" not in f["Properties"] for f in FUNCTIONS.values())


def test_every_function_has_code_a_log_group_with_retention_and_the_layer() -> None:
    for name, fn in FUNCTIONS.items():
        code = REPO / fn["Properties"]["CodeUri"] / "app.py"
        assert code.exists(), name
        logs = RES[f"{name}Logs"]["Properties"]
        assert logs["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{name}}}"} and logs["RetentionInDays"] > 0
    assert template()["Globals"]["Function"]["Layers"] == [{"Ref": "CoreLayer"}]


def test_every_queue_has_a_dlq_and_visibility_at_least_six_times_its_consumer_timeout() -> None:
    consumers = {
        ev["Properties"]["Queue"]["Fn::GetAtt"][0]: fn
        for fn in FUNCTIONS.values()
        for ev in fn["Properties"].get("Events", {}).values()
        if ev["Type"] == "SQS"
    }
    assert set(consumers) == {"SubmitQueue", "IngestQueue", "NotifyQueue", "BatchQueue", "PollQueue"}
    for queue, fn in consumers.items():
        props = RES[queue]["Properties"]
        assert props["VisibilityTimeout"] >= 6 * _timeout(fn), queue
        dlq = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert RES[dlq]["Type"] == "AWS::SQS::Queue"
        assert 1 < props["RedrivePolicy"]["maxReceiveCount"] <= 20
    for fn in consumers.values():
        sqs = next(e for e in fn["Properties"]["Events"].values() if e["Type"] == "SQS")["Properties"]
        assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_results_bucket_is_private_encrypted_and_aborts_incomplete_uploads() -> None:
    props = resource("ResultsBucket")["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(
        r["Status"] == "Enabled" and r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] <= 7 for r in rules
    )
    deny = resource("ResultsBucketPolicy")["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _routes(fn: str) -> set[tuple[str, str]]:
    return {
        (e["Properties"]["Method"].lower(), e["Properties"]["Path"])
        for e in FUNCTIONS[fn]["Properties"]["Events"].values()
        if e["Type"] == "HttpApi"
    }


def test_every_client_route_carries_the_selectable_auth_and_the_callback_route_is_public() -> None:
    paths = resource("HttpApi")["Properties"]["DefinitionBody"]["paths"]
    declared = {(m, p) for p, ops in paths.items() for m in ops}
    assert declared == _routes("ApiFunction")
    for path, ops in paths.items():
        for op in ops.values():
            assert "Fn::If" in op["security"], path
            assert "ApiKeyAuthorizer" in json.dumps(op["security"]), path
    callback = _routes("CallbackFunction")
    assert callback == {("post", "/callbacks/{provider}/{task_id}")}
    assert not {p for _, p in callback} & set(paths)
    assert template()["Parameters"]["ClientAuth"]["AllowedValues"] == ["IAM", "JWT", "NONE", "APIKEY"]


def test_the_api_key_authorizer_is_cached_simple_and_reads_only_the_key_table() -> None:
    auth = resource("HttpApi")["Properties"]["Auth"]["Authorizers"]["ApiKeyAuthorizer"]
    assert auth["FunctionArn"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    assert auth["EnableSimpleResponses"] is True and auth["AuthorizerPayloadFormatVersion"] == "2.0"
    assert auth["Identity"] == {"Headers": ["Authorization"], "ReauthorizeEvery": {"Ref": "ApiKeyCacheSeconds"}}
    assert template()["Parameters"]["ApiKeyCacheSeconds"]["Default"] == 60
    assert FUNCTIONS["AuthorizerFunction"]["Properties"]["Policies"] == [
        {"DynamoDBReadPolicy": {"TableName": {"Ref": "ApiKeyTable"}}}
    ]
    assert resource("ApiKeyTable")["Properties"]["KeySchema"] == [{"AttributeName": "key_id", "KeyType": "HASH"}]
    # Keys are made by admins writing the table (reelay keys --stack): no function and no route may.
    for name, fn in FUNCTIONS.items():
        text = json.dumps(fn["Properties"].get("Policies", []))
        assert "ApiKeyTable" not in text or name == "AuthorizerFunction", name
    assert not [p for p in resource("HttpApi")["Properties"]["DefinitionBody"]["paths"] if "key" in p]


def test_policies_are_scoped_to_the_stacks_own_resources() -> None:
    # The task-token calls (SendTask*) have no resource-level permissions: the token names the
    # execution. They are the only statement allowed on "*".
    token_calls = {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}

    def token_only(policy: Any) -> bool:
        statements = policy.get("Statement") if isinstance(policy, dict) else None
        return bool(statements) and all(set(st["Action"]) <= token_calls for st in statements)

    policies = {k: [p for p in v["Properties"].get("Policies", []) if not token_only(p)] for k, v in FUNCTIONS.items()}
    text = json.dumps(policies)
    assert '"Resource": "*"' not in text and '"Action": "*"' not in text
    assert "AdministratorAccess" not in text and "FullAccess" not in text
    assert "S3CrudPolicy" not in json.dumps(FUNCTIONS["ApiFunction"])  # the API only reads results


def test_each_function_may_do_what_its_code_does() -> None:
    def policies(name: str) -> str:
        return json.dumps(FUNCTIONS[name]["Properties"]["Policies"])

    assert "S3CrudPolicy" in policies("IngestFunction")  # writes results
    assert "S3ReadPolicy" in policies("SubmitFunction")  # reads image-edit inputs
    assert "S3ReadPolicy" in policies("ApiFunction")  # presigns output URLs, checks image keys
    assert "StepFunctionsExecutionPolicy" in policies("SubmitFunction")  # starts the poll path
    assert "states:SendTaskSuccess" in policies("PollFunction")  # ends the poll execution's wait
    assert "states:StartExecution" not in policies("PollFunction")  # one execution per task
    assert "PollQueue" in policies("PollFunction")  # sends the next poll
    for name in ("CallbackFunction", "SubmitFunction"):
        assert "CallbackSecret" in policies(name)  # mints / checks callback tokens
    for name in ("SubmitFunction", "PollFunction", "CallbackFunction"):
        assert "IngestQueue" in policies(name)  # enqueue ingest (the one winner of the move)


def test_state_machine_waits_on_a_token_with_deadline_heartbeat_retries_and_a_catch() -> None:
    asl = json.loads((REPO / "statemachine/poll.asl.json").read_text())
    poll = asl["States"]["Poll"]
    assert poll["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    assert poll["Parameters"]["MessageBody"]["token.$"] == "$$.Task.Token"
    assert poll["Parameters"]["DelaySeconds.$"] == "$.wait_seconds"
    assert poll["TimeoutSecondsPath"] == "$.timeout_seconds"  # the provider deadline
    assert poll["HeartbeatSecondsPath"] == "$.heartbeat_seconds"  # a lost poll message
    retried = {e for r in poll["Retry"] for e in r["ErrorEquals"]}
    assert "States.HeartbeatTimeout" in retried  # sends a fresh poll message
    assert all(r["BackoffRate"] > 1 and r.get("JitterStrategy") == "FULL" for r in poll["Retry"])
    assert poll["Catch"][0]["ErrorEquals"] == ["States.ALL"] and poll["Catch"][0]["Next"] == "RecordFailure"
    assert poll.get("End") is True
    # Only the failure path has more states: a task that succeeds costs one state transition.
    assert set(asl["States"]) == {"Poll", "RecordFailure", "Failed"}
    sm = resource("PollStateMachine")["Properties"]
    assert sm["DefinitionSubstitutions"] == {
        "PollFunctionArn": {"Fn::GetAtt": ["PollFunction", "Arn"]},
        "PollQueueUrl": {"Ref": "PollQueue"},
    }
    assert "PollQueue" in json.dumps(sm["Policies"])


def test_the_poll_queue_feeds_the_poll_function_with_partial_failures_and_a_dlq() -> None:
    [source] = FUNCTIONS["PollFunction"]["Properties"]["Events"].values()
    assert source["Type"] == "SQS" and source["Properties"]["Queue"] == {"Fn::GetAtt": ["PollQueue", "Arn"]}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = resource("PollQueue")["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["PollDLQ", "Arn"]}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_each_function_has_a_sample_event(name: str) -> None:
    prefix = {
        "ApiFunction": "api_",
        "CallbackFunction": "callback_",
        "SubmitFunction": "sqs_submit",
        "IngestFunction": "sqs_ingest",
        "PollFunction": "sqs_poll",
        "ReconcileFunction": "schedule_reconcile",
        "NotifyFunction": "sqs_notify",
        "BatchFunction": "sqs_batch",
        "AuthorizerFunction": "authorizer_",
    }[name]
    assert list((REPO / "events").glob(f"{prefix}*.json")), name


def test_timeouts_batch_sizes_and_provider_timeouts_are_consistent() -> None:
    """Every function finishes what it starts within its timeout, at the default provider timeout."""
    from reelay.providers.base import ProviderConfig
    from reelay.reconcile import RESERVE_SECONDS
    from reelay.settings import Settings

    provider = ProviderConfig(name="p", protocol="generate_task", base_url="https://p.example", api_key="k")
    call = provider.call_seconds
    timeout = {name: _timeout(fn) for name, fn in FUNCTIONS.items()}
    settings = Settings(task_table_name="t", results_bucket="b", ingest_queue_url="q", providers=(provider,))
    # Submit starts a record only while the most one record can take is left, so one always fits.
    assert timeout["SubmitFunction"] >= settings.submit_record_seconds + 10
    # The callback answers after one status call, inside the HTTP API's 30 s integration limit.
    assert call + 3 <= timeout["CallbackFunction"] <= 30
    # A poll message is started only while one status call and its writes fit.
    assert timeout["PollFunction"] >= settings.poll_record_seconds + 10
    # Reconcile stops taking tasks while one task's look (a status call and writes) still fits.
    assert call + 10 <= RESERVE_SECONDS and timeout["ReconcileFunction"] >= 4 * RESERVE_SECONDS


def test_reconcile_runs_on_a_schedule_whose_rate_is_a_parameter_of_two_minutes_by_default() -> None:
    assert template()["Parameters"]["ReconcileRate"]["Default"] == "rate(2 minutes)"
    schedule = FUNCTIONS["ReconcileFunction"]["Properties"]["Events"]["Schedule"]
    assert schedule["Type"] == "Schedule" and schedule["Properties"]["Schedule"] == {"Ref": "ReconcileRate"}


def test_tasks_are_listed_by_one_owner_index_of_keys_only() -> None:
    props = resource("TaskTable")["Properties"]
    indexes = {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]] for i in props["GlobalSecondaryIndexes"]}
    assert indexes == {"ByOwnerCreated": ["owner", "created_key"], "Due": ["due_pk", "due_at"]}
    projections = {i["IndexName"]: i["Projection"] for i in props["GlobalSecondaryIndexes"]}
    # No index copies anything but keys: a task's listing entry is written once, at its creation.
    assert projections == {"ByOwnerCreated": {"ProjectionType": "KEYS_ONLY"}, "Due": {"ProjectionType": "KEYS_ONLY"}}


def test_swagger_ui_is_a_client_route_and_the_api_may_read_the_cursor_key() -> None:
    assert ("get", "/v1/docs") in _routes("ApiFunction")
    assert "/v1/docs" in resource("HttpApi")["Properties"]["DefinitionBody"]["paths"]
    assert "CallbackSecret" in json.dumps(FUNCTIONS["ApiFunction"]["Properties"]["Policies"])  # signs cursors


def test_manifests_arrive_through_eventbridge_without_a_bucket_dependency_cycle() -> None:
    """inbox/ arrivals: bucket -> EventBridge -> rule -> batch queue (with a DLQ), admitted for that rule only."""
    bucket = resource("ResultsBucket")["Properties"]
    assert bucket["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    rule = resource("ManifestArrivedRule")["Properties"]
    assert rule["EventPattern"]["detail"] == {
        "bucket": {"name": [{"Ref": "ResultsBucket"}]},
        "object": {"key": [{"prefix": "inbox/"}]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["BatchQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["BatchDLQ", "Arn"]}
    (statement,) = resource("BatchQueuePolicy")["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["ManifestArrivedRule", "Arn"]}}}
    # The bucket names no destination, so nothing the bucket depends on depends on the bucket.
    assert "ResultsBucket" not in json.dumps(resource("BatchQueue"))


def test_the_batch_function_reads_only_the_inbox_writes_only_reports_and_every_task_ender_may_queue_reports() -> None:
    policies = json.dumps(FUNCTIONS["BatchFunction"]["Properties"]["Policies"])
    assert "S3CrudPolicy" not in policies and "S3ReadPolicy" not in policies
    assert "${ResultsBucket}/inbox/*" in policies and "${ResultsBucket}/reports/*" in policies
    assert "SubmitQueue" in policies  # each line's task goes to the submit queue
    assert template()["Globals"]["Function"]["Environment"]["Variables"]["BATCH_QUEUE_URL"] == {"Ref": "BatchQueue"}
    for name in ("CallbackFunction", "SubmitFunction", "PollFunction", "IngestFunction", "ReconcileFunction"):
        # Each writes terminal states: the batch hook there may queue the batch's report.
        assert "BatchQueue" in json.dumps(FUNCTIONS[name]["Properties"]["Policies"]), name
    # One message at a time, far inside the timeout (a chunk takes seconds; a split stops 30 s early).
    batch = next(iter(FUNCTIONS["BatchFunction"]["Properties"]["Events"].values()))["Properties"]
    assert batch["BatchSize"] == 1 and _timeout(FUNCTIONS["BatchFunction"]) >= 120
