"""`check --diff`: what a change to the rules does to KPI definitions and alerts."""

from __future__ import annotations

from kpistream.core.definition_diff import Change, FieldChange, diff_rules, render_diff
from kpistream.core.loader import load_rules_text

BASE = """
sources: [{name: s, topic: t}]
kpis:
  - {name: orders, source: s, agg: count(), by: [region], window: 1m, version: "3",
     definition: 已支付订单数}
  - {name: visits, source: s, agg: count(), by: [region], window: 1m}
  - {name: conversion, expr: orders / visits, by: [region], window: 1m,
     anomaly: {sensitivity: medium}}
  - {name: gone, source: s, agg: count(), window: 1m}
alerts:
  - {name: low_conversion, kpi: conversion, when: value < 0.02, for: 2m}
"""


def diff(new_text: str) -> list[Change]:
    return diff_rules(load_rules_text(BASE), load_rules_text(new_text))


def test_no_change_says_so():
    assert diff(BASE) == []
    assert render_diff([]) == "no changes to KPI definitions or alerts"


def test_a_changed_computation_restarts_state_moves_dependents_and_asks_for_a_version():
    new = BASE.replace("agg: count(), by: [region], window: 1m, version",
                       "where: amount > 0, agg: count(), by: [region], window: 1m, version")
    [change] = [c for c in diff(new) if c.name == "orders"]
    assert change.fields == (FieldChange("computation", "count()", "count() where amount > 0"),)
    assert change.notes == (
        "**state restarts**: its windows and alert states start empty at reload",
        "**the computation changed but version did not** (still 3): bump it, so readers "
        "know the numbers moved",
        "derived KPIs move with it: conversion",
        "alerts that read it: low_conversion")


def test_a_reworded_definition_with_a_new_version_keeps_the_numbers():
    new = BASE.replace('version: "3",\n     definition: 已支付订单数',
                       'version: "4",\n     definition: 已支付订单数（不含测试单）')
    [change] = diff(new)
    assert change.fields == (
        FieldChange("definition", "已支付订单数", "已支付订单数（不含测试单）"),
        FieldChange("version", "3", "4"))
    assert change.notes == ("the wording of the definition changed; the numbers do not",)


def test_added_removed_and_alert_and_anomaly_changes():
    new = (BASE.replace("  - {name: gone, source: s, agg: count(), window: 1m}\n",
                        "  - {name: fresh, source: s, agg: sum(x), window: 1h, "
                        "targets: [{period: month, value: 2500000}]}\n")
           .replace("sensitivity: medium", "sensitivity: high")
           .replace("for: 2m", "for: 5m"))
    changes = {(c.kind, c.name): c for c in diff(new)}
    assert changes[("KPI", "fresh")].status == "added"
    assert FieldChange("targets", "", "month 2500000") in changes[("KPI", "fresh")].fields
    assert changes[("KPI", "gone")].notes == (
        "its series leave /metrics, so dashboards and recording rules that read it go empty",)
    conversion = changes[("KPI", "conversion")]
    assert conversion.fields[0] == FieldChange(
        "anomaly", "sensitivity medium, direction both, warmup default, seasonality auto, "
        "noise constant", "sensitivity high, direction both, warmup default, seasonality auto, "
        "noise constant")
    assert conversion.notes == ("**anomaly models start afresh** and warm up again",)
    alert = changes[("alert", "low_conversion")]
    assert alert.fields == (FieldChange("for", "2m", "5m"),)
    assert alert.notes[0].startswith("**alert state restarts**")
    text = render_diff(list(changes.values()))
    assert "## alert `low_conversion`: changed\n- for: `2m` → `5m`\n" in text


def test_a_change_of_noise_model_shows_and_restarts_the_models():
    new = BASE.replace("anomaly: {sensitivity: medium}", "anomaly: {noise: poisson}")
    conversion = {(c.kind, c.name): c for c in diff(new)}[("KPI", "conversion")]
    assert conversion.fields[0].new.endswith("noise poisson")
    assert conversion.notes == ("**anomaly models start afresh** and warm up again",)
