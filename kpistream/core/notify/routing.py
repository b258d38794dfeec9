"""Routing: which owner an alert event goes to, or why it goes nowhere."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kpistream.core.notify.model import AlertEvent, OwnerPolicy

__all__ = ["Route", "route"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event goes: ``policy``, or the reason it is ``dropped`` (exactly one is set)."""

    policy: OwnerPolicy | None
    dropped: str | None = None


def route(
    event: AlertEvent, owners: Mapping[str, OwnerPolicy], default_owner: str | None = None
) -> Route:
    """Route to ``event.owner``, else ``default_owner``; never raises.

    Reasons: ``shadow`` (``notify=False``), ``no_route`` (no owner at all), ``unknown_owner``,
    ``no_urls`` (the owner has no channel).

    >>> from kpistream.core.notify.model import OwnerPolicy
    >>> e = _example(owner=None)
    >>> route(e, {"ops": OwnerPolicy("ops", ("json://x",))}, "ops").policy.name
    'ops'
    >>> route(e, {}, None).dropped, route(e, {}, "ops").dropped
    ('no_route', 'unknown_owner')
    """
    if not event.notify:
        return Route(None, "shadow")
    name = event.owner or default_owner
    if name is None:
        return Route(None, "no_route")
    policy = owners.get(name)
    if policy is None:
        return Route(None, "unknown_owner")
    if not policy.urls:
        return Route(None, "no_urls")
    return Route(policy)


def _example(**changes: object) -> AlertEvent:
    """A firing event for doctests."""
    from dataclasses import replace

    base = AlertEvent("gmv_low", "gmv", (("region", "east"),), "firing", "critical",
                      180_000, 60_000, 812.5, "value < 1000", "ops")
    return replace(base, **changes)  # type: ignore[arg-type]
