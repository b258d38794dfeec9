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

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Contribution", "rank"]


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
