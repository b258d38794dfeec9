"""Digests: the report a manager reads, on standings whose figures are known by hand."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from kpistream.core.digest import build_digest, render_digest
from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.values import ClosedWindow
from kpistream.errors import RuleError
from kpistream.shell.backtest import EventFile, run_backtest

HOUR = 3_600_000
#: 2025-12-01T00:00 in Asia/Shanghai
MIDNIGHT = 1_764_518_400_000
RULES = """
timezone: Asia/Shanghai
sources: [{name: orders, topic: t, partitions: 1}]
kpis:
  - {name: gmv, title: GMV, source: orders, agg: sum(amount), window: 1h, lateness: 0s,
     owner: sales, targets: [{period: day, value: 700}]}
  - {name: gmv_region, title: GMV by region, source: orders, agg: sum(amount), by: [region],
     window: 1h, lateness: 0s, parent: gmv, owner: sales,
     targets: [{period: day, value: 240, values: {east: 480}}]}
owners:
  - {name: sales, notify: ["json://127.0.0.1:9/never"], language: en}
digests:
  - {name: noon, cron: "0 12 * * *", owner: sales, title: Noon digest}
"""


def noon_report(language: str = "en"):
    """Twelve hours of the first day: east and west sell 10 an hour each. With no day
    learned yet the pace is linear: half of each target is due at noon."""
    rules = load_rules_text(RULES.replace("language: en", f"language: {language}"))
    engine = Engine(rules)
    windows = []
    for hour in range(12):
        start = MIDNIGHT + hour * HOUR
        windows += [ClosedWindow("gmv", start, start + HOUR, {(): 20.0}),
                    ClosedWindow("gmv_region", start, start + HOUR,
                                 {("east",): 10.0, ("west",): 10.0})]
    engine.given(windows)
    standings = {name: t.standings() for name, t in engine.targets.items()}
    return build_digest(rules, rules.digests[0], standings, MIDNIGHT + 12 * HOUR)


def test_the_report_ranks_the_board_and_explains_the_biggest_gaps():
    """By hand at noon: GMV 240 of 700 (350 due: 110 behind); east 120 of 480 (240 due: 120
    behind, half of pace), west 120 of 240 (on pace). East's gap is 109% of GMV's, west
    adds nothing."""
    report = noon_report()
    [headline] = report.headline
    assert (headline.status.value, headline.status.target) == (240.0, 700.0)
    assert headline.gap == pytest.approx(-110.0)
    assert [(line.name, line.pace_index) for line in report.board] == [
        ("GMV by region region=west", 1.0), ("GMV by region region=east", 0.5)]
    assert [(d.line.name, d.line.gap) for d in report.deviations] == [
        ("GMV by region region=east", -120.0), ("GMV", pytest.approx(-110.0))]
    [part] = report.deviations[1].parts
    assert (part.name, part.delta, round(part.share, 3)) == ("region=east", -120.0, 1.091)
    text = render_digest(report).text
    assert text.splitlines()[0] == "[kpistream] Noon digest · 2025-12-01 12:00 (Asia/Shanghai)"
    assert text.split("\n\n")[2:] == [
        "Board (against pace)\n"
        "1. GMV by region region=west · day: 50.0% (100% of pace) · owner sales\n"
        "2. GMV by region region=east · day: 25.0% (50% of pace) · owner sales",
        "Biggest deviations\n"
        "- GMV by region region=east · day: -120 against pace\n"
        "- GMV · day: -110 against pace; mostly from region=east -120 (109%)"]
    assert text.split("\n\n")[1].startswith(
        "Targets\n- GMV · day (12-01): 240 / 700 = 34.3% attained (pace 50.0%, behind), "
        "forecast 480 (80% interval ")


def test_the_report_speaks_the_owners_language():
    text = render_digest(noon_report("zh")).text
    assert ("目标达成\n- GMV · 日 (12-01): 240 / 700 = 已完成 34.3%（按进度应达 50.0%，落后）"
            in text)
    assert "最大偏差\n- GMV by region region=east · 日: 距进度 -120" in text
    assert "主要来自 region=east -120 (109%)" in text


def test_backtest_writes_a_digest_at_every_tick_of_event_time(tmp_path: Path):
    events = tmp_path / "orders.jsonl"
    lines = [{"ts": (MIDNIGHT + h * HOUR) // 1000 + 60, "region": r, "amount": 10}
             for h in range(40) for r in ("east", "west")]
    events.write_text("".join(orjson.dumps(e).decode() + "\n" for e in lines))
    run_backtest(load_rules_text(RULES), [EventFile("orders", events)], tmp_path / "out")
    written = sorted(p.name for p in (tmp_path / "out" / "digests").iterdir())
    assert written == ["noon-20251201T1200.md", "noon-20251201T1200.png",
                       "noon-20251202T1200.md", "noon-20251202T1200.png"]
    first = (tmp_path / "out" / "digests" / "noon-20251201T1200.md").read_text()
    assert first.startswith("### [kpistream] Noon digest · 2025-12-01 12:00 (Asia/Shanghai)")
    assert "GMV · day (12-01): 240 / 700 = 34.3% attained" in first


@pytest.mark.parametrize(("digest", "expected"), [
    ('{name: d, cron: "0 25 * * *", owner: sales}',
     'r.yaml:13:21: digest "d": invalid cron expression "0 25 * * *": Bad hour; expected five '
     "fields: minute hour day-of-month month day-of-week, e.g. 0 9 * * * (09:00 daily)"),
    ('{name: d, cron: "0 9 * * *"}',
     'r.yaml:13:5: digest "d": a digest needs recipients: owner (that owner\'s notify URLs) or '
     "notify (Apprise URLs)"),
    ('{name: d, cron: "0 9 * * *", owner: sales, kpis: [gmv, nope]}',
     'r.yaml:13:60: digest "d": unknown kpi "nope"; define it under kpis'),
])
def test_digest_mistakes_are_reported_with_positions(digest, expected):
    text = RULES.split("digests:")[0] + f"digests:\n  - {digest}\n"
    with pytest.raises(RuleError) as e:
        load_rules_text(text, "r.yaml")
    assert [str(p) for p in e.value.problems] == [expected]
