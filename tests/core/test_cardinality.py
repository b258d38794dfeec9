"""The cardinality guard: label sets beyond a KPI's max_series fold into ``__other__``."""

from __future__ import annotations

import pickle

import orjson

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.windows import OTHER

T = 1_700_000_040_000  # a minute boundary
RULES = """
sources: [{name: s, topic: t}]
kpis:
  - {name: n, source: s, agg: count(), by: [user], window: 1m, lateness: 0s MAX}
  - {name: amount, source: s, agg: sum(x), by: [user], window: 1m, lateness: 0s MAX}
"""


def engine(max_series: int | None = None) -> Engine:
    extra = "" if max_series is None else f", max_series: {max_series}"
    return Engine(load_rules_text(RULES.replace(" MAX", extra)))


def event(ts: int, user: str, x: float = 1.0) -> bytes:
    return orjson.dumps({"ts": ts, "user": user, "x": x})


def test_label_sets_beyond_the_limit_are_counted_in_other():
    e = engine(max_series=2)
    e.ingest("s", [event(T + 1, "a"), event(T + 2, "b", 2.0), event(T + 3, "c", 3.0),
                   event(T + 4, "d", 4.0), event(T + 5, "a"), event(T + 60_000, "z")])
    windows = {w.kpi: w for w in e.advance().windows}
    assert windows["n"].values == {("a",): 2.0, ("b",): 1.0, (OTHER,): 2.0}
    assert windows["amount"].values == {("a",): 2.0, ("b",): 2.0, (OTHER,): 7.0}
    assert e.folded()["n"] == 3  # c, d, and z of the next minute


def test_a_million_distinct_labels_keep_the_state_bounded_and_the_totals_exact():
    e = engine()  # the default: 10,000 series per KPI
    users = 1_000_000
    for first in range(0, users, 100_000):
        e.ingest("s", [event(T + i * 59_000 // users, f"u{i}")
                       for i in range(first, first + 100_000)])
    assert len(pickle.dumps(e.snapshot())) < 8_000_000  # 1M series would take ~100 MB
    e.ingest("s", [event(T + 60_000, "u0")])
    (n, amount) = sorted(e.advance().windows, key=lambda w: w.kpi, reverse=True)
    assert len(n.values) == 10_001
    assert n.values[(OTHER,)] == users - 10_000
    assert sum(n.values.values()) == users == sum(amount.values.values())
    assert e.folded()["n"] > 0
