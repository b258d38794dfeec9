"""What ``kpistream backtest`` tells a rule author: a stdout summary, ``--compare`` and index.html.

The summary gives, per alert rule, its firings, resolves and first firing time, and how many
transitions would have been sent (alerts with ``notify: true``). ``--compare`` replays the same
events through the old rules and lists the transitions the change adds (``+``) and removes
(``-``). ``index.html`` is self-contained (inline CSS, PNG charts as ``data:`` URIs, no script):
per KPI a chart per series (capped at the series with the most alert transitions) with the
thresholds of simple ``value <op> N`` conditions and markers at alert transitions, the alert
table, and the comparison when there is one.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from kpistream.core.durations import rfc3339
from kpistream.core.notify.model import AlertEvent
from kpistream.core.ruleset import Alert, RuleSet
from kpistream.core.values import ClosedWindow
from kpistream.shell.backtest import BacktestReport, labels_json
from kpistream.shell.delivery.chart import threshold_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "AlertSummary",
    "Comparison",
    "compare",
    "summarize",
    "summary_lines",
    "transition_line",
    "write_html",
]

#: charts per KPI: the series with the most alert transitions, then by labels
MAX_SERIES = 12
SIZE_IN = (7.0, 2.2)
DPI = 80
LINE = "#1f77b4"
FIRING = "#d62728"
RESOLVED = "#2ca02c"


@dataclass(frozen=True)
class AlertSummary:
    """One alert rule's transitions in a backtest."""

    name: str
    kpi: str
    condition: str
    firing: int
    resolved: int
    first_ms: int | None  # first firing, None when it never fired
    shadow: bool  # notify: false
    notified: int  # transitions that would have been sent


@dataclass(frozen=True)
class Comparison:
    """Transitions the new rules add and remove against the old ones, as sorted lines."""

    old_rules: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def lines(self) -> list[str]:
        """``+ ...`` lines, then ``- ...`` lines."""
        return [f"+ {line}" for line in self.added] + [f"- {line}" for line in self.removed]


def summarize(rules: RuleSet, transitions: Iterable[AlertEvent]) -> list[AlertSummary]:
    """Per alert rule, in rule order: counts, first firing and would-have-notified count."""
    states: dict[str, Counter] = defaultdict(Counter)
    first: dict[str, int] = {}
    for t in transitions:
        states[t.alert][t.state] += 1
        if t.state == "firing" and t.at_ms < first.get(t.alert, t.at_ms + 1):
            first[t.alert] = t.at_ms
    return [_summary(alert, states[alert.name], first.get(alert.name)) for alert in rules.alerts]


def _summary(alert: Alert, states: Counter, first_ms: int | None) -> AlertSummary:
    firing, resolved = states["firing"], states["resolved"]
    return AlertSummary(alert.name, alert.kpi, alert.condition_text, firing, resolved, first_ms,
                        shadow=not alert.notify,
                        notified=firing + resolved if alert.notify else 0)


def summary_lines(summaries: Sequence[AlertSummary]) -> list[str]:
    """The stdout summary: one line per alert rule, then the would-have-notified total.

    >>> s = AlertSummary("gmv_low", "gmv", "value < 100", 2, 1, 0, False, 3)
    >>> summary_lines([s])
    ['alert gmv_low: 2 firing, 1 resolved, first at 1970-01-01T00:00:00Z', 'would have notified: 3 transition(s)']
    """  # noqa: E501
    lines = []
    for s in summaries:
        first = rfc3339(s.first_ms) if s.first_ms is not None else "never"
        shadow = ", shadow" if s.shadow else ""
        lines.append(f"alert {s.name}: {s.firing} firing, {s.resolved} resolved, "
                     f"first at {first}{shadow}")
    lines.append(f"would have notified: {sum(s.notified for s in summaries)} transition(s)")
    return lines


def transition_line(t: AlertEvent) -> str:
    """``alert labels state at``, as ``--compare`` prints it (without the sign)."""
    return f"{t.alert} {labels_json(dict(t.labels))} {t.state} {rfc3339(t.at_ms)}"


def compare(old_rules: str, old: Iterable[AlertEvent], new: Iterable[AlertEvent]) -> Comparison:
    """The transitions in ``new`` but not ``old`` and the reverse, counted as multisets."""
    old_keys = Counter(_key(t) for t in old)
    new_keys = Counter(_key(t) for t in new)
    return Comparison(old_rules, _lines(new_keys - old_keys), _lines(old_keys - new_keys))


