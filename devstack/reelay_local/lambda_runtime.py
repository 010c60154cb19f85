"""The functions' real handlers, run in this process instead of moto's Docker containers.

``FunctionRuntime`` imports each function's handler module and invokes it as that function's
``sandbox.Sandbox``: ``os.environ`` is exactly the function's environment at import and at every
call (functions validate their settings at import, so a variable the template gives only to
another function is missing here as it would be in AWS), and its boto3 default session and
Powertools Parameters providers are its own. It invokes a handler with a Lambda-like context in
a thread of its own, and stops it at its timeout as Lambda does. It
takes over moto's Lambda execution so that everything moto itself invokes (Step Functions tasks,
``lambda.invoke``) runs the same handlers:

- ``LambdaFunction._invoke_lambda`` (returns ``(payload_json, errored, logs)``) calls the handler;
  an exception becomes the error payload Lambda returns (``errorType`` = the exception's class
  name, ``Sandbox.Timedout`` past the timeout), which is what Step Functions ``Retry``/``Catch``
  match on.
- ``LambdaFunction.invoke`` with ``InvocationType=Event`` is queued and answered at once, as
  Lambda does, instead of running inside the caller's request.

Lambda's payload quotas hold for every invocation: an event over 6 MB is refused before the
handler runs (``RequestTooLarge``), an answer over 6 MB fails it (``Function.ResponseSizeTooLarge``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType, SimpleNamespace
from typing import Any, ClassVar

from reelay_local import sandbox
from reelay_local.sandbox import Sandbox

LOG = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Any]

# Lambda retries a failed asynchronous invocation twice; locally the pauses are short.
ASYNC_RETRY_DELAYS = (1.0, 2.0)
# Lambda's payload quotas of a synchronous invocation, as it counts them: the event's JSON at
# most 6,291,456 bytes, the answer's 6,291,556 (API Gateway base64-encodes a binary body into the
# event, so a body of 4.7 MB is already too much).
REQUEST_MAX_BYTES = 6 * 1024 * 1024
RESPONSE_MAX_BYTES = 6 * 1024 * 1024 + 100


class FunctionNotFound(KeyError):
    """No function of the local stack has this logical id, name or ARN."""


class MarshalError(TypeError):
    """A handler returned something that is not JSON (Lambda's ``Runtime.MarshalError``)."""


class FunctionTimedOut(Exception):
    """An invocation ran past the function's timeout (Lambda's ``Sandbox.Timedout``)."""

    error_type = "Sandbox.Timedout"

    def __init__(self, function: str, timeout: float) -> None:
        # Lambda's own wording, which callers (and people reading logs) recognise.
        super().__init__(f"Task timed out after {timeout:.2f} seconds")
        self.function = function
        self.timeout = timeout


class RequestTooLarge(Exception):
    """An event larger than Lambda takes (``RequestEntityTooLargeException``); nothing ran."""

    def __init__(self, size: int) -> None:
        super().__init__(f"Request must be smaller than {REQUEST_MAX_BYTES} bytes for the InvokeFunction operation")
        self.size = size


class ResponseTooLarge(Exception):
    """A handler's answer larger than Lambda returns (``Function.ResponseSizeTooLarge``)."""

    error_type = "Function.ResponseSizeTooLarge"

    def __init__(self, size: int) -> None:
        super().__init__(
            f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({RESPONSE_MAX_BYTES} bytes)."
        )
        self.size = size


class LambdaTimeout(BaseException):
    """Raised inside a handler's thread to stop it at its timeout.

    A ``BaseException``, so a handler's ``except Exception`` cannot swallow it, much as nothing
    in a Lambda sandbox survives the runtime being stopped.
    """


class _InHandler:
    """Whether an invocation's thread is still in its handler, and its stop, under one lock.

    ``stop`` raises ``LambdaTimeout`` in the thread only while it has not left the handler, and
    ``leave`` (the thread's last step in the handler) takes the same lock and withdraws a stop
    not yet delivered, so the exception cannot fire outside the handler, nor in a thread that
    reuses a finished one's id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = True
        self._stopped = False

    def stop(self, ident: int) -> None:
        with self._lock:
            if self._inside:
                self._stopped = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(LambdaTimeout))

    def leave(self) -> None:
        with self._lock:
            self._inside = False
            if self._stopped:  # a pending exception is withdrawn (NULL clears it)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)


@dataclass(frozen=True)
class TimedOutInvocation:
    """One invocation stopped at its timeout: which function, after how long, its thread, and
    where its handler was when the time ran out (``_where``: its own frames and the AWS call)."""

    function: str
    timeout: float
    thread: threading.Thread = field(repr=False, compare=False)
    where: str = field(default="", repr=False, compare=False)

    @property
    def stopped(self) -> bool:
        """Whether the handler's thread has ended (a thread blocked in a read ends when it returns)."""
        return not self.thread.is_alive()


def _where(frame: FrameType) -> str:
    """A stopped handler's stack, briefly: its own frames (the function's code and the layer's,
    not the libraries'), the innermost frame, and the AWS call it was waiting on, if any."""
    summary = traceback.extract_stack(frame)
    own = [f for f in summary[:-1] if "site-packages" not in f.filename and "/lib/python3." not in f.filename]
    lines = traceback.format_list([*own, summary[-1]])
    walk: FrameType | None = frame
    while walk is not None:
        if walk.f_code.co_name == "_make_api_call" and "botocore" in walk.f_code.co_filename:
            client = walk.f_locals.get("self")
            service = getattr(getattr(getattr(client, "meta", None), "service_model", None), "service_name", "?")
            lines.append(f"  waiting on {service}.{walk.f_locals.get('operation_name', '?')}\n")
            break
        walk = walk.f_back
    return "".join(lines)


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function of the template, resolved for local execution."""

    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    timeout: float
    memory_size: int
    environment: Mapping[str, str] = field(default_factory=dict)
    layer_dirs: tuple[Path, ...] = ()

    @property
    def module_file(self) -> Path:
        """The file of the handler's module (``app.lambda_handler`` -> ``app.py``)."""
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir / (module.replace(".", "/") + ".py")

    @property
    def function_name_in_module(self) -> str:
        return self.handler.rpartition(".")[2]


class LambdaContext:
    """The context object a Python Lambda handler receives, for an in-process invocation."""

    def __init__(self, spec: FunctionSpec, request_id: str | None = None) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        # A string, as the Python runtime reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE.
        self.memory_limit_in_mb = str(spec.memory_size)
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity = SimpleNamespace(cognito_identity_id=None, cognito_identity_pool_id=None)
        self.client_context = None
        self.tenant_id = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def log(self, message: str) -> None:
        sys.stdout.write(str(message))


@dataclass
class _LoadedFunction:
    spec: FunctionSpec
    module_name: str
    handler: Handler
    sandbox: Sandbox


class FunctionRuntime:
    """Loads the template's functions and invokes their handlers in this process."""

    # Each runtime names its modules apart, so two runtimes may load the same function.
    _instances: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, *, async_workers: int = 16) -> None:
        self._instance = next(FunctionRuntime._instances)
        self._functions: dict[str, _LoadedFunction] = {}
        self._timeouts: list[TimedOutInvocation] = []
        self._timeouts_lock = threading.Lock()
        self._by_name: dict[str, str] = {}
        self._activity = threading.Condition()
        self._running = 0
        self._pending_async = 0
        self._generation = 0
        self._executor = ThreadPoolExecutor(max_workers=async_workers, thread_name_prefix="reelay-local-async")
        self._sys_path_added: list[str] = []
        self._restore_patches: list[Callable[[], None]] = []
        self._closed = threading.Event()
        reset_process_caches()
        sandbox.install()

    # -- loading ------------------------------------------------------------------------------

    def load(self, spec: FunctionSpec) -> None:
        """Import ``spec``'s handler module as its function (``os.environ`` is ``spec.environment``).

        Functions read and validate their settings at import (cold start), so a configuration
        error surfaces here, when the stack starts, with the function's name on it. Nothing of
        the process's own environment, nor of another function's, is visible to the import.
        """
        if spec.runtime and not spec.runtime.startswith("python"):
            raise ValueError(f"{spec.logical_id}: runtime {spec.runtime} cannot run in-process")
        for layer in spec.layer_dirs:
            if str(layer) not in sys.path:
                sys.path.insert(0, str(layer))
                self._sys_path_added.append(str(layer))
        module_file = spec.module_file
        if not module_file.is_file():
            raise FileNotFoundError(f"{spec.logical_id}: handler module {module_file} does not exist")
        module_name = f"_reelay_local_{self._instance}_{spec.logical_id}_{module_file.stem}"
        own = Sandbox(spec.logical_id, dict(spec.environment))
        with sandbox.running_as(own), _code_dir_on_path(spec.code_dir):
            module = _import_file(module_name, module_file)
        handler = getattr(module, spec.function_name_in_module, None)
        if not callable(handler):
            raise AttributeError(f"{spec.logical_id}: {module_file} has no handler {spec.function_name_in_module!r}")
        self._functions[spec.logical_id] = _LoadedFunction(spec, module_name, handler, own)
        self._by_name[spec.name] = spec.logical_id
        self._by_name[spec.arn] = spec.logical_id

    def spec(self, function: str) -> FunctionSpec:
        """The spec of a function by logical id, name or ARN (qualifiers ignored)."""
        return self._find(function).spec

    @property
    def specs(self) -> dict[str, FunctionSpec]:
        return {logical_id: loaded.spec for logical_id, loaded in self._functions.items()}

    def _find(self, function: str) -> _LoadedFunction:
        if function in self._functions:
            return self._functions[function]
        key = function
        if key.startswith("arn:") and key.count(":") > 6:
            key = key.rsplit(":", 1)[0]  # a version or alias qualifier
        logical_id = self._by_name.get(key)
        if logical_id is None:
            raise FunctionNotFound(function)
        return self._functions[logical_id]

    # -- invoking -----------------------------------------------------------------------------

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke a handler synchronously; its JSON result, or its exception raised here.

        The handler runs in a thread of its own for at most the function's timeout. Past it,
        the thread is stopped (``LambdaTimeout`` is raised inside it) and ``FunctionTimedOut``
        is raised here, as Lambda ends the invocation with ``Sandbox.Timedout``.
        """
        loaded = self._find(function)
        encoded = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        if (size := _utf8_size(encoded)) > REQUEST_MAX_BYTES:
            raise RequestTooLarge(size)
        payload = json.loads(encoded)
        context = LambdaContext(loaded.spec)
        outcome: dict[str, Any] = {}
        running = _InHandler()

        def run() -> None:
            try:
                with sandbox.running_as(loaded.sandbox), sandbox.invocation(), self._running_handler():
                    try:
                        outcome["result"] = loaded.handler(payload, context)
                    except LambdaTimeout:
                        LOG.info("%s stopped at its %ss timeout", loaded.spec.logical_id, loaded.spec.timeout)
                    except BaseException as exc:  # handed to the caller, as Lambda reports it
                        outcome["error"] = exc
                    finally:
                        running.leave()
            except LambdaTimeout:
                pass  # the stop arrived as the handler was returning: it has stopped either way

        thread = threading.Thread(target=run, name=f"reelay-local-{loaded.spec.logical_id}", daemon=True)
        thread.start()
        thread.join(loaded.spec.timeout)
        if thread.is_alive():
            self._stop_timed_out(loaded.spec, thread, running)
            raise FunctionTimedOut(loaded.spec.logical_id, loaded.spec.timeout)
        if "error" in outcome:
            error = outcome.pop("error")
            raise error
        try:
            answer = json.dumps(outcome.get("result"), separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise MarshalError(f"{loaded.spec.logical_id} returned a value that is not JSON: {exc}") from exc
        if (size := _utf8_size(answer)) > RESPONSE_MAX_BYTES:
            raise ResponseTooLarge(size)
        return json.loads(answer)

    def _stop_timed_out(self, spec: FunctionSpec, thread: threading.Thread, running: _InHandler) -> None:
        """Record the timeout and raise ``LambdaTimeout`` in the handler's thread.

        The exception arrives at the thread's next Python bytecode: a thread blocked in C (a
        socket read) gets it when that call returns. It is raised only while the thread is still
        in the handler (``_InHandler``), so it can never reach another thread that took over a
        finished thread's id.
        """
        # Lambda says only that it timed out; locally the handler's stack says where.
        frame = sys._current_frames().get(thread.ident) if thread.ident is not None else None
        where = _where(frame) if frame is not None else "(no frame)\n"
        LOG.error(
            "%s timed out after %ss; stopping its thread, which was at:\n%s", spec.logical_id, spec.timeout, where
        )
        with self._timeouts_lock:
            self._timeouts.append(TimedOutInvocation(spec.logical_id, float(spec.timeout), thread, where))
        if thread.ident is not None:
            running.stop(thread.ident)

    @property
    def timeouts(self) -> list[TimedOutInvocation]:
        """Every invocation stopped at its timeout so far, oldest first."""
        with self._timeouts_lock:
            return list(self._timeouts)

    def invoke_for_service(self, function: str, event: Any, *, source: str) -> tuple[Any, bool]:
        """Invoke on behalf of an AWS service: ``(result or Lambda error payload, errored)``."""
        try:
            return self.invoke(function, event), False
        except Exception as exc:  # every handler error becomes Lambda's error payload
            LOG.error("%s failed (invoked by %s): %s: %s", function, source, type(exc).__name__, exc, exc_info=True)
            return error_payload(exc), True

    def invoke_async(self, function: str, event: Any, *, source: str) -> Future[None]:
        """Queue an asynchronous invocation (schedules, ``InvocationType=Event``).

        A failed invocation is retried twice, as Lambda does, after short pauses.
        """
        self._find(function)  # unknown functions fail the caller, not a background thread
        with self._activity:
            self._pending_async += 1
            self._generation += 1

        def run() -> None:
            try:
                for delay in (*ASYNC_RETRY_DELAYS, None):
                    if self._closed.is_set():
                        return
                    _, errored = self.invoke_for_service(function, event, source=source)
                    if not errored or delay is None:
                        return
                    if self._closed.wait(delay):
                        return
            finally:
                with self._activity:
                    self._pending_async -= 1
                    self._activity.notify_all()

        return self._executor.submit(run)

    # -- activity, for drain() ----------------------------------------------------------------

    @contextlib.contextmanager
    def _running_handler(self) -> Iterator[None]:
        with self._activity:
            self._running += 1
            self._generation += 1
        try:
            yield
        finally:
            with self._activity:
                self._running -= 1
                self._activity.notify_all()

    def idle_generation(self) -> int | None:
        """A counter of invocations so far if nothing runs or waits to run now, else None."""
        with self._activity:
            if self._running or self._pending_async:
                return None
            return self._generation

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs and no asynchronous invocation is pending."""
        deadline = time.monotonic() + timeout
        with self._activity:
            while self._running or self._pending_async:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._activity.wait(remaining)
        return True

    # -- moto hooks ---------------------------------------------------------------------------

    def install_moto_hooks(self) -> None:
        """Make moto run this runtime's handlers wherever it would start a Lambda container."""
        from moto.awslambda.models import LambdaFunction

        runtime = self
        original_invoke_lambda = LambdaFunction._invoke_lambda
        original_invoke = LambdaFunction.invoke

        def _invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
            if isinstance(event, str | bytes):
                event = json.loads(event or "{}")
            try:
                result, errored = runtime.invoke_for_service(fn.function_arn, event, source="lambda:Invoke")
            except FunctionNotFound:
                return json.dumps(_not_served(fn.function_name)), True, ""
            return json.dumps(result), errored, ""

        def invoke(fn: Any, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
            invocation_type = (request_headers or {}).get("x-amz-invocation-type", "RequestResponse")
            if invocation_type == "DryRun":
                return b""
            if invocation_type == "Event":
                try:
                    runtime.invoke_async(fn.function_arn, json.loads(body or "{}"), source="lambda:Invoke(Event)")
                except FunctionNotFound:
                    LOG.error("asynchronous invoke of %s: not served by the local stack", fn.function_name)
                return b""
            return original_invoke(fn, body, request_headers, response_headers)  # type: ignore[no-any-return]

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign,assignment]
        LambdaFunction.invoke = invoke  # type: ignore[method-assign,assignment]

        def restore() -> None:
            LambdaFunction._invoke_lambda = original_invoke_lambda  # type: ignore[method-assign]
            LambdaFunction.invoke = original_invoke  # type: ignore[method-assign]

        self._restore_patches.append(restore)

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop retrying, restore moto, forget the handler modules and layer paths."""
        self._closed.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        while self._restore_patches:
            self._restore_patches.pop()()
        for loaded in self._functions.values():
            sys.modules.pop(loaded.module_name, None)
        for entry in self._sys_path_added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)
        self._sys_path_added.clear()
        reset_process_caches()
        sandbox.uninstall()


def reset_process_caches() -> None:
    """Forget SDK-level caches that outlive a handler module (a cold start in AWS starts afresh).

    Powertools Parameters keeps its providers, and their boto3 clients bound to the moto
    endpoint of the time, in a process-wide dict; a later stack (another moto port) needs new ones.
    """
    with contextlib.suppress(ImportError):
        from aws_lambda_powertools.utilities.parameters import clear_caches

        clear_caches()


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The payload Lambda returns for a handler that raised ``exc``."""
    return {
        "errorMessage": str(exc),
        "errorType": _error_type(exc),
        "requestId": str(uuid.uuid4()),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _utf8_size(text: str) -> int:
    """The bytes of a payload's JSON as sent, in UTF-8 (an unpaired surrogate, which UTF-8 cannot carry, as 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, FunctionTimedOut | ResponseTooLarge):
        return exc.error_type
    if isinstance(exc, MarshalError):
        return "Runtime.MarshalError"
    return type(exc).__name__


def _not_served(name: str) -> dict[str, Any]:
    return {
        "errorMessage": f"function {name} exists in moto but is not served by the local stack",
        "errorType": "ResourceNotFoundException",
    }


def _import_file(module_name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


@contextlib.contextmanager
def _code_dir_on_path(code_dir: Path) -> Iterator[None]:
    """The function's code directory first on ``sys.path`` while its handler imports.

    Modules imported from it are dropped from ``sys.modules`` afterwards (the handler keeps its
    references), so two functions may each ship, say, a ``models.py`` of their own.
    """
    entry = str(code_dir)
    before = set(sys.modules)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
        for name in set(sys.modules) - before:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(entry + os.sep) and not name.startswith("_reelay_local_"):
                del sys.modules[name]
