"""Each function's execution role, enforced at the local AWS endpoint as IAM would enforce it.

moto does not check permissions (and cannot here: it authorizes most services' requests against
the resource ``*``). So each function signs its AWS calls with an access key of its own (the
provisioner puts it in the function's environment, ``sandbox`` makes boto3 use it), and every
request that arrives at the moto server with such a key is checked before moto sees it:

- ``required`` reads the request (service, operation, body or path) into the IAM actions and
  resource ARNs it needs, as the services' authorization references list them: a transaction
  needs the item action of each of its items on each item's table, a batch ``SendMessageBatch``
  needs ``sqs:SendMessage``, an S3 ``HEAD`` needs ``s3:GetObject``, a multipart upload's parts
  ``s3:PutObject``, ``ListParts`` ``s3:ListMultipartUploadParts``, a presigned URL its signer's
  permission when it is used (and first its signature and expiry, as S3 checks them:
  ``reelay_local.local_presign``);
- ``Policy.decide`` evaluates them against the role's statements (its inline policies resolved
  as deployed, and the AWS managed policies it attaches, ``MANAGED_POLICIES``): an explicit
  ``Deny`` wins, then an ``Allow`` must match the action and the resource;
- a request not allowed is answered as the service answers it (``AccessDeniedException``, or
  ``AccessDenied`` for S3 and SQS), with AWS's wording, and is logged; a request whose actions
  the local stack cannot tell is refused the same way, so that nothing passes unchecked;
- a read of a missing S3 key is a 403, not a 404, for a role that may not ``s3:ListBucket``
  the bucket, as S3 answers it.

Requests signed with any other key (the local stack's own, a test's) are not checked. Not
emulated: resource-based policies for the functions' requests (bucket and queue policies,
which same-account identity policies do not need; ``service_may`` evaluates a queue's policy
for the EventBridge rule that delivers to it), statements with a ``Condition`` in a role
(never used to allow or deny; a warning names them), permission boundaries and SCPs. Calls
moto makes itself (a state machine's Lambda and SQS tasks) are not requests here: the
provisioner checks a state machine's role against its definition when the stack starts
(``state_machine_needs``).
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from reelay_local.local_presign import presigned_refusal
from reelay_local.template import ACCOUNT_ID, REGION

LOG = logging.getLogger(__name__)

# The AWS managed policies a SAM template attaches (SAM itself adds the first and, for an SQS
# event source, the last; ``Tracing: Active`` the second), as AWS publishes them.
_LOGS = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
MANAGED_POLICIES: dict[str, list[dict[str, Any]]] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": _LOGS, "Resource": "*"}
    ],
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": [
        {
            "Effect": "Allow",
            "Action": [
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ],
            "Resource": "*",
        }
    ],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", *_LOGS],
            "Resource": "*",
        }
    ],
}

SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/[^/]+/([^/]+)/aws4_request")
Need = tuple[str, str]  # (IAM action, resource ARN or "*")


# -- policies --------------------------------------------------------------------------------


def _pattern(value: str, *, ignore_case: bool) -> re.Pattern[str]:
    """An IAM wildcard (``*`` any run, ``?`` one character) as a whole-string pattern."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)
    return re.compile(f"^{body}$", re.IGNORECASE if ignore_case else 0)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


@dataclass(frozen=True)
class _Statement:
    effect: str
    actions: tuple[re.Pattern[str], ...]
    not_actions: bool
    resources: tuple[re.Pattern[str], ...]
    not_resources: bool

    @classmethod
    def of(cls, statement: dict[str, Any]) -> _Statement:
        not_actions = "NotAction" in statement
        not_resources = "NotResource" in statement
        return cls(
            effect=str(statement.get("Effect", "Allow")),
            actions=tuple(
                _pattern(a, ignore_case=True) for a in _listed(statement.get("NotAction" if not_actions else "Action"))
            ),
            not_actions=not_actions,
            resources=tuple(
                _pattern(r, ignore_case=False)
                for r in _listed(statement.get("NotResource" if not_resources else "Resource"))
            ),
            not_resources=not_resources,
        )

    def applies(self, action: str, resource: str) -> bool:
        action_listed = any(p.match(action) for p in self.actions)
        resource_listed = any(p.match(resource) for p in self.resources)
        return action_listed != self.not_actions and resource_listed != self.not_resources


