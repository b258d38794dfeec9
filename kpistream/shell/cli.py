"""The ``kpistream`` command line: run, demo, check, test, schema, backtest, produce, silence,
feedback.

Exit codes: 0 success, 1 invalid input (rules, events, arguments) with a clear message,
2 usage error. A user error never prints a Python traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from kpistream.core.loader import load_rules
from kpistream.errors import KpistreamError, RuleError, UsageError
from kpistream.settings import Settings

if TYPE_CHECKING:  # backtest's types, imported lazily at run time
    from kpistream.core.ruleset import RuleSet
    from kpistream.shell.backtest import BacktestReport, EventFile
    from kpistream.shell.report import Comparison

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    try:
        return args.handler(args)
    except RuleError as e:
        print(e, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"kpistream: {e}", file=sys.stderr)
        return 2
    except KpistreamError as e:
        print(f"kpistream: {e}", file=sys.stderr)
        return 1
    except ValidationError as e:
        print(f"kpistream: invalid setting: {_settings_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpistream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the daemon: Kafka events -> KPIs -> metrics and alerts")
    run.add_argument("--rules", help="rules directory (KPISTREAM_RULES, default rules)")
    _broker_flags(run)
    run.add_argument("--start-from", choices=["earliest", "latest"],
                     help="where a group without committed offsets begins (default latest)")
    run.set_defaults(handler=_run)

    demo = sub.add_parser("demo", help="embedded broker + demo events + the daemon")
    demo.add_argument("--metrics-addr", help="HOST:PORT for /metrics (default 127.0.0.1:9464)")
    demo.add_argument("--rules", default=str(_demo_rules()), help=argparse.SUPPRESS)
    demo.add_argument("--rate", type=float, default=200.0, help="events per second (200)")
    demo.add_argument("--broker", help="kafka://HOST:PORT instead of an embedded broker")
    demo.add_argument("--feed-only", action="store_true",
                      help="only produce the demo events to --broker, no daemon (compose)")
    demo.set_defaults(handler=_demo)

    check = sub.add_parser("check", help="validate rule files, or review a change (--diff)")
    check.add_argument("dir", nargs="?", help="rules directory or file")
    check.add_argument("--diff", nargs=2, metavar=("OLD_DIR", "NEW_DIR"),
                       help="print what a change does to KPI definitions and alerts (Markdown "
                            "for a pull request)")
    check.add_argument("--format", choices=["text", "json"], default="text",
                       help="json: one object with every problem (or change), for tooling")
    check.set_defaults(handler=_check)

    test = sub.add_parser("test", help="run the rule unit tests (*.test.yaml) found in DIR")
    test.add_argument("dir", help="rules directory: its rules and its *.test.yaml files")
    test.set_defaults(handler=_test)

    schema = sub.add_parser("schema", help="print the JSON Schema of rule files (for editors)")
    schema.add_argument("--out", metavar="FILE", help="write it here instead of stdout")
    schema.set_defaults(handler=_schema)

    grafana = sub.add_parser("grafana", help="write Grafana dashboards generated from rules")
    grafana.add_argument("--rules", required=True, help="rules directory")
    grafana.add_argument("--out", required=True, metavar="DIR", help="writes DIR/kpis-NAME.json")
    grafana.add_argument("--name", help="NAME (default: the rules directory's name)")
    grafana.add_argument("--fixed", action="store_true",
                         help="also write the overview, detail and pipeline dashboards")
    grafana.set_defaults(handler=_grafana)

    backtest = sub.add_parser("backtest", help="replay event files through the engine")
    backtest.add_argument("--rules", required=True)
    backtest.add_argument("--events", required=True, nargs="+", metavar="[SOURCE=]FILE")
    backtest.add_argument("--out", required=True, metavar="OUTDIR")
    backtest.add_argument("--compare", metavar="OLD_RULES_DIR",
                          help="also replay through these rules; list the alerts added/removed")
    backtest.add_argument("--no-report", dest="report", action="store_false",
                          help="skip OUTDIR/index.html (the charts take a few seconds)")
    backtest.set_defaults(handler=_backtest)

    digest = sub.add_parser("digest", help="render digests as of a time, from event files")
    digest.add_argument("--rules", required=True)
    digest.add_argument("--at", required=True, metavar="TIME",
                        help="RFC 3339, e.g. 2026-11-24T09:00:00+08:00: events up to then count")
    digest.add_argument("--events", required=True, nargs="+", metavar="[SOURCE=]FILE")
    digest.add_argument("--name", help="only this digest (default: every digest)")
    digest.add_argument("--out", metavar="DIR", help="also write DIR/NAME-TIME.md and .png")
    digest.set_defaults(handler=_digest)

    silence = sub.add_parser("silence", help="mute alerts for a while (runtime silences)")
    actions = silence.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a silence")
    add.add_argument("--match", action="append", default=[], metavar="NAME=VALUE",
                     help="alert, kpi, severity, owner or a label; repeat for more")
    ends = add.add_mutually_exclusive_group(required=True)
    ends.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h")
    ends.add_argument("--ends", metavar="TIME", help="RFC 3339, e.g. 2026-11-24T08:00:00+08:00")
    add.add_argument("--starts", metavar="TIME", help="RFC 3339 (default now)")
    add.add_argument("--comment", required=True, help="why (shown in silence list)")
    add.add_argument("--by", default="", help="who")
    add.set_defaults(handler=_silence_add)
    expire = actions.add_parser("expire", help="end a silence now")
    expire.add_argument("id")
    expire.set_defaults(handler=_silence_expire)
    listing = actions.add_parser("list", help="show active and pending silences")
    listing.add_argument("--all", action="store_true", help="expired ones too")
    listing.set_defaults(handler=_silence_list)
    for action in (add, expire, listing):
        action.add_argument("--broker", help="kafka://HOST:PORT (KPISTREAM_BROKER)")

    feedback = sub.add_parser("feedback", help="tell an anomaly model that an alert was wrong")
    feedback.add_argument("--alert", required=True, metavar="ID",
                          help="the id in the alert message, ALERT:FINGERPRINT:SECONDS")
    feedback.add_argument("--not-anomaly", action="store_true", required=True,
                          help="the flagged value was normal: the series' model learns it "
                               "and widens its band a little")
    feedback.add_argument("--comment", default="", help="why (kept in the feedback topic)")
    feedback.add_argument("--by", default="", help="who")
    feedback.add_argument("--broker", help="kafka://HOST:PORT (KPISTREAM_BROKER)")
    feedback.set_defaults(handler=_feedback)

    produce = sub.add_parser("produce", help="send JSONL events to a topic")
    produce.add_argument("--broker", required=True)
    produce.add_argument("--topic", required=True)
    produce.add_argument("--key", metavar="FIELD", help="message key from this field")
    produce.add_argument("file", help="JSONL file, or - for stdin")
    produce.set_defaults(handler=_produce)
    return parser


def _broker_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--broker", help="kafka://HOST:PORT (KPISTREAM_BROKER); none: embedded")
    cmd.add_argument("--metrics-addr", help="HOST:PORT for /metrics (default 127.0.0.1:9464)")


def _settings(args: argparse.Namespace) -> Settings:
    given = {k: getattr(args, k, None) for k in ("broker", "rules", "metrics_addr", "start_from")}
    return Settings(**{k: v for k, v in given.items() if v is not None})


def _run(args: argparse.Namespace) -> int:
    from kpistream.shell.daemon import build_daemon, run_worker

    settings = _settings(args)
    rules = load_rules(settings.rules)
    daemon, _ = build_daemon(settings, rules)
    return run_worker(daemon)


def _demo(args: argparse.Namespace) -> int:
    from kpistream.shell.daemon import run_worker
    from kpistream.shell.demo import build_demo, build_feed

    if args.feed_only and not args.broker:
        raise UsageError("--feed-only needs --broker kafka://HOST:PORT")
    settings = Settings(**{"broker": args.broker, "rules": args.rules, "start_from": "earliest",
                           **({"metrics_addr": args.metrics_addr} if args.metrics_addr else {})})
    build = build_feed if args.feed_only else build_demo
    return run_worker(build(settings, load_rules(settings.rules), rate=args.rate))


def _check(args: argparse.Namespace) -> int:
    if (args.dir is None) == (args.diff is None):
        raise UsageError("check takes a rules directory, or --diff OLD_DIR NEW_DIR")
    if args.diff is not None:
        return _check_diff(*args.diff, as_json=args.format == "json")
    if args.format == "json":
        return _check_json(args.dir)
    rules = load_rules(args.dir)
    print(f"{len(rules.files)} file(s) OK: {len(rules.sources)} sources, {len(rules.kpis)} "
          f"KPIs, {len(rules.alerts)} alerts, {len(rules.owners)} owners "
          f"(version {rules.version})")
    return 0


def _check_diff(old_dir: str, new_dir: str, *, as_json: bool) -> int:
    from dataclasses import asdict

    import orjson

    from kpistream.core.definition_diff import diff_rules, render_diff

    sets = []
    for label, directory in (("old", old_dir), ("new", new_dir)):
        try:
            sets.append(load_rules(directory))
        except RuleError as e:
            print(f"kpistream: the {label} rules ({directory}) do not load:\n{e}",
                  file=sys.stderr)
            return 1
    changes = diff_rules(*sets)
    if as_json:
        print(orjson.dumps({"changes": [asdict(c) for c in changes]}).decode())
    else:
        print(render_diff(changes))
    return 0


def _check_json(directory: str) -> int:
    import orjson

    try:
        rules = load_rules(directory)
    except RuleError as e:
        problems = [{"path": p.path, "line": p.line, "col": p.col, "message": p.message}
                    for p in e.problems]
        print(orjson.dumps({"valid": False, "problems": problems}).decode())
        return 1
    print(orjson.dumps({"valid": True, "problems": [], "version": rules.version,
                        "files": list(rules.files)}).decode())
    return 0


def _test(args: argparse.Namespace) -> int:
    from kpistream.shell.ruletests import run_test_files

    return run_test_files(Path(args.dir))


def _schema(args: argparse.Namespace) -> int:
    import orjson

    from kpistream.core.schema import rule_file_schema

    text = orjson.dumps(rule_file_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if args.out:
        Path(args.out).write_bytes(text + b"\n")
    else:
        print(text.decode())
    return 0


def _grafana(args: argparse.Namespace) -> int:
    from kpistream.shell.grafana import write_dashboards

    rules = load_rules(args.rules)
    name = args.name or Path(args.rules).resolve().name
    for path in write_dashboards(rules, name, Path(args.out), fixed=args.fixed):
        print(path)
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from kpistream.shell.backtest import parse_event_spec, run_backtest
    from kpistream.shell.report import summarize, summary_lines, write_html

    rules = load_rules(args.rules)
    files = [parse_event_spec(spec, rules) for spec in args.events]
    try:
        old_rules = load_rules(args.compare) if args.compare else None
    except RuleError as e:
        print(f"kpistream: --compare {args.compare}: the old rules do not load:\n{e}",
              file=sys.stderr)
        return 1
    report = run_backtest(rules, files, Path(args.out))
    c = report.counts
    print(f"events: {c['ok']} ok, {c['invalid']} invalid, {c['late']} late, "
          f"{c['filtered']} filtered")
    print(f"windows closed: {len(report.windows)}; alert transitions: "
          f"{len(report.transitions)}; written to {args.out}/kpis.csv and alerts.csv")
    if report.rejected:
        print(f"{len(report.rejected)} invalid event(s) set aside in {args.out}/rejected.jsonl",
              file=sys.stderr)
    print("\n".join(summary_lines(summarize(rules, report.transitions))))
    comparison = _compare(args, old_rules, files, report) if old_rules is not None else None
    if args.report:
        write_html(Path(args.out) / "index.html", rules, report, comparison)
        print(f"report: {args.out}/index.html")
    for stale, kept in (("index.html", args.report), ("compare.txt", comparison is not None)):
        if not kept:
            (Path(args.out) / stale).unlink(missing_ok=True)  # not from an earlier run
    return 0


def _digest(args: argparse.Namespace) -> int:
    from kpistream.core.digest import render_digest
    from kpistream.shell.backtest import parse_event_spec, replay
    from kpistream.shell.digests import digest_files, report_at

    rules = load_rules(args.rules)
    if args.name is not None and args.name not in {d.name for d in rules.digests}:
        known = ", ".join(d.name for d in rules.digests) or "none"
        raise UsageError(f'--name: no digest "{args.name}" in the rules (they have {known})')
    if not rules.digests:
        raise UsageError(f"{args.rules}: the rules define no digests; add a digests: section")
    at_ms = _moment_ms(args.at, "--at")
    files = [parse_event_spec(spec, rules) for spec in args.events]
    reports = report_at(rules, replay(rules, files).windows, at_ms, args.name)
    for i, report in enumerate(reports):
        print(("\n" if i else "") + render_digest(report).text)
        if args.out:
            for path in digest_files(report, Path(args.out)):
                print(f"written: {path}", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace, old_rules: RuleSet, files: list[EventFile],
             report: BacktestReport) -> Comparison:
    """Replay the same files through the old rules; print and write what changed."""
    from kpistream.shell.backtest import replay
    from kpistream.shell.report import compare

    kept = [f for f in files if f.source in old_rules.sources]
    for skipped in sorted({f.source for f in files} - set(old_rules.sources)):
        print(f"compared with {args.compare}: its rules have no source {skipped!r}; "
              "its events were replayed through the new rules only")
    old = replay(old_rules, kept)
    comparison = compare(args.compare, old.transitions, report.transitions)
    lines = comparison.lines()
    print(f"compared with {args.compare}: {len(comparison.added)} transition(s) added, "
          f"{len(comparison.removed)} removed")
    for line in lines:
        print(line)
    text = "".join(line + "\n" for line in lines)
    (Path(args.out) / "compare.txt").write_text(text, encoding="utf-8")
    return comparison


def _produce(args: argparse.Namespace) -> int:
    from kpistream.shell.broker import parse_bootstrap
    from kpistream.shell.produce import produce_lines, read_lines

    bootstrap = parse_bootstrap(args.broker)
    count = asyncio.run(produce_lines(bootstrap, args.topic, read_lines(args.file),
                                      key_field=args.key))
    print(f"sent {count} message(s) to {args.topic}", file=sys.stderr)
    return 0


def _daemon_broker(args: argparse.Namespace) -> tuple[str, Settings]:
    """The running daemon's broker (bootstrap address) and settings, for commands that
    write to its topics."""
    from kpistream.shell.broker import parse_bootstrap

    settings = Settings(**({"broker": args.broker} if args.broker else {}))
    if not settings.broker:
        raise UsageError("name the daemon's broker: --broker kafka://HOST:PORT or "
                         "KPISTREAM_BROKER")
    return parse_bootstrap(settings.broker), settings


def _silence_log(args: argparse.Namespace):
    from kpistream.shell.silences import SilenceLog

    bootstrap, settings = _daemon_broker(args)
    return SilenceLog(bootstrap, settings.silences_topic)


def _feedback(args: argparse.Namespace) -> int:
    from kpistream.shell.feedback import FeedbackLog

    bootstrap, settings = _daemon_broker(args)
    log = FeedbackLog(bootstrap, settings.feedback_topic)
    asyncio.run(log.send(args.alert, comment=args.comment, by=args.by))
    print(f"feedback on {args.alert} queued: the worker whose model flagged that window will "
          "learn the value as normal (kpistream_anomaly_feedback_total shows it)")
    return 0


def _silence_add(args: argparse.Namespace) -> int:
    from kpistream.core.durations import parse_duration_ms
    from kpistream.shell.silences import parse_matchers

    now = int(time.time() * 1000)
    starts = _moment_ms(args.starts, "--starts") if args.starts else now
    try:
        ends = (starts + parse_duration_ms(args.duration) if args.duration
                else _moment_ms(args.ends, "--ends"))
    except ValueError as e:
        raise UsageError(f"--for: {e}") from e
    silence = asyncio.run(_silence_log(args).add(
        parse_matchers(args.match), starts_ms=starts, ends_ms=ends, comment=args.comment,
        created_by=args.by))
    print(silence.id)
    return 0


def _silence_expire(args: argparse.Namespace) -> int:
    silence = asyncio.run(_silence_log(args).expire(args.id, int(time.time() * 1000)))
    print(f"expired {silence.id}")
    return 0


def _silence_list(args: argparse.Namespace) -> int:
    from kpistream.core.durations import rfc3339

    now = int(time.time() * 1000)
    silences = asyncio.run(_silence_log(args).read()).values()
    for s in sorted(silences, key=lambda s: s.starts_ms):
        if args.all or s.ends_ms > now:
            matchers = " ".join(f"{k}={v}" for k, v in s.matchers)
            print(f"{s.id}  {rfc3339(s.starts_ms)} .. {rfc3339(s.ends_ms)}  {matchers}  "
                  f"# {s.comment}{f' ({s.created_by})' if s.created_by else ''}")
    return 0


def _moment_ms(text: str, flag: str) -> int:
    from kpistream.core.durations import parse_moment

    try:
        return int(parse_moment(text).timestamp() * 1000)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from e


def _demo_rules() -> Path:
    return Path(__file__).resolve().parents[2] / "rules" / "demo"


def _settings_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = "KPISTREAM_" + "_".join(str(p) for p in first["loc"]).upper()
    return f"{name}: {first['msg']}"
