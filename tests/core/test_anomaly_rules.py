"""`anomaly:` through the rule files, the engine and backtest: what users write and get."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

import orjson
import pytest

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.notify.model import Notification
from kpistream.core.notify.render import render
from kpistream.errors import RuleError
from kpistream.shell.backtest import EventFile, run_backtest

STEP = 300_000  # 5-minute windows
DAY = 86_400_000
T0 = 1_700_006_400_000  # 2023-11-15T00:00:00Z, a day boundary
SPIKE = T0 + 5 * DAY + 12 * 3_600_000  # day 6, 12:00 UTC
RULES = """
sources: [{name: m, topic: t, partitions: 1}]
kpis:
  - {name: load, source: m, agg: avg(x), window: 5m, lateness: 0s, series_ttl: 1d,
     anomaly: ANOMALY}
alerts:
  - {name: odd, kpi: load, when: is_anomaly, summary: load left its usual band}
"""


def rules(anomaly: str = "{}"):
    return load_rules_text(RULES.replace("ANOMALY", anomaly))


def load_at(t: int, rnd: random.Random) -> float:
    """A daily cycle between 70 and 130 with a little noise, one sample per window."""
    return 100 + 30 * math.sin(2 * math.pi * (t - T0) / DAY) + rnd.gauss(0, 1.5)


def events(days: int = 6, spike: float = 80.0) -> list[bytes]:
    rnd = random.Random(7)
    out = []
    for t in range(T0, T0 + days * DAY, STEP):
        x = load_at(t, rnd) + (spike if t == SPIKE else 0.0)
        out.append(orjson.dumps({"ts": t + 1_000, "x": round(x, 3)}))
    return out


def run(engine: Engine, batch: list[bytes]):
    engine.ingest("m", batch)
    step = engine.advance()
    return step


def test_a_spike_on_a_daily_cycle_fires_once_in_backtest(tmp_path: Path):
    path = tmp_path / "load.jsonl"
    path.write_bytes(b"\n".join(events()) + b"\n")
    run_backtest(rules(), [EventFile("m", path)], tmp_path / "out")
    alerts = (tmp_path / "out" / "alerts.csv").read_text()
    assert alerts == (
        "alert,kpi,labels,state,at,value,severity\n"
        f"odd,load,{{}},firing,2023-11-20T12:05:00Z,{_value_at(SPIKE)},warning\n"
        f"odd,load,{{}},resolved,2023-11-20T12:10:00Z,{_value_at(SPIKE + STEP)},warning\n")
    bands = (tmp_path / "out" / "bands.csv").read_text().splitlines()
    assert bands[0] == ("kpi,window_end,labels,value,expected,lower,upper,anomaly_score,"
                        "is_anomaly,model")
    spike_row = next(r for r in bands if ",2023-11-20T12:05:00Z," in r).split(",")
    expected, lower, upper = map(float, spike_row[4:7])
    assert lower < expected < upper < float(spike_row[3])
    assert spike_row[8] == "true"
    assert bands[1].split(",")[4:7] == ["", "", ""]  # warming up: no band, no verdict


def _value_at(t: int) -> str:
    for raw in events():
        event = orjson.loads(raw)
        if event["ts"] == t + 1_000:
            return f"{event['x']:g}"
    raise AssertionError(t)


def test_an_excluded_day_neither_alerts_nor_teaches_the_model():
    holiday = ('{exclude: [{starts: "2023-11-20T00:00:00Z", ends: "2023-11-21T00:00:00Z", '
               "comment: a holiday}]}")
    engine = Engine(rules(holiday))
    batch = events(days=7)
    # up to the first event of the day: every window before it is closed, and learnt
    day = next(i for i, e in enumerate(batch) if orjson.loads(e)["ts"] > T0 + 5 * DAY) + 1
    run(engine, batch[:day])
    model_before = pickle.dumps(engine.anomalies["load"].detectors[()])
    day_end = next(i for i, e in enumerate(batch) if orjson.loads(e)["ts"] > T0 + 6 * DAY)
    step = run(engine, batch[day:day_end + 1])
    assert step.transitions == []
    spike = next(w for w in step.windows if w.end_ms == SPIKE + STEP)
    verdict = spike.judgements[()]
    assert (verdict.expected, verdict.upper, verdict.score, verdict.is_anomaly) == \
        (None, None, 0.0, False)
    assert pickle.dumps(engine.anomalies["load"].detectors[()]) == model_before


def test_conditions_read_the_band():
    drop = events(spike=-80.0)
    up_only = load_rules_text(RULES.replace("ANOMALY", "{}").replace(
        "when: is_anomaly", "when: is_anomaly and value > expected"))
    assert [t.state for t in run(Engine(rules()), drop).transitions] == ["firing", "resolved"]
    assert run(Engine(up_only), drop).transitions == []  # the drop is below expected


def test_a_restored_snapshot_gives_the_same_bands_as_an_uninterrupted_run():
    batch = events()
    whole = run(Engine(rules()), batch)
    first = Engine(rules())
    half = len(batch) // 2
    before = run(first, batch[:half])
    second = Engine(rules())
    second.restore(pickle.loads(pickle.dumps(first.snapshot())))
    after = run(second, batch[half:])
    resumed = [*before.windows, *after.windows]
    assert [(w.end_ms, w.judgements) for w in resumed] == \
        [(w.end_ms, w.judgements) for w in whole.windows]
    assert after.transitions == whole.transitions


def test_editing_the_kpi_starts_a_fresh_model_that_warms_up_again():
    engine = Engine(rules())
    run(engine, events(days=2))
    more = [orjson.dumps({"ts": T0 + 2 * DAY + i * STEP + 1_000, "x": 100.0}) for i in (0, 1)]
    edited = Engine(rules("{sensitivity: high}"))
    edited.restore(pickle.loads(pickle.dumps(engine.snapshot())))
    assert run(edited, more).windows[0].judgements[()].expected is None
    same = Engine(rules())
    same.restore(pickle.loads(pickle.dumps(engine.snapshot())))
    assert run(same, more).windows[0].judgements[()].expected is not None


def test_feedback_teaches_the_model_once():
    engine = Engine(rules())
    step = run(engine, events())
    firing = next(t for t in step.transitions if t.state == "firing")
    assert firing.band is not None and firing.band.expected < firing.value
    before = pickle.dumps(engine.anomalies["load"].detectors[()])
    assert engine.feedback(firing.id) == "accepted"
    assert pickle.dumps(engine.anomalies["load"].detectors[()]) != before
    assert engine.feedback(firing.id) == "already"
    assert engine.feedback(firing.id.replace(firing.alert, "other")) == "unknown"
    with pytest.raises(ValueError, match="expected ALERT:FINGERPRINT:SECONDS"):
        engine.feedback("odd")


def test_feedback_read_before_its_window_is_replayed_applies_when_it_closes():
    """After a restart, feedback is read before the replay from the checkpoint reaches it."""
    firing = next(t for t in run(Engine(rules()), events()).transitions
                  if t.state == "firing")
    restarted = Engine(rules())
    assert restarted.feedback(firing.id) == "pending"
    run(restarted, events())
    assert restarted.pending_feedback == {}
    assert restarted.feedback(firing.id) == "already"  # applied when its window closed
    assert Engine(rules()).feedback(firing.id.replace("odd", "nope")) == "unknown"


def test_an_anomaly_alert_message_explains_the_verdict():
    engine = Engine(rules())
    firing = next(t for t in run(engine, events()).transitions if t.state == "firing")
    zh = render(Notification("n1", "ops", (), "zh", (firing,), firing.at_ms)).text
    en = render(Notification("n1", "ops", (), "en", (firing,), firing.at_ms)).text
    band = firing.band
    assert f"预期: {_shown(band.expected)} (正常范围 {_shown(band.lower)} – " \
           f"{_shown(band.upper)})，异常分数 {band.score:.2f}，模型 {band.model}" in zh
    assert f"Expected: {_shown(band.expected)} (normal range {_shown(band.lower)} – " in en
    assert f"kpistream feedback --alert {firing.id} --not-anomaly" in en


def test_a_threshold_alert_on_an_anomaly_kpi_shows_the_band_but_offers_no_feedback():
    threshold = load_rules_text(RULES.replace("ANOMALY", "{}").replace(
        "when: is_anomaly", "when: value > 125"))
    firing = next(t for t in run(Engine(threshold), events()).transitions
                  if t.state == "firing" and t.band is not None and not t.band.flagged)
    text = render(Notification("n1", "ops", (), "en", (firing,), firing.at_ms)).text
    assert "Expected: " in text and "kpistream feedback" not in text


def _shown(x: float) -> str:
    from kpistream.core.notify.render import format_value
    return format_value(x)


@pytest.mark.parametrize(("anomaly", "alert", "message"), [
    ("{exclude: [cn_holiday]}", "is_anomaly",
     'rules.yaml:5:26: kpi "load": unknown calendar "cn_holiday"; built-in calendars are '
     'cn_holidays, cn_shopping_festivals, cn_workdays (did you mean "cn_holidays"?)'),
    ('{exclude: [{starts: "2024-01-02T00:00:00Z", ends: "2024-01-01T00:00:00Z"}]}',
     "is_anomaly", 'rules.yaml:5:26: kpi "load": an excluded range must end after it starts'),
    ("{sensitivity: extreme}", "is_anomaly",
     'rules.yaml:5:29: kpi "load": sensitivity: expected one of low, medium or high, got '
     '"extreme"'),
    ("{noise: gaussian}", "is_anomaly",
     'rules.yaml:5:23: kpi "load": noise: expected one of auto, poisson or constant, got '
     '"gaussian"'),
    (None, "value > 1 and is_anomaly",
     'rules.yaml:6:48: alert "odd": when: is_anomaly needs anomaly detection on KPI "load"; '
     "add `anomaly: {}` to it"),
])
def test_bad_anomaly_settings_are_reported_with_positions(anomaly, alert, message):
    text = RULES.replace("when: is_anomaly", f"when: {alert}")
    text = text.replace("ANOMALY", anomaly) if anomaly else text.replace(
        ",\n     anomaly: ANOMALY}", "}")
    with pytest.raises(RuleError) as e:
        load_rules_text(text)
    assert str(e.value.problems[0]) == message


@pytest.mark.parametrize(("seasonality", "periods"), [
    ("1d", (DAY,)), ("[1d, 1w]", (DAY, 7 * DAY)), ("none", ()), ("auto", None)])
def test_seasonality_is_a_period_a_list_none_or_auto(seasonality, periods):
    assert rules(f"{{seasonality: {seasonality}}}").kpis["load"].anomaly.seasonality == periods


def test_a_season_shorter_than_four_windows_is_refused():
    with pytest.raises(RuleError) as e:
        rules("{seasonality: 15m}")
    assert str(e.value.problems[0]) == (
        'rules.yaml:5:15: kpi "load": seasonality 15m spans fewer than 4 windows of '
        "this KPI; use a longer period or a shorter window")


@pytest.mark.parametrize(("agg", "anomaly", "noise"), [
    ("count()", "{}", "poisson"), ("sum(x)", "{}", "poisson"), ("avg(x)", "{}", "constant"),
    ("max(x)", "{}", "constant"), ("sum(x)", "{noise: constant}", "constant"),
    ("avg(x)", "{noise: poisson}", "poisson")])
def test_noise_follows_the_aggregate_unless_set(agg, anomaly, noise):
    text = RULES.replace("avg(x)", agg).replace("ANOMALY", anomaly)
    assert load_rules_text(text).kpis["load"].anomaly.noise == noise


def test_a_formula_has_constant_noise():
    text = """
sources: [{name: m, topic: t, partitions: 1}]
kpis:
  - {name: hits, source: m, agg: count(), window: 5m}
  - {name: half, expr: hits / 2, window: 5m, anomaly: {}}
"""
    assert load_rules_text(text).kpis["half"].anomaly.noise == "constant"
