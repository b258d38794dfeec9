"""Rule loading: the contract's example loads; every bad file gets exact, positioned problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpistream.core.loader import load_rules, load_rules_text
from kpistream.errors import RuleError

DATA = Path(__file__).parents[1] / "data"
SOURCE = "sources: [{name: orders, topic: t}]\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    return [str(p) for p in e.value.problems]


def test_contract_example_is_checked_as_written(tmp_path):
    # the contract's example reads a source "visits" it never defines
    with pytest.raises(RuleError) as e:
        load_rules(DATA / "contract_example.yaml")
    assert [str(p).split("/")[-1] for p in e.value.problems] == [
        'contract_example.yaml:27:13: kpi "visits": unknown source "visits"; define it under '
        'sources']
    fixed = tmp_path / "rules.yaml"
    fixed.write_text((DATA / "contract_example.yaml").read_text().replace(
        "kpis:", "  - {name: visits, topic: shop.visits}\n\nkpis:"))
    rules = load_rules(fixed)
    assert list(rules.kpis)[-1] == "conversion"
    assert rules.kpis["conversion"].inputs == ("paid_orders", "visits")
    assert rules.kpis["gmv"].labels == ("region",)
    assert rules.timezone == "Asia/Shanghai"
    assert rules.alerts[0].for_ms == 180_000


@pytest.mark.parametrize(("text", "expected"), [
    (SOURCE + "kpis:\n  - {name: gmv, source: orders, agg: summ(amount), window: 1m}\n",
     ['r.yaml:3:38: kpi "gmv": unknown aggregation "summ"; expected one of count, sum, avg, '
      'min, max, count_distinct, quantile (did you mean "sum"?)']),
    (SOURCE + "kpis:\n  - name: gmv\n    source: orders\n    agg: count()\n    windw: 1m\n",
     ['r.yaml:3:5: kpi "gmv": missing required key "window"',
      'r.yaml:6:5: kpi "gmv": unknown key "windw"; expected one of name, title, description, '
      'source, where, agg, expr, by, window, hop, lateness, series_ttl, unit, owner '
      '(did you mean "window"?)']),
    (SOURCE + "kpis:\n  - {name: gmv, source: orders, agg: count(), window: 5 minutes}\n",
     ['r.yaml:3:55: kpi "gmv": window: invalid duration "5 minutes"; expected a number and a '
      "unit such as 30s, 1m, 1h30m, 1d (units: ms, s, m, h, d, w)"]),
    (SOURCE + "kpis:\n  - {name: gmv, source: order, agg: count(), window: 1m}\n",
     ['r.yaml:3:25: kpi "gmv": unknown source "order"; define it under sources '
      '(did you mean "orders"?)']),
    (SOURCE + "kpis:\n  - name: gmv\n    source: orders\n    agg: count()\n    window: 1m\n"
     "    where: status == and amount > 0\n",
     ['r.yaml:7:22: kpi "gmv": where: unexpected "and"; expected a value']),
    (SOURCE + "kpis:\n  - {name: Gmv, source: orders, agg: count(), window: 1m}\n",
     ['r.yaml:3:12: kpi "Gmv": invalid name "Gmv"; expected lowercase letters, digits and _ '
      "starting with a letter (e.g. gmv_total)"]),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), window: 1m}\n"
     "  - {name: a, source: orders, agg: count(), window: 1m}\n",
     ['r.yaml:4:12: kpi "a": duplicate kpi name "a", first defined at r.yaml:3; names are '
      "unique across files"]),
    (SOURCE + "kpis:\n  - {name: a, expr: b + 1, window: 1m}\n  - {name: b, expr: a * 2, "
     "window: 1m}\n",
     ['r.yaml:3:21: kpi "a": derived KPIs form a cycle: a -> b -> a']),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), window: 1m}\n"
     "  - {name: r, expr: a / 2, window: 5m}\n",
     ['r.yaml:4:36: kpi "r": window differs from input "a"; a derived KPI has the same window '
      "and hop as its inputs"]),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), window: 1m}\n"
     "alerts:\n  - {name: x, kpi: a, when: valu < 3}\n",
     ['r.yaml:5:29: alert "x": when: unknown name "valu"; expected one of value '
      '(did you mean "value"?)']),
    (SOURCE + "kpis:\n  - {name: a, source: orders, agg: count(), by: [user.id, kpi], "
     "window: 1m}\n",
     ['r.yaml:3:59: kpi "a": dimension "kpi" cannot be a Prometheus label; use letters, '
      "digits and _ (not starting with __), and none of kpi, alert, severity"]),
    ("timezone: Mars/Olympus\n" + SOURCE,
     ['r.yaml:1:11: unknown timezone "Mars/Olympus"; expected an IANA name such as '
      "Asia/Shanghai or UTC"]),
    ("kpis: [unclosed\n",
     ["r.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"]),
    ("- just\n- a list\n", ["r.yaml:1:1: expected a mapping with keys timezone, sources, kpis, "
                            "alerts, owners"]),
])
def test_bad_rules_report_exact_positioned_problems(text, expected):
    assert problems(text) == expected


def test_every_problem_is_reported_not_just_the_first():
    text = (SOURCE + "kpis:\n  - {name: a, source: nope, agg: count(), window: 1m}\n"
            "  - {name: b, source: orders, agg: mean(x), window: 1m}\n"
            "alerts:\n  - {name: c, kpi: zzz, when: value > 1, severity: huge}\n")
    found = problems(text)
    # the alert with an invalid severity is set aside whole, so its kpi is not looked up
    assert [p.split(": ", 1)[0] for p in found] == ["r.yaml:3:23", "r.yaml:4:36", "r.yaml:6:52"]


def test_field_read_with_two_types_is_a_problem():
    text = (SOURCE + "kpis:\n  - {name: a, source: orders, agg: sum(x), window: 1m}\n"
            "  - {name: b, source: orders, agg: count(), where: 'x == \"y\"', window: 1m}\n")
    assert problems(text) == ['r.yaml:4:5: kpi "b": reads field "x" as string, but another KPI '
                              'of source "orders" reads it as number']


def test_missing_directory_and_empty_directory(tmp_path):
    with pytest.raises(RuleError, match="no such file or directory"):
        load_rules(tmp_path / "nope")
    with pytest.raises(RuleError, match=r"no rule files \(\*.yaml, \*.yml\) found here"):
        load_rules(tmp_path)
