"""The KPI tree: a parent's alert names the parts that explain its change, on constructed
cases where the answer is known."""

from __future__ import annotations

import orjson
import pytest

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.notify.model import Notification
from kpistream.core.notify.render import render
from kpistream.errors import RuleError

MIN = 60
T0 = 1_764_518_400  # a minute boundary
TREE = """
sources: [{name: orders, topic: t, partitions: 1}]
kpis:
  - {name: gmv_total, source: orders, agg: sum(amount), window: 1m, lateness: 0s}
  - {name: gmv_region, source: orders, agg: sum(amount), by: [region], window: 1m,
     lateness: 0s, parent: gmv_total}
  - {name: gmv_rep, source: orders, agg: sum(amount), by: [region, rep], window: 1m,
     lateness: 0s, parent: gmv_region}
alerts:
  - {name: total_drop, kpi: gmv_total, when: value < 0.8 * prev()}
  - {name: region_drop, kpi: gmv_region, when: value < 0.8 * prev()}
"""


def replay(rules_text: str, minutes: list[list[dict]]):
    """Events minute by minute (one more minute closes the last); the alert transitions."""
    engine = Engine(load_rules_text(rules_text))
    transitions = []
    for i, events in enumerate([*minutes, [{"region": "east", "rep": "a", "amount": 0}]]):
        engine.ingest("orders", [orjson.dumps({"ts": T0 + i * MIN + 1, **e}) for e in events])
        transitions += engine.advance().transitions
    return transitions


def sales(amounts: dict[tuple[str, str], float]) -> list[dict]:
    return [{"region": r, "rep": rep, "amount": a} for (r, rep), a in amounts.items()]


BEFORE = {("east", "a"): 60, ("east", "b"): 40, ("west", "c"): 100, ("north", "d"): 100,
          ("south", "e"): 100}
#: east loses 80 (rep a 60 -> 0, rep b 40 -> 20), west 20: 80% and 20% of the total's -100
AFTER = {("east", "a"): 0, ("east", "b"): 20, ("west", "c"): 80, ("north", "d"): 100,
         ("south", "e"): 100}


def test_one_regions_drop_explains_80_percent_of_the_parents():
    [fired] = [t for t in replay(TREE, [sales(BEFORE), sales(AFTER)]) if t.alert == "total_drop"]
    e = fired.explanation
    assert e.baseline == "prev()" and e.missing == 0
    assert [(c.name, c.current, c.baseline, c.delta, c.share) for c in e.parts] == [
        ("region=east", 20.0, 100.0, -80.0, 0.8), ("region=west", 80.0, 100.0, -20.0, 0.2)]


def test_a_region_is_explained_by_its_own_reps_only():
    transitions = replay(TREE, [sales(BEFORE), sales(AFTER)])
    [east] = [t for t in transitions if t.alert == "region_drop"]
    assert east.labels == (("region", "east"),)
    assert [(c.name, c.delta, c.share) for c in east.explanation.parts] == [
        ("rep=a", -60.0, 0.75), ("rep=b", -20.0, 0.25)]


def test_children_of_the_same_dimensions_are_named_by_kpi():
    rules = """
sources: [{name: orders, topic: t, partitions: 1}]
kpis:
  - {name: gmv, source: orders, agg: sum(amount), window: 1m, lateness: 0s}
  - {name: gmv_app, source: orders, where: channel == "app", agg: sum(amount), window: 1m,
     lateness: 0s, parent: gmv}
  - {name: gmv_web, source: orders, where: channel == "web", agg: sum(amount), window: 1m,
     lateness: 0s, parent: gmv}
alerts:
  - {name: drop, kpi: gmv, when: value < 100, explain: prev()}
"""
    minutes = [[{"channel": "app", "amount": 100}, {"channel": "web", "amount": 100}],
               [{"channel": "app", "amount": 10}, {"channel": "web", "amount": 70}]]
    [fired] = replay(rules, minutes)
    assert [(c.name, c.delta) for c in fired.explanation.parts] == [("gmv_app", -90.0),
                                                                     ("gmv_web", -30.0)]
    assert [round(c.share, 4) for c in fired.explanation.parts] == [0.75, 0.25]


