"""Routing: which configured provider serves a ``provider: auto`` task, and when it fails over.

A request names a provider, or asks for ``auto`` with its needs (duration, orientation,
resolution, image input, pro). ``Router.plan`` keeps the configured providers whose adapter
accepts the request (``Provider.validate``: no network) and ranks them by

1. configured priority, ``REELAY_<NAME>_PRIORITY`` (lower first; an unset one ranks after every set one);
2. free capacity, from ``free_capacity(provider) -> int | None`` (more first; ``None`` is unknown and
   ranks as no known free capacity). The governor's view is wired in ``bootstrap``; without one
   every provider is unknown;
3. price, ``Provider.quote_cents`` (lower first, unknown last), asked only to break a tie;
4. name, so the order is stable.

No capable provider is ``RequestInvalid`` (422) naming why each one cannot, before anything is
stored. The task's ``provider`` is the first candidate; ``Task.routing`` records the ranking.

**Failover** (``Router.fail_over``): the submit worker moves an ``auto`` task to the next
candidate only where reelay *knows* the refusing provider made nothing (``allows_failover``):

- a refusal before the create is sent: insufficient balance (preflight), credential refused, a
  5xx or an unreachable provider on a safe call, or ``NoCapacity``;
- a create the provider answered with a refusal (insufficient balance, credential refused),
  or one that never left (connection refused, 408);
- a create answered 5xx, held until the provider's own task list could show it, that the list
  does not show (where ``submission`` would otherwise send it once more).

Never after a create whose outcome is unknown (a lost answer; a 5xx nothing can settle), nor for
the request's own fault (a content refusal, a rejected request): so a task makes at most one
paid create across all its providers. A task that named its provider never fails over.

``NoCapacity`` (``reelay.errors``) is the one signal for "no capacity after waiting": an ``auto``
task that has waited in its provider's governor line longer than that provider's
``capacity_wait_seconds`` (``REELAY_<NAME>_CAPACITY_WAIT_SECONDS``, 300 s by default) is taken
out of the line by reconcile's look at it and fails over with it
(``Submitter.fail_over_waiting``); it holds no slot there, and sent no create. A named task
waits on in the line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from reelay.catalog import ProviderCatalog
from reelay.errors import (
    CreateOutcomeUnknown,
    InsufficientBalance,
    NoCapacity,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTransientError,
    ReelayError,
    RequestInvalid,
)
from reelay.models import Failover, Orientation, Resolution, RouteCandidate, Routing, Task, VideoRequest, utcnow
from reelay.providers.base import Provider, ProviderConfig

__all__ = ["AUTO", "NoCapacity", "Router", "allows_failover", "auto_cells"]

AUTO = "auto"

FreeCapacity = Callable[[str], int | None]


def allows_failover(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a provider before or at its create, proves nothing was made there."""
    if isinstance(exc, NoCapacity):
        return True
    if isinstance(exc, (CreateOutcomeUnknown, ProviderRateLimited)):
        # Maybe made; or a 429, which is backoff on the same provider (NoCapacity says when waiting is too long).
        return False
    return isinstance(exc, (InsufficientBalance, ProviderAuthError, ProviderTransientError))


class Router:
    """Plans ``auto`` requests over the configured providers and picks the next one on failover."""

    def __init__(self, providers: ProviderCatalog, *, free_capacity: FreeCapacity | None = None) -> None:
        self._providers = providers
        self._free_capacity = free_capacity

    def plan(self, request: VideoRequest) -> Routing:
        """The capable providers of ``request``, ranked; ``RequestInvalid`` when there is none."""
        capable: list[Provider] = []
        refusals: list[str] = []
        for provider in self._providers:
            try:
                provider.validate(request)
            except RequestInvalid as exc:
                refusals.append(f"{provider.name}: {exc.message}")
            else:
                capable.append(provider)
        if not capable:
            raise RequestInvalid(
                "no configured provider can do this request with provider `auto`: " + "; ".join(refusals or ["none"]),
                field="provider",
                details=refusals,
            )
        candidates = self._rank(capable, request)
        first = candidates[0]
        return Routing(requested=AUTO, candidates=candidates, reason=_chosen_reason(first, candidates))

    def fail_over(self, task: Task, exc: ReelayError, *, unmade: bool = False) -> tuple[str, Routing] | None:
        """The next provider of ``task`` after its provider refused with ``exc``, and the new routing.

        None when the task named its provider, when nothing proves the refusing provider made
        nothing (``allows_failover(exc)``, or the caller's ``unmade``), or when no candidate is
        left; then the caller goes on as without routing.
        """
        if task.routing is None or not (unmade or allows_failover(exc)):
            return None
        tried = {f.provider for f in task.routing.failovers} | {task.provider}
        request = VideoRequest.model_validate(task.request)
        for candidate in task.routing.candidates:
            if candidate.provider in tried or candidate.provider not in self._providers.names:
                continue
            try:
                self._providers.get(candidate.provider).validate(request)
            except RequestInvalid:
                continue
            failover = Failover(provider=task.provider, code=exc.code, message=exc.message, at=utcnow())
            reason = (
                f"{task.provider} refused before anything was made ({exc.code}); failed over to "
                f"{candidate.provider}, the next of {len(task.routing.candidates)} capable providers"
            )
            routing = task.routing.model_copy(
                update={"failovers": [*task.routing.failovers, failover], "reason": reason}
            )
            return candidate.provider, routing
        return None

    def _rank(self, capable: Sequence[Provider], request: VideoRequest) -> list[RouteCandidate]:
        candidates = {
            p.name: RouteCandidate(
                provider=p.name,
                priority=p.config.priority,
                free_capacity=self._free_capacity(p.name) if self._free_capacity else None,
            )
            for p in capable
        }

        def head(c: RouteCandidate) -> tuple[int, int, int]:
            unset = c.priority is None
            return (int(unset), c.priority or 0, -(c.free_capacity or 0))

        # Price is a network call for some protocols: ask only where it breaks a tie.
        for _, group in itertools.groupby(sorted(candidates.values(), key=head), key=head):
            tied = list(group)
            if len(tied) > 1:
                for c in tied:
                    c.price_cents = _quote(self._providers.get(c.provider), request)

        def key(c: RouteCandidate) -> tuple[Any, ...]:
            return (*head(c), c.price_cents is None, c.price_cents or 0, c.provider)

        return sorted(candidates.values(), key=key)


