"""Grouping: an owner's events waiting together become one notification with a stable id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from kpistream.core.notify.model import AlertEvent, Notification, OwnerPolicy

__all__ = ["event_order", "group_due", "make_notification", "notification_id"]

_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def group_due(first_ms: int, group_wait_ms: int, now_ms: int) -> bool:
    """A group goes out ``group_wait_ms`` after its first event arrived.

    >>> [group_due(1000, 30_000, t) for t in (1000, 30_999, 31_000)]
    [False, False, True]
    >>> group_due(1000, 0, 1000)
    True
    """
    return now_ms >= first_ms + group_wait_ms


def event_order(event: AlertEvent) -> tuple[object, ...]:
    """Sort key: firing first, then critical first, then by alert, labels and time.

    >>> from kpistream.core.notify.routing import _example
    >>> events = [_example(state="resolved"), _example(severity="info"), _example()]
    >>> [(e.state, e.severity) for e in sorted(events, key=event_order)]
    [('firing', 'critical'), ('firing', 'info'), ('resolved', 'critical')]
    """
    return (
        event.state != "firing",
        _SEVERITY_RANK.get(event.severity, len(_SEVERITY_RANK)),
        event.alert,
        event.labels,
        event.at_ms,
    )


def notification_id(owner: str, events: Iterable[AlertEvent], repeat: bool, created_ms: int
                    ) -> str:
    """A hash of the owner and each event's fingerprint, severity, state and at_ms.

    A reminder also hashes ``created_ms``, so successive reminders differ, while a first
    notice rebuilt later (e.g. after a restore) keeps its id and delivery can deduplicate it.

    >>> from kpistream.core.notify.routing import _example
    >>> notification_id("ops", [_example()], False, 1) == notification_id(
    ...     "ops", [_example()], False, 2)
    True
    >>> notification_id("ops", [_example()], True, 1) == notification_id(
    ...     "ops", [_example()], True, 2)
    False
    """
    parts = [owner, "repeat" if repeat else "notice"]
    parts += sorted(f"{e.fingerprint}/{e.severity}/{e.state}/{e.at_ms}" for e in events)
    if repeat:
        parts.append(str(created_ms))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def make_notification(policy: OwnerPolicy, events: Iterable[AlertEvent], now_ms: int,
                      repeat: bool = False) -> Notification:
    """One notification for ``policy``'s owner, events ordered by :func:`event_order`.

    >>> from kpistream.core.notify.routing import _example
    >>> n = make_notification(OwnerPolicy("ops", ("json://x",)), [_example()], 5)
    >>> n.owner, n.urls, n.language, n.created_ms, len(n.events), len(n.id)
    ('ops', ('json://x',), 'zh', 5, 1, 32)
    """
    ordered = tuple(sorted(events, key=event_order))
    return Notification(
        id=notification_id(policy.name, ordered, repeat, now_ms),
        owner=policy.name,
        urls=policy.urls,
        language=policy.language,
        events=ordered,
        created_ms=now_ms,
        repeat=repeat,
        timezone=policy.timezone,
    )
