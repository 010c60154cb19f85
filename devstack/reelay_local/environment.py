"""``DevEnvironment``: the local stack plus the provider simulator, wired to each other.

Every provider named by ``REELAY_PROVIDERS`` (or the template's ``ProviderNames`` default) whose
``REELAY_<NAME>_BASE_URL`` is not set in ``os.environ`` is served by one ``reelay_sim.Simulator``;
a provider whose base URL is set (a real one, or a simulator elsewhere) is used as configured.
The functions get the providers' URLs and keys, a callback base URL pointing at the local
gateway, a fresh callback secret per run, and the simulator's host in the SSRF allow-list.

With ``client_auth="jwt"`` (``reelay dev --client-auth jwt``) the template gets ``ClientAuth=JWT``
and ``JwtIssuer`` = a local issuer made for this run, which the gateway enforces and serves.
With ``client_auth="apikey"`` it gets ``ClientAuth=APIKEY``: the gateway runs the template's
Lambda authorizer (with its cache lifetime) before every client route; keys are made at the
gateway's ``/_reelay/keys`` (``reelay keys create``, loopback only), which writes the local key
table as an admin's ``reelay keys --stack`` writes the deployed one.

``REELAY_RECONCILE_EVERY_SECONDS`` sets the local timer's period for the reconcile schedule
(the template's ``ReconcileRate``, 2 minutes by default, is what a deployed stack uses).
``REELAY_LOCAL_EVENTS_FILE`` names a file every event put on the stack's bus is appended to, as
one JSON line; ``REELAY_ALLOWED_WEBHOOK_HOSTS`` and ``REELAY_WEBHOOK_*`` reach the functions as set.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from reelay_local.local_jwt import ISSUER_PATH, LocalJwtIssuer
from reelay_local.stack import LocalStack
from reelay_local.template import load_yaml

# Per-provider settings a developer may export; they reach the functions as they are.
_PROVIDER_SETTINGS = (
    "BASE_URL",
    "API_KEY",
    "PROTOCOL",
    "AUTH_HEADER",
    "AUTH_PREFIX",
    "TIMEOUT_SECONDS",
    "TYPICAL_SECONDS",
    "DEADLINE_SECONDS",
    "PRIORITY",
    "MAX_IN_FLIGHT",
    "REQUESTS_PER_MINUTE",
)


class DevEnvironment:
    """A :class:`LocalStack` whose providers are simulated unless configured otherwise.

    ``env_overrides``, ``parameter_overrides``, ``timeout_overrides`` and ``event_copies`` are
    passed on to the stack (see :class:`LocalStack`); ``sim_options`` to the simulator.
    """

    def __init__(
        self,
        repo_root: Path,
        *,
        api_port: int = 0,
        schedule_speedup: float = 1.0,
        env_overrides: dict[str, str] | None = None,
        parameter_overrides: dict[str, str] | None = None,
        timeout_overrides: Mapping[str, float] | None = None,
        sim_options: Mapping[str, Any] | None = None,
        client_auth: str = "none",
        event_copies: int = 1,
    ) -> None:
        self.repo_root = Path(repo_root).resolve()
        self._api_port = api_port
        self._schedule_speedup = schedule_speedup
        self._extra_env = dict(env_overrides or {})
        self._parameter_overrides = dict(parameter_overrides or {})
        self._timeout_overrides = dict(timeout_overrides or {})
        self._sim_options = dict(sim_options or {})
        if client_auth not in ("none", "jwt", "apikey"):
            raise ValueError(f"client_auth must be 'none', 'jwt' or 'apikey', not {client_auth!r}")
        self._client_auth = client_auth
        self._event_copies = event_copies
        self.jwt_issuer: LocalJwtIssuer | None = None
        self.sim: Any = None
        self._stack: LocalStack | None = None

    @property
    def stack(self) -> LocalStack:
        if self._stack is None:
            raise RuntimeError("the development environment is not started")
        return self._stack

    def provider_names(self) -> list[str]:
        """The providers the functions will offer (``REELAY_PROVIDERS`` or the template's)."""
        names = os.environ.get("REELAY_PROVIDERS")
        if names is None:
            parameters = load_yaml((self.repo_root / "template.yaml").read_text()).get("Parameters") or {}
            names = str((parameters.get("ProviderNames") or {}).get("Default", ""))
        return [name.strip() for name in names.split(",") if name.strip()]

    def start(self) -> DevEnvironment:
        """Start the simulator (if any provider needs it), then the stack."""
        try:
            overrides = self._provider_environment()
            port = self._api_port or _free_port()
            overrides.update(
                {
                    "CALLBACK_BASE_URL": f"http://127.0.0.1:{port}",
                    "CALLBACK_SECRET": secrets.token_urlsafe(32),
                }
            )
            overrides.update(self._extra_env)
            parameters = self._parameters()
            if self._client_auth == "jwt":
                # As a deployed JWT stack: the template's ClientAuth=JWT, its issuer the local one.
                audience = parameters.get("JwtAudience", "reelay").split(",")[0].strip()
                self.jwt_issuer = LocalJwtIssuer(f"http://127.0.0.1:{port}{ISSUER_PATH}", audience=audience)
                parameters.update({"ClientAuth": "JWT", "JwtIssuer": self.jwt_issuer.url})
            elif self._client_auth == "apikey":
                parameters["ClientAuth"] = "APIKEY"
            self._stack = LocalStack(
                self.repo_root,
                api_port=port,
                env_overrides=overrides,
                schedule_speedup=self._reconcile_speedup(parameters),
                parameter_overrides=parameters,
                timeout_overrides=self._timeout_overrides,
                jwt_issuer=self.jwt_issuer,
                events_file=Path(os.environ["REELAY_LOCAL_EVENTS_FILE"])
                if os.environ.get("REELAY_LOCAL_EVENTS_FILE")
                else None,
                event_copies=self._event_copies,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _parameters(self) -> dict[str, str]:
        """Template parameters: ``REELAY_LOG_LEVEL`` (e.g. WARNING for a quiet demo) sets LogLevel."""
        parameters = dict(self._parameter_overrides)
        # PyAV is in the dev venv (requirements-dev.txt): serve the stack as one with the media layer.
        parameters.setdefault("MediaPreviews", "true")
        if os.environ.get("REELAY_LOG_LEVEL"):
            parameters.setdefault("LogLevel", os.environ["REELAY_LOG_LEVEL"].upper())
        return parameters

    def _reconcile_speedup(self, parameters: Mapping[str, str]) -> float:
        """The schedule clock's speed-up that makes reconcile fire every ``REELAY_RECONCILE_EVERY_SECONDS``."""
        every = os.environ.get("REELAY_RECONCILE_EVERY_SECONDS", "").strip()
        if not every:
            return self._schedule_speedup
        seconds = float(every)
        if seconds <= 0:
            raise ValueError("REELAY_RECONCILE_EVERY_SECONDS must be a positive number of seconds")
        rate = parameters.get("ReconcileRate") or str(
            (
                (load_yaml((self.repo_root / "template.yaml").read_text()).get("Parameters") or {}).get("ReconcileRate")
                or {}
            ).get("Default", "rate(2 minutes)")
        )
        return rate_seconds(rate) / seconds

    def issue_token(self, subject: str) -> str:
        """A JWT for ``subject`` from the local issuer (``client_auth="jwt"`` only)."""
        if self.jwt_issuer is None:
            raise RuntimeError("this environment has no local JWT issuer (client_auth='jwt')")
        return self.jwt_issuer.issue(subject)

    def stop(self) -> None:
        """Stop the stack, then the simulator."""
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def __enter__(self) -> DevEnvironment:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _provider_environment(self) -> dict[str, str]:
        environment: dict[str, str] = {}
        if "REELAY_PROVIDERS" in os.environ:
            environment["REELAY_PROVIDERS"] = os.environ["REELAY_PROVIDERS"]
        simulated: list[tuple[str, str]] = []
        for name in self.provider_names():
            prefix = f"REELAY_{name.upper()}_"
            for setting in _PROVIDER_SETTINGS:
                if os.environ.get(prefix + setting):
                    environment[prefix + setting] = os.environ[prefix + setting]
            if not os.environ.get(prefix + "BASE_URL"):
                simulated.append((name, os.environ.get(prefix + "PROTOCOL", name)))
        allowed = [h for h in os.environ.get("REELAY_ALLOWED_RESULT_HOSTS", "").split(",") if h.strip()]
        if simulated:
            from reelay_sim import Simulator

            self.sim = Simulator(port=0, **self._sim_options).start()
            for name, protocol in simulated:
                prefix = f"REELAY_{name.upper()}_"
                environment[prefix + "BASE_URL"] = self.sim.base_urls[protocol]
                environment[prefix + "API_KEY"] = self.sim.api_keys[protocol]
                # The poll schedule starts near the provider's typical generation time: tell it
                # the simulator's, or a local poll would wait as long as a real provider takes.
                if not os.environ.get(prefix + "TYPICAL_SECONDS"):
                    seconds = self.sim.configure(protocol)["generation_seconds"]
                    environment[prefix + "TYPICAL_SECONDS"] = str(seconds)
            allowed.append(self.sim.host_port)
        if allowed:
            environment["REELAY_ALLOWED_RESULT_HOSTS"] = ",".join(allowed)
        # Ingest settings (part size, parts in flight, caps, deadlines) reach the functions as set.
        environment.update({k: v for k, v in os.environ.items() if k.startswith("REELAY_INGEST_") and v})
        # Webhooks: local receivers (host:port), the retry schedule, the secrets' overlap.
        environment.update(
            {
                k: v
                for k, v in os.environ.items()
                if (k.startswith("REELAY_WEBHOOK_") or k == "REELAY_ALLOWED_WEBHOOK_HOSTS") and v
            }
        )

        # So do batch settings (chunk size, the recount check's period).
        environment.update({k: v for k, v in os.environ.items() if k.startswith("REELAY_BATCH_") and v})
        return environment


def rate_seconds(expression: str) -> float:
    """The period of an EventBridge ``rate(N unit)`` expression, in seconds."""
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if match is None:
        raise ValueError(f"not a rate expression: {expression!r}")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


def _free_port() -> int:
    """A loopback port free right now (the gateway binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
