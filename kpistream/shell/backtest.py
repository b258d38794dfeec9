"""``kpistream backtest``: replay event files through the same engine as ``run``.

Writes ``kpis.csv`` (one row per closed window per series), ``alerts.csv`` (one row per alert
state change), ``bands.csv`` when a KPI has ``anomaly:`` (each window's learned band and
verdict), ``targets.csv`` when a KPI has ``targets:`` (each window's standing against
each target), ``digests/NAME-TIME.md`` and ``.png`` for every digest at every cron tick of
event time the replay spans, and, when any event was invalid, ``rejected.jsonl`` (each
rejected event with its file, line and reason), so nothing is silently lost. The CLI adds
``index.html`` and the stdout summary (``kpistream.shell.report``); ``replay`` alone runs
``--compare``'s old rules.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import polars as pl

from kpistream.core.digest import reports_over
from kpistream.core.durations import rfc3339
from kpistream.core.engine import Engine, IngestResult, Step
from kpistream.core.expr import FieldType
from kpistream.core.notify.model import AlertEvent
from kpistream.core.ruleset import RuleSet
from kpistream.core.values import ClosedWindow, format_value
from kpistream.errors import EventError

__all__ = ["BacktestReport", "EventFile", "parse_event_spec", "replay", "run_backtest"]

BATCH = 50_000


@dataclass(frozen=True)
class EventFile:
    """An events file and the rule source it feeds."""

    source: str
    path: Path


@dataclass
class BacktestReport:
    """What a backtest read and produced."""

    counts: Counter = field(default_factory=Counter)
    windows: list[ClosedWindow] = field(default_factory=list)
    transitions: list[AlertEvent] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def take(self, step: Step) -> None:
        self.windows.extend(step.windows)
        self.transitions.extend(step.transitions)


def parse_event_spec(spec: str, rules: RuleSet) -> EventFile:
    """``SOURCE=FILE`` or ``FILE`` (when the rules have exactly one source)."""
    source, sep, path = spec.partition("=")
    if not sep:
        if len(rules.sources) != 1:
            raise EventError(f'--events "{spec}": name the source as SOURCE=FILE; the rules '
                             f"have sources {', '.join(rules.sources) or '(none)'}")
        source, path = next(iter(rules.sources)), spec
    if source not in rules.sources:
        raise EventError(f'--events "{spec}": unknown source "{source}"; the rules have '
                         f"{', '.join(rules.sources)}")
    return EventFile(source, Path(path))


def run_backtest(rules: RuleSet, files: list[EventFile], out_dir: Path) -> BacktestReport:
    """Replay ``files`` (each in its own order) and write the outputs to ``out_dir``."""
    report = replay(rules, files)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_kpis(out_dir / "kpis.csv", rules, report.windows)
    write_alerts(out_dir / "alerts.csv", rules, report.transitions)
    bands_path = out_dir / "bands.csv"
    if any(k.anomaly is not None for k in rules.kpis.values()):
        write_bands(bands_path, rules, report.windows)
    elif bands_path.exists():
        bands_path.unlink()
    if rules.digests:
        from kpistream.shell.digests import digest_files  # matplotlib: only when needed

        for digest in reports_over(rules, report.windows):
            digest_files(digest, out_dir / "digests")
    targets_path = out_dir / "targets.csv"
    if any(k.targets for k in rules.kpis.values()):
        write_targets(targets_path, rules, report.windows)
    elif targets_path.exists():
        targets_path.unlink()
    rejected_path = out_dir / "rejected.jsonl"
    if report.rejected:
        rejected_path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in report.rejected))
    elif rejected_path.exists():
        rejected_path.unlink()
    return report


def replay(rules: RuleSet, files: list[EventFile]) -> BacktestReport:
    """Replay ``files`` (each in its own order) through a fresh engine; write nothing.

    ``--compare`` calls it a second time with the old rules on the same files.
    """
    for event_file in files:
        if event_file.source not in rules.sources:
            raise EventError(f'--events: the rules have no source "{event_file.source}"; '
                             f"they have {', '.join(rules.sources) or '(none)'}")
    engine = Engine(rules)
    report = BacktestReport()
    for event_file in files:
        fields = rules.sources[event_file.source].fields
        for first_line, batch in _batches(event_file.path, fields):
            result = engine.ingest(event_file.source, batch)
            _tally(report, event_file, first_line, batch, result)
            report.take(engine.advance())
    report.take(engine.finish())
    return report


def _tally(report: BacktestReport, event_file: EventFile, first_line: int, batch: list[bytes],
           result: IngestResult) -> None:
    for status in ("ok", "invalid", "late", "filtered"):
        report.counts[status] += getattr(result, status)
    for index, reason in result.rejected:
        report.rejected.append({"source": event_file.source, "file": str(event_file.path),
                                "line": first_line + index, "reason": reason,
                                "raw": batch[index].decode("utf-8", "replace")})


def _batches(path: Path, fields: Mapping[str, FieldType]) -> Iterator[tuple[int, list[bytes]]]:
    """``(first line number, raw events)`` in batches; CSV rows become JSON objects."""
    if not path.is_file():
        raise EventError(f"{path}: no such events file")
    lines = _csv_lines(path, fields) if path.suffix.lower() == ".csv" else _json_lines(path)
    batch: list[bytes] = []
    first = 1
    for number, line in lines:
        if not batch:
            first = number
        batch.append(line)
        if len(batch) >= BATCH:
            yield first, batch
            batch = []
    if batch:
        yield first, batch


def _json_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line.rstrip(b"\r\n")


def _csv_lines(path: Path, fields: Mapping[str, FieldType]) -> Iterator[tuple[int, bytes]]:
    """CSV rows as JSON objects: cells stay text (``007`` keeps its zeros) except the fields
    the KPIs read as numbers or booleans; a dotted header (``user.city``) makes a nested
    object; an empty cell is a missing field."""
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise EventError(f"{path}: not a readable CSV file: {e}") from e
    for number, row in enumerate(frame.iter_rows(named=True), 2):
        event: dict = {}
        for name, text in row.items():
            if text is not None and text != "":
                _put(event, name, _typed(text, fields.get(name)))
        yield number, orjson.dumps(event)


def _typed(text: str, kind: FieldType | None) -> object:
    """A cell as the type its KPIs read it; left as text when it is not one (then invalid)."""
    if kind is FieldType.NUMBER:
        try:
            return float(text)
        except ValueError:
            return text
    if kind is FieldType.BOOL and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _put(event: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = event
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def write_kpis(path: Path, rules: RuleSet, windows: list[ClosedWindow]) -> None:
    """``kpi,window_start,window_end,labels,value`` ordered by window_end, kpi, labels."""
    rows = []
    for w in windows:
        names = rules.kpis[w.kpi].labels
        for key, value in w.values.items():
            labels = labels_json(dict(zip(names, key, strict=True)))
            rows.append((w.end_ms, w.kpi, labels, w.start_ms, value))
    rows.sort(key=lambda r: r[:3])
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["kpi", "window_start", "window_end", "labels", "value"])
        for end, kpi, labels, start, value in rows:
            out.writerow([kpi, rfc3339(start), rfc3339(end), labels, format_value(value)])


def write_bands(path: Path, rules: RuleSet, windows: list[ClosedWindow]) -> None:
    """``kpi,window_end,labels,value,expected,lower,upper,anomaly_score,is_anomaly,model`` for
    the KPIs with ``anomaly:``, ordered as ``kpis.csv``; empty cells while a model warms up."""
    rows = []
    for w in windows:
        names = rules.kpis[w.kpi].labels
        for key, j in (w.judgements or {}).items():
            labels = labels_json(dict(zip(names, key, strict=True)))
            band = ["" if x is None else format_value(x) for x in (j.expected, j.lower, j.upper)]
            rows.append((w.end_ms, w.kpi, labels, format_value(w.values[key]), *band,
                         format_value(round(j.score, 6)), str(j.is_anomaly).lower(), j.model))
    rows.sort(key=lambda r: r[:3])
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["kpi", "window_end", "labels", "value", "expected", "lower", "upper",
                      "anomaly_score", "is_anomaly", "model"])
        for end, kpi, labels, *rest in rows:
            out.writerow([kpi, rfc3339(end), labels, *rest])


TARGET_COLUMNS = ("kpi", "period", "period_start", "window_end", "labels", "value", "target",
                  "attainment", "expected_attainment", "forecast", "forecast_lower",
                  "forecast_upper", "target_hit_probability", "pace_model", "tracked_from")


def write_targets(path: Path, rules: RuleSet, windows: list[ClosedWindow]) -> None:
    """One row per window per series per target (columns :data:`TARGET_COLUMNS`), ordered
    as ``kpis.csv`` then by the KPI's order of targets; ratios rounded to 6 decimals."""
    rows = []
    for w in windows:
        names = rules.kpis[w.kpi].labels
        for key, statuses in (w.standings or {}).items():
            labels = labels_json(dict(zip(names, key, strict=True)))
            for i, s in enumerate(statuses):
                ratios = (s.attainment, s.expected_attainment)
                amounts = (s.forecast, s.forecast_lower, s.forecast_upper)
                rows.append((w.end_ms, w.kpi, labels, i, s.period, rfc3339(s.period_start_ms),
                             format_value(s.value), format_value(s.target),
                             *(format_value(round(r, 6)) for r in ratios),
                             *(format_value(round(a, 2)) for a in amounts),
                             format_value(round(s.hit_probability, 6)), s.pace_model,
                             "" if s.tracked_from_ms is None else rfc3339(s.tracked_from_ms)))
    rows.sort(key=lambda r: r[:4])
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(TARGET_COLUMNS)
        for end, kpi, labels, _, period, start, *rest in rows:
            out.writerow([kpi, period, start, rfc3339(end), labels, *rest])


def write_alerts(path: Path, rules: RuleSet, transitions: list[AlertEvent]) -> None:
    """``alert,kpi,labels,state,at,value,severity``, one row per state change, in time order."""
    rows = sorted(((t.at_ms, t.alert, labels_json(dict(t.labels)), t) for t in transitions),
                  key=lambda r: r[:3])
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["alert", "kpi", "labels", "state", "at", "value", "severity"])
        for at, alert, labels, t in rows:
            value = "" if t.value is None else format_value(t.value)
            out.writerow([alert, t.kpi, labels, t.state, rfc3339(at), value, t.severity])


def labels_json(labels: Mapping[str, str]) -> str:
    """Labels as the outputs print them: compact JSON with sorted keys."""
    return orjson.dumps(dict(labels), option=orjson.OPT_SORT_KEYS).decode()
