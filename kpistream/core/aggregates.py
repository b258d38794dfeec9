"""Aggregations of a KPI: a per-batch partial (polars) merged into per-window state (Python).

Each aggregation has three parts, as in quix-streams' ``aggregations.py``:

* ``partial_exprs(col)`` — polars expressions computing one batch's partial per group;
* ``merge(state, partial)`` — folds a batch partial (or another window's state) into a state;
* ``result(state)`` — the window's value, or ``None`` when it has none.

States are plain values (numbers, arrays, sets) so that they pickle and checkpoint cheaply.

>>> agg = parse_agg("avg(amount)")
>>> state = agg.merge(agg.empty(), (10.0, 2))
>>> state = agg.merge(state, (5.0, 1))
>>> agg.result(state)
5.0
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from kpistream.core.expr import FieldType
from kpistream.core.hints import did_you_mean

__all__ = ["AGGREGATIONS", "AggError", "Aggregation", "parse_agg"]

State = Any
Partial = tuple[Any, ...]


class AggError(ValueError):
    """An ``agg:`` text that does not name a known aggregation with the right arguments."""


@dataclass(frozen=True)
class Aggregation(ABC):
    """One aggregation over the field ``field`` (``None`` for ``count()``)."""

    field: str | None
    name: ClassVar[str]
    field_type: ClassVar[FieldType | None] = FieldType.NUMBER
    #: True when a seen series with no events in a window reports 0 rather than nothing.
    zero_when_empty: ClassVar[bool] = False

    @abstractmethod
    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        """Polars expressions giving one group's partial, in the order ``merge`` reads them."""

    @abstractmethod
    def empty(self) -> State:
        """The state of a window with no events."""

    @abstractmethod
    def merge(self, state: State, partial: Partial) -> State:
        """Fold a partial into ``state`` and return the new state (may mutate ``state``)."""

    @abstractmethod
    def result(self, state: State) -> float | None:
        """The window's value."""

    def combine(self, a: State, b: State) -> State:
        """Merge two window states (used to assemble hopping windows from panes)."""
        return self.merge(self.copy(a), self.as_partial(b))

    def as_partial(self, state: State) -> Partial:
        return (state,)

    def copy(self, state: State) -> State:
        return state


@dataclass(frozen=True)
class Count(Aggregation):
    name = "count"
    field_type = None
    zero_when_empty = True

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [pl.len()]

    def empty(self) -> int:
        return 0

    def merge(self, state: int, partial: Partial) -> int:
        return state + partial[0]

    def result(self, state: int) -> float:
        return float(state)


@dataclass(frozen=True)
class Sum(Aggregation):
    name = "sum"
    zero_when_empty = True

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [col.sum()]

    def empty(self) -> float:
        return 0.0

    def merge(self, state: float, partial: Partial) -> float:
        return state + partial[0]

    def result(self, state: float) -> float:
        return state


@dataclass(frozen=True)
class Avg(Aggregation):
    name = "avg"

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [col.sum(), col.count()]

    def empty(self) -> tuple[float, int]:
        return (0.0, 0)

    def merge(self, state: tuple[float, int], partial: Partial) -> tuple[float, int]:
        return (state[0] + partial[0], state[1] + partial[1])

    def as_partial(self, state: tuple[float, int]) -> Partial:
        return state

    def result(self, state: tuple[float, int]) -> float | None:
        return state[0] / state[1] if state[1] else None


@dataclass(frozen=True)
class _Extreme(Aggregation):
    pick: ClassVar[Callable[[float, float], float]]

    def empty(self) -> float | None:
        return None

    def merge(self, state: float | None, partial: Partial) -> float | None:
        value = partial[0]
        if value is None:
            return state
        return value if state is None else type(self).pick(state, value)

    def result(self, state: float | None) -> float | None:
        return state


@dataclass(frozen=True)
class Min(_Extreme):
    name = "min"
    pick = min

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [col.min()]