@dataclass
class Policy:
    """The statements of one role: its inline policies and the managed policies it attaches."""

    role_arn: str
    statements: list[_Statement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, role_arn: str, documents: Iterable[dict[str, Any]], managed: Iterable[str] = ()) -> Policy:
        policy = cls(role_arn)
        raw: list[dict[str, Any]] = []
        for document in documents:
            statements = document.get("Statement") or []
            raw.extend([statements] if isinstance(statements, dict) else statements)
        for arn in managed:
            known = MANAGED_POLICIES.get(re.sub(r"^arn:[^:]+:", "arn:aws:", arn))
            if known is None:
                policy.problems.append(f"{role_arn}: managed policy {arn} is not known locally; it grants nothing here")
            else:
                raw.extend(known)
        for statement in raw:
            if "Condition" in statement:
                policy.problems.append(
                    f"{role_arn}: a statement with a Condition ({statement.get('Sid') or statement.get('Action')})"
                    " is not evaluated locally; it grants nothing here"
                )
                continue
            policy.statements.append(_Statement.of(statement))
        return policy

    def decide(self, action: str, resource: str) -> bool:
        """Whether the role may do ``action`` on ``resource`` (no explicit deny, one allow)."""
        applying = [s for s in self.statements if s.applies(action, resource)]
        return bool(applying) and all(s.effect == "Allow" for s in applying)


def _like(value: str, pattern: str) -> bool:
    return bool(_pattern(pattern, ignore_case=False).match(value))


# Condition operators ``service_may`` evaluates, by how a value is compared with the pattern
# (``ArnEquals`` takes wildcards as ``ArnLike`` does).
_CONDITION_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda value, pattern: value == pattern,
    "StringLike": _like,
    "ArnEquals": _like,
    "ArnLike": _like,
}


def service_may(
    document: dict[str, Any] | None, service: str, action: str, resource: str, context: dict[str, str]
) -> tuple[bool, list[str]]:
    """Whether a resource policy (a queue's) lets an AWS service principal (``events.amazonaws.com``)
    do ``action`` on ``resource`` for a request whose condition keys are ``context``
    (``aws:SourceArn``, ``aws:SourceAccount``): no explicit ``Deny`` applies and an ``Allow`` does.

    A service principal acts in no account of its own, so only the resource's policy can let it
    in. The second value lists the statements that could not be evaluated (a condition operator
    or key not known here); they allow nothing and deny nothing."""
    unknown: list[str] = []
    allowed = denied = False
    statements = (document or {}).get("Statement") or []
    for statement in [statements] if isinstance(statements, dict) else statements:
        if not _names_service(statement.get("Principal"), service):
            continue
        if not _Statement.of(statement).applies(action, resource):
            continue
        met = _conditions_met(statement.get("Condition") or {}, context)
        if met is None:
            unknown.append(str(statement.get("Sid") or statement.get("Action")))
        elif met and statement.get("Effect", "Allow") == "Deny":
            denied = True
        elif met:
            allowed = True
    return allowed and not denied, unknown


