"""Window state of one aggregated KPI: panes per series, closed as the watermark passes.

Batches arrive as rows ``(pane_start, *label_values, *partials)`` already aggregated by
polars; each row is merged once into the pane's state for that series. A window closes when
its end is at or before ``watermark - lateness``; its value per series merges its panes.

Cardinality guard: once ``max_series`` series are live, the rows of any new label set are
merged into the series ``__other__`` (every label ``__other__``), so a label explosion costs
one series, not memory without bound; ``folded`` counts those rows (per batch and pane).

>>> from kpistream.core.aggregates import parse_agg
>>> from kpistream.core.calendar import calendar_for
>>> w = KpiWindows("orders", parse_agg("count()"), calendar_for(60_000, None, "UTC"), 3_600_000)
>>> w.add([(0, "east", 2), (60_000, "west", 1)])
>>> [(c.end_ms, c.values) for c in w.close(120_000)]
[(60000, {('east',): 2.0}), (120000, {('east',): 0.0, ('west',): 1.0})]
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from kpistream.core.aggregates import Aggregation
from kpistream.core.calendar import Calendar
from kpistream.core.values import ClosedWindow, SeriesKey

__all__ = ["OTHER", "KpiWindows"]

#: the label value of the series that holds label sets beyond a KPI's ``max_series``
OTHER = "__other__"


class KpiWindows:
    """Open panes and known series of one KPI."""

    def __init__(
        self, kpi: str, agg: Aggregation, calendar: Calendar, series_ttl_ms: int, labels: int = 1,
        *, max_series: int = 10_000
    ) -> None:
        self.kpi = kpi
        self.labels = labels
        self.max_series = max_series
        self.other: SeriesKey = (OTHER,) * labels
        #: rows of new label sets folded into ``other`` since start
        self.folded = 0
        self.agg = agg
        self.calendar = calendar
        self.series_ttl_ms = series_ttl_ms
        #: pane start -> series -> aggregation state
        self.panes: dict[int, dict[SeriesKey, object]] = {}
        #: the open panes' starts as a min-heap: closing drops the oldest without a scan
        self._starts: list[int] = []
        #: series -> [first pane start, last pane start] seen
        self.series: dict[SeriesKey, list[int]] = {}
        #: end of the earliest window not closed yet (None before any event)
        self.next_end: int | None = None
        #: every window ending at or before this is final
        self.closed_through: int | None = None

    def add(self, rows: Sequence[tuple]) -> None:
        """Merge per-batch partial rows ``(pane, *labels, *partials)`` into the panes.

        When the batch may reach ``max_series``, its rows go in label order, so which new
        label sets keep a series of their own does not depend on polars' grouping order.
        """
        width = self.labels
        merge, empty = self.agg.merge, self.agg.empty
        series = self.series
        if width and len(series) + len(rows) > self.max_series:
            rows = sorted(rows, key=lambda row: (row[1:1 + width], row[0]))
        for row in rows:
            pane = row[0]
            key = row[1:1 + width]
            seen = series.get(key)
            if (seen is None and width and key != self.other
                    and len(series) - (self.other in series) >= self.max_series):
                key = self.other  # the cardinality guard
                seen = series.get(key)
                self.folded += 1
            states = self.panes.get(pane)
            if states is None:
                states = self.panes[pane] = {}
                heapq.heappush(self._starts, pane)
                if self.next_end is None or self.calendar.pane_end(pane) < self.next_end:
                    self.next_end = self.calendar.pane_end(pane)
            state = states.get(key)
            states[key] = merge(empty() if state is None else state, row[1 + width:])
            if seen is None:
                series[key] = [pane, pane]
            elif pane > seen[1]:
                seen[1] = pane
            elif pane < seen[0]:
                seen[0] = pane

    def close(self, limit_ms: int) -> list[ClosedWindow]:
        """Close every window ending at or before ``limit_ms``, in order (empty ones too)."""
        closed: list[ClosedWindow] = []
        while self.next_end is not None and self.next_end <= limit_ms:
            end = self.next_end
            closed.append(self._close_one(end))
            self.next_end = self._following_end(end)
        if self.closed_through is None or limit_ms > self.closed_through:
            self.closed_through = limit_ms
        return closed

    def state(self) -> dict:
        """Everything that changes, as plain data (see :meth:`Engine.snapshot`)."""
        return {"panes": self.panes, "series": self.series, "next_end": self.next_end,
                "closed_through": self.closed_through, "folded": self.folded}

    def load(self, state: dict) -> None:
        self.panes, self.series = state["panes"], state["series"]
        self._starts = sorted(self.panes)
        self.next_end, self.closed_through = state["next_end"], state["closed_through"]
        self.folded = state.get("folded", 0)

    def last_end(self) -> int | None:
        """The end of the last window holding data (what ``finish`` closes up to)."""
        return max((self.calendar.window_end(p) for p in self.panes), default=None)

    def _close_one(self, end: int) -> ClosedWindow:
        start = self.calendar.window_start(end)
        panes = [self.panes[p] for p in self._pane_starts(start, end) if p in self.panes]
        values: dict[SeriesKey, float] = {}
        for key, (first, last) in list(self.series.items()):
            if end - self.calendar.pane_end(last) > self.series_ttl_ms:
                del self.series[key]
                continue
            if first >= end:
                continue
            value = self._value(key, panes)
            if value is not None:
                values[key] = value
        active = frozenset(key for pane in panes for key in pane)
        self._drop_panes_through(start)
        return ClosedWindow(self.kpi, start, end, values, active)

    def _value(self, key: SeriesKey, panes: list[dict[SeriesKey, object]]) -> float | None:
        states = [s[key] for s in panes if key in s]
        if not states:
            return self.agg.result(self.agg.empty()) if self.agg.zero_when_empty else None
        state = states[0]
        for other in states[1:]:
            state = self.agg.combine(state, other)
        return self.agg.result(state)

    def _pane_starts(self, start: int, end: int) -> list[int]:
        starts, pane = [], start
        while pane < end:
            starts.append(pane)
            pane = self.calendar.pane_end(pane)
        return starts

    def _drop_panes_through(self, start: int) -> None:
        """Drop the panes no later window needs: those starting at or before ``start``, the
        first pane of the window just closed (window ends grow with pane starts)."""
        starts = self._starts
        while starts and starts[0] <= start:
            del self.panes[heapq.heappop(starts)]

    def _following_end(self, end: int) -> int | None:
        following = self.calendar.pane_end(end)
        if self.series:  # live series report every window, zeros included
            return following
        if self.panes:  # nothing live until the next data: skip the empty stretch
            return max(following, self.calendar.pane_end(self._starts[0]))
        return None
