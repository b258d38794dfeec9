"""The ``kpistream`` command line: run, demo, check, backtest, produce.

Exit codes: 0 success, 1 invalid input (rules, events, arguments) with a clear message,
2 usage error. A user error never prints a Python traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from kpistream.core.loader import load_rules
from kpistream.errors import KpistreamError, RuleError, UsageError
from kpistream.settings import Settings

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
    demo.set_defaults(handler=_demo)

    check = sub.add_parser("check", help="validate rule files")
    check.add_argument("dir", help="rules directory or file")
    check.set_defaults(handler=_check)

    backtest = sub.add_parser("backtest", help="replay event files through the engine")
    backtest.add_argument("--rules", required=True)
    backtest.add_argument("--events", required=True, nargs="+", metavar="[SOURCE=]FILE")
    backtest.add_argument("--out", required=True, metavar="OUTDIR")
    backtest.set_defaults(handler=_backtest)

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
    from kpistream.shell.demo import build_demo

    settings = Settings(**{"broker": None, "rules": args.rules, "start_from": "earliest",
                           **({"metrics_addr": args.metrics_addr} if args.metrics_addr else {})})
    return run_worker(build_demo(settings, load_rules(settings.rules), rate=args.rate))


def _check(args: argparse.Namespace) -> int:
    rules = load_rules(args.dir)
    print(f"{len(rules.files)} file(s) OK: {len(rules.sources)} sources, {len(rules.kpis)} "
          f"KPIs, {len(rules.alerts)} alerts, {len(rules.owners)} owners "
          f"(version {rules.version})")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from kpistream.shell.backtest import parse_event_spec, run_backtest

    rules = load_rules(args.rules)
    files = [parse_event_spec(spec, rules) for spec in args.events]
    report = run_backtest(rules, files, Path(args.out))
    c = report.counts
    print(f"events: {c['ok']} ok, {c['invalid']} invalid, {c['late']} late, "
          f"{c['filtered']} filtered")
    print(f"windows closed: {len(report.windows)}; alert transitions: "
          f"{len(report.transitions)}; written to {args.out}/kpis.csv and alerts.csv")
    if report.rejected:
        print(f"{len(report.rejected)} invalid event(s) set aside in {args.out}/rejected.jsonl",
              file=sys.stderr)
    return 0


def _produce(args: argparse.Namespace) -> int:
    from kpistream.shell.broker import parse_bootstrap
    from kpistream.shell.produce import produce_lines, read_lines

    bootstrap = parse_bootstrap(args.broker)
    count = asyncio.run(produce_lines(bootstrap, args.topic, read_lines(args.file),
                                      key_field=args.key))
    print(f"sent {count} message(s) to {args.topic}", file=sys.stderr)
    return 0


def _demo_rules() -> Path:
    return Path(__file__).resolve().parents[2] / "rules" / "demo"


def _settings_error(error: ValidationError) -> str:
    first = error.errors()[0]
    name = "KPISTREAM_" + "_".join(str(p) for p in first["loc"]).upper()
    return f"{name}: {first['msg']}"
