"""Inhibition: a firing ``critical`` mutes ``warning`` and ``info`` of the same series.

The same series means the same labels and either the same alert or the same KPI. Shadow
(``notify=False``) criticals inhibit nothing: a rule being tuned must not hide a real page.
"""

from __future__ import annotations

from collections.abc import Iterable

from kpistream.core.notify.model import AlertEvent

__all__ = ["InhibitKey", "inhibited", "inhibition_keys", "sources"]

InhibitKey = tuple[str, str, tuple[tuple[str, str], ...]]

_MUTABLE = frozenset({"warning", "info"})


def inhibition_keys(event: AlertEvent) -> tuple[InhibitKey, InhibitKey]:
    """The series an event belongs to: by alert + labels and by KPI + labels.

    >>> from kpistream.core.notify.routing import _example
    >>> inhibition_keys(_example())
    (('alert', 'gmv_low', (('region', 'east'),)), ('kpi', 'gmv', (('region', 'east'),)))
    """
    return ("alert", event.alert, event.labels), ("kpi", event.kpi, event.labels)


def sources(firing_criticals: Iterable[AlertEvent]) -> frozenset[InhibitKey]:
    """Every series key covered by the given firing critical events."""
    return frozenset(k for e in firing_criticals for k in inhibition_keys(e))


def inhibited(event: AlertEvent, source_keys: frozenset[InhibitKey]) -> bool:
    """Whether a firing ``warning``/``info`` event is muted by a firing critical.

    >>> from kpistream.core.notify.routing import _example
    >>> crit = _example(alert="gmv_very_low")
    >>> warn = _example(severity="warning")
    >>> inhibited(warn, sources([crit])), inhibited(crit, sources([crit]))
    (True, False)
    >>> inhibited(_example(severity="warning", labels=()), sources([crit]))
    False
    """
    if event.severity not in _MUTABLE or event.state != "firing":
        return False
    return any(k in source_keys for k in inhibition_keys(event))
