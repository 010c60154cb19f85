"""The configured providers of a stack, built once per cold start."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from reelay.errors import RequestInvalid
from reelay.providers.base import Provider, ProviderConfig

ProviderFactory = Callable[[ProviderConfig], Provider]


class ProviderCatalog:
    """Looks providers up by name; unknown names are the client's error (422), never a 5xx."""

    def __init__(self, configs: tuple[ProviderConfig, ...], factory: ProviderFactory | None = None) -> None:
        if factory is None:
            from reelay.providers.registry import build_provider

            factory = build_provider
        self._configs = {c.name: c for c in configs}
        self._factory = factory
        self._built: dict[str, Provider] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._configs)

    def get(self, name: str) -> Provider:
        if name not in self._configs:
            configured = ", ".join(self.names) or "none"
            raise RequestInvalid(f"unknown provider {name!r}; configured providers: {configured}", field="provider")
        if name not in self._built:
            self._built[name] = self._factory(self._configs[name])
        return self._built[name]

    def __iter__(self) -> Iterator[Provider]:
        return (self.get(name) for name in self.names)
