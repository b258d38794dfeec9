"""The notifier: alert events in, due notifications out; pure, with the clock as an argument.

Stages, each a pure function in its own module: routing (:mod:`.routing`, shadow mode
included), dedup and repeat (:mod:`.dedup`), silences (:mod:`.silences`), inhibition
(:mod:`.inhibit`), grouping (:mod:`.grouping`) and quiet hours (:mod:`.quiet`). Mutes are
checked when a group goes out (as Alertmanager's MuteStage does), so an alert that is still
firing when its silence ends or its inhibiting critical resolves is then sent.

>>> from kpistream.core.notify.routing import _example
>>> ops = OwnerPolicy("ops", ("json://localhost/x",), group_wait_ms=30_000)
>>> n = Notifier({"ops": ops})
>>> n.offer([_example(at_ms=0)], now_ms=1_000)
>>> n.due(30_999)
[]
>>> [(x.owner, [e.state for e in x.events], x.repeat) for x in n.due(31_000)]
[('ops', ['firing'], False)]
>>> n.offer([_example(state="resolved", at_ms=60_000)], now_ms=61_000)
>>> [[e.state for e in x.events] for x in n.due(91_000)]
[['resolved']]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from kpistream.core.notify import inhibit
from kpistream.core.notify.dedup import Action, Entry, Queue, on_event, repeat_due
from kpistream.core.notify.grouping import group_due, make_notification
from kpistream.core.notify.model import (
    AlertEvent,
    Notification,
    OwnerPolicy,
    Silence,
    event_from_json,
    event_to_json,
)
from kpistream.core.notify.quiet import quiet_until
from kpistream.core.notify.routing import route
from kpistream.core.notify.silences import expire, silenced_by

__all__ = ["Notifier"]

Key = tuple[str, str]  # (fingerprint, severity)
SNAPSHOT_VERSION = 1


class Notifier:
    """Turns alert events into notifications for their owners.

    Parameters
    ----------
    owners
        Owner name → policy (channels, language, group wait, repeat, quiet hours).
    silences
        Silences to apply; replace them with :meth:`set_silences`.
    default_owner
        Where an event without ``owner`` goes.

    Attributes ``dropped`` (reason → events) and ``held`` (owner → events held by quiet hours)
    are counters for metrics. Reasons: ``shadow``, ``no_route``, ``unknown_owner``,
    ``no_urls``, ``silenced``, ``inhibited``, ``duplicate``, ``flapped``, ``never_notified``,
    ``resolved_before_send``, ``quiet_pair``, ``send_resolved_off``.
    """

    def __init__(self, owners: Mapping[str, OwnerPolicy], silences: Iterable[Silence] = (), *,
                 default_owner: str | None = None) -> None:
        self.owners: dict[str, OwnerPolicy] = dict(owners)
        self.silences: tuple[Silence, ...] = tuple(silences)
        self.default_owner = default_owner
        self.dropped: Counter[str] = Counter()
        self.held: Counter[str] = Counter()
        self._entries: dict[Key, Entry] = {}
        self._groups: dict[str, int] = {}  # owner → arrival of its group's first event
        self._criticals: dict[str, AlertEvent] = {}  # fingerprint → firing critical

    # -- silences ---------------------------------------------------------------------------

    def set_silences(self, silences: Iterable[Silence]) -> None:
        """Replace every silence."""
        self.silences = tuple(silences)

    def add_silence(self, silence: Silence) -> None:
        """Add a silence, replacing one with the same id."""
        self.silences = (*(s for s in self.silences if s.id != silence.id), silence)

    def expire(self, silence_id: str, now_ms: int) -> None:
        """End a silence now; alerts it muted that still fire go out at the next :meth:`due`."""
        self.silences = expire(self.silences, silence_id, now_ms)

    # -- events in --------------------------------------------------------------------------

    def offer(self, events: Iterable[AlertEvent], now_ms: int) -> None:
        """Take alert events that arrived at ``now_ms``."""
        batch = list(events)
        for event in batch:  # first, so order within a batch does not matter for inhibition
            self._track_critical(event)
        for event in batch:
            self._offer_one(event, now_ms)

    def _track_critical(self, event: AlertEvent) -> None:
        if not event.notify or event.severity != "critical":
            return
        if event.state == "firing":
            self._criticals[event.fingerprint] = event
        else:
            self._criticals.pop(event.fingerprint, None)

    def _offer_one(self, event: AlertEvent, now_ms: int) -> None:
        key = (event.fingerprint, event.severity)
        current = self._entries.get(key)
        if current is not None:  # a resolve goes to whoever got the firing
            policy, reason = self.owners.get(current.owner), "unknown_owner"
            if not event.notify:
                policy, reason = None, "shadow"
        else:
            routed = route(event, self.owners, self.default_owner)
            policy, reason = routed.policy, routed.dropped or ""
        if policy is None:
            self._entries.pop(key, None)
            self.dropped[reason] += 1
            return
        action, why = on_event(current, event, policy.send_resolved)
        if why:
            self.dropped[why] += 1
        if action is Action.QUEUE:
            self._entries[key] = entry = current or Entry(event, policy.name, Queue.PENDING)
            entry.event, entry.queue, entry.release_ms = event, Queue.PENDING, None
            self._groups.setdefault(policy.name, now_ms)
        elif action is Action.FORGET:
            del self._entries[key]
        elif action is Action.REVERT and current is not None:
            current.event, current.queue, current.release_ms = event, Queue.NONE, None

    # -- notifications out ------------------------------------------------------------------

    def due(self, now_ms: int) -> list[Notification]:
        """Every notification whose time has come at ``now_ms``: groups, releases, reminders."""
        sources = inhibit.sources(self._criticals.values())
        self._unmute(sources, now_ms)
        out: list[Notification] = []
        for owner in sorted({e.owner for e in self._entries.values()} | set(self._groups)):
            policy = self.owners.get(owner)
            if policy is None:
                self._forget_owner(owner)
                continue
            out += self._flush(policy, sources, now_ms)
            out += self._repeats(policy, sources, now_ms)
        return out

    def _unmute(self, sources: frozenset[inhibit.InhibitKey], now_ms: int) -> None:
        for entry in self._entries.values():
            if entry.queue is Queue.MUTED and self._mute(entry, sources, now_ms) is None:
                entry.queue = Queue.PENDING
                self._groups.setdefault(entry.owner, now_ms)

    def _mute(self, entry: Entry, sources: frozenset[inhibit.InhibitKey], now_ms: int
              ) -> str | None:
        if silenced_by(entry.event, entry.owner, self.silences, now_ms):
            return "silenced"
        if inhibit.inhibited(entry.event, sources):
            return "inhibited"
        return None

    def _ready(self, policy: OwnerPolicy, now_ms: int) -> list[tuple[Key, Entry]]:
        first = self._groups.get(policy.name)
        group_ready = first is not None and group_due(first, policy.group_wait_ms, now_ms)
        if group_ready:
            del self._groups[policy.name]
        return [
            (key, e) for key, e in self._entries.items()
            if e.owner == policy.name and (
                (group_ready and e.queue is Queue.PENDING)
                or (e.queue is Queue.HELD and e.release_ms is not None
                    and now_ms >= e.release_ms))
        ]

    def _flush(self, policy: OwnerPolicy, sources: frozenset[inhibit.InhibitKey], now_ms: int
               ) -> list[Notification]:
        send: list[AlertEvent] = []
        quiet_end = quiet_until(policy.quiet_hours, policy.timezone, now_ms)
        for key, entry in self._ready(policy, now_ms):
            muted = self._mute(entry, sources, now_ms)
            if muted:
                self.dropped[muted] += 1
                if entry.event.state == "firing":
                    entry.queue = Queue.MUTED
                else:
                    del self._entries[key]
            elif quiet_end is not None and entry.event.severity != "critical":
                if entry.queue is not Queue.HELD:
                    self.held[policy.name] += 1
                entry.queue, entry.release_ms = Queue.HELD, quiet_end
            else:
                send.append(entry.event)
                self._mark_sent(key, entry, now_ms)
        return [make_notification(policy, send, now_ms)] if send else []

    def _mark_sent(self, key: Key, entry: Entry, now_ms: int) -> None:
        if entry.event.state == "firing":
            entry.queue, entry.sent_ms, entry.release_ms = Queue.NONE, now_ms, None
        else:
            del self._entries[key]

    def _repeats(self, policy: OwnerPolicy, sources: frozenset[inhibit.InhibitKey],
                 now_ms: int) -> list[Notification]:
        quiet = quiet_until(policy.quiet_hours, policy.timezone, now_ms) is not None
        events: list[AlertEvent] = []
        for entry in self._entries.values():
            if (entry.owner != policy.name
                    or not repeat_due(entry, policy.repeat_interval_ms, now_ms)
                    or (quiet and entry.event.severity != "critical")
                    or self._mute(entry, sources, now_ms)):
                continue
            entry.sent_ms = now_ms
            events.append(entry.event)
        return [make_notification(policy, events, now_ms, repeat=True)] if events else []

    def _forget_owner(self, owner: str) -> None:
        for key in [k for k, e in self._entries.items() if e.owner == owner]:
            del self._entries[key]
            self.dropped["unknown_owner"] += 1
        self._groups.pop(owner, None)

    # -- checkpoints ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The notifier's state as plain JSON-able data (silences and owners excluded)."""
        return {
            "version": SNAPSHOT_VERSION,
            "entries": [_entry_to_json(e) for _, e in sorted(self._entries.items())],
            "groups": dict(sorted(self._groups.items())),
            "criticals": [event_to_json(e) for _, e in sorted(self._criticals.items())],
            "dropped": dict(sorted(self.dropped.items())),
            "held": dict(sorted(self.held.items())),
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any], owners: Mapping[str, OwnerPolicy],
                silences: Iterable[Silence] = (), *, default_owner: str | None = None
                ) -> Notifier:
        """A notifier carrying on from :meth:`snapshot`'s data."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"notifier snapshot version {snapshot.get('version')!r}; "
                             f"expected {SNAPSHOT_VERSION}")
        notifier = cls(owners, silences, default_owner=default_owner)
        for data in snapshot["entries"]:
            entry = _entry_from_json(data)
            notifier._entries[(entry.event.fingerprint, entry.event.severity)] = entry
        notifier._groups = {str(k): int(v) for k, v in snapshot["groups"].items()}
        for data in snapshot["criticals"]:
            event = event_from_json(data)
            notifier._criticals[event.fingerprint] = event
        notifier.dropped.update(snapshot.get("dropped", {}))
        notifier.held.update(snapshot.get("held", {}))
        return notifier


def _entry_to_json(entry: Entry) -> dict[str, Any]:
    return {"event": event_to_json(entry.event), "owner": entry.owner,
            "queue": entry.queue.value, "sent_ms": entry.sent_ms,
            "release_ms": entry.release_ms}


def _entry_from_json(data: Mapping[str, Any]) -> Entry:
    return Entry(event_from_json(data["event"]), data["owner"], Queue(data["queue"]),
                 data.get("sent_ms"), data.get("release_ms"))