def _key(t: AlertEvent) -> tuple[int, str, str, str, str]:
    return (t.at_ms, t.alert, labels_json(dict(t.labels)), t.state, t.severity)


def _lines(keys: Counter) -> tuple[str, ...]:
    """Sorted by time, alert, labels, state, severity."""
    return tuple(f"{alert} {labels} {state} ({severity}) {rfc3339(at)}"
                 for at, alert, labels, state, severity in sorted(keys.elements()))


# --- index.html ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """One KPI series: its points and the alert transitions on it."""

    labels: str
    points: list[tuple[int, float]]
    transitions: list[AlertEvent]


def write_html(path: Path, rules: RuleSet, report: BacktestReport,
               comparison: Comparison | None = None, *, max_series: int = MAX_SERIES) -> None:
    """Write the self-contained report to ``path``."""
    charts = _Charts(rules.timezone)
    parts = [_HEAD, _counts_html(report), _alerts_html(summarize(rules, report.transitions))]
    if comparison is not None:
        parts.append(_comparison_html(comparison))
    series = _series_by_kpi(rules, report.windows, report.transitions)
    for name, kpi in rules.kpis.items():
        parts.append(_kpi_html(name, kpi.title, series.get(name, []), rules, charts, max_series))
    parts.append("</body>\n</html>\n")
    path.write_text("".join(parts), encoding="utf-8")


def _series_by_kpi(rules: RuleSet, windows: Iterable[ClosedWindow],
                   transitions: Iterable[AlertEvent]) -> dict[str, list[_Series]]:
    """Every series of every KPI with its points in time order and its transitions."""
    points: dict[tuple[str, tuple[str, ...]], list[tuple[int, float]]] = defaultdict(list)
    for w in windows:
        for key, value in w.values.items():
            points[(w.kpi, key)].append((w.end_ms, value))
    marks: dict[tuple[str, str], list[AlertEvent]] = defaultdict(list)
    for t in transitions:
        marks[(t.kpi, labels_json(dict(t.labels)))].append(t)
    out: dict[str, list[_Series]] = defaultdict(list)
    for (kpi, key), series_points in points.items():
        labels = labels_json(dict(zip(rules.kpis[kpi].labels, key, strict=True)))
        series_points.sort()
        out[kpi].append(_Series(labels, series_points, marks.get((kpi, labels), [])))
    return out


def _kpi_html(name: str, title: str | None, series: list[_Series], rules: RuleSet,
              charts: _Charts, max_series: int) -> str:
    """A KPI's section: its most eventful series charted, and how many were left out."""
    shown = sorted(series, key=lambda s: (-len(s.transitions), s.labels))[:max_series]
    thresholds = _thresholds(rules, name)
    heading = html.escape(name + (f" — {title}" if title else ""))
    note = f"{len(series)} series"
    if len(series) > len(shown):
        note += (f"; charting the {len(shown)} with the most alert transitions, "
                 f"{len(series) - len(shown)} left out")
    figures = [_figure(name, s, charts.png(s.points, s.transitions, thresholds)) for s in shown]
    return (f'<section class="kpi"><h2 id="kpi-{html.escape(name)}">{heading}</h2>\n'
            f"<p>{note}</p>\n{''.join(figures)}</section>\n")


def _figure(kpi: str, series: _Series, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    alt = html.escape(f"{kpi} {series.labels}")
    caption = html.escape(series.labels)
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption} · {len(series.transitions)} alert transition(s)"
            f"</figcaption></figure>\n")


def _thresholds(rules: RuleSet, kpi: str) -> list[tuple[float, str]]:
    """``(threshold, legend)`` of the simple ``value <op> N`` conditions of ``kpi``'s alerts."""
    found = []
    for alert in rules.alerts:
        if alert.kpi != kpi:
            continue
        for condition in alert.conditions:
            value = threshold_of(condition.text)
            if value is not None:
                found.append((value, f"{alert.name} {condition.severity}: {condition.text}"))
    return found


def _counts_html(report: BacktestReport) -> str:
    c = report.counts
    return (f"<p>events: {c['ok']} ok, {c['invalid']} invalid, {c['late']} late, "
            f"{c['filtered']} filtered; windows closed: {len(report.windows)}; "
            f"alert transitions: {len(report.transitions)}</p>\n")