def _names_service(principal: Any, service: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    return service in _listed(principal.get("Service")) or "*" in _listed(principal.get("AWS"))


def _conditions_met(conditions: dict[str, Any], context: dict[str, str]) -> bool | None:
    """Whether every condition holds (a key holds when any of its values matches; a key the
    request lacks fails a positive test), or None when one cannot be evaluated here."""
    for operator, tests in conditions.items():
        negated = "Not" in operator
        compare = _CONDITION_OPERATORS.get(operator.replace("Not", "", 1))
        if compare is None or not isinstance(tests, dict):
            return None
        for key, patterns in tests.items():
            value = next((v for k, v in context.items() if k.lower() == str(key).lower()), None)
            if value is None:
                if not negated:
                    return False
                continue
            if any(compare(value, str(p)) for p in _listed(patterns)) == negated:
                return False
    return True


@dataclass(frozen=True)
class Principal:
    """A function signing with its own key: its name (for the messages) and its role's policy."""

    function: str
    function_name: str
    policy: Policy

    @property
    def arn(self) -> str:
        role = self.policy.role_arn.rsplit("/", 1)[-1]
        return f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{self.function_name}"


_KEY_PREFIX = "LOCAL"
_KEY_NONCE = 12


def function_key(logical_id: str) -> str:
    """A fresh access key id for a function (unique per stack, readable in a request's scope)."""
    return f"{_KEY_PREFIX}{uuid.uuid4().hex[:_KEY_NONCE].upper()}{logical_id}"


def function_of_key(key: str) -> str | None:
    """The logical id of the function whose key ``function_key`` made (None: not a function's)."""
    if not key.startswith(_KEY_PREFIX) or len(key) <= len(_KEY_PREFIX) + _KEY_NONCE:
        return None
    return key[len(_KEY_PREFIX) + _KEY_NONCE :]


# -- what a state machine's states need ------------------------------------------------------

_XRAY_ACTIONS = (
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
)


def state_machine_needs(
    definition: dict[str, Any], *, tracing: bool = False, region: str = REGION
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """What an execution of ``definition`` calls as its role: ``(state, action, resource)`` for
    each Task state (in Parallel and Map states too), and X-Ray's writes when ``tracing``; and the
    states whose needs cannot be told (an unknown integration, a resource chosen at run time).

    moto makes a state machine's calls in-process, past the endpoint where ``LocalIam`` checks
    a function's, so the local stack checks a state machine's role against these when it starts.
    """
    needs: list[tuple[str, str, str]] = []
    unknown: list[str] = []

    def visit(states: dict[str, Any]) -> None:
        for name, state in states.items():
            kind = state.get("Type")
            if kind == "Parallel":
                for branch in state.get("Branches") or []:
                    visit(branch.get("States") or {})
            elif kind == "Map":
                inner = state.get("ItemProcessor") or state.get("Iterator") or {}
                visit(inner.get("States") or {})
            elif kind == "Task":
                resource = str(state.get("Resource", ""))
                parameters = state.get("Parameters") or {}
                if resource.startswith("arn:aws:lambda:"):
                    needs.append((name, "lambda:InvokeFunction", resource))
                    continue
                api = resource.removeprefix("arn:aws:states:::").split(".", 1)[0]
                known = _INTEGRATIONS.get(api) if resource.startswith("arn:aws:states:::") else None
                if known is None:
                    unknown.append(f"{name}: {resource}")
                    continue
                parameter, action, arn_of = known
                value = parameters.get(parameter) if parameter else ""
                if not isinstance(value, str):  # chosen at run time (``<parameter>.$``)
                    unknown.append(f"{name}: {resource} with {parameter} chosen at run time")
                    continue
                needs.append((name, action, arn_of(value, region)))

    visit(definition.get("States") or {})
    if tracing:
        needs.extend(("(tracing)", action, "*") for action in _XRAY_ACTIONS)
    return needs, unknown


def _queue_arn(url: str, region: str) -> str:
    """A queue URL's ARN: ``https://sqs.<region>.amazonaws.com/<account>/<name>`` (or the local one)."""
    account, name = url.rstrip("/").split("/")[-2:]
    host = re.match(r"https?://sqs\.([a-z0-9-]+)\.", url)
    return f"arn:aws:sqs:{host.group(1) if host else region}:{account}:{name}"


def _function_arn(name: str, region: str) -> str:
    """The ARN IAM checks for invoking ``name``: a (qualified) ARN as it is, else built from the
    name (``name:alias`` stays qualified, as Lambda checks it)."""
    return name if name.startswith("arn:") else f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"


# Service integrations (``arn:aws:states:::<service>:<api>[.sync|.waitForTaskToken]``): the
# parameter naming the resource, and that resource's ARN from its value.
_INTEGRATIONS: dict[str, tuple[str, str, Callable[[str, str], str]]] = {
    "sqs:sendMessage": ("QueueUrl", "sqs:SendMessage", _queue_arn),
    "lambda:invoke": ("FunctionName", "lambda:InvokeFunction", _function_arn),
    "events:putEvents": ("", "events:PutEvents", lambda _, region: f"arn:aws:events:{region}:{ACCOUNT_ID}:event-bus/*"),
}


# -- what a request needs --------------------------------------------------------------------


def _arn(service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def _table(name: Any) -> str:
    name = str(name or "")
    return name if name.startswith("arn:") else _arn("dynamodb", f"table/{name}")


_TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
    "Get": "dynamodb:GetItem",
}


def _dynamodb(operation: str, body: dict[str, Any]) -> list[Need] | None:
    if operation in ("TransactWriteItems", "TransactGetItems"):
        needs = []
        for item in body.get("TransactItems") or []:
            for kind, action in _TRANSACT_ITEM_ACTIONS.items():
                if isinstance(item, dict) and kind in item:
                    needs.append((action, _table(item[kind].get("TableName"))))
        return needs
    if operation in ("BatchWriteItem", "BatchGetItem"):
        return [(f"dynamodb:{operation}", _table(name)) for name in body.get("RequestItems") or {}]
    if operation in ("ListTables", "DescribeLimits", "DescribeEndpoints"):
        return [(f"dynamodb:{operation}", "*")]
    if not body.get("TableName"):
        return None
    resource = _table(body["TableName"])
    if body.get("IndexName") and operation in ("Query", "Scan"):
        resource += f"/index/{body['IndexName']}"
    return [(f"dynamodb:{operation}", resource)]


# An SQS batch action is authorized by its single action.
_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _sqs(operation: str, body: dict[str, Any]) -> list[Need] | None:
    action = "sqs:" + _SQS_BATCH.get(operation, operation)
    if operation == "ListQueues":
        return [(action, "*")]
    if operation == "GetQueueUrl" and body.get("QueueName"):
        return [(action, _arn("sqs", str(body["QueueName"])))]
    url = str(body.get("QueueUrl") or "")
    if not url:
        return None
    return [(action, _arn("sqs", url.rstrip("/").rsplit("/", 1)[-1]))]


# Step Functions actions without a resource type (a task token names no resource).
_STATES_ANY_RESOURCE = {
    "SendTaskSuccess",
    "SendTaskFailure",
    "SendTaskHeartbeat",
    "ListStateMachines",
    "ListActivities",
}


def _states(operation: str, body: dict[str, Any]) -> list[Need] | None:
    if operation in _STATES_ANY_RESOURCE:
        return [(f"states:{operation}", "*")]
    arn = body.get("stateMachineArn") or body.get("executionArn") or body.get("activityArn")
    return [(f"states:{operation}", str(arn))] if arn else None


def _events(operation: str, body: dict[str, Any]) -> list[Need] | None:
    if operation != "PutEvents":
        name = body.get("EventBusName") or body.get("Name")
        return [(f"events:{operation}", _bus(name))] if name else None
    return [("events:PutEvents", _bus(entry.get("EventBusName"))) for entry in body.get("Entries") or []]


def _bus(name: Any) -> str:
    name = str(name or "default")
    return name if name.startswith("arn:") else _arn("events", f"event-bus/{name}")


def _secret_named(name: str) -> str:
    """A secret's ARN from its name alone (without the suffix AWS adds to a secret's ARN)."""
    return _arn("secretsmanager", f"secret:{name}")


def _secretsmanager(operation: str, body: dict[str, Any], secret_arn: Callable[[str], str]) -> list[Need] | None:
    secret = str(body.get("SecretId") or "")
    if not secret:
        return [(f"secretsmanager:{operation}", "*")] if operation == "ListSecrets" else None
    return [(f"secretsmanager:{operation}", secret if secret.startswith("arn:") else secret_arn(secret))]


def _lambda(method: str, path: str) -> list[Need] | None:
    found = re.match(r"^/2015-03-31/functions/([^/]+)/invocations$", path)
    if method != "POST" or not found:
        return None
    function = unquote(found.group(1))
    if not function.startswith("arn:"):
        function = _arn("lambda", f"function:{function}")
    return [("lambda:InvokeFunction", function)]


# A ListObjects(V2) request's parameters (any other sub-resource on a bucket is another action).
_LIST_PARAMETERS = {
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "continuation-token",
    "start-after",
    "marker",
    "encoding-type",
    "fetch-owner",
}


def _s3(
    method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Callable[[], bytes]
) -> list[Need] | None:
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket:
        return [("s3:ListAllMyBuckets", "*")] if method == "GET" else None
    on_bucket, on_object = f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}"
    if not key:
        bucket_actions = {
            ("GET", "uploads"): "s3:ListBucketMultipartUploads",
            ("GET", "location"): "s3:GetBucketLocation",
            ("GET", "lifecycle"): "s3:GetLifecycleConfiguration",
            ("GET", "versions"): "s3:ListBucketVersions",
        }
        for (verb, sub), action in bucket_actions.items():
            if method == verb and sub in query:
                return [(action, on_bucket)]
        if method == "POST" and "delete" in query:
            keys = [
                element.text or ""
                for element in ET.fromstring(body() or b"<Delete/>").iter()
                if element.tag.endswith("Key")
            ]
            return [("s3:DeleteObject", f"{on_bucket}/{k}") for k in keys]
        if method in ("GET", "HEAD") and not set(query) - _LIST_PARAMETERS:
            return [("s3:ListBucket", on_bucket)]
        return None
    copy_source = headers.get("x-amz-copy-source")
    if method in ("GET", "HEAD"):
        if "uploadId" in query:
            return [("s3:ListMultipartUploadParts", on_object)]
        if "tagging" in query:
            return [("s3:GetObjectTagging", on_object)]
        if "acl" in query:
            return [("s3:GetObjectAcl", on_object)]
        return [("s3:GetObjectVersion" if "versionId" in query else "s3:GetObject", on_object)]
    if method == "PUT":
        if "tagging" in query:
            return [("s3:PutObjectTagging", on_object)]
        if "acl" in query:
            return [("s3:PutObjectAcl", on_object)]
        needs = [("s3:PutObject", on_object)]
        if copy_source:
            source = unquote(copy_source).lstrip("/").split("?", 1)[0]
            needs.append(("s3:GetObject", f"arn:aws:s3:::{source}"))
        return needs
    if method == "POST" and ("uploads" in query or "uploadId" in query):
        return [("s3:PutObject", on_object)]
    if method == "DELETE":
        if "uploadId" in query:
            return [("s3:AbortMultipartUpload", on_object)]
        if "tagging" in query:
            return [("s3:DeleteObjectTagging", on_object)]
        return [("s3:DeleteObjectVersion" if "versionId" in query else "s3:DeleteObject", on_object)]
    return None


def required(
    service: str,
    method: str,
    path: str,
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: Callable[[], bytes],
    *,
    secret_arn: Callable[[str], str] = _secret_named,
) -> list[Need] | None:
    """The IAM actions and resources a request needs; None when the local stack cannot tell."""
    if service == "s3":
        return _s3(method, path, query, headers, body)
    if service == "lambda":
        return _lambda(method, path)
    target = headers.get("x-amz-target", "")
    payload: dict[str, Any]
    if target:
        operation = target.rsplit(".", 1)[-1]
        try:
            loaded = json.loads(body() or b"{}")
        except ValueError:
            return None
        payload = loaded if isinstance(loaded, dict) else {}
    else:  # the query protocol: Action=... in the form body (or the query string)
        form = {k: v[0] for k, v in parse_qs(body().decode(errors="replace")).items()}
        form.update({k: v[0] for k, v in query.items()})
        operation = form.get("Action", "")
        payload = form
    if not operation:
        return None
    if service == "dynamodb":
        return _dynamodb(operation, payload)
    if service == "sqs":
        return _sqs(operation, payload)
    if service == "states":
        return _states(operation, payload)
    if service == "events":
        return _events(operation, payload)
    if service == "secretsmanager":
        return _secretsmanager(operation, payload, secret_arn)
    return None


# -- the check at the endpoint ---------------------------------------------------------------


@dataclass(frozen=True)
class Denial:
    """A refused request: the status, headers and body the service would answer with."""

    status: str
    headers: list[tuple[str, str]]
    body: bytes


def denial(service: str, principal: Principal, needs: list[Need] | None, *, query_protocol: bool) -> Denial:
    """AWS's answer to a request ``principal``'s role does not allow (``needs`` None: unknown)."""
    if needs is None:
        message = (
            f"User: {principal.arn} made a request the local stack cannot authorize "
            f"(it does not know which IAM action a {service} request of this kind needs)"
        )
    else:
        action, resource = needs[0]
        message = (
            f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} "
            f"because no identity-based policy allows the {action} action"
        )
    if service == "s3":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{_xml(message)}</Message><RequestId>{uuid.uuid4()}</RequestId></Error>"
        )
        return Denial("403 Forbidden", [("Content-Type", "application/xml")], body.encode())
    if service == "sqs" and query_protocol:
        body = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
            f"<Message>{_xml(message)}</Message></Error></ErrorResponse>"
        )
        return Denial("403 Forbidden", [("Content-Type", "application/xml")], body.encode())
    if service == "lambda":
        return Denial(
            "403 Forbidden",
            [("Content-Type", "application/json"), ("x-amzn-ErrorType", "AccessDeniedException")],
            json.dumps({"Type": "User", "Message": message}).encode(),
        )
    headers = [("Content-Type", "application/x-amz-json-1.0")]
    if service == "sqs":  # SQS's JSON protocol keeps the query protocol's error code
        headers.append(("x-amzn-query-error", "AccessDenied;Sender"))
    return Denial(
        "400 Bad Request", headers, json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class LocalIam:
    """The principals of one running stack (by access key), and the check of each request."""

    def __init__(
        self,
        principals: dict[str, Principal],
        *,
        secret_arn: Callable[[str], str] = _secret_named,
        object_exists: Callable[[str, str], bool] | None = None,
        secret_key: str = "testing",
    ) -> None:
        self.principals = principals
        self._secret_key = secret_key  # every function's (the stack's fake credentials)
        self._secret_arn = secret_arn
        self._object_exists = object_exists
        self._lock = threading.Lock()
        self.denied: list[tuple[str, str, str]] = []  # (function, action, resource), in order

    def check(self, environ: dict[str, Any]) -> Denial | None:
        """None when the request may go on to moto; else the service's refusal."""
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        raw_query = environ.get("QUERY_STRING", "")
        query = parse_qs(raw_query, keep_blank_values=True)
        scope = SCOPE.search(authorization) or SCOPE.search("Credential=" + query.get("X-Amz-Credential", [""])[0])
        if scope is None or scope.group(1) not in self.principals:
            return None
        principal = self.principals[scope.group(1)]
        service = scope.group(2)
        if service == "s3" and "X-Amz-Signature" in query:
            answer = presigned_refusal(environ, self._secret_key, body=lambda: peek_body(environ))
            if answer is not None:
                LOG.warning("presigned URL of %s refused as S3 would: %s", principal.function, answer[1][:200])
                return Denial(answer[0], [("Content-Type", "application/xml")], answer[1])
        headers = {
            key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items() if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])

        def body() -> bytes:
            return peek_body(environ)

        try:
            needs = required(
                service,
                environ.get("REQUEST_METHOD", ""),
                environ.get("PATH_INFO", ""),
                query,
                headers,
                body,
                secret_arn=self._secret_arn,
            )
        except (ValueError, ET.ParseError, AttributeError, TypeError):
            needs = None
        if needs is not None:
            refused = [(a, r) for a, r in needs if not principal.policy.decide(a, r)]
            if not refused:
                refused = self._missing_without_list(principal, needs)
            if not refused:
                return None
            needs = refused
        with self._lock:
            for action, resource in needs if needs is not None else [(f"{service}:?", "?")]:
                self.denied.append((principal.function, action, resource))
        LOG.warning(
            "AccessDenied: %s (%s) may not %s",
            principal.function,
            principal.policy.role_arn,
            ", ".join(f"{a} on {r}" for a, r in needs) if needs else f"make this {service} request",
        )
        return denial(service, principal, needs, query_protocol=not headers.get("x-amz-target"))

    def _missing_without_list(self, principal: Principal, needs: list[Need]) -> list[Need]:
        """S3 answers a read of a missing key 404 only to a caller that may list the bucket;
        to any other it is 403 ``AccessDenied`` (so that a key's absence is not disclosed)."""
        if self._object_exists is None or len(needs) != 1 or needs[0][0] != "s3:GetObject":
            return []
        bucket, _, key = needs[0][1].removeprefix("arn:aws:s3:::").partition("/")
        listing = ("s3:ListBucket", f"arn:aws:s3:::{bucket}")
        if principal.policy.decide(*listing) or self._object_exists(bucket, key):
            return []
        return [listing]


def peek_body(environ: dict[str, Any]) -> bytes:
    """The request body, put back for moto to read."""
    cached = environ.get("reelay.local_iam.body")
    if cached is not None:
        return bytes(cached)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(data)
    environ["reelay.local_iam.body"] = data
    return data


class EndpointCheck:
    """``LocalIam`` in front of the moto server's WSGI application while a stack runs."""

    def __init__(self, iam: LocalIam) -> None:
        self.iam = iam
        self._restore: Callable[[], None] | None = None

    def install(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        served = DomainDispatcherApplication.__call__
        iam = self.iam

        def checked(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
            refused = iam.check(environ)
            if refused is None:
                return served(app, environ, start_response)
            start_response(refused.status, [*refused.headers, ("Content-Length", str(len(refused.body)))])
            return [refused.body]

        DomainDispatcherApplication.__call__ = checked  # type: ignore[method-assign,assignment]
        self._restore = lambda: setattr(DomainDispatcherApplication, "__call__", served)

    def uninstall(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None
