"""Alert rules with explicit times: every feature of `alerts:` through the engine."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.errors import RuleError

MIN = 60_000
T = int(datetime(2024, 1, 1, 10, tzinfo=UTC).timestamp() * 1000)
KPIS = """
sources: [{name: s, topic: t}]
kpis:
  - {name: n, source: s, agg: count(), by: [r], window: 1m, lateness: 0s}
  - {name: bad, source: s, agg: count(), where: 'ok == false', by: [r], window: 1m,
     lateness: 0s}
  - {name: rate, expr: bad / n, by: [r], window: 1m}
"""


def run(alerts: str, counts: list[int], *, bad: list[int] | None = None) -> list[tuple]:
    """Window i (ending T + (i+1) min) holds counts[i] events of series r=x."""
    engine = Engine(load_rules_text(KPIS + "alerts:\n" + alerts))
    events = []
    for i, c in enumerate(counts):
        nbad = (bad or [0] * len(counts))[i]
        events += [orjson.dumps({"ts": T + i * MIN + j, "r": "x", "ok": j >= nbad})
                   for j in range(c)]
    engine.ingest("s", [*events, orjson.dumps({"ts": T + len(counts) * MIN, "r": "y"})])
    step = engine.advance()
    return [(e.alert, e.severity, e.state, (e.at_ms - T) // MIN, e.value) for e in step.transitions
            if dict(e.labels)["r"] == "x"]


def test_levels_run_one_state_machine_per_severity():
    alerts = """  - name: low
    kpi: n
    levels:
      - {severity: critical, when: value < 2}
      - {severity: warning, when: value < 5}
