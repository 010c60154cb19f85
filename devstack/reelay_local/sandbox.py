"""Each function's own process state, for handlers that all run in this one process.

In AWS every function runs in a sandbox of its own. Locally every handler runs in this process
(``lambda_runtime``), so what a function reads at call time that AWS keeps per sandbox is made
per function here, for as long as a ``FunctionRuntime`` is open (``install``/``uninstall``):

- ``os.environ``: inside a function it is that function's own environment, exactly (a variable
  the template gives only to another function, or only the local stack's process has, is
  missing, as it would be in AWS), at import and at every call, also for libraries that read it
  late (boto3 making a client on first use, Powertools Parameters); a write stays in the
  function, as it would stay in its sandbox;
- boto3's default session (``boto3.client``, ``boto3.resource``): one per function, so that its
  credentials are that function's (each function signs with its own access key, which
  ``local_iam`` checks against its role), made on first use and sharing the stack's warmed
  botocore loader;
- Powertools Parameters' default providers (``parameters.get_secret``): one set per function,
  so that a provider's client, and its cache, are the function's own.

Which function a thread runs for is a context variable: the runtime sets it around a handler's
import and each invocation (``running_as``), and a thread started inside a function carries it
(``threading.Thread.start`` copies it from the starting thread, as Python 3.14's
``thread_inherit_context`` would), so the parts a handler uploads from a thread pool are signed
as the function. Outside every function (the local stack itself, the tests) nothing changes.

Not isolated: module-level state of the code the functions share (the layer's ``reelay``
package and its libraries are imported once for all of them).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Sandbox:
    """What one function has of its own: its environment, its default session, its providers."""

    name: str
    environ: dict[str, str]
    providers: dict[str, Any] = field(default_factory=dict)
    _session: Any = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def session(self) -> Any:
        """The function's boto3 default session, made (in the function's context) on first use."""
        with self._lock:
            if self._session is None:
                self._session = _new_session(self)
            return self._session


_CURRENT: ContextVar[Sandbox | None] = ContextVar("reelay_local_sandbox", default=None)
_installed = 0
_install_lock = threading.Lock()
_restore: list[Callable[[], None]] = []


def current() -> Sandbox | None:
    """The sandbox of the function this thread runs for, or None outside every function."""
    return _CURRENT.get()


@contextlib.contextmanager
def running_as(sandbox: Sandbox) -> Iterator[None]:
    """Run the body (and the threads it starts) as ``sandbox``'s function."""
    token = _CURRENT.set(sandbox)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class _PerSandbox(MutableMapping[str, Any]):
    """A mapping that is the running function's own one inside a function, ``shared`` outside."""

    def __init__(self, shared: MutableMapping[str, Any], pick: Callable[[Sandbox], MutableMapping[str, Any]]) -> None:
        self.shared = shared
        self._pick = pick

    def _target(self) -> MutableMapping[str, Any]:
        sandbox = _CURRENT.get()
        return self.shared if sandbox is None else self._pick(sandbox)

    def __getitem__(self, key: str) -> Any:
        return self._target()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._target()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._target()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._target()))

    def __len__(self) -> int:
        return len(self._target())

    def __contains__(self, key: object) -> bool:
        return key in self._target()

    def copy(self) -> dict[str, Any]:
        return dict(self._target())

    # What ``os.environ`` (``os._Environ``) offers besides a mapping's methods.
    def __or__(self, other: Any) -> dict[str, Any]:
        return {**self._target(), **dict(other)}

    def __ror__(self, other: Any) -> dict[str, Any]:
        return {**dict(other), **self._target()}

    def __ior__(self, other: Any) -> _PerSandbox:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return repr(self._target())


def install() -> None:
    """Make the process per function (see the module doc); nested calls are counted."""
    global _installed
    with _install_lock:
        _installed += 1
        if _installed > 1:
            return
        _install_environ()
        _install_thread_context()
        _install_boto3()
        _install_parameters()


def uninstall() -> None:
    """Undo ``install`` once its last user is done."""
    global _installed
    with _install_lock:
        _installed -= 1
        if _installed > 0:
            return
        while _restore:
            _restore.pop()()


def _install_environ() -> None:
    real = os.environ
    # Replaced, not cleared: the real environment stays the process's, outside every function.
    os.environ = _PerSandbox(real, lambda sandbox: sandbox.environ)  # type: ignore[assignment]  # noqa: B003
    _restore.append(lambda: setattr(os, "environ", real))


def _install_thread_context() -> None:
    start = threading.Thread.start

    def start_in_sandbox(thread: threading.Thread) -> None:
        sandbox = _CURRENT.get()
        if sandbox is not None:
            run = thread.run

            def run_as_sandbox() -> None:
                with running_as(sandbox):
                    run()

            thread.run = run_as_sandbox  # type: ignore[method-assign]
        start(thread)

    threading.Thread.start = start_in_sandbox  # type: ignore[method-assign,assignment]
    _restore.append(lambda: setattr(threading.Thread, "start", start))


def _install_boto3() -> None:
    import boto3

    default = boto3._get_default_session

    def default_session() -> Any:
        sandbox = _CURRENT.get()
        return default() if sandbox is None else sandbox.session()

    boto3._get_default_session = default_session
    _restore.append(lambda: setattr(boto3, "_get_default_session", default))


def _new_session(sandbox: Sandbox) -> Any:
    """A session reading ``sandbox``'s environment, whose clients are made one at a time.

    Its botocore loader is the process default session's (the service models are parsed once,
    as the local stack warmed them); making clients concurrently from one cold session is not
    thread-safe, hence the lock.
    """
    import boto3
    import botocore.session

    loader = _shared_loader()
    with running_as(sandbox):
        core = botocore.session.Session()  # its environment lookups go to os.environ: the function's
    core.register_component("data_loader", loader)
    search_paths = list(loader.search_paths)

    class FunctionSession(boto3.Session):
        def client(self, *args: Any, **kwargs: Any) -> Any:
            with sandbox._lock:
                return super().client(*args, **kwargs)

        def resource(self, *args: Any, **kwargs: Any) -> Any:
            with sandbox._lock:
                return super().resource(*args, **kwargs)

    with running_as(sandbox):
        session = FunctionSession(botocore_session=core)
    if len(loader.search_paths) > len(search_paths) and loader.search_paths[-1] in search_paths:
        del loader.search_paths[-1]  # boto3.Session adds its data path to the loader each time
    return session


def _shared_loader() -> Any:
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    return boto3.DEFAULT_SESSION._session.get_component("data_loader")  # type: ignore[union-attr]


def _install_parameters() -> None:
    """Powertools Parameters' ``DEFAULT_PROVIDERS`` (one dict, imported by name into several of
    its modules) replaced in each by a per-function view."""
    try:
        importlib.import_module("aws_lambda_powertools.utilities.parameters")
        constants = importlib.import_module("aws_lambda_powertools.utilities.parameters.constants")
    except ImportError:
        return
    real = constants.DEFAULT_PROVIDERS
    view = _PerSandbox(real, lambda sandbox: sandbox.providers)
    holders = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("aws_lambda_powertools.utilities.parameters")
        and getattr(module, "DEFAULT_PROVIDERS", None) is real
    ]
    for module in holders:
        module.DEFAULT_PROVIDERS = view  # type: ignore[attr-defined]

    def restore() -> None:
        for module in holders:
            module.DEFAULT_PROVIDERS = real  # type: ignore[attr-defined]

    _restore.append(restore)
