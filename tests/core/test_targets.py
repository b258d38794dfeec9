"""Targets through rule files, the engine and backtest: attainment, pace and forecast checked
against values computed by hand, and the period boundaries of the rules' timezone."""

from __future__ import annotations

import csv
import math
import pickle
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.notify.model import Notification, event_from_json, event_to_json
from kpistream.core.notify.render import render, standing_text
from kpistream.core.targets import INTERVAL_Z, LEVEL_ALPHA, PRIOR_SPREAD
from kpistream.errors import RuleError
from kpistream.shell.backtest import EventFile, run_backtest
from kpistream.shell.exporter import Exporter

HOUR = 3_600_000
DAY = 24 * HOUR
#: 2025-12-01T00:00 in Asia/Shanghai, a Monday
MONDAY = 1_764_518_400_000
RULES = """
timezone: Asia/Shanghai
sources: [{name: orders, topic: t, partitions: 1}]
kpis:
  - name: gmv
    source: orders
    agg: sum(amount)
    by: [region]
    window: 1h
    lateness: 0s
    series_ttl: 30d
    targets:
      - {period: day, value: 240, values: {east: 480}}
      - {period: month, value: 7440}
alerts:
  - {name: behind, kpi: gmv, when: attainment < 0.9 * expected_attainment}
  - {name: doomed, kpi: gmv, when: target_hit_probability_month < 0.3}
"""