"""
    assert run(alerts, [9, 4, 1, 4, 9]) == [
        ("low", "warning", "firing", 2, 4.0), ("low", "critical", "firing", 3, 1.0),
        ("low", "critical", "resolved", 4, 4.0), ("low", "warning", "resolved", 5, 9.0)]


def test_keep_firing_for_bridges_a_short_recovery():
    alerts = "  - {name: low, kpi: n, when: value < 5, keep_firing_for: 2m}\n"
    # as Prometheus: firing until 2m after the first close where the condition is false
    assert run(alerts, [1, 9, 1, 9, 9, 9]) == [
        ("low", "warning", "firing", 1, 1.0), ("low", "warning", "resolved", 6, 9.0)]


def test_resolve_when_gives_hysteresis():
    alerts = "  - {name: low, kpi: n, when: value < 5, resolve_when: value > 8}\n"
    assert run(alerts, [1, 6, 7, 9]) == [
        ("low", "warning", "firing", 1, 1.0), ("low", "warning", "resolved", 4, 9.0)]


def test_composite_condition_reads_another_kpi_of_the_same_series():
    alerts = "  - {name: broken, kpi: rate, when: value > 0.5 and n >= 4, severity: critical}\n"
    assert run(alerts, [4, 2, 4, 4], bad=[0, 2, 3, 0]) == [
        ("broken", "critical", "firing", 3, 0.75), ("broken", "critical", "resolved", 4, 0.0)]


def test_baselines_compare_with_the_series_own_past():
    alerts = ("  - {name: drop, kpi: n, when: 'pct_change(avg_over(3m)) < -50'}\n"
              "  - {name: jump, kpi: n, when: value > 2 * prev()}\n")
    # window 4: 4 against the 10 of windows 1-3 is -60%; window 5: 10 against (10+10+4)/3
    # is +25%, and 10 is more than twice the 4 before it; window 6: 30 > 2 * 10 still
    assert run(alerts, [10, 10, 10, 4, 10, 30]) == [
        ("drop", "warning", "firing", 4, 4.0), ("drop", "warning", "resolved", 5, 10.0),
        ("jump", "warning", "firing", 5, 10.0)]


def test_absent_for_is_a_dead_mans_switch():
    alerts = "  - {name: silent, kpi: n, absent_for: 2m, severity: critical}\n"
    assert run(alerts, [3, 0, 0, 0, 5]) == [
        ("silent", "critical", "firing", 3, 0.0), ("silent", "critical", "resolved", 5, 5.0)]


def test_shadow_alerts_are_evaluated_but_marked_not_to_notify():
    rules = load_rules_text(KPIS + "alerts:\n  - {name: a, kpi: n, when: value > 0, "
                            "notify: false}\n")
    engine = Engine(rules)
    engine.ingest("s", [orjson.dumps({"ts": T, "r": "x"}), orjson.dumps({"ts": T + MIN})])
    (event,) = engine.advance().transitions
    assert (event.state, event.notify, event.condition) == ("firing", False, "value > 0")


def test_alert_events_carry_what_a_message_needs():
    rules = load_rules_text(KPIS.replace("{name: n,", "{name: n, title: 订单数, unit: 单,")
                            + "alerts:\n  - {name: a, kpi: n, when: 'value >= 2 and prev() >= 2',"
                            " summary: too many}\n")
    engine = Engine(rules)
    engine.ingest("s", [orjson.dumps({"ts": T + i * MIN // 2, "r": "x"}) for i in range(8)]
                  + [orjson.dumps({"ts": T + 5 * MIN})])
    event = next(e for e in engine.advance().transitions if e.state == "firing")
    assert (event.kpi_title, event.unit, event.summary, event.labels, event.at_ms) == (
        "订单数", "单", "too many", (("r", "x"),), T + 2 * MIN)
    assert event.history == ((T + MIN, 2.0), (T + 2 * MIN, 2.0))


@pytest.mark.parametrize(("alert", "message"), [
    ("{name: a, kpi: n}", 'alert "a": needs exactly one of when (a condition), levels '
     "(conditions per severity) or absent_for (silence), got none"),
    ("{name: a, kpi: n, when: value > 1, absent_for: 1m}", 'alert "a": needs exactly one of '
     "when (a condition), levels (conditions per severity) or absent_for (silence), got when, "
     "absent_for"),
    ("{name: a, kpi: rate, absent_for: 5m}",
     'alert "a": absent_for needs a KPI aggregated from a source; "rate" is derived'),
    ("{name: a, kpi: n, when: value > prev(0)}", 'alert "a": when: prev() takes a positive '
     "number or duration written out, e.g. prev(3)"),
    ("{name: a, kpi: n, when: value > visits}", 'alert "a": when: unknown name "visits"; '
     "expected one of bad, rate, value"),
])
def test_bad_alerts_are_reported(alert, message):
    with pytest.raises(RuleError) as e:
        load_rules_text(KPIS + "alerts:\n  - " + alert + "\n")
    assert [p.message for p in e.value.problems] == [message]


def test_silences_in_files_need_an_end_after_the_start():
    base = KPIS + "silences:\n  - {matchers: {alert: a}, starts: '2024-01-01T10:00:00+08:00', "
    rules = load_rules_text(base + "ends: '2024-01-02T10:00:00+08:00', comment: maintenance}\n")
    (silence,) = rules.silences
    assert silence.matchers == (("alert", "a"),)
    assert silence.ends_ms - silence.starts_ms == 86_400_000
    with pytest.raises(RuleError) as e:
        load_rules_text(base + "ends: '2024-01-01T09:00:00+08:00', comment: oops}\n")
    assert [p.message for p in e.value.problems] == ["a silence must end after it starts"]
    with pytest.raises(RuleError) as e:
        load_rules_text(base + "comment: forever}\n")
    assert [p.message for p in e.value.problems] == ['missing required key "ends"']


def test_a_derived_window_without_values_still_counts_as_a_close():
    # rate = bad / n: a window without events gives n = 0, so no rate value; for: 2m must
    # not bridge that close
    alerts = "  - {name: high, kpi: rate, when: value > 0.4, for: 2m}\n"
    assert run(alerts, [5, 0, 5, 5, 5], bad=[3, 0, 3, 3, 3]) == [
        ("high", "warning", "firing", 5, 0.6)]


def test_resolve_when_resolves_a_series_that_lost_its_value():
    alerts = "  - {name: hi, kpi: rate, when: value > 0.4, resolve_when: value < 0.1}\n"
    assert run(alerts, [5, 0, 5], bad=[3, 0, 3]) == [
        ("hi", "warning", "firing", 1, 0.6), ("hi", "warning", "resolved", 2, None),
        ("hi", "warning", "firing", 3, 0.6)]


@pytest.mark.parametrize(("kpi", "message"), [
    ("{name: c, source: s, agg: count(user), window: 1m}",
     'kpi "c": count() takes no field, got "user"; to count events that have it, add where: '
     "not is_null(user)"),
])
def test_count_takes_no_field(kpi, message):
    with pytest.raises(RuleError) as e:
        load_rules_text("sources: [{name: s, topic: t}]\nkpis:\n  - " + kpi + "\n")
    assert [p.message for p in e.value.problems] == [message]


def test_absent_for_must_be_shorter_than_the_series_ttl():
    with pytest.raises(RuleError) as e:
        load_rules_text(KPIS + "alerts:\n  - {name: a, kpi: n, absent_for: 2h}\n")
    assert [p.message for p in e.value.problems] == [
        'alert "a": absent_for must be shorter than the series_ttl of "n" (3600s), or the '
        "silent series is forgotten before it alerts; raise series_ttl"]
