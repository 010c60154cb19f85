"""moto in server mode, in this process, on a free loopback port.

The server runs in a thread of this process, so the local stack can hook moto's Lambda
execution (see ``lambda_runtime``) and read the few internals it needs (an SQS message's
visibility deadline) directly.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer

from reelay_local.template import ACCOUNT_ID, REGION

LOG = logging.getLogger(__name__)

# Loggers whose chatter drowns a run, and the level they keep: access logs and interpreter
# notes go; errors stay, except the parser's dump of every failed execution (a failed
# execution is an outcome the application expects; its history holds the reason).
_NOISY_LOGGERS = {
    "werkzeug": logging.ERROR,
    "moto": logging.ERROR,
    "botocore.credentials": logging.ERROR,
    "moto.stepfunctions.parser": logging.CRITICAL,
}


class MotoServer:
    """A ``ThreadedMotoServer`` on 127.0.0.1 with Step Functions execution switched on."""

    def __init__(self) -> None:
        self._server: ThreadedMotoServer | None = None
        self._port = 0
        self._saved_sfn_config: dict[str, Any] | None = None
        self._saved_levels: dict[str, int] = {}
        self._restore_fixes: list[Callable[[], None]] = []

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> str:
        """Start the server and enable state machine execution; the endpoint URL."""
        for name, level in _NOISY_LOGGERS.items():
            logger = logging.getLogger(name)
            self._saved_levels[name] = logger.level
            logger.setLevel(level)
        self._install_fixes()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self._port = self._server.get_host_and_port()[1]
        self._saved_sfn_config = dict(default_user_config.get("stepfunctions", {}))
        # Without this, moto stores state machines but never runs them.
        self._post("/moto-api/config", {"stepfunctions": {"execute_state_machine": True}})
        if not default_user_config.get("stepfunctions", {}).get("execute_state_machine"):
            raise RuntimeError("moto did not accept stepfunctions.execute_state_machine")
        return self.endpoint

    def stop(self) -> None:
        """Forget every resource, restore moto's configuration and stop the server."""
        if self._server is None:
            return
        try:
            self._post("/moto-api/reset", {})
            self._post("/moto-api/config", {"stepfunctions": self._saved_sfn_config or {}})
        except OSError:
            LOG.exception("could not reset moto before stopping it")
        self._server.stop()
        self._server = None
        while self._restore_fixes:
            self._restore_fixes.pop()()
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)

    def _install_fixes(self) -> None:
        """Where moto's behaviour differs from AWS in a way the application would notice."""
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend

        original = StepFunctionsParserBackend.start_execution

        def start_execution(backend: Any, state_machine_arn: str, name: str | None = None, *args: Any) -> Any:
            # moto names an unnamed execution "None", so a second one "already exists";
            # Step Functions gives each a fresh UUID.
            return original(backend, state_machine_arn, name or str(uuid.uuid4()), *args)

        StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign,assignment]

        def restore() -> None:
            StepFunctionsParserBackend.start_execution = original  # type: ignore[method-assign]

        self._restore_fixes.append(restore)

        # moto checks a DynamoDB condition and then writes in plain Python, with nothing between
        # the server's request threads: two conditional writes racing can both pass, and a read
        # can see an item half-updated. DynamoDB makes each request atomic (a conditional write,
        # a transaction), and reelay's exactly-once rules rest on that: each DynamoDB request is
        # served under one lock, so the local stack's races are reelay's, not moto's.
        from moto.dynamodb.responses import DynamoHandler

        served = DynamoHandler.call_action
        lock = threading.Lock()

        def call_action(handler: Any) -> Any:
            with lock:
                return served(handler)

        DynamoHandler.call_action = call_action  # type: ignore[method-assign]

        def restore_dynamodb() -> None:
            DynamoHandler.call_action = served  # type: ignore[method-assign]

        self._restore_fixes.append(restore_dynamodb)

        # moto's server finds the service of every request by listing its own package directory
        # (``os.listdir`` and an ``isdir`` per service, ~200 ``stat`` calls, ≈5 ms a request
        # here). The list never changes while it runs: read it once. Only speed changes, and
        # only the local AWS's: the Lambda durations the local stack measures (make cost) carry
        # less of moto's latency, which real AWS does not have.
        from moto import backends

        listed = backends.list_of_moto_modules
        modules = tuple(listed())
        backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]

        def restore_listing() -> None:
            backends.list_of_moto_modules = listed  # type: ignore[assignment]

        self._restore_fixes.append(restore_listing)

    def message_visible_at(self, queue_name: str, message_id: str) -> float | None:
        """When an in-flight SQS message becomes visible again (epoch ms), or None if it is gone.

        SQS has no API to read a message's visibility; the pollers use this to tell whether a
        handler backed a message off itself (ChangeMessageVisibility) before they reschedule it.
        """
        from moto.sqs.models import sqs_backends

        try:
            queue = sqs_backends[ACCOUNT_ID][REGION].get_queue(queue_name)
        except Exception:  # the queue is gone: nothing to reschedule
            return None
        for message in list(queue._messages):  # no public accessor exists
            if message.id == message_id:
                return float(message.visible_at)
        return None

    def _post(self, path: str, body: dict[str, Any]) -> bytes:
        request = urllib.request.Request(
            self.endpoint + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return bytes(response.read())
