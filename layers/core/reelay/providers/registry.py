"""The protocols reelay speaks, and the one place a configured provider is built.

Adding a protocol is one module (a ``HttpProvider`` subclass with its ``config_defaults``)
and one line in ``PROTOCOLS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx
from pydantic import SecretStr

from reelay.errors import ConfigurationError
from reelay.providers.base import Provider, ProviderConfig
from reelay.providers.generate_task import GenerateTaskProvider
from reelay.providers.http import HttpProvider, RequestGate
from reelay.providers.openai_videos import OpenAIVideosProvider
from reelay.providers.sorahk import SorahkProvider

PROTOCOLS: Mapping[str, type[HttpProvider]] = MappingProxyType(
    {
        GenerateTaskProvider.protocol: GenerateTaskProvider,
        SorahkProvider.protocol: SorahkProvider,
        OpenAIVideosProvider.protocol: OpenAIVideosProvider,
    }
)

# Per protocol, the ``ProviderConfig`` fields a configuration starts from
# (auth prefix, typical generation time, deadline); the environment may override each.
PROTOCOL_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {name: MappingProxyType(dict(cls.config_defaults)) for name, cls in PROTOCOLS.items()}
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
    cls = PROTOCOLS.get(config.protocol)
    if cls is None:
        raise ConfigurationError(f"provider {config.name}: {_unknown(config.protocol)}")
    return cls(config, client=client, gate=gate)


def _unknown(protocol: str) -> str:
    return f"unknown protocol {protocol!r}; known protocols: {', '.join(sorted(PROTOCOLS))}"
