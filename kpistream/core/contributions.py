"""Contribution analysis: which parts explain most of a change.

A parent's change against its baseline is shared among its parts (children KPIs, label
values, or the inputs of its formula); each part's contribution is its own change, and its
share that change over the parent's. Parts are ranked by how much they push in the
direction of the parent's change.

>>> for c in rank({"east": (20.0, 100.0), "west": (95.0, 100.0), "north": (105.0, 100.0)}):
...     print(c.name, c.delta, f"{c.share:.0%}")
east -80.0 100%
west -5.0 6%
north 5.0 -6%
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Contribution", "Explanation", "rank", "shapley"]


@dataclass(frozen=True, slots=True)
class Contribution:
    """One part's change and its share of the parent's change."""

    name: str
    current: float
    baseline: float
    delta: float
    #: delta over the parent's change (shares of parts that sum to the parent add up to 1)
    share: float


def rank(parts: Mapping[str, tuple[float, float]], total: float | None = None, *,
         top: int | None = None) -> tuple[Contribution, ...]:
    """Rank parts given as ``name -> (current, baseline)`` by their push along the change.

    ``total`` is the parent's change; by default the sum of the parts' changes (parts that
    add up to the parent). Parts with no change are left out.
    """
    deltas = {name: (cur, base, cur - base) for name, (cur, base) in parts.items()}
    if total is None:
        total = sum(d for _, _, d in deltas.values())
    if total == 0:
        return ()
    ranked = sorted(((n, *v) for n, v in deltas.items() if v[2] != 0),
                    key=lambda r: (-r[3] / total, r[0]))
    return tuple(Contribution(n, cur, base, d, d / total) for n, cur, base, d in ranked[:top])


@dataclass(frozen=True, slots=True)
class Explanation:
    """The parts that explain a parent KPI's change against ``baseline``, best first."""

    baseline: str
    parts: tuple[Contribution, ...]
    #: parts left out because their window or baseline was missing
    missing: int = 0


def shapley(formula: Callable[[Mapping[str, float]], object], current: Mapping[str, float],
            baseline: Mapping[str, float]) -> dict[str, float] | None:
    """Each input's share of ``formula(current) - formula(baseline)``: the Shapley value of
    switching it from baseline to current (exact for sums; fair for products and ratios).
    None when the formula has no value at some mix of inputs (a division by zero).

    >>> revenue = lambda v: v["orders"] * v["aov"]
    >>> shapley(revenue, {"orders": 80.0, "aov": 110.0}, {"orders": 100.0, "aov": 100.0})
    {'aov': 900.0, 'orders': -2100.0}
    """
    names = sorted(current)
    n = len(names)
    cache: dict[frozenset[str], float] = {}

    def value(switched: frozenset[str]) -> float:
        if switched not in cache:
            mix = {k: current[k] if k in switched else baseline[k] for k in names}
            result = formula(mix)
            if not isinstance(result, int | float) or isinstance(result, bool):
                raise ArithmeticError("no value")
            cache[switched] = float(result)
        return cache[switched]

    shares = {}
    try:
        for name in names:
            others = [k for k in names if k != name]
            total = 0.0
            for size in range(n):
                weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                for subset in itertools.combinations(others, size):
                    with_it = frozenset((*subset, name))
                    total += weight * (value(with_it) - value(frozenset(subset)))
            shares[name] = total
    except (ArithmeticError, ValueError, TypeError):
        return None
    return shares
