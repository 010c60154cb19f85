"""``LocalStack``: template.yaml served on loopback, with the real handlers, and no Docker.

Start-up, in order: translate the template (aws-sam-translator), start moto in server mode,
point this process's AWS SDK at it, bind the gateway's port (its URL is the API's URL), create
the resources from the template, import every handler with exactly its own environment, then
start the gateway, the SQS pollers and the schedules.

Handlers run in this process, each as a sandbox of its own (``sandbox``): inside a function,
``os.environ`` is that function's environment alone, at import and at every call, and its boto3
default session signs with the function's own access key, which ``local_iam`` checks at the
endpoint against the function's role, so a call the template does not allow fails here as it
would after ``sam deploy``. The process's own environment (the local stack, the tests) keeps
only the endpoint, the stack's own fake credentials, the region and ``MOTO_PORT``, never one
function's variables. One ``LocalStack`` runs at a time in a process, and ``stop()`` puts the
environment back as it found it.

A handler that runs past its timeout is stopped and fails as in AWS (``Sandbox.Timedout``);
``timeouts`` lists every such invocation, for tests to fail on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import boto3

from reelay_local.event_bus import BusRecorder
from reelay_local.event_sources import QueueMapping, ScheduleSpec, ScheduleTimer, SqsPoller
from reelay_local.gateway import Gateway, Route
from reelay_local.lambda_runtime import FunctionRuntime, FunctionSpec, TimedOutInvocation
from reelay_local.local_iam import EndpointCheck, LocalIam
from reelay_local.local_jwt import LocalJwtIssuer
from reelay_local.moto_server import MotoServer
from reelay_local.provisioner import Provisioner, Wiring
from reelay_local.template import ACCOUNT_ID, REGION, CloudTemplate, TemplateError, translate

LOG = logging.getLogger(__name__)

# The services the local stack and the handlers make clients of.
_WARM_SERVICES = ("dynamodb", "s3", "sqs", "stepfunctions", "secretsmanager", "lambda", "iam", "events")


class LocalStack:
    """The application of ``repo_root/template.yaml``, running locally against moto.

    ``env_overrides`` are added to every function's environment (and win over the template's);
    ``parameter_overrides`` set template parameters; ``timeout_overrides`` (function logical id
    -> seconds) shorten or lengthen a function's template ``Timeout``; ``schedule_speedup`` makes
    schedules fire that many times sooner; a failed SQS message is redelivered after
    ``redelivery_seconds`` instead of the queue's (long) visibility timeout. With ``jwt_issuer``
    the gateway enforces the routes' JWT authorizers against that local issuer. Every event put on
    the template's buses is kept (``bus_events``) and, with ``events_file``, appended to it as a
    JSON line (``reelay_local.event_bus``). EventBridge
    delivers at least once: ``event_copies`` delivers every event-pattern rule's events (the S3
    manifest arrivals) that many times to each target.
    """

    _active: ClassVar[LocalStack | None] = None  # os.environ is per process: one stack at a time
    _active_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        repo_root: Path,
        *,
        api_port: int = 0,
        env_overrides: dict[str, str] | None = None,
        schedule_speedup: float = 1.0,
        parameter_overrides: dict[str, str] | None = None,
        timeout_overrides: Mapping[str, float] | None = None,
        template: str = "template.yaml",
        stack_name: str = "reelay-local",
        redelivery_seconds: int = 2,
        jwt_issuer: LocalJwtIssuer | None = None,
        events_file: Path | None = None,
        event_copies: int = 1,
    ) -> None:
        if schedule_speedup <= 0:
            raise ValueError("schedule_speedup must be positive")
        self.repo_root = Path(repo_root).resolve()
        self._template_path = self.repo_root / template
        self._api_port = api_port
        self._env_overrides = dict(env_overrides or {})
        self._parameter_overrides = dict(parameter_overrides or {})
        self._timeout_overrides = dict(timeout_overrides or {})
        self._schedule_speedup = schedule_speedup
        self._stack_name = stack_name
        self._redelivery_seconds = redelivery_seconds
        self._jwt_issuer = jwt_issuer
        self._bus = BusRecorder(set(), events_file=Path(events_file) if events_file else None)
        self._event_copies = event_copies
        self._moto = MotoServer()
        self._runtime: FunctionRuntime | None = None
        self._gateway: Gateway | None = None
        self._wiring = Wiring()
        self._resources: dict[str, Any] = {}
        self._template: CloudTemplate | None = None
        self._pollers: list[SqsPoller] = []
        self._timers: list[ScheduleTimer] = []
        self._saved_environ: dict[str, str | None] = {}
        self._saved_session: boto3.session.Session | None = None
        self._iam: LocalIam | None = None
        self._endpoint_check: EndpointCheck | None = None
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Build and start everything; raises (after cleaning up) if the template cannot be served."""
        with LocalStack._active_lock:
            if LocalStack._active is not None:
                raise RuntimeError("another LocalStack is running in this process; stop it first")
            LocalStack._active = self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._started = True
        self._template = translate(self._template_path, self._parameter_overrides, stack_name=self._stack_name)
        endpoint = self._moto.start()
        # The local stand-ins for what a function gets from AWS: the endpoint (moto), credentials
        # (fake; each function's own access key is added by the provisioner), the region. Each
        # function's environment carries them; the process keeps them too, for the local stack's
        # own clients (and the tests').
        runtime_environment = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "MOTO_PORT": str(self._moto.port),
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
            # No CloudWatch locally: EMF records (reelay.metrics) would only be noise on stdout.
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
        self._set_environ({**runtime_environment, "AWS_PROFILE": None})
        self._saved_session = boto3.DEFAULT_SESSION
        boto3.setup_default_session()
        for service in _WARM_SERVICES:
            # Builds botocore's caches once, here; creating clients concurrently from a cold
            # default session is not thread-safe, and the handlers will do just that.
            boto3.client(service)
        self._runtime = FunctionRuntime()
        self._gateway = Gateway(self._runtime.invoke, port=self._api_port, jwt_issuer=self._jwt_issuer)
        provisioner = Provisioner(
            self._template,
            boto3.client,
            stack_name=self._stack_name,
            gateway_url=self._gateway.url,
            function_overrides=self._env_overrides,
            runtime_environment=runtime_environment,
            timeout_overrides=self._timeout_overrides,
            event_copies=self._event_copies,
        )
        self._wiring = provisioner.provision()
        self._bus.bus_names = set(self._wiring.event_buses.values())
        self._bus.install()
        self._resources = {logical_id: physical.ref for logical_id, physical in provisioner.physical.items()}
        self._iam = LocalIam(
            self._wiring.principals,
            secret_arn=self._secret_arn,
            object_exists=self._moto.object_exists,
            secret_key=runtime_environment["AWS_SECRET_ACCESS_KEY"],
        )
        self._endpoint_check = EndpointCheck(self._iam)
        self._endpoint_check.install()
        for problem in self._wiring.unserved:
            LOG.warning("not served locally: %s", problem)
        for spec in self._wiring.functions.values():
            self._runtime.load(spec)
        self._runtime.install_moto_hooks()
        self._gateway.add_routes(self._wiring.routes)
        if "ApiKeyTable" in self._resources:
            # What an admin does in AWS (writes the key table), offered locally at /_reelay/keys.
            from reelay.apikeys import ApiKeys
            from reelay.aws import ApiKeyTable

            self._gateway.keys = ApiKeys(ApiKeyTable(str(self._resources["ApiKeyTable"])))  # type: ignore[arg-type]
        self._gateway.start()
        sqs = boto3.client("sqs")
        self._pollers = [
            SqsPoller(
                mapping,
                sqs=sqs,
                runtime=self._runtime,
                visible_at=self._moto.message_visible_at,
                redelivery_seconds=self._redelivery_seconds,
            )
            for mapping in self._wiring.queue_mappings
        ]
        self._timers = [ScheduleTimer(s, self._runtime, speedup=self._schedule_speedup) for s in self._wiring.schedules]
        for source in self._event_sources():
            source.start()

    def stop(self) -> None:
        """Stop every thread and server, forget moto's state and restore ``os.environ``."""
        if not self._started:
            with LocalStack._active_lock:
                if LocalStack._active is self:
                    LocalStack._active = None
            return
        for source in self._event_sources():
            source.stop()
        if self._gateway is not None:
            self._gateway.stop()
        with contextlib.suppress(Exception):
            self._stop_executions()
        if self._runtime is not None and not self._runtime.wait_idle(timeout=10):
            LOG.warning("handlers still running while the local stack stops")
        if self._runtime is not None:
            self._runtime.close()
        if self._endpoint_check is not None:
            self._endpoint_check.uninstall()
            self._endpoint_check = None
        self._moto.stop()
        self._bus.restore()
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ.clear()
        boto3.DEFAULT_SESSION = self._saved_session
        self._saved_session = None
        self._started = False
        with LocalStack._active_lock:
            if LocalStack._active is self:
                LocalStack._active = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @classmethod
    def running(cls) -> LocalStack | None:
        """The stack running in this process, if any (for test fixtures that watch it)."""
        with cls._active_lock:
            return cls._active

    # -- what runs ----------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The local HTTP API: client routes and the provider callback route."""
        return self._require(self._gateway).url

    @property
    def aws_endpoint(self) -> str:
        """moto's endpoint (also this process's ``AWS_ENDPOINT_URL`` while the stack runs)."""
        return self._moto.endpoint

    @property
    def iam(self) -> LocalIam:
        """The functions' roles as enforced at the endpoint, and the requests refused so far."""
        return self._require(self._iam)

    def _secret_arn(self, name: str) -> str:
        """A secret's ARN from its name (a policy names the ARN, a caller may name the secret)."""
        for logical_id, _ in self._require(self._template).of_type("AWS::SecretsManager::Secret"):
            arn = str(self._resources.get(logical_id, ""))
            if arn.rsplit(":", 1)[-1].rsplit("-", 1)[0] == name:
                return arn
        return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{name}"

    @property
    def bucket(self) -> str:
        """The physical name of ``ResultsBucket``."""
        return str(self._resources["ResultsBucket"])

    @property
    def resources(self) -> Mapping[str, Any]:
        """Logical id -> the resource's ``Ref`` value (name, URL or ARN, as CloudFormation's)."""
        return dict(self._resources)

    @property
    def template(self) -> CloudTemplate:
        """The translated template the stack was built from."""
        return self._require(self._template)

    @property
    def functions(self) -> Mapping[str, FunctionSpec]:
        """Logical id -> the function as it runs locally (name, ARN, handler, timeout, environment).

        ``environment`` is the whole of what the function's handler sees: its template
        variables with the overrides, the Lambda runtime's variables and the local endpoint.
        """
        return dict(self._wiring.functions)

    @property
    def routes(self) -> list[Route]:
        return list(self._wiring.routes)

    @property
    def queue_mappings(self) -> list[QueueMapping]:
        return list(self._wiring.queue_mappings)

    @property
    def schedules(self) -> list[ScheduleSpec]:
        return list(self._wiring.schedules)

    @property
    def schedule_fire_counts(self) -> dict[str, int]:
        """Logical id of each schedule -> how many times it has fired so far."""
        return {timer.spec.logical_id: timer.fired for timer in self._timers}

    @property
    def state_machines(self) -> Mapping[str, str]:
        """Logical id -> ARN of every state machine (created in moto, executing for real)."""
        return dict(self._wiring.state_machines)

    @property
    def bus_events(self) -> list[dict[str, Any]]:
        """Every event put on the template's buses so far, as EventBridge delivers it to a target."""
        return list(self._bus.events)

    @property
    def event_buses(self) -> Mapping[str, str]:
        """Logical id -> name of every EventBridge bus of the template."""
        return dict(self._wiring.event_buses)

    @property
    def timeouts(self) -> list[TimedOutInvocation]:
        """Every invocation stopped at its function's timeout so far (function, timeout, thread)."""
        return self._runtime.timeouts if self._runtime is not None else []

    @property
    def unserved(self) -> list[str]:
        """What the template wires up that the local stack cannot serve (empty when all is)."""
        return list(self._wiring.unserved)

    def invoke(self, logical_function_id: str, event: dict[str, Any]) -> Any:
        """Run a function's real handler in-process, synchronously; its result (usually a dict).

        A handler's exception propagates, as the caller of a synchronous invoke would see it;
        past the function's timeout, ``FunctionTimedOut`` (``Sandbox.Timedout``) does.
        """
        return self._require(self._runtime).invoke(logical_function_id, event)

    def drain(self, timeout: float = 30.0, *, executions: bool = False) -> None:
        """Wait until every served queue is empty and no handler runs or waits to run.

        With ``executions=True``, also wait until no state machine execution is running.
        Raises ``TimeoutError`` naming what is still busy.
        """
        runtime = self._require(self._runtime)
        deadline = time.monotonic() + timeout
        busy: list[str] = []
        while time.monotonic() < deadline:
            before = runtime.idle_generation()
            busy = [] if before is not None else ["handlers running"]
            if not busy:
                busy = self._busy_queues() + (self._running_executions() if executions else [])
            if not busy and runtime.idle_generation() == before:
                return
            time.sleep(0.05)
        raise TimeoutError(f"local stack still busy after {timeout}s: {', '.join(busy)}")

    # -- internals ----------------------------------------------------------------------------

    def _event_sources(self) -> list[SqsPoller | ScheduleTimer]:
        return [*self._timers, *self._pollers]

    def _busy_queues(self) -> list[str]:
        sqs = boto3.client("sqs")
        urls = {m.queue_url for m in self._wiring.queue_mappings}
        busy = []
        for url in sorted(urls):
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(v) for v in attributes.values()):
                busy.append(f"queue {url.rsplit('/', 1)[-1]} {attributes}")
        return busy

    def _running_executions(self) -> list[str]:
        sfn = boto3.client("stepfunctions")
        running = []
        for arn in self._wiring.state_machines.values():
            for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
                running.append(f"execution {execution['name']}")
        return running

    def _stop_executions(self) -> None:
        sfn = boto3.client("stepfunctions")
        for arn in self._wiring.state_machines.values():
            for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]:
                sfn.stop_execution(executionArn=execution["executionArn"], cause="local stack stopped")

    def _set_environ(self, values: Mapping[str, str | None]) -> None:
        for key, value in values.items():
            if key not in self._saved_environ:
                self._saved_environ[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    @staticmethod
    def _require(value: Any) -> Any:
        if value is None:
            raise RuntimeError("the local stack is not started")
        return value


__all__ = ["LocalStack", "TemplateError"]