def _alerts_html(summaries: Sequence[AlertSummary]) -> str:
    """The alert table: one row per alert rule."""
    head = ("<tr><th>alert</th><th>kpi</th><th>condition</th><th>firings</th>"
            "<th>resolves</th><th>first firing</th><th>would have notified</th></tr>\n")
    rows = []
    for s in summaries:
        name = html.escape(s.name) + (' <span class="shadow">shadow</span>' if s.shadow else "")
        first = rfc3339(s.first_ms) if s.first_ms is not None else "never"
        rows.append(f'<tr class="alert"><td>{name}</td><td>{html.escape(s.kpi)}</td>'
                    f"<td><code>{html.escape(s.condition)}</code></td><td>{s.firing}</td>"
                    f"<td>{s.resolved}</td><td>{first}</td><td>{s.notified}</td></tr>\n")
    total = sum(s.notified for s in summaries)
    return (f"<h2>Alerts</h2>\n<table>\n{head}{''.join(rows)}</table>\n"
            f"<p>would have notified: {total} transition(s)</p>\n")


def _comparison_html(comparison: Comparison) -> str:
    lines = comparison.lines()
    body = html.escape("\n".join(lines)) if lines else "no change in alert transitions"
    return (f"<h2>Compared with {html.escape(comparison.old_rules)}</h2>\n"
            f"<p>{len(comparison.added)} added, {len(comparison.removed)} removed</p>\n"
            f'<pre class="compare">{body}</pre>\n')


class _Charts:
    """Draws series charts on one reused matplotlib Figure (much faster than one per chart)."""

    def __init__(self, timezone: str) -> None:
        import matplotlib  # ~40 MB: loaded only when a report is written

        matplotlib.use("Agg")
        from matplotlib.dates import AutoDateLocator, DateFormatter
        from matplotlib.figure import Figure

        self.zone = ZoneInfo(timezone)
        self.figure = Figure(figsize=SIZE_IN, dpi=DPI)
        self.figure.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.2)
        self.axes = self.figure.add_subplot()
        self._locator, self._formatter = AutoDateLocator, DateFormatter

    def png(self, points: Sequence[tuple[int, float]], transitions: Sequence[AlertEvent],
            thresholds: Sequence[tuple[float, str]]) -> bytes:
        """A PNG of value over time, dashed thresholds, and firing/resolved markers."""
        ax = self.axes
        ax.clear()
        ax.plot([self._time(ms) for ms, _ in points], [v for _, v in points], color=LINE,
                linewidth=1.2, marker="o" if len(points) < 30 else None, markersize=3)
        for value, legend in thresholds:
            ax.axhline(value, color=FIRING, linestyle="--", linewidth=1, label=legend)
        self._markers(transitions, points)
        self._style(ax, legend=bool(thresholds or transitions))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
            self.figure.savefig(buffer, format="png")
        return buffer.getvalue()

    def _markers(self, transitions: Sequence[AlertEvent],
                 points: Sequence[tuple[int, float]]) -> None:
        """Firing (red ▲) and resolved (green ▼) at each transition; absent values sit at 0."""
        for state, color, marker in (("firing", FIRING, "^"), ("resolved", RESOLVED, "v")):
            chosen = [t for t in transitions if t.state == state]
            if chosen:
                self.axes.scatter([self._time(t.at_ms) for t in chosen],
                                  [0.0 if t.value is None else t.value for t in chosen],
                                  color=color, marker=marker, s=40, zorder=3, label=state)
        if not points and not transitions:
            self.axes.text(0.5, 0.5, "no data", transform=self.axes.transAxes, ha="center")

    def _style(self, ax: Axes, *, legend: bool) -> None:
        ax.grid(True, color="#e0e0e0", linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(self._locator(tz=self.zone, maxticks=8))
        ax.xaxis.set_major_formatter(self._formatter("%m-%d %H:%M", tz=self.zone))
        ax.set_xlabel(str(self.zone), fontsize=8, color="#666666")
        if legend:
            ax.legend(loc="best", fontsize=7, frameon=False)

    def _time(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=self.zone)


_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>kpistream backtest</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td:nth-child(n+4) { text-align: right; }
.shadow { background: #eee; color: #666; font-size: 0.8em; padding: 0 0.3em; }
figure { margin: 0.5em 0; }
figcaption { font-size: 0.85em; color: #555; font-family: monospace; }
img { max-width: 100%; }
pre.compare { background: #f6f8fa; padding: 0.6em; overflow-x: auto; }
</style>
</head>
<body>
<h1>kpistream backtest</h1>
"""
