"""Creates the template's resources in moto, as CloudFormation would, and records their ids.

Physical names follow CloudFormation's conventions (``<stack>-<LogicalId>-<RANDOM>`` unless the
template names the resource), so ``Ref``/``Fn::GetAtt`` resolve to values shaped like AWS's.
Resources are created in dependency order: roles, secrets, tables, buckets, queues, functions,
then state machines. What only the local stack can serve (routes, SQS mappings, schedule rules)
is collected as wiring for :mod:`reelay_local.stack` to start.

Only what template.yaml uses is emulated. Any other resource type, or a property of a used type
that changes behaviour (bucket notifications, CORS, table streams, event-pattern rules), is
reported in ``Wiring.unserved``, so a test fails when the template outgrows the local stack.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import string
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelay_local.event_sources import QueueMapping, ScheduleSpec
from reelay_local.gateway import Route, routes_from_body
from reelay_local.lambda_runtime import FunctionSpec
from reelay_local.local_iam import Policy, Principal, function_key, service_may, state_machine_needs
from reelay_local.template import (
    ACCOUNT_ID,
    PARTITION,
    REGION,
    URL_SUFFIX,
    CloudTemplate,
    Physical,
    Resolver,
    TemplateError,
)

LOG = logging.getLogger(__name__)

# Lambda's quota on a function's environment variables: their JSON, at most 4 KB in all.
ENVIRONMENT_MAX_BYTES = 4 * 1024

# Resource types of the template that need nothing locally (beyond a Ref value).
# Alarms, their SNS topic and the dashboard watch CloudWatch metrics; nothing in the application
# reads them, so locally they are placeholders (tests/unit/test_alarms.py checks them).
_PASSIVE_TYPES = frozenset(
    {
        "AWS::Lambda::Permission",
        "AWS::Logs::LogGroup",
        "AWS::ApiGatewayV2::Stage",
        "AWS::CloudWatch::Alarm",
        "AWS::CloudWatch::Dashboard",
        "AWS::SNS::Topic",
        "AWS::SNS::Subscription",
    }
)

# Bucket and table properties that would need emulation the template does not use.
_UNSERVED_BUCKET_PROPERTIES = ("CorsConfiguration", "WebsiteConfiguration")
# Of a bucket's notifications, EventBridge delivery is served (moto sends the events to the
# rules of the default bus, whose SQS targets it delivers to); direct destinations are not.
_UNSERVED_NOTIFICATIONS = ("LambdaConfigurations", "QueueConfigurations", "TopicConfigurations")
_UNSERVED_TABLE_PROPERTIES = ("StreamSpecification",)

Clients = Callable[[str], Any]


@dataclass
class Wiring:
    """Everything that invokes a function, as the local stack will serve it."""

    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    queue_mappings: list[QueueMapping] = field(default_factory=list)
    schedules: list[ScheduleSpec] = field(default_factory=list)
    state_machines: dict[str, str] = field(default_factory=dict)  # logical id -> ARN
    event_buses: dict[str, str] = field(default_factory=dict)  # logical id -> bus name
    unserved: list[str] = field(default_factory=list)
    # Each function's own access key -> the function and its role's policy (``local_iam``).
    principals: dict[str, Principal] = field(default_factory=dict)


class Provisioner:
    """Builds a :class:`CloudTemplate`'s resources in moto through boto3 ``clients``.

    Each function's ``FunctionSpec.environment`` is the whole environment it runs with: its
    template variables (Globals and its own), then ``function_overrides``, then what the Lambda
    runtime sets, then ``runtime_environment`` (the local stand-ins for the execution role and
    the endpoint: fake credentials, ``AWS_ENDPOINT_URL``, ``MOTO_PORT``), then the function's
    own access key (``Wiring.principals`` maps it to the function's role, for ``local_iam``).
    ``timeout_overrides`` (logical id -> seconds) replace template timeouts, for tests of
    timeouts that cannot wait.
    """

    def __init__(
        self,
        template: CloudTemplate,
        clients: Clients,
        *,
        stack_name: str,
        gateway_url: str,
        function_overrides: Mapping[str, str],
        runtime_environment: Mapping[str, str],
        timeout_overrides: Mapping[str, float] | None = None,
        event_copies: int = 1,
    ) -> None:
        self._template = template
        self._event_copies = max(1, event_copies)
        self._client = clients
        self._stack_name = stack_name
        self._gateway_url = gateway_url
        self._overrides = dict(function_overrides)
        self._runtime_environment = dict(runtime_environment)
        self._timeout_overrides = dict(timeout_overrides or {})
        self.physical: dict[str, Physical] = {}
        self.resolver = Resolver(template, self.physical.__getitem__, stack_name=stack_name)
        self.wiring = Wiring()
        self._layer_dirs: dict[str, Path] = {}
        self._api_urls: dict[str, str] = {}
        self._roles: set[str] = set()
        self._role_documents: dict[str, list[dict[str, Any]]] = {}  # role ARN -> its inline policies
        self._role_managed: dict[str, list[str]] = {}  # role ARN -> the managed policies it attaches
        self._function_keys: dict[str, tuple[str, str, str]] = {}  # key -> (logical id, name, role ARN)
        # state machine -> (its role ARN, what its states call: ``local_iam.state_machine_needs``)
        self._machine_needs: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
        # event-pattern rule -> (its ARN, the ARNs of the queues it delivers to); queue URL -> the
        # policy its AWS::SQS::QueuePolicy gives it (``_rule_deliveries`` checks one against the other)
        self._rule_queues: dict[str, tuple[str, list[str]]] = {}
        self._queue_policies: dict[str, dict[str, Any]] = {}
        self._reserved_concurrency: dict[str, int] = {}  # function logical id -> reserved concurrency

    # -- orchestration ------------------------------------------------------------------------

    def provision(self) -> Wiring:
        """Create every resource the template's conditions select; the wiring to serve."""
        steps: list[tuple[tuple[str, ...], Callable[[str, dict[str, Any]], None]]] = [
            (("AWS::IAM::Role",), self._role),
            (("AWS::SecretsManager::Secret",), self._secret),
            (("AWS::DynamoDB::Table",), self._table),
            (("AWS::S3::Bucket",), self._bucket),
            (("AWS::SQS::Queue",), self._queue),
            (("AWS::Events::EventBus",), self._event_bus),
            (("AWS::ApiGatewayV2::Api",), self._plan_api),
            (("AWS::Lambda::LayerVersion",), self._layer),
            (("AWS::StepFunctions::StateMachine",), self._plan_state_machine),
            (("AWS::Lambda::Function",), self._plan_function),
            (("AWS::Lambda::Function",), self._function),
            (("AWS::StepFunctions::StateMachine",), self._state_machine),
            (("AWS::SQS::Queue",), self._queue_redrive),
            (("AWS::S3::BucketPolicy",), self._bucket_policy),
            (("AWS::ApiGatewayV2::Api",), self._api_routes),
            (("AWS::Lambda::EventSourceMapping",), self._event_source_mapping),
            (("AWS::Events::Rule",), self._rule),
            (("AWS::SQS::QueuePolicy",), self._queue_policy),  # names the rules it admits
            (("AWS::IAM::Role",), self._role_policies),
        ]
        unknown = set(self._timeout_overrides) - {
            logical_id for logical_id, _ in self._selected(("AWS::Lambda::Function",))
        }
        if unknown:
            raise TemplateError(f"timeout overrides for functions not in the template: {', '.join(sorted(unknown))}")
        handled = {kind for kinds, _ in steps for kind in kinds}
        for kinds, step in steps:
            for logical_id, resource in self._selected(kinds):
                step(logical_id, resource)
        for logical_id, resource in self._template.resources.items():
            kind = resource.get("Type", "")
            if kind in handled or logical_id in self.physical or not self._is_selected(resource):
                continue
            self._other(logical_id, kind, resource)
        self._principals()
        self._rule_deliveries()
        return self.wiring

    def _principals(self) -> None:
        """Each function's key, named with its role's policy, for ``local_iam`` to check; and each
        state machine's role checked against what its states call."""
        policies: dict[str, Policy] = {}
        for key, (logical_id, name, role) in self._function_keys.items():
            if role not in policies:
                policies[role] = self._policy(role)
            self.wiring.principals[key] = Principal(logical_id, name, policies[role])
        refused = []
        for logical_id, (role, needs) in self._machine_needs.items():
            policy = policies.get(role) or self._policy(role)
            refused += [
                f"{logical_id}: its role may not {action} on {resource} ({state})"
                for state, action, resource in needs
                if not policy.decide(action, resource)
            ]
        if refused:
            # moto makes these calls in-process, past the endpoint's check: refused here, or every
            # execution would fail at these states after ``sam deploy`` while passing locally.
            raise TemplateError("state machine permissions missing: " + "; ".join(refused))

    def _rule_deliveries(self) -> None:
        """Each event-pattern rule's queues checked against their queue policies. EventBridge
        sends as ``events.amazonaws.com``, which only the queue's own policy can let in; moto
        delivers regardless, so a rule the policy does not admit is refused here, or its events
        would be dropped after ``sam deploy`` (the rule's ``FailedInvocations``) while passing
        locally."""
        arns = {
            p.attributes["QueueUrl"]: p.attributes["Arn"] for p in self.physical.values() if "QueueUrl" in p.attributes
        }
        policies = {arns.get(url): document for url, document in self._queue_policies.items()}
        refused = []
        for logical_id, (rule_arn, queues) in self._rule_queues.items():
            context = {"aws:SourceArn": rule_arn, "aws:SourceAccount": ACCOUNT_ID}
            for queue in queues:
                allowed, unknown = service_may(
                    policies.get(queue), "events.amazonaws.com", "sqs:SendMessage", queue, context
                )
                self.wiring.unserved.extend(
                    f"{queue}: queue policy statement {sid} (a condition not evaluated locally)" for sid in unknown
                )
                if not allowed:
                    why = "has no queue policy" if queue not in policies else "has a policy that does not admit it"
                    refused.append(f"{logical_id} -> {queue}: the queue {why}")
        if refused:
            raise TemplateError("event rules whose queues may not receive their events: " + "; ".join(refused))

    def _policy(self, role: str) -> Policy:
        """The role's policy for ``local_iam``; what the local check cannot evaluate is reported."""
        policy = Policy.of(role, self._role_documents.get(role, []), self._role_managed.get(role, []))
        self.wiring.unserved.extend(policy.problems)
        return policy

    def _selected(self, kinds: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id, resource in self._template.resources.items():
            if resource.get("Type") in kinds and self._is_selected(resource):
                yield logical_id, resource

    def _is_selected(self, resource: dict[str, Any]) -> bool:
        condition = resource.get("Condition")
        return condition is None or self.resolver.condition(condition)

    def _properties(self, resource: dict[str, Any]) -> dict[str, Any]:
        return self.resolver.resolve(resource.get("Properties") or {})  # type: ignore[no-any-return]

    def _name(self, logical_id: str, *, limit: int = 64, lower: bool = False, with_stack: bool = True) -> str:
        suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(12))
        prefix = f"{self._stack_name}-{logical_id}" if with_stack else logical_id
        name = f"{prefix[: limit - 13]}-{suffix}"
        return name.lower() if lower else name

    def _arn(self, service: str, resource: str, *, region: str = REGION, account: str = ACCOUNT_ID) -> str:
        return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"

    # -- identity and configuration -----------------------------------------------------------

    def _role(self, logical_id: str, resource: dict[str, Any]) -> None:
        # Policies name the resources they grant; they are attached once those exist.
        props = self._properties({"Properties": _without(resource.get("Properties"), "Policies")})
        name = props.get("RoleName") or self._name(logical_id)
        role = self._client("iam").create_role(
            RoleName=name,
            Path=props.get("Path", "/"),
            AssumeRolePolicyDocument=json.dumps(props.get("AssumeRolePolicyDocument") or {}),
        )["Role"]
        self._roles.add(role["Arn"])
        self._role_managed[role["Arn"]] = [str(arn) for arn in props.get("ManagedPolicyArns") or []]
        self.physical[logical_id] = Physical(name, {"Arn": role["Arn"], "RoleId": role["RoleId"]})

    def _role_policies(self, logical_id: str, resource: dict[str, Any]) -> None:
        # Put in moto for inspection; enforced by ``local_iam`` (moto does not enforce IAM here).
        iam = self._client("iam")
        for policy in self.resolver.resolve((resource.get("Properties") or {}).get("Policies") or []):
            document = {"Version": "2012-10-17", **policy["PolicyDocument"]}
            self._role_documents.setdefault(self.physical[logical_id].attributes["Arn"], []).append(document)
            iam.put_role_policy(
                RoleName=self.physical[logical_id].ref,
                PolicyName=policy["PolicyName"],
                PolicyDocument=json.dumps(document),
            )

    def _ensure_role(self, arn: str) -> None:
        """Lambda in moto insists that a function's role exists; create one named by the ARN."""
        if arn in self._roles:
            return
        iam = self._client("iam")
        name = arn.rsplit("/", 1)[-1]
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
        try:
            iam.get_role(RoleName=name)
        except iam.exceptions.NoSuchEntityException:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
        self._roles.add(arn)

    def _secret(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        client = self._client("secretsmanager")
        value = props.get("SecretString")
        if value is None:
            value = self._generated_secret(props.get("GenerateSecretString") or {})
        created = client.create_secret(
            Name=props.get("Name") or self._name(logical_id, with_stack=False),
            SecretString=value,
            Description=props.get("Description", ""),
        )
        self.physical[logical_id] = Physical(created["ARN"], {"Id": created["ARN"]})

    def _generated_secret(self, spec: dict[str, Any]) -> str:
        options = {
            key: spec[key]
            for key in (
                "ExcludeCharacters",
                "ExcludeLowercase",
                "ExcludeNumbers",
                "ExcludePunctuation",
                "ExcludeUppercase",
                "IncludeSpace",
                "RequireEachIncludedType",
            )
            if key in spec
        }
        password = self._client("secretsmanager").get_random_password(
            PasswordLength=int(spec.get("PasswordLength", 32)), **options
        )["RandomPassword"]
        if "SecretStringTemplate" in spec:
            document = json.loads(spec["SecretStringTemplate"])
            document[spec.get("GenerateStringKey", "password")] = password
            return json.dumps(document)
        return str(password)

    # -- state --------------------------------------------------------------------------------

    def _table(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        name = props.get("TableName") or self._name(logical_id, limit=255)
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput", "TableClass"):
            if key in props:
                request[key] = props[key]
        sse = props.get("SSESpecification")
        if sse:
            request["SSESpecification"] = {
                "Enabled": bool(sse.get("SSEEnabled")),
                **({"SSEType": sse["SSEType"]} if "SSEType" in sse else {}),
                **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {}),
            }
        self._report_unserved(logical_id, props, _UNSERVED_TABLE_PROPERTIES)
        client = self._client("dynamodb")
        table = client.create_table(**request)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            client.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
            )
        self.physical[logical_id] = Physical(name, {"Arn": table["TableArn"]})

    def _bucket(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        self._report_unserved(logical_id, props, _UNSERVED_BUCKET_PROPERTIES)
        name = props.get("BucketName") or self._name(logical_id, limit=63, lower=True)
        s3 = self._client("s3")
        s3.create_bucket(Bucket=name)
        if "VersioningConfiguration" in props:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
        encryption = props.get("BucketEncryption")
        if encryption:
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    "Rules": [_encryption_rule(r) for r in encryption["ServerSideEncryptionConfiguration"]]
                },
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "OwnershipControls" in props:
            s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
        notifications = props.get("NotificationConfiguration") or {}
        self._report_unserved(logical_id, notifications, _UNSERVED_NOTIFICATIONS)
        if (notifications.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled"):
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
            )
        lifecycle = props.get("LifecycleConfiguration")
        if lifecycle:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in lifecycle["Rules"]]}
            )
        self.physical[logical_id] = Physical(
            name,
            {
                "Arn": f"arn:{PARTITION}:s3:::{name}",
                "DomainName": f"{name}.s3.{URL_SUFFIX}",
                "RegionalDomainName": f"{name}.s3.{REGION}.{URL_SUFFIX}",
                "DualStackDomainName": f"{name}.s3.dualstack.{REGION}.{URL_SUFFIX}",
                "WebsiteURL": f"http://{name}.s3-website-{REGION}.{URL_SUFFIX}",
            },
        )

    def _bucket_policy(self, logical_id: str, resource: dict[str, Any]) -> None:
        # moto enforces bucket policies, and the local endpoint is plain HTTP: a statement on
        # aws:SecureTransport (deny insecure transport) would refuse every request here.
        props = self._properties(resource)
        self.physical[logical_id] = Physical(props["Bucket"])
        document = dict(props["PolicyDocument"])
        statements = document.get("Statement") or []
        kept = [s for s in statements if "aws:securetransport" not in json.dumps(s.get("Condition", {})).lower()]
        if len(kept) < len(statements):
            LOG.info("%s: statements on aws:SecureTransport left out locally (plain HTTP)", logical_id)
        if kept:
            document["Statement"] = kept
            self._client("s3").put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(document))

    def _queue(self, logical_id: str, resource: dict[str, Any]) -> None:
        # The redrive policy names other queues; it is set once they all exist.
        props = self._properties({"Properties": _without(resource.get("Properties"), "RedrivePolicy")})
        fifo = bool(props.get("FifoQueue"))
        name = props.get("QueueName") or (self._name(logical_id, limit=75 if fifo else 80) + (".fifo" if fifo else ""))
        attributes = {
            key: _sqs_attribute(props[key])
            for key in (
                "DelaySeconds",
                "MaximumMessageSize",
                "MessageRetentionPeriod",
                "ReceiveMessageWaitTimeSeconds",
                "VisibilityTimeout",
                "FifoQueue",
                "ContentBasedDeduplication",
                "DeduplicationScope",
                "FifoThroughputLimit",
                "KmsMasterKeyId",
                "KmsDataKeyReusePeriodSeconds",
                "SqsManagedSseEnabled",
            )
            if key in props
        }
        url = self._client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self._arn("sqs", name)
        self.physical[logical_id] = Physical(url, {"Arn": arn, "QueueName": name, "QueueUrl": url})

    def _queue_redrive(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = resource.get("Properties") or {}
        attributes = {}
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in props:
                attributes[key] = json.dumps(self.resolver.resolve(props[key]))
        if attributes:
            self._client("sqs").set_queue_attributes(QueueUrl=self.physical[logical_id].ref, Attributes=attributes)

    def _event_bus(self, logical_id: str, resource: dict[str, Any]) -> None:
        # PutEvents is moto's; what is put is recorded by reelay_local.event_bus. Rules on the bus
        # are reported by ``_rule`` (only schedules are served).
        props = self._properties(resource)
        name = props.get("Name") or self._name(logical_id, limit=256)
        self._report_unserved(logical_id, props, ("EventSourceName", "KmsKeyIdentifier", "DeadLetterConfig"))
        arn = self._client("events").create_event_bus(Name=name)["EventBusArn"]
        self.physical[logical_id] = Physical(name, {"Arn": arn, "Name": name})
        self.wiring.event_buses[logical_id] = name

    # -- compute ------------------------------------------------------------------------------

    def _layer(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        name = props.get("LayerName") or logical_id
        arn = self._arn("lambda", f"layer:{name}:1")
        content = self._template.artifact(props.get("Content") or {}, owner=logical_id)
        # A built layer keeps Python packages under python/; a source layer (SAM builds it) at the top.
        self._layer_dirs[arn] = content / "python" if (content / "python").is_dir() else content
        self.physical[logical_id] = Physical(arn, {"LayerVersionArn": arn})

    def _plan_api(self, logical_id: str, resource: dict[str, Any]) -> None:
        api_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
        self._api_urls[api_id] = self._gateway_url
        self.physical[logical_id] = Physical(api_id, {"ApiEndpoint": self._gateway_url, "ApiId": api_id})

    def _plan_state_machine(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = resource.get("Properties") or {}
        name = self.resolver.resolve(props.get("StateMachineName")) or self._name(
            logical_id, limit=80, with_stack=False
        )
        arn = self._arn("states", f"stateMachine:{name}")
        self.physical[logical_id] = Physical(arn, {"Arn": arn, "Name": name, "StateMachineRevisionId": "INITIAL"})

    def _plan_function(self, logical_id: str, resource: dict[str, Any]) -> None:
        # Named before any function is created, so environments may name any function.
        raw = resource.get("Properties") or {}
        name = self.resolver.resolve(raw.get("FunctionName")) or self._name(logical_id)
        self.physical[logical_id] = Physical(name, {"Arn": self._arn("lambda", f"function:{name}")})

    def _function(self, logical_id: str, resource: dict[str, Any]) -> None:
        name = self.physical[logical_id].ref
        arn = self.physical[logical_id].attributes["Arn"]
        props = self._properties(resource)
        if props.get("PackageType") == "Image":
            self.wiring.unserved.append(f"{logical_id}: container image functions")
            return
        code_dir = self._template.artifact(props.get("Code") or {}, owner=logical_id)
        variables = self._template_variables(props)
        measured = json.dumps(variables, separators=(",", ":"))
        if len(measured.encode()) > ENVIRONMENT_MAX_BYTES:
            # CreateFunction's refusal: the deploy of this template would fail.
            raise TemplateError(
                f"{logical_id}: Lambda was unable to configure your environment variables because the environment "
                f"variables you have provided exceeded the 4KB limit ({len(measured.encode())} bytes: "
                f"{', '.join(sorted(variables, key=lambda k: -len(variables[k]))[:3])} are the largest)"
            )
        timeout = float(self._timeout_overrides.get(logical_id, props.get("Timeout", 3)))
        memory_size = int(props.get("MemorySize", 128))
        if "ReservedConcurrentExecutions" in props:
            self._reserved_concurrency[logical_id] = int(props["ReservedConcurrentExecutions"])
        handler = props.get("Handler", "app.lambda_handler")
        role = props.get("Role") or self._arn("iam", "role/reelay-local-function", region="")
        self._ensure_role(role)
        key = function_key(logical_id)
        self._function_keys[key] = (logical_id, name, role)
        self._client("lambda").create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", "python3.13"),
            Role=role,
            Handler=handler,
            Code={"ZipFile": _placeholder_zip()},
            Timeout=max(1, round(timeout)),
            MemorySize=memory_size,
            # What GetFunctionConfiguration shows in AWS: the template's variables only.
            Environment={"Variables": variables},
            Architectures=props.get("Architectures", ["x86_64"]),
        )
        layer_dirs = []
        for layer in props.get("Layers") or []:
            if layer in self._layer_dirs:
                layer_dirs.append(self._layer_dirs[layer])
            else:
                LOG.warning("%s: layer %s is not part of the template; not on the local path", logical_id, layer)
        self.wiring.functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=arn,
            code_dir=code_dir,
            handler=handler,
            runtime=props.get("Runtime", "python3.13"),
            timeout=timeout,
            memory_size=memory_size,
            environment={
                **variables,
                **self._lambda_environment(name, handler, code_dir, timeout, memory_size, props),
                **self._runtime_environment,
                # The function's own credentials: its calls are checked against its role.
                "AWS_ACCESS_KEY_ID": key,
            },
            layer_dirs=tuple(layer_dirs),
        )

    def _lambda_environment(
        self, name: str, handler: str, code_dir: Path, timeout: float, memory_size: int, props: dict[str, Any]
    ) -> dict[str, str]:
        """What the Lambda runtime sets in every sandbox (reserved: the template cannot set them)."""
        return {
            "_HANDLER": handler,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{props.get('Runtime', 'python3.13')}",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            # Not set by the deployed runtime; `sam local` sets it, and a timeout is worth seeing.
            "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{timeout:g}",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "LANG": "en_US.UTF-8",
            "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "TZ": ":UTC",
        }

    def _template_variables(self, props: dict[str, Any]) -> dict[str, str]:
        """The function's ``Environment.Variables`` (Globals merged by SAM), then the overrides."""
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        environment: dict[str, str] = {}
        for key, value in variables.items():
            text = (
                value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
            for api_id, url in self._api_urls.items():
                # The API's AWS URL (e.g. CALLBACK_BASE_URL) is the local gateway here.
                text = text.replace(f"https://{api_id}.execute-api.{REGION}.{URL_SUFFIX}", url)
            environment[key] = text
        environment.update(self._overrides)
        return environment

    def _state_machine(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        planned = self.physical[logical_id]
        if "DefinitionS3Location" in props:
            definition = self._template.artifact(props["DefinitionS3Location"], owner=logical_id).read_text()
        elif "DefinitionString" in props:
            definition = str(props["DefinitionString"])
        elif "Definition" in props:
            definition = json.dumps(props["Definition"])
        else:
            raise TemplateError(f"{logical_id}: state machine without a definition")
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            definition = definition.replace("${" + key + "}", str(value))
        role = props.get("RoleArn") or self._arn("iam", "role/reelay-local-states", region="")
        tracing = bool((props.get("TracingConfiguration") or {}).get("Enabled"))
        needs, unknown = state_machine_needs(json.loads(definition), tracing=tracing, region=REGION)
        self._machine_needs[logical_id] = (str(role), needs)
        self.wiring.unserved.extend(f"{logical_id}: its role is not checked for {state}" for state in unknown)
        created = self._client("stepfunctions").create_state_machine(
            name=planned.attributes["Name"],
            definition=definition,
            roleArn=role,
            type=props.get("StateMachineType", "STANDARD"),
        )
        if created["stateMachineArn"] != planned.ref:
            raise TemplateError(f"{logical_id}: moto named the state machine {created['stateMachineArn']}")
        self.wiring.state_machines[logical_id] = planned.ref

    # -- wiring -------------------------------------------------------------------------------

    def _api_routes(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        api_id = self.physical[logical_id].ref
        stage = "$default"
        for _, stage_resource in self._template.of_type("AWS::ApiGatewayV2::Stage"):
            stage_props = stage_resource.get("Properties") or {}
            if stage_props.get("ApiId") == {"Ref": logical_id}:
                stage = self.resolver.resolve(stage_props.get("StageName", "$default"))
        body = props.get("Body")
        if body is None:
            self.wiring.unserved.append(f"{logical_id}: HTTP API without an inline OpenAPI body")
            return
        self.wiring.routes.extend(routes_from_body(api_id, body, self._function_of_uri, stage=stage))

    def _function_of_uri(self, uri: str) -> str | None:
        # arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<function arn>/invocations
        if "/functions/" not in uri:
            return None
        return self._function_of_arn(uri.split("/functions/", 1)[1].rsplit("/invocations", 1)[0])

    def _function_of_arn(self, arn: str) -> str:
        for logical_id, spec in self.wiring.functions.items():
            if arn in (spec.arn, spec.name):
                return logical_id
        raise TemplateError(f"{arn} is not a function of the template")

    def _event_source_mapping(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        source = str(props.get("EventSourceArn", ""))
        function = self._function_of_arn(str(props["FunctionName"]))
        self.physical[logical_id] = Physical(self._name(logical_id, with_stack=False))
        if ":sqs:" not in source:
            self.wiring.unserved.append(f"{logical_id}: event source {source or props} (only SQS is served)")
            return
        if props.get("FilterCriteria"):
            self.wiring.unserved.append(f"{logical_id}: FilterCriteria on an SQS mapping")
            return
        queue_name = source.rsplit(":", 1)[1]
        queue_url = next(p.ref for p in self.physical.values() if p.attributes.get("QueueName") == queue_name)
        scaling = props.get("ScalingConfig") or {}
        # Batches in flight at once: the mapping's MaximumConcurrency, never above the function's
        # reserved concurrency (Lambda runs no more than that), 4 when neither is set, at most 16.
        reserved = self._reserved_concurrency.get(function)
        concurrency = int(scaling.get("MaximumConcurrency", reserved or 4))
        if reserved is not None:
            concurrency = min(concurrency, reserved)
        self.wiring.queue_mappings.append(
            QueueMapping(
                logical_id=logical_id,
                function=function,
                queue_url=queue_url,
                queue_arn=source,
                batch_size=int(props.get("BatchSize", 10)),
                batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                max_concurrency=max(1, min(concurrency, 16)),
                enabled=bool(props.get("Enabled", True)),
            )
        )

    def _rule(self, logical_id: str, resource: dict[str, Any]) -> None:
        props = self._properties(resource)
        name = props.get("Name") or self._name(logical_id)
        bus = props.get("EventBusName", "default")
        bus = bus.rsplit("/", 1)[-1] if bus.startswith("arn:") else bus
        arn = self._arn("events", f"rule/{name}" if bus == "default" else f"rule/{bus}/{name}")
        self.physical[logical_id] = Physical(name, {"Arn": arn})
        if "ScheduleExpression" not in props:
            self._pattern_rule(logical_id, name, bus, props)
            return
        for target in props.get("Targets") or []:
            target_arn = str(target.get("Arn", ""))
            if ":lambda:" not in target_arn:
                self.wiring.unserved.append(f"{logical_id}: schedule target {target_arn} (only functions are served)")
                continue
            self.wiring.schedules.append(
                ScheduleSpec(
                    logical_id,
                    arn,
                    props["ScheduleExpression"],
                    function=self._function_of_arn(target_arn),
                    input=json.loads(target["Input"]) if "Input" in target else None,
                    enabled=props.get("State", "ENABLED") == "ENABLED",
                )
            )

    def _pattern_rule(self, logical_id: str, name: str, bus: str, props: dict[str, Any]) -> None:
        """An event-pattern rule with SQS targets, created in moto, which matches and delivers.

        EventBridge delivers at least once: with ``event_copies`` > 1 each target is added that
        many times, so every matching event arrives that many times (tests of idempotency).
        """
        targets = props.get("Targets") or []
        served = [t for t in targets if ":sqs:" in str(t.get("Arn", ""))]
        for target in targets:
            if target not in served:
                self.wiring.unserved.append(f"{logical_id}: event-pattern target {target.get('Arn')} (only SQS)")
        if bus != "default":
            self.wiring.unserved.append(f"{logical_id}: rules on bus {bus} (only the default bus gets S3 events)")
            return
        events = self._client("events")
        events.put_rule(
            Name=name,
            EventPattern=json.dumps(props["EventPattern"]),
            State=props.get("State", "ENABLED"),
            Description=props.get("Description", ""),
        )
        copies = [
            {"Id": f"{t['Id']}-{n}"[:64] if n else t["Id"], "Arn": t["Arn"]}
            for t in served
            for n in range(self._event_copies)
        ]
        if copies:
            events.put_targets(Rule=name, Targets=copies)
        rule_arn = self.physical[logical_id].attributes["Arn"]
        self._rule_queues[logical_id] = (rule_arn, [str(t["Arn"]) for t in served])

    def _queue_policy(self, logical_id: str, resource: dict[str, Any]) -> None:
        # moto does not enforce who may send to a queue: ``_rule_deliveries`` checks the rules'.
        props = self._properties(resource)
        for url in props.get("Queues") or []:
            self._queue_policies[str(url)] = dict(props["PolicyDocument"])
            self._client("sqs").set_queue_attributes(
                QueueUrl=url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", **props["PolicyDocument"]})}
            )
        self.physical[logical_id] = Physical(self._name(logical_id, with_stack=False))

    def _report_unserved(self, logical_id: str, props: dict[str, Any], keys: tuple[str, ...]) -> None:
        for key in keys:
            if props.get(key):
                self.wiring.unserved.append(f"{logical_id}: {key} is not emulated locally")

    def _other(self, logical_id: str, kind: str, resource: dict[str, Any]) -> None:
        if kind not in _PASSIVE_TYPES:
            # Only a placeholder id: whatever the resource would do in AWS does not happen here.
            self.wiring.unserved.append(f"{logical_id}: {kind} has no local counterpart")
        if kind == "AWS::ApiGatewayV2::Stage":
            props = self._properties(resource)
            self.physical[logical_id] = Physical(props.get("StageName", "$default"))
            return
        name = self._name(logical_id)
        self.physical[logical_id] = Physical(name, {"Arn": self._arn("local", name)})


def _without(properties: dict[str, Any] | None, key: str) -> dict[str, Any]:
    return {k: v for k, v in (properties or {}).items() if k != key}


def _sqs_attribute(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the S3 API's shape."""
    converted: dict[str, Any] = {"ID": rule.get("Id", "rule"), "Status": rule.get("Status", "Enabled")}
    prefix = rule.get("Prefix")
    converted["Filter"] = {"Prefix": prefix or ""}
    if "AbortIncompleteMultipartUpload" in rule:
        converted["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    if "ExpirationInDays" in rule:
        converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpirationInDays" in rule:
        converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpirationInDays"])}
    if "Transitions" in rule:
        converted["Transitions"] = [
            {"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]} for t in rule["Transitions"]
        ]
    return converted


def _encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    if "ServerSideEncryptionByDefault" in rule:
        converted["ApplyServerSideEncryptionByDefault"] = rule["ServerSideEncryptionByDefault"]
    if "BucketKeyEnabled" in rule:
        converted["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
    return converted


def _placeholder_zip() -> bytes:
    """moto stores code but never runs it here; the handlers run from the repository."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "reelay local stack: this function runs in-process from the repository.\n")
    return buffer.getvalue()
