"""Derived KPIs: a formula over other KPIs' values of the same window and series.

A derived window closes once every input has closed it, so inputs fed by different sources
(orders and visits for ``conversion``) wait for each other. A series missing from a
``count()``/``sum()`` input counts as 0 there; missing from any other input, it has no value.
Division by zero gives no value for that series and window.

>>> from kpistream.core.values import ClosedWindow
>>> ratio = lambda env: env["paid"] / env["visits"] if env["visits"] else None
>>> d = DerivedWindows("conversion", ratio,
...                    {"paid": ("region",), "visits": ("region",)}, ("region",),
...                    zero_inputs={"paid"})
>>> d.offer(ClosedWindow("visits", 0, 60_000, {("east",): 50.0, ("west",): 0.0}))
>>> d.offer(ClosedWindow("paid", 0, 60_000, {("east",): 5.0}))
>>> [w.values for w in d.close({"paid": 60_000, "visits": 60_000})]
[{('east',): 0.1}]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

from kpistream.core.values import ClosedWindow, SeriesKey

__all__ = ["DerivedWindows"]


class DerivedWindows:
    """Buffers input windows until all inputs closed them, then applies the formula."""

    def __init__(
        self,
        kpi: str,
        formula: Callable[[Mapping[str, object]], object],
        input_labels: Mapping[str, tuple[str, ...]],
        labels: tuple[str, ...],
        *,
        zero_inputs: Collection[str] = (),
    ) -> None:
        self.kpi = kpi
        self.formula = formula
        self.inputs = tuple(input_labels)
        self.zero_inputs = frozenset(zero_inputs)
        #: per input, where each of the derived KPI's labels sits in the input's key
        self.reorder = {name: tuple(lab.index(x) for x in labels)
                        for name, lab in input_labels.items()}
        self.pending: dict[int, dict[str, ClosedWindow]] = {}
        self.closed_through: int | None = None

    def offer(self, window: ClosedWindow) -> None:
        """Buffer one input's closed window."""
        self.pending.setdefault(window.end_ms, {})[window.kpi] = window

    def close(self, closed_through: Mapping[str, int | None]) -> list[ClosedWindow]:
        """Compute every buffered window that all inputs have closed."""
        limits = [closed_through.get(name) for name in self.inputs]
        if any(limit is None for limit in limits):
            return []
        limit = min(limits)  # type: ignore[type-var]
        out = []
        for end in sorted(e for e in self.pending if e <= limit):
            window = self._compute(end, self.pending.pop(end))
            if window.values:
                out.append(window)
        self.closed_through = limit
        return out

    def _compute(self, end: int, windows: dict[str, ClosedWindow]) -> ClosedWindow:
        start = next(iter(windows.values())).start_ms
        by_input = {name: self._reordered(name, w) for name, w in windows.items()}
        keys = set().union(*by_input.values())
        values: dict[SeriesKey, float] = {}
        for key in keys:
            value = self._value(key, by_input)
            if value is not None:
                values[key] = value
        return ClosedWindow(self.kpi, start, end, values)

    def _reordered(self, name: str, window: ClosedWindow) -> dict[SeriesKey, float]:
        order = self.reorder[name]
        return {tuple(k[i] for i in order): v for k, v in window.values.items()}

    def _value(self, key: SeriesKey, by_input: dict[str, dict[SeriesKey, float]]
               ) -> float | None:
        env: dict[str, object] = {}
        for name in self.inputs:
            value = by_input.get(name, {}).get(key)
            if value is None:
                if name not in self.zero_inputs:
                    return None
                value = 0.0
            env[name] = value
        result = self.formula(env)
        if isinstance(result, bool) or not isinstance(result, int | float):
            return None
        return float(result) if math.isfinite(result) else None