@dataclass(frozen=True)
class Max(_Extreme):
    name = "max"
    pick = max

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [col.max()]


@dataclass(frozen=True)
class CountDistinct(Aggregation):
    """Exact distinct count of a field's values (read as text), nulls excluded."""

    name = "count_distinct"
    field_type = FieldType.STRING

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [col.drop_nulls().unique()]

    def empty(self) -> set[str]:
        return set()

    def merge(self, state: set[str], partial: Partial) -> set[str]:
        state.update(partial[0])
        return state

    def copy(self, state: set[str]) -> set[str]:
        return set(state)

    def result(self, state: set[str]) -> float | None:
        return float(len(state)) if state else None


@dataclass(frozen=True)
class Quantile(Aggregation):
    """Exact quantile with linear interpolation between closest ranks (numpy's default).

    >>> q = Quantile("x", 0.5)
    >>> q.result(q.merge(q.empty(), ([1.0, 2.0, 3.0, 10.0],)))
    2.5
    """

    name = "quantile"
    q: float = 0.5

    def partial_exprs(self, col: pl.Expr) -> list[pl.Expr]:
        return [col.drop_nulls()]

    def empty(self) -> array[float]:
        return array("d")  # 8 bytes a value, a quarter of a list of floats

    def merge(self, state: array[float], partial: Partial) -> array[float]:
        state.extend(partial[0])
        return state

    def copy(self, state: array[float]) -> array[float]:
        return array("d", state)

    def result(self, state: array[float]) -> float | None:
        if not state:
            return None
        ordered = sorted(state)
        pos = (len(ordered) - 1) * self.q
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


AGGREGATIONS: dict[str, type[Aggregation]] = {
    cls.name: cls for cls in (Count, Sum, Avg, Min, Max, CountDistinct, Quantile)
}
_AGG = re.compile(r"^\s*([A-Za-z_]\w*)\s*\(\s*([A-Za-z_][\w.]*)?\s*(?:,\s*([^)]*?)\s*)?\)\s*$")


def parse_agg(text: str) -> Aggregation:
    """Parse ``count()``, ``sum(f)``, ``quantile(f, 0.95)`` and the like.

    >>> parse_agg("quantile(amount, 0.95)")
    Quantile(field='amount', q=0.95)
    >>> parse_agg("summ(amount)")
    Traceback (most recent call last):
    ...
    kpistream.core.aggregates.AggError: unknown aggregation "summ"; expected one of count, sum,
    avg, min, max, count_distinct, quantile (did you mean "sum"?)
    """
    match = _AGG.match(text)
    if not match:
        raise AggError(
            f'invalid aggregation "{text}"; expected a call such as count(), sum(amount) '
            "or quantile(amount, 0.95)"
        )
    name, field, arg = match.groups()
    cls = AGGREGATIONS.get(name)
    if cls is None:
        raise AggError(f'unknown aggregation "{name}"; expected one of '
                       f"{', '.join(AGGREGATIONS)}{did_you_mean(name, AGGREGATIONS)}")
    if cls is Quantile:
        return Quantile(_require_field(name, field), _quantile_arg(arg))
    if arg is not None:
        raise AggError(f'{name}() takes one field, got extra argument "{arg}"')
    if cls is Count:
        if field is not None:
            raise AggError(f'count() takes no field, got "{field}"; to count events that have '
                           f"it, add where: not is_null({field})")
        return Count(None)
    return cls(_require_field(name, field))


def _require_field(name: str, field: str | None) -> str:
    if field is None:
        hint = "quantile(amount, 0.95)" if name == "quantile" else f"{name}(amount)"
        raise AggError(f"{name}() needs a field; e.g. {hint}")
    return field


def _quantile_arg(arg: str | None) -> float:
    try:
        q = float(arg) if arg is not None else math.nan
    except ValueError:
        q = math.nan
    if not 0.0 <= q <= 1.0:
        raise AggError(f'quantile() needs a level between 0 and 1 as second argument, got "{arg}"')
    return q