def hourly(engine: Engine, start_ms: int, amounts: list[float], region: str = "east"):
    """One event per hour from ``start_ms``, and one at the next hour to close the last;
    every closed window, in order."""
    windows = []
    for i, amount in enumerate([*amounts, 0.0]):
        event = {"ts": (start_ms + i * HOUR) // 1000 + 60, "region": region, "amount": amount}
        engine.ingest("orders", [orjson.dumps(event)])
        windows += engine.advance().windows
    return windows


def status_at(windows, end_ms: int, period: str, key=("east",)):
    window = next(w for w in windows if w.end_ms == end_ms)
    return next(s for s in window.standings[key] if s.period == period)


def test_first_day_pace_is_linear_and_the_forecast_extrapolates_the_run_rate():
    engine = Engine(load_rules_text(RULES))
    windows = hourly(engine, MONDAY, [20.0] * 6)
    day = status_at(windows, MONDAY + 6 * HOUR, "day")
    assert (day.value, day.target, day.attainment) == (120.0, 480.0, 0.25)
    assert day.expected_attainment == pytest.approx(6 / 24)
    assert day.forecast == pytest.approx(480.0)  # 120 in a quarter of the day
    assert day.pace_model == "linear"
    month = status_at(windows, MONDAY + 6 * HOUR, "month")
    assert month.expected_attainment == pytest.approx(6 / (31 * 24))  # December: 31 days
    assert month.forecast == pytest.approx(20 * 24 * 31)
    assert month.attainment == pytest.approx(120 / 7440)


def test_a_learned_day_shape_sets_the_pace_and_today_pulls_the_forecast():
    """Day 1: nothing before noon, 20 an hour after. Day 2 by hand, at 18:00 with 120 so far:
    pace 0.5 (half the afternoon), today expected 240 (the level), run rate 120 / (240 · 0.5)
    = 1, so 120 remain; variance 0.05 · 240² · 0.5 (today's half) + 0.05 · 0.2/1.8 · 120²
    (the level's) = 1520."""
    engine = Engine(load_rules_text(RULES))
    day1 = [0.0] * 12 + [20.0] * 12
    windows = hourly(engine, MONDAY, day1 + [0.0] * 12 + [20.0] * 6)
    morning = status_at(windows, MONDAY + DAY + 6 * HOUR, "day")
    assert morning.expected_attainment == 0.0  # nothing is due before noon
    assert morning.pace_model == "daily"
    evening = status_at(windows, MONDAY + DAY + 18 * HOUR, "day")
    assert evening.target == 480.0 and evening.value == 120.0
    assert evening.expected_attainment == pytest.approx(0.5)
    assert evening.forecast == pytest.approx(240.0)
    variance = PRIOR_SPREAD * 240**2 * 0.5 + PRIOR_SPREAD * LEVEL_ALPHA / (2 - LEVEL_ALPHA) * 120**2
    assert variance == pytest.approx(1520.0)
    assert evening.forecast_lower == pytest.approx(240 - INTERVAL_Z * math.sqrt(1520))
    assert evening.forecast_upper == pytest.approx(240 + INTERVAL_Z * math.sqrt(1520))
    # 480 is 240 / sqrt(1520) = 6.2 spreads above the forecast
    assert evening.hit_probability < 1e-6
    month = status_at(windows, MONDAY + DAY + 18 * HOUR, "month")
    assert month.value == 360.0
    # the month: day 1 whole, day 2 half, of 31 equal days; the rest 29 days of 240
    assert month.expected_attainment == pytest.approx(1.5 / 31)
    assert month.forecast == pytest.approx(360 + 120 + 29 * 240)


def test_each_weekday_keeps_its_own_shape():
    """Mondays sell in the morning, the other days in the evening: once two Mondays were
    seen, a Monday's pace at noon is well ahead of a Tuesday's."""
    engine = Engine(load_rules_text(RULES))
    morning = [20.0] * 12 + [0.0] * 12
    evening = [0.0] * 12 + [20.0] * 12
    week = morning + evening * 6
    windows = hourly(engine, MONDAY, week * 2 + morning[:12] + [0.0] * 12 + evening[:12])
    monday_noon = status_at(windows, MONDAY + 14 * DAY + 12 * HOUR, "day")
    tuesday_noon = status_at(windows, MONDAY + 15 * DAY + 12 * HOUR, "day")
    assert monday_noon.pace_model == "weekly"
    assert monday_noon.expected_attainment > 0.9
    assert tuesday_noon.expected_attainment < 0.1


@pytest.mark.parametrize(("timezone", "period_start", "value"), [
    ("Asia/Shanghai", "2026-01-31T16:00:00Z", 5.0),  # Feb 1, 01:00 in Shanghai: February
    ("UTC", "2026-01-01T00:00:00Z", 15.0),  # still January 31 in UTC
])
def test_the_month_ends_at_local_midnight(tmp_path: Path, timezone, period_start, value):
    text = RULES.replace("timezone: Asia/Shanghai", f"timezone: {timezone}")
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(text)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(orjson.dumps(e).decode() + "\n" for e in [
        {"ts": "2026-01-31T15:10:00Z", "region": "east", "amount": 10},  # 23:10 in Shanghai
        {"ts": "2026-01-31T17:10:00Z", "region": "east", "amount": 5},  # 01:10 in Shanghai
    ]))
    run_backtest(load_rules_text(text), [EventFile("orders", events)], tmp_path / "out")
    with (tmp_path / "out" / "targets.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["period"] == "month"]
    last = rows[-1]
    assert (last["window_end"], last["period_start"]) == ("2026-01-31T18:00:00Z", period_start)
    assert float(last["value"]) == value


def test_a_restored_snapshot_gives_the_same_standings():
    rules = load_rules_text(RULES)
    amounts = ([5.0] * 8 + [30.0] * 16) * 3
    engine = Engine(rules)
    hourly(engine, MONDAY, amounts)
    copy = Engine(rules)
    copy.restore(pickle.loads(pickle.dumps(engine.snapshot())))
    more = [12.0] * 10
    assert hourly(copy, MONDAY + 3 * DAY, more) == hourly(engine, MONDAY + 3 * DAY, more)


def test_alerts_read_the_standing_and_their_message_shows_it():
    engine = Engine(load_rules_text(RULES))
    steps = []
    for i, amount in enumerate([20.0] * 24 + [5.0] * 6):
        event = {"ts": (MONDAY + i * HOUR) // 1000 + 60, "region": "east", "amount": amount}
        engine.ingest("orders", [orjson.dumps(event)])
        steps += engine.advance().transitions
    behind = [t for t in steps if t.alert == "behind"]
    # day 2: 5 an hour against 20 expected; 01:00 holds attainment 5/480 < 0.9 · 1/24
    assert [(t.state, t.at_ms) for t in behind] == [("firing", MONDAY + DAY + HOUR)]
    standing = behind[0].standing
    assert (standing.period, standing.value, standing.target) == ("day", 5.0, 480.0)
    text = render(Notification("n", "ops", (), "en", tuple(behind), MONDAY)).text
    assert "Target (daily) 480: 1.0% attained (pace 4.2%, behind), forecast " in text
    # the notifier checkpoints events as JSON
    assert event_from_json(orjson.loads(orjson.dumps(event_to_json(behind[0])))) == behind[0]


def test_standings_are_exported_per_period():
    rules = load_rules_text(RULES)
    engine = Engine(rules)
    registry = CollectorRegistry()
    exporter = Exporter(rules, registry)
    for i in range(4):  # three windows close
        event = {"ts": (MONDAY + i * HOUR) // 1000 + 60, "region": "west", "amount": 10}
        engine.ingest("orders", [orjson.dumps(event)])
        exporter.publish(engine.advance())
    text = generate_latest(registry).decode()
    assert 'kpistream_kpi_target{kpi="gmv",period="day",region="west"} 240.0' in text
    assert 'kpistream_kpi_period_value{kpi="gmv",period="month",region="west"} 30.0' in text
    assert 'kpistream_kpi_attainment_ratio{kpi="gmv",period="day",region="west"} 0.125' in text
    assert 'kpistream_kpi_forecast{kpi="gmv",period="day",region="west"} 240.0' in text
    assert "kpistream_kpi_target_hit_probability{" in text


@pytest.mark.parametrize(("kpis", "alerts", "expected"), [
    ("{name: a, source: s, agg: avg(x), window: 1h, targets: [{period: day, value: 1}]}", "",
     'r.yaml:3:60: kpi "a": targets need a KPI aggregated with count() or sum(): a period\'s '
     "value is the sum of its windows; put the target on the KPIs a formula reads"),
    ("{name: a, source: s, agg: sum(x), window: 1h, hop: 10m, targets: [{period: day, "
     "value: 1}]}", "", 'r.yaml:3:70: kpi "a": targets need a tumbling window (no hop) that '
     "divides a day, such as 1m, 1h or 1d"),
    ("{name: a, source: s, agg: sum(x), by: [r], window: 1h, targets: [{period: day, "
     "values: {east/x: 1}}]}", "", 'r.yaml:3:93: kpi "a": "east/x" does not name a series: '
     "give the values of ['r'] dimensions joined with /"),
    ("{name: a, source: s, agg: sum(x), window: 1h}", "{name: x, kpi: a, when: attainment < 1}",
     'r.yaml:5:29: alert "x": when: attainment needs a target on KPI "a"; add '
     "`targets: [{period: month, value: ...}]` to it"),
    ("{name: a, source: s, agg: sum(x), window: 1h, targets: [{period: day, value: 1}]}",
     "{name: x, kpi: a, when: forecast_month < 1}",
     'r.yaml:5:29: alert "x": when: forecast_month needs a month target on KPI "a"; it has day'),
])
def test_target_mistakes_are_reported_with_positions(kpis, alerts, expected):
    text = f"sources: [{{name: s, topic: t}}]\nkpis:\n  - {kpis}\n"
    if alerts:
        text += f"alerts:\n  - {alerts}\n"
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    assert [str(p) for p in e.value.problems] == [expected]


def test_period_bounds_follow_the_calendar():
    from kpistream.core.periods import period_bounds

    def utc(text: str) -> int:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)

    assert period_bounds("quarter", utc("2026-05-20T00:00:00"), "UTC") == (
        utc("2026-04-01T00:00:00"), utc("2026-07-01T00:00:00"))
    assert period_bounds("quarter", utc("2026-12-31T16:30:00"), "Asia/Shanghai") == (
        utc("2026-12-31T16:00:00"), utc("2027-03-31T16:00:00"))


def test_a_series_first_seen_mid_period_says_its_value_misses_the_start():
    engine = Engine(load_rules_text(RULES))
    windows = hourly(engine, MONDAY + 6 * HOUR, [20.0] * 2)
    status = status_at(windows, MONDAY + 8 * HOUR, "day")
    assert status.tracked_from_ms == MONDAY + 6 * HOUR
    text = standing_text(status, "en", "Asia/Shanghai")
    assert text.endswith(" (tracked since 2025-12-01 06:00 (UTC+08:00): the period's start is "
                         "missing)")
    later = hourly(engine, MONDAY + 24 * HOUR, [20.0])  # the next day is whole
    assert status_at(later, MONDAY + 25 * HOUR, "day").tracked_from_ms is None
