"""The engine with explicit times: idle sources, day windows, derived KPIs, TTL, alert timing."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text

MIN = 60_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def ev(ts_ms: int, **fields) -> bytes:
    return orjson.dumps({"ts": ts_ms, **fields})


def engine(kpis: str, alerts: str = "", timezone: str = "UTC") -> Engine:
    return Engine(load_rules_text(
        f"timezone: {timezone}\nsources:\n  - {{name: a, topic: ta}}\n  - {{name: b, topic: tb}}\n"
        f"kpis:\n{kpis}\nalerts:\n{alerts or '  []'}\n"), idle_timeout_ms=15_000)


def test_a_quiet_source_still_closes_its_windows():
    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 10s}")
    t0 = ms("2024-01-01T10:00:30")
    e.ingest("a", [ev(t0)], now_ms=t0)
    assert e.advance(now_ms=t0 + 14_000).windows == []  # not idle yet
    assert e.advance(now_ms=t0 + 30_000).windows == []  # watermark t0+30s-10s < 10:01
    closed = e.advance(now_ms=t0 + 41_000).windows  # 10:01:11 - 10s >= 10:01
    assert [(w.end_ms, w.values) for w in closed] == [(ms("2024-01-01T10:01:00"), {(): 1.0})]


def test_day_windows_start_at_midnight_in_the_rules_timezone():
    e = engine("  - {name: daily, source: a, agg: sum(x), window: 1d, lateness: 0s}",
               timezone="Asia/Shanghai")
    e.ingest("a", [ev(ms("2024-01-01T15:59:59"), x=1), ev(ms("2024-01-01T16:00:00"), x=2),
                   ev(ms("2024-01-02T16:00:00"), x=4)])
    closed = e.advance().windows
    assert [(w.start_ms, w.end_ms, w.values[()]) for w in closed] == [
        (ms("2023-12-31T16:00:00"), ms("2024-01-01T16:00:00"), 1.0),
        (ms("2024-01-01T16:00:00"), ms("2024-01-02T16:00:00"), 2.0),
    ]


def test_a_derived_kpi_waits_for_inputs_from_both_sources():
    e = engine("  - {name: paid, source: a, agg: count(), by: [r], window: 1m, lateness: 0s}\n"
               "  - {name: seen, source: b, agg: count(), by: [r], window: 1m, lateness: 0s}\n"
               "  - {name: rate, expr: paid / seen, by: [r], window: 1m}")
    t = ms("2024-01-01T10:00:00")
    e.ingest("a", [ev(t, r="x"), ev(t + MIN, r="x")])
    first = e.advance().windows
    assert [w.kpi for w in first] == ["paid"]  # seen has not closed 10:01 yet
    e.ingest("b", [ev(t, r="x"), ev(t + 1, r="x"), ev(t + 2, r="x"), ev(t + 2 * MIN, r="x")])
    later = {(w.kpi, w.end_ms): w.values for w in e.advance().windows}
    assert later == {("seen", t + MIN): {("x",): 3.0}, ("seen", t + 2 * MIN): {("x",): 0.0},
                     ("rate", t + MIN): {("x",): 1 / 3}}  # paid has closed 10:01 only
    e.ingest("a", [ev(t + 2 * MIN, r="x")])
    last = {(w.kpi, w.end_ms): w.values for w in e.advance().windows}
    # 1 / 0 seen: the rate window closes without a value
    assert last == {("paid", t + 2 * MIN): {("x",): 1.0}, ("rate", t + 2 * MIN): {}}


def test_a_share_of_a_total_reads_the_total_in_every_part():
    e = engine("  - {name: gmv, source: a, agg: sum(x), by: [r], window: 1m, lateness: 0s}\n"
               "  - {name: total, source: a, agg: sum(x), window: 1m, lateness: 0s}\n"
               "  - {name: share, expr: gmv / total, by: [r], window: 1m}")
    t = ms("2024-01-01T10:00:00")
    e.ingest("a", [ev(t, r="east", x=30), ev(t + 1, r="west", x=10), ev(t + MIN, r="x", x=1)])
    shares = {w.end_ms: w.values for w in e.advance().windows if w.kpi == "share"}
    assert shares == {t + MIN: {("east",): 0.75, ("west",): 0.25}}


def test_a_silent_series_stops_being_reported_after_its_ttl():
    e = engine("  - {name: n, source: a, agg: count(), by: [r], window: 1m, lateness: 0s, "
               "series_ttl: 2m}")
    t = ms("2024-01-01T10:00:00")
    e.ingest("a", [ev(t, r="gone"), ev(t, r="stays")] + [ev(t + i * MIN, r="stays")
                                                          for i in range(1, 6)])
    by_end = {w.end_ms: w.values for w in e.advance().windows}
    assert by_end[t + MIN] == {("gone",): 1.0, ("stays",): 1.0}
    assert by_end[t + 3 * MIN] == {("gone",): 0.0, ("stays",): 1.0}
    assert by_end[t + 4 * MIN] == {("stays",): 1.0}


def test_for_fires_at_the_first_close_at_least_for_after_pending():
    # the contract's example: 1m windows, for: 2m, true at 10:11, 10:12, 10:13 -> fires at 10:13
    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 0s}",
               "  - {name: low, kpi: n, when: value < 5, for: 2m, severity: critical}")
    t = ms("2024-01-01T10:10:00")
    counts = [9, 1, 1, 1, 9]  # windows ending 10:11 ... 10:15
    e.ingest("a", [ev(t + i * MIN + j) for i, c in enumerate(counts) for j in range(c)]
             + [ev(t + 5 * MIN)])
    got = [(x.state, x.at_ms, x.value) for x in e.advance().transitions]
    assert got == [("firing", ms("2024-01-01T10:14:00"), 1.0),
                   ("resolved", ms("2024-01-01T10:15:00"), 9.0)]


def test_a_partition_read_ahead_does_not_make_the_others_late():
    # a backlog is fetched one partition at a time: partition 0 gets ten minutes ahead
    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 5s}")
    t = ms("2024-01-01T10:00:00")
    e.assign("a", [0, 1])
    e.ingest("a", [ev(t + i * 10_000) for i in range(60)], partition=0)
    assert e.advance().windows == []  # partition 1 has no data: nothing is final
    result = e.ingest("a", [ev(t + i * 10_000 + 1) for i in range(60)], partition=1)
    assert result.late == 0
    closed = e.advance().windows
    assert [w.values[()] for w in closed] == [12.0] * 9  # through 10:09 (10:09:50 - 5s)


def test_an_idle_partition_stops_holding_the_watermark():
    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 0s}")
    t = ms("2024-01-01T10:00:00")
    now = t + 2 * MIN  # the clock, a little after the events
    e.assign("a", [0, 1], now_ms=now)
    e.ingest("a", [ev(t), ev(t + MIN)], now_ms=now + 1_000, partition=0)
    assert e.advance(now_ms=now + 14_999).windows == []  # 1 may still bring 10:00 data
    assert [w.end_ms for w in e.advance(now_ms=now + 15_000).windows] == [t + MIN]
    e.ingest("a", [ev(t + 5), ev(t + MIN + 5)], now_ms=now + 15_001, partition=1)
    assert e.advance(now_ms=now + 15_002).windows == []
    assert e.late_panes == {"n": 1}  # its 10:00 pane came after 10:00-10:01 had closed


def test_partitions_ingested_together_wait_for_each_other():
    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 5s}")
    t = ms("2024-01-01T10:00:00")
    e.assign("a", [0, 1])
    ahead = [ev(t + i * 10_000) for i in range(60)]
    behind = [ev(t + i * 10_000 + 1) for i in range(30)]
    result = e.ingest_partitions("a", [(0, ahead), (1, behind)])
    assert (result.ok, result.late) == (90, 0)
    closed = e.advance().windows  # partition 1 reached 10:04:50: 10:00-10:04 are final
    assert [w.values[()] for w in closed] == [12.0, 12.0, 12.0, 12.0]
    late = e.ingest_partitions("a", [(1, [ev(t + 60_000)])])
    assert late.late == 1


def test_each_partition_judges_lateness_by_its_own_progress():
    # partition 0 is behind partition 1, yet none of its events is late: partitions wait for
    # each other at the merge, and the watermark is the smaller progress
    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 0s}")
    t = ms("2024-01-01T10:00:00")
    e.ingest("a", [ev(t)], partition=1)
    result = e.ingest_partitions("a", [(0, [ev(t + MIN)]), (1, [ev(t + 2 * MIN)])])
    assert (result.ok, result.late) == (2, 0)
    e.advance()
    assert e.watermark("a") == t + MIN


def test_a_restart_after_long_downtime_does_not_make_replayed_events_late():
    rules = "  - {name: n, source: a, agg: count(), window: 1m, lateness: 5s}"
    first = engine(rules)
    t = ms("2024-01-01T10:00:00")
    first.assign("a", [0], now_ms=t)
    first.ingest("a", [ev(t), ev(t + 1_000)], now_ms=t + 1_000)
    snapshot = first.snapshot()
    second = engine(rules)  # ten minutes later, the checkpoint is restored
    second.restore(snapshot)
    later = t + 600_000
    second.assign("a", [0], now_ms=later)
    assert second.advance(now_ms=later).windows == []  # nothing read yet: nothing moves
    replay = second.ingest("a", [ev(t + 3_000), ev(t + 4_000)], now_ms=later + 10)
    assert replay.late == 0
    closed = second.advance(now_ms=later + 80_000).windows  # quiet since: the clock closes it
    assert [w.values[()] for w in closed] == [4.0]


def test_day_windows_across_a_dst_change_that_skips_midnight():
    # Chile moved clocks from 00:00 to 01:00 on 2023-09-03: that day starts at 01:00
    e = engine("  - {name: daily, source: a, agg: count(), window: 1d, lateness: 0s}",
               timezone="America/Santiago")
    e.ingest("a", [ev(ms("2023-09-03T12:00:00")), ev(ms("2023-09-04T12:00:00")),
                   ev(ms("2023-09-05T12:00:00"))])
    closed = e.advance().windows
    assert [(w.start_ms, w.end_ms) for w in closed] == [
        (ms("2023-09-03T04:00:00"), ms("2023-09-04T03:00:00")),  # 01:00 to 00:00, -03
        (ms("2023-09-04T03:00:00"), ms("2023-09-05T03:00:00")),
    ]


def test_progress_alone_is_handed_on_only_when_it_may_close_a_window():
    from kpistream.core.partials import SourcePartitions

    rules = load_rules_text("sources: [{name: a, topic: ta}]\nkpis: [{name: n, source: a, "
                            "agg: count(), window: 1m, lateness: 5s}]")
    stage = SourcePartitions(rules.sources["a"], rules.kpis_of("a"), idle_timeout_ms=15_000)
    t = ms("2024-01-01T10:00:00")
    stage.ingest([(0, [ev(t + 1_000)])], now_ms=t + 1_000, max_future_ms=MIN)
    assert [b.rows for b in stage.flush(t + 1_000)] == [{}]  # the first marker
    stage.ingest([(0, [ev(t + 2_000)])], now_ms=t + 2_000, max_future_ms=MIN)
    assert stage.flush(t + 2_000) == []  # progress moved, but closes nothing
    # quiet: the clock moves progress at every poll, yet no batch goes out for that alone
    sent = [now for now in range(t + 17_000, t + 70_000, 200) if stage.flush(now)]
    # turned idle, then a heartbeat every 5 s (a third of the idle timeout) and the pane final
    assert sent == [t + 17_000 + k * 5_000 for k in range(10)] + [t + 65_000]


def test_a_lost_pane_batch_holds_back_the_ones_after_it_until_the_replay():
    from kpistream.core.partials import SourcePartitions

    rules = load_rules_text("sources: [{name: a, topic: ta}]\nkpis: [{name: n, source: a, "
                            "agg: count(), window: 1m, lateness: 0s}]")
    reader = SourcePartitions(rules.sources["a"], rules.kpis_of("a"), idle_timeout_ms=15_000)
    t = ms("2024-01-01T10:00:00")
    reader.ingest([(0, [ev(t)])], None, 0)
    saved = reader.state()  # the partition's checkpoint
    sent = []
    for minute in (1, 2, 3):  # each event makes the previous minute's pane final
        reader.ingest([(0, [ev(t + minute * MIN)])], None, 0)
        sent += reader.flush(None)
    merge = Engine(rules)
    merge.expect("a", [0])
    merge.merge([sent[0], sent[2]])  # the second batch was lost on the way
    replay = SourcePartitions(rules.sources["a"], rules.kpis_of("a"), idle_timeout_ms=15_000)
    replay.load(saved)  # its reader goes back to the checkpoint and reads on
    for minute in (1, 2, 3):
        replay.ingest([(0, [ev(t + minute * MIN)])], None, 0)
        merge.merge(replay.flush(None))
    assert [(w.end_ms - t, w.values[()]) for w in merge.advance().windows] == [
        (MIN, 1.0), (2 * MIN, 1.0), (3 * MIN, 1.0)]
    assert merge.gaps == 1  # the third batch, left out at first


def test_an_idle_partition_whose_reader_went_silent_holds_windows_again():
    from kpistream.core.partials import PaneBatch
    from kpistream.core.watermarks import Marker

    e = engine("  - {name: n, source: a, agg: count(), window: 1m, lateness: 0s}")
    t = ms("2024-01-01T10:00:00")
    now = t + 10 * MIN
    e.expect("a", [0, 1])
    e.merge([PaneBatch("a", 0, Marker(t + 3 * MIN)),
             PaneBatch("a", 1, Marker(t + 30_000, idle=True))], now)
    e.advance(now)
    assert e.watermark("a") == t + 3 * MIN  # idle partition 1 is left out
    # partition 1's reader dies; partition 0's goes on; 15 s later 1 counts as live again
    e.merge([PaneBatch("a", 0, Marker(t + 5 * MIN), follows=t + 3 * MIN)], now + 14_000)
    e.advance(now + 14_000)
    assert e.watermark("a") == t + 5 * MIN
    e.merge([PaneBatch("a", 0, Marker(t + 6 * MIN), follows=t + 5 * MIN)], now + 15_000)
    e.advance(now + 15_000)
    assert e.watermark("a") == t + 5 * MIN  # held: its next reader may bring events
    e.merge([PaneBatch("a", 1, Marker(t + 7 * MIN, idle=True), follows=t + 30_000)], now + 16_000)
    e.advance(now + 16_000)  # a new reader's heartbeat: idle, left out again
    assert e.watermark("a") == t + 6 * MIN
