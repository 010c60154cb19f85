"""The embedded local stack as the CLI sees it: find the checkout, start it, stop it cleanly.

The stack itself is ``reelay_local.DevEnvironment``; this module only describes the part of it the
CLI uses (the protocols below, which a test fake also satisfies) and owns its lifetime.
``reelay_local`` is imported lazily: it pulls in moto, which commands that only talk to an API
should not pay for.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Protocol

from reelay_cli.api_client import CliError


class StackInfo(Protocol):
    """Where the running local stack serves."""

    @property
    def api_url(self) -> str: ...

    @property
    def aws_endpoint(self) -> str: ...

    @property
    def bucket(self) -> str: ...


class SimulatorInfo(Protocol):
    """The provider simulator behind the local stack."""

    @property
    def url(self) -> str: ...

    def video_bytes_sha256(self, protocol: str, provider_task_id: str) -> str:
        """SHA-256 (hex) of the video bytes the simulator serves for that provider task."""
        ...


class DevEnvironmentLike(Protocol):
    """The parts of ``reelay_local.DevEnvironment`` the CLI relies on."""

    @property
    def stack(self) -> StackInfo: ...

    @property
    def sim(self) -> SimulatorInfo | None: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def issue_token(self, subject: str) -> str:
        """A JWT for ``subject`` from the stack's local issuer (``--client-auth jwt`` only)."""
        ...


EnvironmentFactory = Callable[[Path, int | None, str], DevEnvironmentLike]
"""``(repo root, API port or None, client auth "none" | "jwt" | "apikey")`` → a not yet started environment."""


def find_repo_root(explicit: Path | None = None) -> Path:
    """The reelay checkout: ``explicit`` if given, else the one this package lives in
    (``devstack/reelay_cli/../..``). It must hold ``template.yaml``, which the stack is built from."""
    root = (explicit or Path(__file__).resolve().parents[2]).resolve()
    if not (root / "template.yaml").is_file():
        raise CliError(
            f"{root} is not a reelay checkout (no template.yaml there)",
            hint="pass --repo PATH to the checkout",
        )
    return root


def open_environment(repo_root: Path, api_port: int | None, client_auth: str = "none") -> DevEnvironmentLike:
    """A new, not yet started ``reelay_local.DevEnvironment`` (its default port when ``api_port`` is None);
    ``client_auth="jwt"`` gives it a local JWT issuer and the template's ``ClientAuth=JWT``; ``"apikey"``
    the template's ``ClientAuth=APIKEY`` (its Lambda authorizer, run by the local gateway)."""
    from reelay_local import DevEnvironment

    # Readable logs (Powertools' development mode): one record per task state change, and the rest.
    # Asked for here, so Powertools' warning that it is on says nothing new.
    warnings.filterwarnings("ignore", message="POWERTOOLS_DEV environment variable is enabled")
    return DevEnvironment(
        repo_root, api_port=api_port or 0, client_auth=client_auth, env_overrides={"POWERTOOLS_DEV": "true"}
    )


@contextmanager
def running(env: DevEnvironmentLike) -> Iterator[DevEnvironmentLike]:
    """Start ``env`` and always stop it, also on Ctrl-C or SIGTERM, and after a failed start.

    SIGTERM is turned into KeyboardInterrupt (main thread only) so a ``kill`` stops the stack
    as cleanly as Ctrl-C does.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _start(env)
        try:
            yield env
        finally:
            env.stop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _start(env: DevEnvironmentLike) -> None:
    """``env.start()``, its failure reported as one line; whatever did start is stopped again."""
    try:
        env.start()
    except (Exception, KeyboardInterrupt) as exc:
        with suppress(Exception):
            env.stop()
        if isinstance(exc, KeyboardInterrupt):
            raise
        hint = "is another `reelay dev` using the port? try --port" if isinstance(exc, OSError) else None
        raise CliError(f"the local stack could not start: {type(exc).__name__}: {exc}", exit_code=2, hint=hint) from exc


def block_until_interrupted() -> None:
    """Sleep until Ctrl-C (KeyboardInterrupt) or SIGTERM (see :func:`running`)."""
    forever = threading.Event()
    while not forever.wait(3600):
        pass


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
