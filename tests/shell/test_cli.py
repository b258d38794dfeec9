"""The command line as users run it: exit codes, messages, and backtest outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

DATA = Path(__file__).parents[1] / "data"
GOLDEN = DATA / "backtest"


def kpistream(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kpistream", *args], input=stdin,
                          capture_output=True, timeout=120)


def test_backtest_writes_the_expected_files_byte_for_byte(tmp_path):
    out = tmp_path / "out"
    done = kpistream("backtest", "--rules", str(GOLDEN / "rules.yaml"), "--events",
                     f"orders={GOLDEN / 'events.jsonl'}", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "kpis.csv").read_bytes() == (GOLDEN / "expected_kpis.csv").read_bytes()
    assert (out / "alerts.csv").read_bytes() == (GOLDEN / "expected_alerts.csv").read_bytes()
    assert b"events: 7 ok, 1 invalid, 1 late, 0 filtered" in done.stdout
    rejected = [orjson.loads(line) for line in (out / "rejected.jsonl").read_bytes().splitlines()]
    assert [(r["line"], r["raw"]) for r in rejected] == [(4, "not json")]


def test_backtest_is_the_same_from_csv(tmp_path):
    rows = [orjson.loads(line) for line in (GOLDEN / "events.jsonl").read_bytes().splitlines()
            if line.startswith(b"{")]
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("ts,status,amount,region\n" + "".join(
        f"{r['ts']},{r['status']},{r['amount']},{r['region']}\n" for r in rows))
    done = kpistream("backtest", "--rules", str(GOLDEN / "rules.yaml"), "--events",
                     str(csv_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "kpis.csv").read_bytes() == \
        (GOLDEN / "expected_kpis.csv").read_bytes()


def test_check_lists_every_problem_and_exits_1(tmp_path):
    (tmp_path / "a.yaml").write_text("kpis:\n  - {name: x, source: s, agg: count(), window: 1m}\n")
    (tmp_path / "b.yaml").write_text("alerts:\n  - {name: y, kpi: z, when: 'value >'}\n")
    done = kpistream("check", str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines == [
        f'{tmp_path}/a.yaml:2:23: kpi "x": unknown source "s"; define it under sources',
        f'{tmp_path}/b.yaml:2:20: alert "y": unknown kpi "z"; define it under kpis',
        "2 problem(s) found",
    ]
    assert b"Traceback" not in done.stderr


def test_check_accepts_the_repository_rules_and_their_tests_pass():
    rules = str(Path(__file__).parents[2] / "rules")
    done = kpistream("check", rules)
    assert done.returncode == 0, done.stderr
    assert b"OK" in done.stdout
    tested = kpistream("test", rules)
    assert tested.returncode == 0, tested.stdout
    assert b"FAIL" not in tested.stdout and b"PASS" in tested.stdout


def test_user_errors_exit_with_a_message_not_a_traceback(tmp_path):
    missing = kpistream("backtest", "--rules", str(GOLDEN / "rules.yaml"), "--events",
                        str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith(b"nope.jsonl: no such events file")
    unknown = kpistream("backtest", "--rules", str(GOLDEN / "rules.yaml"), "--events",
                        f"visits={tmp_path / 'x.jsonl'}", "--out", str(tmp_path / "o"))
    assert unknown.returncode == 1
    assert b'unknown source "visits"; the rules have orders' in unknown.stderr
    bad_broker = kpistream("produce", "--broker", "http://x", "--topic", "t", "-", stdin=b"")
    assert bad_broker.returncode == 2
    assert b"unsupported scheme" in bad_broker.stderr
    for done in (missing, unknown, bad_broker):
        assert b"Traceback" not in done.stderr
    assert kpistream("frobnicate").returncode == 2


def test_run_with_an_unreachable_broker_retries_then_says_what_to_do(tmp_path):
    import os

    done = subprocess.run(
        [sys.executable, "-m", "kpistream", "run", "--rules", str(GOLDEN / "rules.yaml"),
         "--broker", "kafka://127.0.0.1:9", "--metrics-addr", "127.0.0.1:0"],
        env={**os.environ, "KPISTREAM_BROKER_WAIT": "1s"}, capture_output=True, timeout=60)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "broker 127.0.0.1:9 not reachable (Connection refused); retrying in 0.5 s" in err
    assert err.strip().splitlines()[-1].startswith(
        "kpistream: broker 127.0.0.1:9 not reachable after ")
    assert "Traceback" not in err


def test_silence_add_rejects_bad_input_with_a_message():
    bad_matcher = kpistream("silence", "add", "--broker", "kafka://127.0.0.1:9", "--match",
                            "region", "--for", "1h", "--comment", "x")
    assert bad_matcher.returncode == 2
    assert b'matcher "region": expected NAME=VALUE' in bad_matcher.stderr
    bad_time = kpistream("silence", "add", "--broker", "kafka://127.0.0.1:9", "--match",
                         "alert=a", "--ends", "tomorrow", "--comment", "x")
    assert bad_time.returncode == 2
    assert b"--ends: expected an RFC 3339 time with an offset" in bad_time.stderr
    assert b"Traceback" not in bad_matcher.stderr + bad_time.stderr


def test_backtest_alert_scenarios_give_the_expected_alerts_csv(tmp_path):
    scenario = DATA / "backtest_alerts"
    done = kpistream("backtest", "--rules", str(scenario / "rules.yaml"), "--events",
                     str(scenario / "events.jsonl"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "alerts.csv").read_text() == (scenario / "expected_alerts.csv").read_text()


def test_csv_cells_keep_their_text_and_dotted_headers_nest(tmp_path):
    (tmp_path / "rules.yaml").write_text(
        "sources: [{name: s, topic: t}]\nkpis:\n  - {name: n, source: s, agg: sum(amount), "
        "by: [store, user.city], window: 1m}\n")
    (tmp_path / "events.csv").write_text(
        "ts,store,user.city,amount\n1700000040,007,bj,2.5\n1700000041,007,bj,lots\n")
    done = kpistream("backtest", "--rules", str(tmp_path / "rules.yaml"), "--events",
                     str(tmp_path / "events.csv"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "out" / "kpis.csv").read_text().splitlines()
    assert rows[1] == ('n,2023-11-14T22:14:00Z,2023-11-14T22:15:00Z,'
                       '"{""store"":""007"",""user_city"":""bj""}",2.5')
    assert b"1 ok, 1 invalid" in done.stdout  # "lots" is not a number


def test_check_json_lists_problems_for_tooling():
    done = kpistream("check", "--format", "json", str(DATA / "contract_example.yaml"))
    assert done.returncode == 1
    report = orjson.loads(done.stdout)
    assert report["valid"] is False
    assert [(p["line"], p["col"]) for p in report["problems"]] == [(27, 13)]
    good = kpistream("check", "--format", "json", str(GOLDEN / "rules.yaml"))
    assert good.returncode == 0 and orjson.loads(good.stdout)["valid"] is True


def test_rule_unit_tests_report_passes_and_exact_differences(tmp_path):
    done = kpistream("test", str(DATA / "ruletests"))
    assert done.returncode == 1
    path = DATA / "ruletests" / "shop.test.yaml"
    more = DATA / "ruletests" / "more.test.yaml"
    assert done.stdout.decode().splitlines() == [
        f"PASS {more}: stated values drive the derived KPI and the alert",
        f"PASS {more}: events from a file",
        f"PASS {path}: GMV and its alert over three minutes",
        f"FAIL {path}: a wrong expectation, to see the difference",
        '    kpi gmv{region="east"} at 2023-11-14T22:14:00Z: expected 121, got 120',
        '    kpi gmv{region="east"} at 2023-11-14T22:20:00Z: no window of gmv closed then '
        "(expected 0)",
        '    alert gmv_low{region="east"} firing at 2023-11-14T22:14:00Z: expected, did not '
        "happen",
    ]
    assert done.stderr.decode().strip().endswith("3 passed, 1 failed")
    (tmp_path / "rules.yaml").write_text((DATA / "ruletests" / "rules.yaml").read_text())
    none = kpistream("test", str(tmp_path))
    assert none.returncode == 1 and b"no rule tests (*.test.yaml) found" in none.stderr
    (tmp_path / "bad.test.yaml").write_text("tests:\n  - name: x\n    evnts: {}\n")
    bad = kpistream("test", str(tmp_path))
    assert bad.returncode == 1
    assert b"invalid rule tests: tests.0.evnts: Extra inputs are not permitted" in bad.stderr
    assert b"Traceback" not in none.stderr + bad.stderr


def test_a_rule_test_with_a_bad_time_is_reported_not_a_traceback(tmp_path):
    (tmp_path / "rules.yaml").write_text((DATA / "ruletests" / "rules.yaml").read_text())
    (tmp_path / "t.test.yaml").write_text(
        "tests:\n  - name: x\n    events: {orders: []}\n"
        "    kpis: [{kpi: gmv, at: 'yesterday', value: 1}]\n")
    done = kpistream("test", str(tmp_path))
    assert done.returncode == 1
    assert b"invalid rule tests: tests.0.kpis.0.at: Value error, expected an RFC 3339 time" \
        in done.stderr
    assert b"Traceback" not in done.stderr


def test_bad_feedback_ids_and_alertmanager_urls_are_refused_with_a_message(tmp_path):
    import os

    feedback = kpistream("feedback", "--alert", "gmv_odd", "--not-anomaly", "--broker",
                         "kafka://127.0.0.1:9")
    assert feedback.returncode == 2
    assert b'alert id "gmv_odd": expected ALERT:FINGERPRINT:SECONDS' in feedback.stderr
    run = subprocess.run(
        [sys.executable, "-m", "kpistream", "run", "--rules", str(GOLDEN / "rules.yaml"),
         "--broker", "kafka://127.0.0.1:9"],
        env={**os.environ, "KPISTREAM_ALERTMANAGER_URL": "alertmanager:9093"},
        capture_output=True, timeout=60)
    assert run.returncode == 2
    assert b"invalid setting: KPISTREAM_ALERTMANAGER_URL: String should match pattern" \
        in run.stderr
    for done in (feedback, run):
        assert b"Traceback" not in done.stderr


def test_check_diff_prints_markdown_for_a_pull_request(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for directory in (old, new):
        directory.mkdir()
    rules = ("sources: [{name: s, topic: t}]\nkpis:\n  - {name: gmv, source: s, agg: sum(x), "
             "window: 1m, version: '1', targets: [{period: month, value: 1000}]}\n")
    (old / "r.yaml").write_text(rules)
    (new / "r.yaml").write_text(rules.replace("value: 1000", "value: 1200"))
    done = kpistream("check", "--diff", str(old), str(new))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        "## KPI `gmv`: changed",
        "- targets: `month 1000` → `month 1200`",
        "- attainment and forecasts use the new targets from the next window; learned "
        "profiles are kept"]
    as_json = orjson.loads(kpistream("check", "--diff", str(old), str(new), "--format",
                                     "json").stdout)
    assert as_json["changes"][0]["fields"] == [
        {"field": "targets", "old": "month 1000", "new": "month 1200"}]
    (new / "r.yaml").write_text("kpis: [{name: gmv}]\n")
    broken = kpistream("check", "--diff", str(old), str(new))
    assert broken.returncode == 1
    assert b"the new rules" in broken.stderr and b'missing required key "window"' in broken.stderr
    assert kpistream("check").returncode == 2
