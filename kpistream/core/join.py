"""Joining several KPIs' closed windows by window end and series.

Derived KPIs and composite alert conditions read several KPIs at once. A joined window is
ready once every input has closed it (inputs fed by different sources wait for each other).
A series missing from a ``count()``/``sum()`` input reads 0 there, from any other input null.
An input with fewer dimensions than the join (a total beside its parts) is read by the
dimensions it has, so every part's row sees its total; the rows are the series of the
inputs that have every dimension.

>>> from kpistream.core.values import ClosedWindow
>>> j = WindowJoin({"paid": ("region",), "visits": ("region",)}, ("region",), zero={"paid"})
>>> j.offer(ClosedWindow("visits", 0, 60_000, {("east",): 50.0}))
>>> j.offer(ClosedWindow("paid", 0, 60_000, {("west",): 5.0}))
>>> for start, end, rows in j.ready({"paid": 60_000, "visits": 60_000}):
...     print(end, sorted(rows.items()))
60000 [(('east',), {'paid': 0.0, 'visits': 50.0}), (('west',), {'paid': 5.0, 'visits': None})]
>>> share = WindowJoin({"gmv": ("region",), "total": ()}, ("region",))
>>> share.offer(ClosedWindow("gmv", 0, 60_000, {("east",): 30.0, ("west",): 10.0}))
>>> share.offer(ClosedWindow("total", 0, 60_000, {(): 40.0}))
>>> [sorted(rows.items()) for _, _, rows in share.ready({"gmv": 60_000, "total": 60_000})]
[[(('east',), {'gmv': 30.0, 'total': 40.0}), (('west',), {'gmv': 10.0, 'total': 40.0})]]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from kpistream.core.values import ClosedWindow, SeriesKey

__all__ = ["JoinedWindow", "WindowJoin"]

JoinedWindow = tuple[int, int, dict[SeriesKey, dict[str, float | None]]]


class WindowJoin:
    """Buffers input windows until all inputs closed them; yields one row per series."""

    def __init__(self, input_labels: Mapping[str, tuple[str, ...]], labels: tuple[str, ...], *,
                 zero: Collection[str] = ()) -> None:
        self.inputs = tuple(input_labels)
        self.zero = frozenset(zero)
        full = {name for name, lab in input_labels.items() if set(lab) == set(labels)}
        #: per input with every dimension, where each joined label sits in its key
        self.reorder = {name: tuple(lab.index(x) for x in labels)
                        for name, lab in input_labels.items() if name in full}
        #: per input with fewer dimensions, where each of its labels sits in a joined key
        self.project = {name: tuple(labels.index(x) for x in lab)
                        for name, lab in input_labels.items() if name not in full}
        self.pending: dict[int, dict[str, ClosedWindow]] = {}
        self.closed_through: int | None = None

    def offer(self, window: ClosedWindow) -> None:
        """Buffer one input's closed window (others are ignored)."""
        if window.kpi in self.inputs:
            self.pending.setdefault(window.end_ms, {})[window.kpi] = window

    def ready(self, closed_through: Mapping[str, int | None]) -> list[JoinedWindow]:
        """Every buffered window that all inputs have closed, oldest first."""
        limits = [closed_through.get(name) for name in self.inputs]
        if any(limit is None for limit in limits):
            return []
        limit = min(limits)  # type: ignore[type-var]
        out = [self._rows(end, self.pending.pop(end))
               for end in sorted(e for e in self.pending if e <= limit)]
        self.closed_through = limit
        return out

    def state(self) -> dict:
        return {"pending": self.pending, "closed_through": self.closed_through}

    def load(self, state: dict) -> None:
        self.pending, self.closed_through = state["pending"], state["closed_through"]

    def _rows(self, end: int, windows: dict[str, ClosedWindow]) -> JoinedWindow:
        start = next(iter(windows.values())).start_ms
        by_input = {name: self._reordered(name, w) if name in self.reorder else w.values
                    for name, w in windows.items()}
        keys = set().union(*(by_input.get(name, {}) for name in self.reorder))
        rows = {key: {name: self._value(name, key, by_input) for name in self.inputs}
                for key in keys}
        return start, end, rows

    def _value(self, name: str, key: SeriesKey, by_input) -> float | None:
        project = self.project.get(name)
        if project is not None:
            key = tuple(key[i] for i in project)
        value = by_input.get(name, {}).get(key)
        if value is None and name in self.zero:
            return 0.0
        return value

    def _reordered(self, name: str, window: ClosedWindow) -> dict[SeriesKey, float]:
        order = self.reorder[name]
        if order == tuple(range(len(order))):
            return window.values
        return {tuple(k[i] for i in order): v for k, v in window.values.items()}
