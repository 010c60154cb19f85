"""OpenAI video model names to reelay requests and the providers that can serve them.

The OpenAI-shaped routes (``reelay.openai_api``) take OpenAI's ``model`` (``sora-2``,
``sora-2-pro`` and their dated aliases), ``seconds`` and ``size``. ``ModelMap`` turns them into
a provider-neutral ``VideoRequest`` and an ordered list of candidate providers: those the
configuration lists for the model, in order, each checked with its adapter's own ``validate``
(no network, nothing paid). The first capable one serves the request for now; the whole ordered
list is what the ``auto`` router (``reelay.routing``) can later rank by capacity and price.
A request no candidate can serve is ``NoRouteForModel`` (a 400 in OpenAI's shape, before any
paid call) naming, per provider, why not and what it can do.

Configuration (``REELAY_OPENAI_MODELS``, JSON) maps a model name to the providers that may serve
it, e.g. ``{"sora-2": ["generate_task", "sorahk"], "sora-2-pro": ["sorahk"]}``; a name absent
from it falls back to every configured provider, in the stack's order (``REELAY_PROVIDERS``).
Dated aliases resolve to their family before the lookup, unless configured themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reelay.catalog import ProviderCatalog
from reelay.errors import ConfigurationError, NoRouteForModel, RequestInvalid
from reelay.models import VideoRequest
from reelay.providers.base import Provider

# OpenAI's model families: the family name says whether it is the pro model.
FAMILIES: Mapping[str, bool] = {"sora-2": False, "sora-2-pro": True}
DEFAULT_MODEL = "sora-2"
# A dated alias: the family, then -YYYY-MM-DD (e.g. sora-2-2025-10-06, sora-2-pro-2025-10-06).
_DATED = re.compile(r"^(sora-2(?:-pro)?)-(\d{4}-\d{2}-\d{2})$")
# OpenAI's sizes (WxH) to reelay's orientation and resolution. 1024x1792 and 1792x1024 are the
# larger sizes OpenAI sells with sora-2-pro; reelay's providers offer them as 1080p.
SIZES: Mapping[str, tuple[str, str]] = {
    "720x1280": ("portrait", "720p"),
    "1280x720": ("landscape", "720p"),
    "1024x1792": ("portrait", "1080p"),
    "1792x1024": ("landscape", "1080p"),
}
DEFAULT_SIZE = "720x1280"


def size_of(orientation: str | None, resolution: str | None) -> str:
    """OpenAI's ``size`` for reelay's orientation and resolution (the defaults where absent)."""
    wanted = (orientation or "portrait", resolution or "720p")
    return next((size for size, pair in SIZES.items() if pair == wanted), DEFAULT_SIZE)


@dataclass(frozen=True)
class VideoAsk:
    """An OpenAI-shaped video request, parsed: what the SDK sent, before any provider is chosen."""

    prompt: str
    model: str = DEFAULT_MODEL
    seconds: int | None = None
    size: str | None = None
    image_url: str | None = None


@dataclass(frozen=True)
class Route:
    """A provider that can serve the request, and the request in reelay's neutral form."""

    provider: str
    request: VideoRequest


class ModelMap:
    """Routes OpenAI model names to configured providers (see the module docstring)."""

    def __init__(self, catalog: ProviderCatalog, routes: Mapping[str, Sequence[str]], order: Sequence[str]) -> None:
        self._catalog = catalog
        self._routes = {name: tuple(providers) for name, providers in routes.items()}
        self._order = tuple(order)

    @classmethod
    def from_config(cls, catalog: ProviderCatalog, text: str, order: Sequence[str]) -> ModelMap:
        """Parse ``REELAY_OPENAI_MODELS``; ``ConfigurationError`` naming what is wrong."""
        routes: dict[str, list[str]] = {}
        if text.strip():
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigurationError("REELAY_OPENAI_MODELS is not JSON") from None
            if not isinstance(data, dict) or not all(
                isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
            ):
                raise ConfigurationError('REELAY_OPENAI_MODELS must map model names to provider lists: {"m": ["p"]}')
            unknown = sorted({p for v in data.values() for p in v} - set(catalog.names))
            if unknown:
                raise ConfigurationError(f"REELAY_OPENAI_MODELS names providers not configured: {', '.join(unknown)}")
            routes = {str(k): list(v) for k, v in data.items()}
        configured = [name for name in order if name in catalog.names] + [
            name for name in catalog.names if name not in order
        ]
        return cls(catalog, routes, configured)

    def family(self, model: str) -> str:
        """The family of a model name (a dated alias's family), or ``NoRouteForModel``."""
        if model in FAMILIES or model in self._routes:
            return model
        dated = _DATED.fullmatch(model)
        if dated:
            return dated.group(1)
        known = ", ".join(sorted({*FAMILIES, *self._routes}))
        raise NoRouteForModel(f"model {model!r} is not served here; models: {known} (or a dated alias)", field="model")

    def candidates(self, model: str) -> tuple[str, ...]:
        """The providers configured for ``model``, in order (before any capability check)."""
        if model in self._routes:
            return self._routes[model]
        family = self.family(model)
        return self._routes.get(family, self._order)

    def neutral(self, ask: VideoAsk) -> VideoRequest:
        """The request before routing: ``provider`` is ``"-"`` until ``routes`` sets each candidate."""
        family = self.family(ask.model)
        orientation, resolution = (None, None)
        if ask.size is not None:
            if ask.size not in SIZES:
                raise NoRouteForModel(f"size {ask.size!r} is not offered; sizes: {', '.join(SIZES)}", field="size")
            orientation, resolution = SIZES[ask.size]
            if ask.image_url is not None:
                orientation = None  # image-to-video: the image sets the orientation (size gives the resolution)
        return VideoRequest(
            provider="-",
            prompt=ask.prompt,
            image_url=ask.image_url,
            duration=ask.seconds,
            orientation=orientation,  # type: ignore[arg-type]
            resolution=resolution,  # type: ignore[arg-type]
            pro=FAMILIES.get(family, False),
        )

    def routes(self, ask: VideoAsk) -> list[Route]:
        """Every configured candidate that can serve ``ask``, in order; ``NoRouteForModel`` if none."""
        base = self.neutral(ask)
        capable: list[Route] = []
        refusals: list[str] = []
        for name in self.candidates(ask.model):
            provider = self._catalog.get(name)
            request = base.model_copy(update={"provider": name})
            try:
                provider.validate(request)
            except RequestInvalid as exc:
                refusals.append(f"{name}: {exc.message} ({_offers(provider, request)})")
                continue
            capable.append(Route(provider=name, request=request))
        if not capable:
            wanted = f"model {ask.model}, {ask.seconds or 'default'} s, size {ask.size or 'default'}"
            if ask.image_url:
                wanted += ", image-to-video"
            reasons = "; ".join(refusals) or "no provider is configured for it"
            raise NoRouteForModel(f"no configured provider can serve {wanted}: {reasons}", field="model")
        return capable

    def route(self, ask: VideoAsk) -> Route:
        """The provider that serves ``ask``: for now the first capable candidate."""
        return self.routes(ask)[0]


def _offers(provider: Provider, request: VideoRequest) -> str:
    """What a provider can do, briefly, so the 400 says what is possible."""
    caps = provider.capabilities()
    modes = "/".join(m for m in caps.modes if m != "images")
    return f"offers {modes}, seconds {', '.join(map(str, caps.durations))}"


__all__ = ["DEFAULT_MODEL", "FAMILIES", "SIZES", "ModelMap", "NoRouteForModel", "Route", "VideoAsk", "size_of"]
