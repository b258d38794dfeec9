"""Rule unit tests (``kpistream test``): given events, expect these KPI values and alerts.

A test file (``*.test.yaml`` next to the rules) holds a list of tests::

    tests:
      - name: GMV drop pages sales-ops
        events:                        # per source, in arrival order
          orders:
            - {ts: "2024-01-01T10:00:05Z", status: paid, amount: 120, region: east}
        # or, instead of events, the values of aggregated KPIs per window (derived KPIs and
        # alerts follow):  values: {gmv: [{at: "...", labels: {region: east}, value: 90}]}
        kpis:                          # each must be there with this value
          - {kpi: gmv, at: "2024-01-01T10:01:00Z", labels: {region: east}, value: 120}
        alerts:                        # when given: exactly these transitions, in time order
          - {alert: gmv_low, at: "2024-01-01T10:02:00Z", labels: {region: east},
             state: firing}

Events run through the same engine as ``run`` and ``backtest``; the end of the events closes
every window (as in ``backtest``). ``at`` is a window end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kpistream.core.durations import parse_moment, rfc3339
from kpistream.core.engine import Engine
from kpistream.core.notify.model import AlertEvent
from kpistream.core.ruleset import RuleSet
from kpistream.core.values import ClosedWindow, format_value

__all__ = ["EventsFile", "RuleTest", "RuleTestFile", "TestResult", "run_test"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _moment(text: str) -> str:
    parse_moment(text)
    return text


Moment = Annotated[str, AfterValidator(_moment)]


class ExpectedKpi(_Model):
    kpi: str
    at: Moment
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None  # null: the window closes without a value for the series


class ExpectedAlert(_Model):
    alert: str
    at: Moment
    labels: dict[str, str] = Field(default_factory=dict)
    state: Literal["firing", "resolved"]
    severity: str | None = None


class EventsFile(_Model):
    file: str  # JSONL, relative to the test file (read by the shell)


class GivenValue(_Model):
    at: Moment
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class RuleTest(_Model):
    name: str
    events: dict[str, list[dict[str, Any]] | EventsFile] = Field(default_factory=dict)
    values: dict[str, list[GivenValue]] = Field(default_factory=dict)
    kpis: list[ExpectedKpi] = Field(default_factory=list)
    alerts: list[ExpectedAlert] | None = None


class RuleTestFile(_Model):
    tests: list[RuleTest] = Field(min_length=1)


@dataclass
class TestResult:
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def run_test(rules: RuleSet, test: RuleTest) -> TestResult:
    """Run one test's events through a fresh engine and compare with its expectations."""
    result = TestResult(test.name)
    unknown = sorted(set(test.events) - set(rules.sources))
    if unknown:
        result.failures.append(f"unknown source(s) {', '.join(unknown)}; the rules have "
                               f"{', '.join(rules.sources)}")
        return result
    if not test.events and not test.values:
        result.failures.append("give events (per source) or values (per KPI)")
        return result
    engine = Engine(rules)
    windows: list[ClosedWindow] = []
    events: list[AlertEvent] = []
    if test.values:
        given = _given_windows(rules, test.values, result)
        if result.failures:
            return result
        step = engine.given(given)
        windows += given + step.windows
        events += step.transitions
    for source, batch in test.events.items():
        if isinstance(batch, EventsFile):
            raise ValueError(f"events file {batch.file} was not read; see load_events_files")
        ingested = engine.ingest(source, [orjson.dumps(e) for e in batch])
        result.failures += [f"event {i + 1} of {source} is invalid: {reason}"
                            for i, reason in ingested.rejected]
        step = engine.advance()
        windows += step.windows
        events += step.transitions
    step = engine.finish()
    windows += step.windows
    events += step.transitions
    _check_kpis(rules, test.kpis, windows, result)
    if test.alerts is not None:
        _check_alerts(test.alerts, events, result)
    return result


def _given_windows(rules: RuleSet, values: dict[str, list[GivenValue]], result: TestResult
                   ) -> list[ClosedWindow]:
    """Closed windows from stated KPI values (aggregated KPIs only: derived ones follow)."""
    out = []
    for name, points in values.items():
        kpi = rules.kpis.get(name)
        if kpi is None or kpi.agg is None:
            result.failures.append(f'values: "{name}" is not a KPI aggregated from a source')
            continue
        by_end: dict[int, dict[tuple[str, ...], float]] = {}
        for point in points:
            if set(point.labels) != set(kpi.labels):
                result.failures.append(f"values: {name} at {point.at} needs the labels "
                                       f"{', '.join(kpi.labels) or '(none)'}")
                continue
            key = tuple(point.labels[label] for label in kpi.labels)
            by_end.setdefault(_ms(point.at), {})[key] = point.value
        out += [ClosedWindow(name, kpi.calendar.window_start(end), end, series,
                             frozenset(series)) for end, series in sorted(by_end.items())]
    return out


def _check_kpis(rules: RuleSet, expected: list[ExpectedKpi], windows: list[ClosedWindow],
                result: TestResult) -> None:
    closed = {(w.kpi, w.end_ms) for w in windows}
    got = {(w.kpi, w.end_ms, tuple(sorted(zip(rules.kpis[w.kpi].labels, key, strict=True)))): v
           for w in windows for key, v in w.values.items()}
    for e in expected:
        where = f"{e.kpi}{_labels(e.labels)} at {e.at}"
        end = _ms(e.at)
        value = got.get((e.kpi, end, tuple(sorted(e.labels.items()))))
        if (e.kpi, end) not in closed:
            result.failures.append(f"kpi {where}: no window of {e.kpi} closed then (expected "
                                   f"{_value(e.value)})")
        elif not _same(value, e.value):
            result.failures.append(f"kpi {where}: expected {_value(e.value)}, got "
                                   f"{_value(value)}")


def _check_alerts(expected: list[ExpectedAlert], events: list[AlertEvent],
                  result: TestResult) -> None:
    """Exactly the expected transitions happened (severity checked where given)."""
    unmatched = [(e.at_ms, e.alert, e.labels, e.state, e.severity) for e in events]
    missing = []
    for a in expected:
        want = (_ms(a.at), a.alert, tuple(sorted(a.labels.items())), a.state)
        match = next((g for g in unmatched if g[:4] == want
                      and a.severity in (None, g[4])), None)
        if match is None:
            missing.append(want)
        else:
            unmatched.remove(match)
    for at, alert, labels, state in sorted(missing):
        result.failures.append(f"alert {alert}{_labels(dict(labels))} {state} at {rfc3339(at)}: "
                               "expected, did not happen")
    for at, alert, labels, state, severity in sorted(unmatched):
        result.failures.append(f"alert {alert}{_labels(dict(labels))} {state} ({severity}) at "
                               f"{rfc3339(at)}: happened, not expected")


def _ms(text: str) -> int:
    return int(parse_moment(text).timestamp() * 1000)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _value(value: float | None) -> str:
    return "no value" if value is None else format_value(value)


def _same(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