def test_a_formula_is_explained_by_shapley_values_of_its_inputs():
    """revenue = orders * aov: 10 orders of 100 become 8 of 110 (1000 -> 880). Orders'
    contribution is ((800 - 1000) + (880 - 1100)) / 2 = -210, aov's ((1100 - 1000) +
    (880 - 800)) / 2 = +90; shares of the -120: 175% and -75%."""
    rules = """
sources: [{name: orders, topic: t, partitions: 1}]
kpis:
  - {name: orders, source: orders, agg: count(), window: 1m, lateness: 0s}
  - {name: aov, source: orders, agg: avg(amount), window: 1m, lateness: 0s}
  - {name: revenue, expr: orders * aov, window: 1m}
alerts:
  - {name: revenue_low, kpi: revenue, when: value < 0.9 * prev()}
"""
    minutes = [[{"amount": 100}] * 10, [{"amount": 110}] * 8]
    [fired] = replay(rules, minutes)
    parts = fired.explanation.parts
    assert [(c.name, c.current, c.baseline) for c in parts] == [("orders", 8.0, 10.0),
                                                                ("aov", 110.0, 100.0)]
    assert [c.delta for c in parts] == pytest.approx([-210.0, 90.0])
    assert [c.share for c in parts] == pytest.approx([1.75, -0.75])


def test_the_message_names_the_parts_in_both_languages():
    [fired] = [t for t in replay(TREE, [sales(BEFORE), sales(AFTER)]) if t.alert == "total_drop"]
    zh = render(Notification("n", "ops", (), "zh", (fired,), 0)).text
    en = render(Notification("n", "ops", (), "en", (fired,), 0)).text
    assert "主要贡献（对比 prev()）: region=east -80 (80%)，region=west -20 (20%)" in zh
    assert "Explained by (vs prev()): region=east -80 (80%), region=west -20 (20%)" in en


def test_a_missing_baseline_leaves_the_part_out_and_says_so():
    before = {k: v for k, v in BEFORE.items() if k[0] != "north"}  # north is new
    after = {**AFTER, ("north", "d"): 100}
    before[("west", "c")] = 200  # total 400 -> 400 - 80 - 120 + 100: the alert fires
    [fired] = [t for t in replay(TREE, [sales(before), sales(after)]) if t.alert == "total_drop"]
    assert fired.explanation.missing == 1
    assert "region=north" not in [c.name for c in fired.explanation.parts]


@pytest.mark.parametrize(("explain", "expected"), [
    ("ago(x)", 'r.yaml:10:57: alert "a": explain: ago() takes a positive number or duration '
     "written out, e.g. ago(1h)"),
    ("value", 'r.yaml:10:57: alert "a": explain: expected one baseline: prev(), prev(N), '
     "ago(D) or avg_over(D)"),
])
def test_a_bad_explain_is_reported_with_its_position(explain, expected):
    text = TREE.split("alerts:")[0] + (
        f"alerts:\n  - {{name: a, kpi: gmv_total, when: value < 1, explain: {explain}}}\n")
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    assert str(e.value.problems[0]).startswith(expected)


def test_explain_needs_parts():
    text = ("sources: [{name: s, topic: t}]\nkpis:\n  - {name: a, source: s, agg: count(), "
            "window: 1m}\nalerts:\n  - {name: x, kpi: a, when: value < 1, explain: prev()}\n")
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    assert [str(p) for p in e.value.problems] == [
        'r.yaml:5:49: alert "x": KPI "a" has no parts to explain it by: give its children '
        "parent: a, or make it a formula (expr:)"]


@pytest.mark.parametrize(("kpis", "expected"), [
    ("{name: gmv_other, source: orders, agg: sum(amount), window: 1m, parent: gmv_region}",
     'kpi "gmv_other": parent "gmv_region" is by [\'region\']; a child keeps its parent\'s '
     "dimensions and may add some, got []"),
    ("{name: gmv_hour, source: orders, agg: sum(amount), window: 1h, parent: gmv_total}",
     'kpi "gmv_hour": window differs from parent "gmv_total"; a child has its parent\'s '
     "window and hop"),
    ("{name: gmv_x, source: orders, agg: sum(amount), window: 1m, parent: gmv_totl}",
     'kpi "gmv_x": unknown parent "gmv_totl"; define it under kpis (did you mean '
     '"gmv_total"?)'),
])
def test_parent_mistakes_are_reported(kpis, expected):
    text = TREE.replace("alerts:", f"  - {kpis}\nalerts:")
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    assert [str(p).split(": ", 1)[1] for p in e.value.problems] == [expected]


def test_a_cycle_of_parents_is_reported_once():
    text = TREE.replace("{name: gmv_total, source: orders,",
                        "{name: gmv_total, parent: gmv_rep, source: orders,")
    text = text.replace("by: [region, rep]", "by: []").replace("by: [region]", "by: []")
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    assert [str(p).split(": ", 1)[1] for p in e.value.problems] == [
        'kpi "gmv_region": parent links form a cycle: gmv_region -> gmv_total -> gmv_rep -> '
        "gmv_region"]


def test_an_explained_event_survives_the_notifier_checkpoint():
    from kpistream.core.notify.model import event_from_json, event_to_json

    [fired] = [t for t in replay(TREE, [sales(BEFORE), sales(AFTER)]) if t.alert == "total_drop"]
    assert event_from_json(orjson.loads(orjson.dumps(event_to_json(fired)))) == fired