def _quote(provider: Provider, request: VideoRequest) -> int | None:
    try:
        return provider.quote_cents(request)
    except ProviderError:
        return None  # an unknown price ranks last; it never fails the request


def _chosen_reason(first: RouteCandidate, candidates: Sequence[RouteCandidate]) -> str:
    if len(candidates) == 1:
        return f"{first.provider} is the only configured provider that can do this request"
    ranked = ", ".join(
        f"{c.provider} (priority {'unset' if c.priority is None else c.priority}"
        + (f", {c.free_capacity} free" if c.free_capacity is not None else "")
        + (f", {c.price_cents} cents" if c.price_cents is not None else "")
        + ")"
        for c in candidates
    )
    return f"{first.provider} ranks first of {len(candidates)} capable providers: {ranked}"


# ----------------------------------------------------------------- what `auto` can be asked for

# A reference image for trying image-to-video needs (never fetched: validation has no network).
_PROBE_IMAGE = "https://example.com/image.png"
_ORIENTATIONS: tuple[Orientation | None, ...] = (None, "portrait", "landscape")
_RESOLUTIONS: tuple[Resolution | None, ...] = (None, "720p", "1080p")


@dataclass(frozen=True)
class AutoCell:
    """A set of needs that at least one provider can serve: every combination of the listed
    values goes (``None``: the field left out). Cells are disjoint; together they are exactly
    the needs some configured provider accepts."""

    image: bool
    pros: tuple[bool, ...]
    resolutions: tuple[Resolution | None, ...]
    orientations: tuple[Orientation | None, ...]
    durations: tuple[int | None, ...]


# The dimensions merged, in order: a cell merges with another that agrees on all else.
_MERGED = ("orientations", "resolutions", "pros")


def auto_cells(configs: Sequence[ProviderConfig]) -> list[AutoCell]:
    """Every combination of needs some configured provider accepts, as few disjoint cells.

    Derived from the adapters' own ``validate`` (no network), over the durations their
    capabilities list, so the `auto` request shapes cannot drift from what routing accepts.
    Cells start one per (image, pro, resolution, orientation) with the durations that fit;
    then cells that differ in one dimension only are merged (a union of disjoint products
    that agree elsewhere is a product, disjoint from the rest).
    """
    from reelay.providers.registry import PROTOCOLS

    # A protocol without an adapter here (a test's fake) offers no `auto` shape.
    providers = [_offline(c) for c in configs if c.protocol in PROTOCOLS]
    durations = sorted({d for p in providers for d in p.capabilities().durations})
    cells = []
    for image, pro, resolution, orientation in itertools.product(
        (False, True), (False, True), _RESOLUTIONS, _ORIENTATIONS
    ):
        needs = (image, pro, resolution, orientation)
        fits = tuple(d for d in (None, *durations) if _any_accepts(providers, _needs(*needs, d)))
        if fits:
            cells.append(AutoCell(image, (pro,), (resolution,), (orientation,), fits))
    for dimension in _MERGED:
        merged: dict[tuple[Any, ...], AutoCell] = {}
        for cell in cells:
            rest = tuple(getattr(cell, f) for f in ("image", *_MERGED, "durations") if f != dimension)
            if rest in merged:
                other = merged[rest]
                values = (*getattr(other, dimension), *getattr(cell, dimension))
                changes: dict[str, Any] = {dimension: values}
                merged[rest] = replace(other, **changes)
            else:
                merged[rest] = cell
        cells = list(merged.values())
    return cells


def _needs(
    image: bool, pro: bool, resolution: Resolution | None, orientation: Orientation | None, duration: int | None
) -> VideoRequest:
    return VideoRequest(
        provider=AUTO,
        prompt="probe",
        image_url=_PROBE_IMAGE if image else None,
        pro=pro,
        resolution=resolution,
        orientation=orientation,
        duration=duration,
    )


def _any_accepts(providers: Iterable[Provider], request: VideoRequest) -> bool:
    for provider in providers:
        try:
            provider.validate(request)
        except RequestInvalid:
            continue
        return True
    return False


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError("an offline adapter made a network call")  # validation never does


def _offline(config: ProviderConfig) -> Provider:
    """The adapter of ``config`` with a transport that refuses every call (cheap: no TLS setup)."""
    from reelay.providers.registry import build_provider

    return build_provider(config, client=httpx.Client(transport=httpx.MockTransport(_refuse)))
