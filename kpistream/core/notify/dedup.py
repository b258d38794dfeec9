"""Dedup and repeat: what one incoming event does to the notification log of its alert.

Each alert of one series and severity has at most one :class:`Entry`: its latest event, where
it waits (``queue``) and whether its firing has been sent. The decisions are pure tables, in
the spirit of Alertmanager's ``DedupStage.needsUpdate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kpistream.core.notify.model import AlertEvent

__all__ = ["Action", "Entry", "Queue", "on_event", "repeat_due"]


class Queue(Enum):
    """Where an entry waits."""

    NONE = "none"  # nothing to send (a sent firing, waiting for its resolve or a repeat)
    PENDING = "pending"  # in its owner's group, waiting for group_wait
    HELD = "held"  # held by quiet hours until release_ms
    MUTED = "muted"  # a firing never sent: silenced or inhibited, re-checked at each due()


@dataclass(slots=True)
class Entry:
    """The notification log of one alert (fingerprint + severity) for its owner."""

    event: AlertEvent
    owner: str
    queue: Queue
    sent_ms: int | None = None  # when its firing was last sent (None: never, or resolved)
    release_ms: int | None = None  # for HELD


class Action(Enum):
    """What to do with an incoming event."""

    QUEUE = "queue"  # store it as the entry's event and queue it for sending
    DROP = "drop"  # ignore it (with a reason)
    FORGET = "forget"  # delete the entry: nothing was sent, and now nothing is to be sent
    REVERT = "revert"  # a firing cancels an unsent resolve: back to a sent, firing entry


def on_event(current: Entry | None, event: AlertEvent, send_resolved: bool
             ) -> tuple[Action, str | None]:
    """Decide what an incoming event does, given the alert's entry; returns (action, reason).

    >>> from kpistream.core.notify.routing import _example
    >>> fire, resolve = _example(), _example(state="resolved", at_ms=240_000)
    >>> on_event(None, fire, True)
    (<Action.QUEUE: 'queue'>, None)
    >>> on_event(Entry(fire, "ops", Queue.NONE, sent_ms=0), fire, True)
    (<Action.DROP: 'drop'>, 'duplicate')
    >>> on_event(Entry(fire, "ops", Queue.MUTED), resolve, True)
    (<Action.FORGET: 'forget'>, 'never_notified')
    """
    if event.state == "firing":
        if current is None:
            return Action.QUEUE, None
        if current.event.state == "firing":
            return Action.DROP, "duplicate"
        return Action.REVERT, "flapped"
    if current is None:
        return Action.DROP, "never_notified"
    if current.event.state == "resolved":
        return Action.DROP, "duplicate"
    if current.sent_ms is None:
        return Action.FORGET, _UNSENT_REASON[current.queue]
    if not send_resolved:
        return Action.FORGET, "send_resolved_off"
    return Action.QUEUE, None


_UNSENT_REASON = {
    Queue.PENDING: "resolved_before_send",
    Queue.HELD: "quiet_pair",
    Queue.MUTED: "never_notified",
    Queue.NONE: "never_notified",
}


def repeat_due(entry: Entry, repeat_interval_ms: int, now_ms: int) -> bool:
    """A sent, still-firing alert is due again once ``repeat_interval_ms`` has passed.

    >>> from kpistream.core.notify.routing import _example
    >>> e = Entry(_example(), "ops", Queue.NONE, sent_ms=1000)
    >>> [repeat_due(e, 500, t) for t in (1499, 1500)]
    [False, True]
    """
    return (
        entry.queue is Queue.NONE
        and entry.event.state == "firing"
        and entry.sent_ms is not None
        and repeat_interval_ms > 0
        and now_ms >= entry.sent_ms + repeat_interval_ms
    )
