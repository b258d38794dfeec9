"""Event-time progress of one source, per partition, and the watermark it allows.

The watermark is the *smallest* of the partitions' largest event times: a partition that lags
(a backlog read one partition at a time, a slow producer) holds windows open instead of making
its events late. A partition quiet for ``idle_timeout_ms`` of processing time is left out, and
when every partition is quiet the watermark moves on with the clock, so windows still close
when traffic stops. Without a clock (backtests) no partition is ever idle.

>>> w = Watermarks(idle_timeout_ms=10_000)
>>> w.assign([0, 1], now_ms=0)
>>> w.observe({0: 5_000}, now_ms=1)
>>> print(w.current)  # partition 1 has no data yet: nothing is final
None
>>> w.observe({1: 3_000}, now_ms=2)
>>> w.current
3000
>>> w.advance(now_ms=10_001)  # partition 0 quiet since 1: left out; 1 still holds
>>> w.current
3000
>>> w.advance(now_ms=10_002)  # both quiet: the clock moves the watermark on
>>> w.current
15000
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Watermarks"]


@dataclass
class _Partition:
    high: int | None = None  # largest event time seen
    last_arrival_ms: int | None = None  # processing time of the last events, or of assignment


class Watermarks:
    """Per-partition progress of one source; ``current`` is monotone."""

    def __init__(self, idle_timeout_ms: int) -> None:
        self.idle_timeout_ms = idle_timeout_ms
        self.partitions: dict[int, _Partition] = {}
        self.current: int | None = None

    def assign(self, partitions: Iterable[int], now_ms: int | None) -> None:
        """The partitions this worker reads now; new ones hold the watermark until data or idle."""
        wanted = set(partitions)
        for p in list(self.partitions):
            if p not in wanted:
                del self.partitions[p]
        for p in wanted:  # (re)assigned: not idle before it had the chance to bring data
            self.partitions.setdefault(p, _Partition()).last_arrival_ms = now_ms

    def others_floor(self, partition: int, now_ms: int | None) -> float:
        """The smallest high of the other live partitions (-inf: one has no data; inf: none)."""
        floor = float("inf")
        for p, state in self.partitions.items():
            if p == partition or self._idle(state, now_ms):
                continue
            if state.high is None:
                return float("-inf")
            floor = min(floor, state.high)
        return floor

    def high(self, partition: int) -> int | None:
        state = self.partitions.get(partition)
        return state.high if state else None

    def observe(self, highs: Mapping[int, int], now_ms: int | None) -> None:
        """Events up to ``highs[p]`` arrived on each partition ``p``; recompute the watermark
        once all are recorded (one at a time, a partition not yet recorded would be missed)."""
        for partition, high in highs.items():
            state = self.partitions.setdefault(partition, _Partition())
            state.high = high if state.high is None else max(state.high, high)
            if now_ms is not None:
                state.last_arrival_ms = now_ms
        self.advance(now_ms)

    def advance(self, now_ms: int | None) -> None:
        """Recompute the watermark, leaving out partitions idle at ``now_ms``."""
        live = [s for s in self.partitions.values() if not self._idle(s, now_ms)]
        if live:
            if any(s.high is None for s in live):
                return
            candidate = min(s.high for s in live)  # type: ignore[type-var]
        else:
            seen = [s for s in self.partitions.values() if s.high is not None]
            if not seen or now_ms is None:
                return
            latest = max(seen, key=lambda s: s.last_arrival_ms or 0)
            candidate = max(s.high for s in seen) + now_ms - (latest.last_arrival_ms or now_ms)
        if self.current is None or candidate > self.current:
            self.current = candidate

    def state(self) -> dict:
        return {"partitions": {p: (s.high, s.last_arrival_ms) for p, s in self.partitions.items()},
                "current": self.current}

    def load(self, state: dict) -> None:
        self.partitions = {p: _Partition(h, a) for p, (h, a) in state["partitions"].items()}
        self.current = state["current"]

    def _idle(self, state: _Partition, now_ms: int | None) -> bool:
        if now_ms is None or state.last_arrival_ms is None:
            return False
        return now_ms - state.last_arrival_ms >= self.idle_timeout_ms
