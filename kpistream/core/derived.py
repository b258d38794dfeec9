"""Derived KPIs: a formula over other KPIs' values of the same window and series.

The inputs are joined by :class:`~kpistream.core.join.WindowJoin`; a series with a null input,
or whose formula gives no number (a division by zero), has no value in that window.

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

from kpistream.core.join import WindowJoin
from kpistream.core.values import ClosedWindow

__all__ = ["DerivedWindows"]


class DerivedWindows:
    """Applies a formula to joined input windows."""

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
        self.join = WindowJoin(input_labels, labels, zero=zero_inputs)
        self.inputs = self.join.inputs

    @property
    def closed_through(self) -> int | None:
        return self.join.closed_through

    def offer(self, window: ClosedWindow) -> None:
        """Buffer one input's closed window."""
        self.join.offer(window)

    def close(self, closed_through: Mapping[str, int | None]) -> list[ClosedWindow]:
        """Compute every buffered window that all inputs have closed."""
        out = []
        for start, end, rows in self.join.ready(closed_through):
            values = {key: v for key, row in rows.items() if (v := self._value(row)) is not None}
            out.append(ClosedWindow(self.kpi, start, end, values))  # empty too: alerts step
        return out

    def _value(self, row: dict[str, float | None]) -> float | None:
        if any(v is None for v in row.values()):
            return None
        result = self.formula(row)
        if isinstance(result, bool) or not isinstance(result, int | float):
            return None
        return float(result) if math.isfinite(result) else None
