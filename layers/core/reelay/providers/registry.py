"""The protocols reelay speaks, and the one place a configured provider is built.

Adding a protocol is one module (a ``HttpProvider`` subclass) and one entry in ``_PROTOCOLS``:
where its adapter is, and the ``ProviderConfig`` fields a configuration of it starts from.

A protocol's module (and httpx with it) is imported when its adapter class is first asked for
(``PROTOCOLS[name]``, ``build_provider``), not when settings are read: a function that builds
no provider (the authorizer, a batch manifest's split) never imports one, and a function
imports only the protocols its requests use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from reelay.errors import ConfigurationError
from reelay.providers.base import Provider, ProviderConfig

if TYPE_CHECKING:
    import httpx

    from reelay.providers.http import HttpProvider, RequestGate


@dataclass(frozen=True)
class _Protocol:
    adapter: str  # "module:class" of the protocol's ``HttpProvider`` subclass
    # The ``ProviderConfig`` fields a configuration starts from (auth prefix, typical
    # generation time, deadline, limits); the environment may override each.
    defaults: Mapping[str, Any]


_PROTOCOLS: Mapping[str, _Protocol] = MappingProxyType(
    {
        "generate_task": _Protocol(
            "reelay.providers.generate_task:GenerateTaskProvider",
            {
                "auth_prefix": "Bearer ",
                "typical_seconds": 180.0,
                "deadline_seconds": 2 * 3600.0,
                # The seed's limits per account: 10 concurrent tasks, 60 requests a minute.
                "max_in_flight": 10,
                "requests_per_minute": 60,
            },
        ),
        "sorahk": _Protocol(
            "reelay.providers.sorahk:SorahkProvider",
            {"auth_prefix": "Bearer ", "typical_seconds": 300.0, "deadline_seconds": 3 * 3600.0},
        ),
        "openai_videos": _Protocol(
            "reelay.providers.openai_videos:OpenAIVideosProvider",
            {"auth_prefix": "", "typical_seconds": 240.0, "deadline_seconds": 2 * 3600.0},
        ),
    }
)


class _Adapters(Mapping[str, "type[HttpProvider]"]):
    """Protocol name -> adapter class, each module imported on its first lookup."""

    def __getitem__(self, name: str) -> type[HttpProvider]:
        module, _, attribute = _PROTOCOLS[name].adapter.partition(":")
        cls: type[HttpProvider] = getattr(importlib.import_module(module), attribute)
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(_PROTOCOLS)

    def __len__(self) -> int:
        return len(_PROTOCOLS)

    def __contains__(self, name: object) -> bool:
        return name in _PROTOCOLS


PROTOCOLS: Mapping[str, type[HttpProvider]] = _Adapters()

# Per protocol, the ``ProviderConfig`` fields a configuration starts from (no adapter imported).
PROTOCOL_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {name: MappingProxyType(dict(entry.defaults)) for name, entry in _PROTOCOLS.items()}
)


def provider_config(name: str, protocol: str, base_url: str, api_key: str, **overrides: Any) -> ProviderConfig:
    """A ``ProviderConfig`` with the protocol's defaults, then ``overrides`` (for tools and tests)."""
    if protocol not in PROTOCOLS:
        raise ConfigurationError(_unknown(protocol))
    fields = {**PROTOCOL_DEFAULTS[protocol], **overrides}
    return ProviderConfig(
        name=name, protocol=protocol, base_url=base_url.rstrip("/"), api_key=SecretStr(api_key), **fields
    )


def build_provider(
    config: ProviderConfig, *, client: httpx.Client | None = None, gate: RequestGate | None = None
) -> Provider:
    """The adapter for ``config``; ``client`` replaces the network (tests, shared pools); every
    request passes ``gate`` (the governor) first."""
    if config.protocol not in PROTOCOLS:
        raise ConfigurationError(f"provider {config.name}: {_unknown(config.protocol)}")
    return PROTOCOLS[config.protocol](config, client=client, gate=gate)


def _unknown(protocol: str) -> str:
    return f"unknown protocol {protocol!r}; known protocols: {', '.join(sorted(PROTOCOLS))}"
