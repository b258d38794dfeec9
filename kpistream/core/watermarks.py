"""Event-time progress: of one partition (where its panes become final), and of a source
(the watermark that closes windows once every partition has passed them).

A partition's *progress* is the largest event time it has brought. When it has been quiet for
``idle_timeout_ms`` of processing time it is *idle*: its progress moves on with the clock, so
its panes still become final when traffic stops. Without a clock (backtests) nothing is idle.

A source's watermark is the *smallest* progress of its live partitions: a partition that lags
(a backlog read one partition at a time, a slow producer, a partition whose worker died and
has not been taken over yet) holds windows open instead of making its events late. Idle
partitions are left out, except that a window cannot close before the panes an idle partition
still holds are final (``cap``). When every partition is idle, the largest progress counts.

>>> p = PartitionProgress()
>>> p.observe(5_000, now_ms=1)
>>> p.tick(now_ms=10_000, idle_timeout_ms=10_000), p.progress
(False, 5000)
>>> p.tick(now_ms=10_001, idle_timeout_ms=10_000), p.progress  # quiet: the clock moves it
(True, 15000)
>>> w = Watermark()
>>> w.expect([0, 1])
>>> w.update(0, Marker(progress=5_000))
>>> w.advance()
>>> print(w.current)  # partition 1 has said nothing yet: nothing is final
None
>>> w.update(1, Marker(progress=3_000))
>>> w.advance()
>>> w.current
3000
>>> w.update(1, Marker(progress=4_000, idle=True, held_from=60_000))
>>> w.advance()
>>> w.current, w.cap  # 1 is idle (left out) but holds a pane ending at 60 s
(5000, 60000)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Marker", "PartitionProgress", "Watermark"]


@dataclass
class PartitionProgress:
    """Progress of one source partition, as the worker that reads it sees it."""

    high: int | None = None  # largest event time seen
    last_arrival_ms: int | None = None  # processing time of the last events, or of assignment
    progress: int | None = None  # monotone: the high, or beyond it with the clock when idle
    idle: bool = False

    def observe(self, high: int, now_ms: int | None) -> None:
        """Events up to ``high`` arrived."""
        self.high = high if self.high is None else max(self.high, high)
        self.progress = self.high if self.progress is None else max(self.progress, self.high)
        self.idle = False
        if now_ms is not None:
            self.last_arrival_ms = now_ms

    def busy(self, now_ms: int | None) -> None:
        """Events are waiting to be read: not idle, whatever the clock says."""
        self.idle = False
        if now_ms is not None:
            self.last_arrival_ms = now_ms

    def tick(self, now_ms: int | None, idle_timeout_ms: int) -> bool:
        """Let the clock move an idle partition on; returns whether it is idle."""
        if now_ms is None or self.last_arrival_ms is None:
            return self.idle
        quiet = now_ms - self.last_arrival_ms
        self.idle = quiet >= idle_timeout_ms
        if self.idle and self.high is not None:
            self.progress = max(self.progress or self.high, self.high + quiet)
        return self.idle

    def state(self) -> tuple:
        return self.high, self.last_arrival_ms, self.progress, self.idle

    @classmethod
    def loaded(cls, state: tuple) -> PartitionProgress:
        return cls(*state)


@dataclass(frozen=True)
class Marker:
    """What a partition's reader last reported: its progress, whether it is idle, and the
    end of the earliest pane it still holds (``None``: none)."""

    progress: int | None
    idle: bool = False
    held_from: int | None = None


class Watermark:
    """A source's watermark from its partitions' markers; ``current`` is monotone."""

    def __init__(self) -> None:
        self.markers: dict[int, Marker] = {}
        #: processing time each partition's marker arrived (when the caller has a clock)
        self.heard: dict[int, int] = {}
        self.current: int | None = None

    def expect(self, partitions: Iterable[int]) -> None:
        """The source's partitions: one that has said nothing yet holds the watermark."""
        wanted = set(partitions)
        self.markers = {p: m for p, m in self.markers.items() if p in wanted}
        for p in wanted:
            self.markers.setdefault(p, Marker(None))

    def progress(self, partition: int) -> int | None:
        marker = self.markers.get(partition)
        return marker.progress if marker else None

    def update(self, partition: int, marker: Marker, now_ms: int | None = None) -> None:
        """Take a partition's newer marker (progress never goes back), arrived at ``now_ms``."""
        old = self.markers.get(partition)
        if old is not None and old.progress is not None and (
                marker.progress is None or marker.progress < old.progress):
            marker = Marker(old.progress, marker.idle, marker.held_from)
        self.markers[partition] = marker
        if now_ms is not None:
            self.heard[partition] = now_ms

    def advance(self, now_ms: int | None = None, stale_ms: int | None = None) -> None:
        """Recompute the watermark from the markers taken so far (at ``now_ms``).

        An idle partition not heard of for ``stale_ms`` (its reader re-sends the marker
        every third of that) counts as live again, holding windows at its last progress: its
        reader may have died, and the next one may bring events.
        """
        stale = set() if now_ms is None or stale_ms is None else {
            p for p, m in self.markers.items()
            if m.idle and now_ms - self.heard.get(p, now_ms) >= stale_ms}
        live = [m for p, m in self.markers.items() if not m.idle or p in stale]

        if live:
            if any(m.progress is None for m in live):
                return
            candidate = min(m.progress for m in live)  # type: ignore[type-var]
        else:
            seen = [m.progress for m in self.markers.values() if m.progress is not None]
            if not seen:
                return
            candidate = max(seen)
        if self.current is None or candidate > self.current:
            self.current = candidate

    @property
    def cap(self) -> int | None:
        """The earliest end of a pane that an idle partition still holds."""
        held = [m.held_from for m in self.markers.values() if m.idle and m.held_from is not None]
        return min(held, default=None)

    def state(self) -> dict:
        return {"markers": dict(self.markers), "heard": dict(self.heard),
                "current": self.current}

    def load(self, state: dict) -> None:
        self.markers, self.current = dict(state["markers"]), state["current"]
        self.heard = dict(state["heard"])
