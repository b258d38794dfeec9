"""Baseline functions for ``when:`` conditions, over the series' own recent window values.

- ``prev()`` / ``prev(n)``: the value n windows ago (default 1);
- ``ago(d)``: the value of the window that ended ``d`` earlier (``ago(1d)``, ``ago(1w)``: the
  same window yesterday, last week);
- ``avg_over(d)``: the average of the values of the windows that ended in the ``d`` before this
  one (this window excluded);
- ``pct_change(base)``: ``(value - base) / |base| * 100``, e.g. ``pct_change(ago(1d)) < -30``.

A baseline with no data (too little history, a missing window) is null, so the condition does
not hold. History is kept per series for the longest lookback the alerts of a KPI read.

>>> h = SeriesHistory(hop_ms=60_000)
>>> for end, v in [(60_000, 10.0), (120_000, 20.0), (180_000, 30.0)]:
...     h.add(end, v)
>>> row = {"value": 45.0, "__history": h, "__end": 240_000}
>>> prev(row), prev(row, 3), ago(row, 120.0), avg_over(row, 180.0), pct_change(row, 30.0)
(30.0, 10.0, 20.0, 20.0, 50.0)
"""

from __future__ import annotations

from collections.abc import Mapping

from kpistream.core.expr import Call, Expr, ExprError, Literal
from kpistream.core.expr.syntax import walk

__all__ = ["BASELINES", "KpiHistory", "SeriesHistory", "lookback_ms"]

Row = Mapping[str, object]


class SeriesHistory:
    """One series' closed-window values by window end, trimmed to a lookback."""

    def __init__(self, hop_ms: int, keep_ms: int = 0) -> None:
        self.hop_ms = hop_ms
        self.keep_ms = keep_ms
        self.values: dict[int, float] = {}

    def add(self, end_ms: int, value: float) -> None:
        """Record a window's value (window ends arrive in order, so the oldest is first)."""
        self.values[end_ms] = value
        if self.keep_ms:
            horizon = end_ms - self.keep_ms
            while (oldest := next(iter(self.values))) < horizon:
                del self.values[oldest]

    def recent(self, n: int) -> tuple[tuple[int, float], ...]:
        """The last ``n`` points, oldest first."""
        items = list(self.values.items())  # insertion order is time order
        return tuple(items[-n:])


class KpiHistory:
    """The recent values of every series of one KPI, shared by the alerts that read it."""

    def __init__(self, hop_ms: int, keep_ms: int) -> None:
        self.hop_ms = hop_ms
        self.keep_ms = keep_ms
        self.series: dict[tuple[str, ...], SeriesHistory] = {}

    def of(self, key: tuple[str, ...]) -> SeriesHistory:
        history = self.series.get(key)
        if history is None:
            history = self.series[key] = SeriesHistory(self.hop_ms, self.keep_ms)
        return history

    def add(self, end_ms: int, values: Mapping[tuple[str, ...], float]) -> None:
        for key, value in values.items():
            self.of(key).add(end_ms, value)

    def state(self) -> dict:
        return {key: h.values for key, h in self.series.items()}

    def load(self, state: dict) -> None:
        for key, values in state.items():
            self.of(key).values = values


def _history(row: Row) -> tuple[SeriesHistory, int]:
    return row["__history"], row["__end"]  # type: ignore[return-value]


def prev(row: Row, n: float = 1) -> float | None:
    history, end = _history(row)
    return history.values.get(end - int(n) * history.hop_ms)


def ago(row: Row, seconds: float) -> float | None:
    history, end = _history(row)
    return history.values.get(end - int(seconds * 1000))


def avg_over(row: Row, seconds: float) -> float | None:
    history, end = _history(row)
    start = end - int(seconds * 1000)
    values = [v for e, v in history.values.items() if start <= e < end]
    return sum(values) / len(values) if values else None


def pct_change(row: Row, base: object) -> float | None:
    value = row.get("value")
    if not isinstance(base, int | float) or not isinstance(value, int | float) or base == 0:
        return None
    return (value - base) / abs(base) * 100


BASELINES = {
    "prev": (prev, (0, 1)),
    "ago": (ago, (1, 1)),
    "avg_over": (avg_over, (1, 1)),
    "pct_change": (pct_change, (1, 1)),
}


def lookback_ms(expr: Expr, hop_ms: int) -> int:
    """How much history a condition reads; its window arguments must be literals.

    >>> from kpistream.core.expr import parse
    >>> lookback_ms(parse("value < avg_over(1h) and value < prev(3)"), 60_000)
    3600000
    """
    longest = 0
    for node in walk(expr):
        if not isinstance(node, Call) or node.name not in ("prev", "ago", "avg_over"):
            continue
        arg = node.args[0] if node.args else Literal(1.0, node.column)
        if not isinstance(arg, Literal) or not isinstance(arg.value, float) or arg.value <= 0:
            raise ExprError(f"{node.name}() takes a positive number or duration written out, "
                            f"e.g. {node.name}({'3' if node.name == 'prev' else '1h'})",
                            node.column)
        span = arg.value * hop_ms if node.name == "prev" else arg.value * 1000
        longest = max(longest, int(span))
    return longest
