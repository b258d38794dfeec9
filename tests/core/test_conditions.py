"""Oracle: conditions evaluated for every series at once (polars) equal the scalar closures."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kpistream.core import expr as ex
from kpistream.core.baselines import BASELINES, KpiHistory
from kpistream.core.conditions import ConditionColumns

HOP = 60_000
END = 100 * HOP

terms = st.sampled_from(["value", "prev()", "prev(2)", "ago(3m)", "avg_over(5m)",
                         "pct_change(prev())", "pct_change(avg_over(3m))", "abs(value - prev())",
                         "3", "0", "-2.5", "max(value, prev())"])
comparisons = st.builds(lambda a, op, b: f"{a} {op} {b}", terms,
                        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), terms)
conditions = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["and", "or"]),
                  inner),
        st.builds(lambda a: f"not ({a})", inner)),
    max_leaves=4)
series_values = st.lists(st.one_of(st.none(), st.integers(-3, 3).map(float)), min_size=6,
                         max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(conditions, min_size=1, max_size=4),
       st.lists(st.tuples(series_values, st.integers(-3, 3).map(float)), min_size=1,
                max_size=5))
def test_vectorised_verdicts_equal_scalar_ones(texts, series):
    history = KpiHistory(HOP, 10 * HOP)
    keys = [(f"s{i}",) for i in range(len(series))]
    for key, (past, _) in zip(keys, series, strict=True):
        for back, value in enumerate(past, 1):
            if value is not None:
                history.of(key).values[END - back * HOP] = value
    values = [now for _, now in series]
    got = ConditionColumns(texts, scalar_max_series=0).verdicts(keys, values, history, END)
    for text, verdicts in zip(texts, got, strict=True):
        test = ex.to_python(ex.parse(text), allowed_names=["value"], functions=BASELINES)
        for key, value, verdict in zip(keys, values, verdicts, strict=True):
            env = {"value": value, "__history": history.of(key), "__end": END}
            assert verdict == (test(env) is True), (text, key, value)
