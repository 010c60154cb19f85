"""``DevEnvironment``: the local stack plus the provider simulator, wired to each other.

Every provider named by ``REELAY_PROVIDERS`` (or the template's ``ProviderNames`` default) whose
``REELAY_<NAME>_BASE_URL`` is not set in ``os.environ`` is served by one ``reelay_sim.Simulator``;
a provider whose base URL is set (a real one, or a simulator elsewhere) is used as configured.
The functions get the providers' URLs and keys, a callback base URL pointing at the local
gateway, a fresh callback secret per run, and the simulator's host in the SSRF allow-list.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

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
)


class DevEnvironment:
    """A :class:`LocalStack` whose providers are simulated unless configured otherwise."""

    def __init__(
        self,
        repo_root: Path,
        *,
        api_port: int = 0,
        schedule_speedup: float = 1.0,
        env_overrides: dict[str, str] | None = None,
        parameter_overrides: dict[str, str] | None = None,
        sim_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.repo_root = Path(repo_root).resolve()
        self._api_port = api_port
        self._schedule_speedup = schedule_speedup
        self._extra_env = dict(env_overrides or {})
        self._parameter_overrides = dict(parameter_overrides or {})
        self._sim_options = dict(sim_options or {})
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
            self._stack = LocalStack(
                self.repo_root,
                api_port=port,
                env_overrides=overrides,
                schedule_speedup=self._schedule_speedup,
                parameter_overrides=self._parameters(),
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _parameters(self) -> dict[str, str]:
        """Template parameters: ``REELAY_LOG_LEVEL`` (e.g. WARNING for a quiet demo) sets LogLevel."""
        parameters = dict(self._parameter_overrides)
        if os.environ.get("REELAY_LOG_LEVEL"):
            parameters.setdefault("LogLevel", os.environ["REELAY_LOG_LEVEL"].upper())
        return parameters

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
        return environment


def _free_port() -> int:
    """A loopback port free right now (the gateway binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
