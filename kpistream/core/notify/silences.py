"""Silences: mute alert events whose fields and labels equal every matcher, for a time."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from kpistream.core.notify.model import AlertEvent, Silence

__all__ = ["expire", "field", "is_active", "matches", "prune", "silenced_by"]

_FIELDS = ("alert", "kpi", "severity")


def field(event: AlertEvent, owner: str, name: str) -> str | None:
    """The value a matcher ``name`` compares with: a field, the routed owner, or a label.

    >>> from kpistream.core.notify.routing import _example
    >>> e = _example()
    >>> field(e, "ops", "kpi"), field(e, "ops", "owner"), field(e, "ops", "region")
    ('gmv', 'ops', 'east')
    >>> field(e, "ops", "city") is None
    True
    """
    if name in _FIELDS:
        return getattr(event, name)
    if name == "owner":
        return owner
    return dict(event.labels).get(name)


def is_active(silence: Silence, now_ms: int) -> bool:
    """Active in ``[starts_ms, ends_ms)``.

    >>> s = Silence("s1", (), 1000, 2000)
    >>> [is_active(s, t) for t in (999, 1000, 1999, 2000)]
    [False, True, True, False]
    """
    return silence.starts_ms <= now_ms < silence.ends_ms


def matches(silence: Silence, event: AlertEvent, owner: str) -> bool:
    """Every matcher equals the event's value (a silence without matchers matches nothing).

    >>> from kpistream.core.notify.routing import _example
    >>> s = Silence("s1", (("kpi", "gmv"), ("region", "east")), 0, 10)
    >>> matches(s, _example(), "ops"), matches(s, _example(labels=()), "ops")
    (True, False)
    """
    return bool(silence.matchers) and all(
        field(event, owner, name) == value for name, value in silence.matchers
    )


def silenced_by(
    event: AlertEvent, owner: str, silences: Iterable[Silence], now_ms: int
) -> Silence | None:
    """The first active silence that matches the event, if any."""
    for silence in silences:
        if is_active(silence, now_ms) and matches(silence, event, owner):
            return silence
    return None


def expire(silences: Iterable[Silence], silence_id: str, now_ms: int) -> tuple[Silence, ...]:
    """End the silence ``silence_id`` at ``now_ms`` (if it would end later); keep the others.

    >>> expire([Silence("a", (), 0, 100)], "a", 40)[0].ends_ms
    40
    """
    return tuple(
        replace(s, ends_ms=max(s.starts_ms, now_ms))
        if s.id == silence_id and s.ends_ms > now_ms
        else s
        for s in silences
    )


def prune(silences: Iterable[Silence], now_ms: int) -> tuple[Silence, ...]:
    """Drop silences that have ended.

    >>> [s.id for s in prune([Silence("a", (), 0, 10), Silence("b", (), 0, 99)], 10)]
    ['b']
    """
    return tuple(s for s in silences if s.ends_ms > now_ms)
