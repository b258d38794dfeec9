"""The KPI tree: which parts explain a parent KPI's change, for its alerts.

A KPI's parts are, in order of preference:

* its children (KPIs with ``parent:`` naming it): a child with more dimensions contributes
  each of its series under the parent's series (``region=east``), a child with the same
  dimensions contributes itself (``gmv_online``) — the parts add up to the parent;
* else, for a derived KPI, the inputs of its formula (``revenue = orders * aov``), whose
  contributions are Shapley values (:func:`~kpistream.core.contributions.shapley`).

Each part's change is its value at the alert's window against the same baseline the alert
reads (``explain:``, else the first ``prev``/``ago``/``avg_over`` of its condition, else
``ago(1d)``), from the parts' own histories.

>>> from kpistream.core.loader import load_rules_text
>>> from kpistream.core.baselines import KpiHistory
>>> rules = load_rules_text('''
... sources: [{name: s, topic: t}]
... kpis:
...   - {name: total, source: s, agg: sum(x), window: 1m}
...   - {name: region, source: s, agg: sum(x), by: [region], window: 1m, parent: total}
... alerts: [{name: low, kpi: total, when: value < 0.8 * prev()}]
... ''')
>>> explainer = Explainer(rules, rules.alerts[0])
>>> histories = {"total": KpiHistory(60_000, 0), "region": KpiHistory(60_000, 0)}
>>> histories["total"].add(60_000, {(): 200.0})
>>> histories["total"].add(120_000, {(): 120.0})
>>> histories["region"].add(60_000, {("east",): 100.0, ("west",): 100.0})
>>> histories["region"].add(120_000, {("east",): 36.0, ("west",): 84.0})
>>> e = explainer.explain(histories, (), 120_000)
>>> e.baseline, [(c.name, c.delta, c.share) for c in e.parts]
('prev()', [('region=east', -64.0, 0.8), ('region=west', -16.0, 0.2)])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from kpistream.core import expr as ex
from kpistream.core.baselines import BASELINES, KpiHistory, lookback_ms
from kpistream.core.contributions import Contribution, Explanation, rank, shapley
from kpistream.core.expr.syntax import walk
from kpistream.core.ruleset import Alert, Kpi, RuleSet, label_name
from kpistream.core.values import SeriesKey

__all__ = ["DEFAULT_BASELINE", "TOP_PARTS", "Explainer", "baseline_of", "part_series",
           "parts_of"]

DEFAULT_BASELINE = "ago(1d)"
TOP_PARTS = 5
_BASELINE_CALLS = ("prev", "ago", "avg_over")


def parts_of(rules: RuleSet, kpi: Kpi) -> tuple[Kpi, ...]:
    """The KPIs a KPI's change is shared among: its children, else its formula's inputs."""
    children = tuple(k for k in rules.kpis.values() if k.parent == kpi.name)
    if children:
        return children
    return tuple(rules.kpis[name] for name in kpi.inputs)


def part_series(parent: Kpi, part: Kpi, labels: Mapping[str, str],
                keys: Iterable[SeriesKey]) -> list[tuple[str, SeriesKey]]:
    """A part's series (among ``keys``) under the parent's series (``labels`` by field),
    each with the name it is shown by: the part's name when it has the parent's dimensions
    or fewer (a total beside its parts), else its extra label values (``region=east``)."""
    if set(part.by) <= set(parent.by):
        key = tuple(labels[f] for f in part.by)
        return [(part.name, key)] if key in keys else []
    extra = [f for f in part.by if f not in labels]
    found = []
    for key in keys:
        mine = dict(zip(part.by, key, strict=True))
        if all(mine[f] == v for f, v in labels.items()):
            found.append((", ".join(f"{label_name(f)}={mine[f]}" for f in extra), key))
    return sorted(found)


def baseline_of(alert: Alert) -> str:
    """The baseline an alert's explanation compares with.

    >>> from kpistream.core.ruleset import Condition
    >>> baseline_of(Alert("a", "k", (Condition("warning", None, "value < 0.7 * ago(7d)"),),
    ...                   "warning", None))
    'ago(7d)'
    """
    if alert.explain is not None:
        return alert.explain
    for condition in alert.conditions:
        for node in walk(ex.parse(condition.text)):
            if isinstance(node, ex.Call) and node.name in _BASELINE_CALLS:
                return condition.text[node.column - 1:_call_end(condition.text,
                                                                node.column - 1)]
    return DEFAULT_BASELINE


def _call_end(text: str, start: int) -> int:
    """Where the call starting at ``start`` closes its parenthesis."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


class Explainer:
    """Explains the changes of one alert's KPI by its parts."""

    def __init__(self, rules: RuleSet, alert: Alert) -> None:
        self.kpi = rules.kpis[alert.kpi]
        self.parts = parts_of(rules, self.kpi)
        self.additive = bool(self.parts) and self.parts[0].parent == self.kpi.name
        self.baseline = baseline_of(alert)
        call = ex.parse(self.baseline)
        assert isinstance(call, ex.Call)  # checked when the rules were compiled
        self._fn = BASELINES[call.name][0]
        self._arg = call.args[0].value if call.args else 1.0
        self.lookback_ms = lookback_ms(call, self.kpi.hop_ms or self.kpi.window_ms)

    def explain(self, histories: Mapping[str, KpiHistory], key: SeriesKey, end_ms: int
                ) -> Explanation | None:
        """The parts' contributions to the change of the series ``key`` at ``end_ms``, best
        first (at most :data:`TOP_PARTS`); None when there is nothing to share."""
        labels = dict(zip(self.kpi.by, key, strict=True))
        values = {}
        missing = 0
        for part in self.parts:
            for name, part_key in part_series(self.kpi, part, labels,
                                              histories[part.name].series):
                pair = self._pair(histories[part.name], part_key, end_ms)
                if pair is None:
                    missing += 1
                else:
                    values[name] = pair
        if not values:
            return None
        if self.additive:
            total = self._pair(histories[self.kpi.name], key, end_ms)
            parts = rank(values, None if total is None else total[0] - total[1],
                         top=TOP_PARTS)
        else:
            parts = self._formula_parts(values)
        return Explanation(self.baseline, parts, missing) if parts else None

    def _pair(self, history: KpiHistory, key: SeriesKey, end_ms: int
              ) -> tuple[float, float] | None:
        series = history.series.get(key)
        current = None if series is None else series.values.get(end_ms)
        if current is None:
            return None
        base = self._fn({"__history": series, "__end": end_ms}, self._arg)
        return None if base is None else (current, base)

    def _formula_parts(self, values: Mapping[str, tuple[float, float]]
                       ) -> tuple[Contribution, ...]:
        """Each formula input's Shapley contribution, ranked by share of the change."""
        if len(values) != len(self.parts):
            return ()
        current = {n: c for n, (c, _) in values.items()}
        baseline = {n: b for n, (_, b) in values.items()}
        shares = shapley(self.kpi.formula, current, baseline)
        total = sum(shares.values()) if shares else 0.0
        if not total:
            return ()
        rows = [Contribution(n, current[n], baseline[n], v, v / total)
                for n, v in shares.items() if v]
        return tuple(sorted(rows, key=lambda c: (-c.share, c.name))[:TOP_PARTS])
