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
  so that a provider's client, and its cache, are the function's own;
- Powertools' per-sandbox state of logs and metrics: the Logger formatter's keys (the function's
  name and request id that ``inject_lambda_context`` appends, the keys a handler appends) and
  the EMF provider's metrics, dimensions and metadata. These are per invocation (``invocation``):
  Lambda runs one invocation at a time in a sandbox, while here a function's invocations run
  side by side, so each has the state the function had when it began, and the function keeps
  the state its invocation left, as a warm sandbox does.

Which function a thread runs for is a context variable: the runtime sets it around a handler's
import and each invocation (``running_as``), and a thread started inside a function carries it
(``threading.Thread.start`` copies it, and the invocation, from the starting thread, as
Python 3.14's ``thread_inherit_context`` would), so the parts a handler uploads from a thread
pool are signed as the function. Outside every function (the local stack itself, the tests)
nothing changes.

Not isolated: module-level state of the code the functions share (the layer's ``reelay``
package and its libraries are imported once for all of them), such as Powertools' cold-start
flags (module globals: only the process's first invocation reports a cold start).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Sandbox:
    """What one function has of its own: its environment, its default session, its providers."""

    name: str
    environ: dict[str, str]
    providers: dict[str, Any] = field(default_factory=dict)
    # Library state kept per function (``_scoped``), by (attribute, object).
    state: dict[tuple[str, Any], Any] = field(default_factory=dict, repr=False)
    _session: Any = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def session(self) -> Any:
        """The function's boto3 default session, made (in the function's context) on first use."""
        with self._lock:
            if self._session is None:
                self._session = _new_session(self)
            return self._session


_CURRENT: ContextVar[Sandbox | None] = ContextVar("reelay_local_sandbox", default=None)
# The running invocation's own library state (``invocation``), None outside an invocation.
_INVOCATION: ContextVar[dict[tuple[str, Any], Any] | None] = ContextVar("reelay_local_invocation", default=None)
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


@contextlib.contextmanager
def invocation() -> Iterator[None]:
    """Run the body as one invocation of the running function: the library state it changes
    (see the module doc) is its own while it runs, and the function's once it ends."""
    own: dict[tuple[str, Any], Any] = {}
    box = _CURRENT.get()
    token = _INVOCATION.set(own)
    try:
        yield
    finally:
        _INVOCATION.reset(token)
        if box is not None:
            box.state.update(own)


def _scopes() -> list[dict[tuple[str, Any], Any]]:
    """Where the running code's library state lives, innermost first; empty outside functions."""
    box = _CURRENT.get()
    if box is None:
        return []
    own = _INVOCATION.get()
    return [box.state] if own is None else [own, box.state]


def _scoped(key: tuple[str, Any], shared: Any) -> Any:
    """The running code's own value of a piece of library state (``shared`` outside functions).
    Inside a function it is first copied from the next scope out (or from ``shared``) into the
    innermost, so a change in place, such as a dict's ``update``, stays where it was made."""
    scopes = _scopes()
    if not scopes:
        return shared
    value = shared
    for depth, scope in enumerate(scopes):
        if key in scope:
            if depth == 0:
                return scope[key]
            value = scope[key]
            break
    own = scopes[0][key] = _copy(value)
    return own


def _copy(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception:  # something a deep copy cannot take (a lock, say): its containers are copied
        return copy.copy(value)


class _ScopedAttribute:
    """An instance attribute of a library class that is per function and per invocation inside
    functions (``_scoped``), and the instance's own outside them."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return _scoped((self.name, obj), obj.__dict__.get(self.name))

    def __set__(self, obj: Any, value: Any) -> None:
        scopes = _scopes()
        if not scopes:
            obj.__dict__[self.name] = value
            return
        scopes[0][(self.name, obj)] = value
        if self.name not in obj.__dict__:
            obj.__dict__[self.name] = _copy(value)  # made inside a function: the others start so


# Powertools' state that a Lambda sandbox holds for its one invocation at a time: the Logger
# formatter's keys; the metrics, dimensions and metadata that every ``Metrics`` shares (class
# dicts, handed to each instance's EMF provider) and the provider's extra dimension sets.
_SCOPED_ATTRIBUTES = {
    "aws_lambda_powertools.logging.formatter:LambdaPowertoolsFormatter": ("log_format",),
    "aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch:AmazonCloudWatchEMFProvider": ("dimension_sets",),
}
_SCOPED_CLASS_DICTS = {
    "aws_lambda_powertools.metrics.metrics:Metrics": ("_metrics", "_dimensions", "_metadata", "_default_dimensions"),
}


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
        _install_scoped_attributes()


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
            own = _INVOCATION.get()

            def run_as_sandbox() -> None:
                token = _INVOCATION.set(own)
                try:
                    with running_as(sandbox):
                        run()
                finally:
                    _INVOCATION.reset(token)

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


def _install_scoped_attributes() -> None:
    """Put a ``_ScopedAttribute`` on each attribute of ``_SCOPED_ATTRIBUTES``, and a view scoped
    the same way in place of each class dict of ``_SCOPED_CLASS_DICTS``. Objects made before
    keep what they have (the functions' modules are imported after ``install``)."""
    for cls, name, before in _class_attributes(_SCOPED_ATTRIBUTES):
        setattr(cls, name, _ScopedAttribute(name))
        _restore.append(functools.partial(_put_back, cls, name, before))
    for cls, name, before in _class_attributes(_SCOPED_CLASS_DICTS):
        if isinstance(before, dict):
            key = ("dict", f"{cls.__module__}.{cls.__qualname__}.{name}")
            setattr(cls, name, _PerSandbox(before, functools.partial(_scoped_of, key, before)))
            _restore.append(functools.partial(_put_back, cls, name, before))


_MISSING = object()


def _class_attributes(table: Mapping[str, tuple[str, ...]]) -> Iterator[tuple[type, str, Any]]:
    """Each (class, attribute name, its value on the class or ``_MISSING``) the table names, of
    the libraries installed."""
    for where, names in table.items():
        module_name, class_name = where.split(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        for name in names:
            yield cls, name, cls.__dict__.get(name, _MISSING)


def _scoped_of(key: tuple[str, Any], shared: Any, _: Sandbox) -> Any:
    return _scoped(key, shared)


def _put_back(cls: type, name: str, before: Any) -> None:
    if before is _MISSING:
        delattr(cls, name)
    else:
        setattr(cls, name, before)
