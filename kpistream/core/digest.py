"""Digests: scheduled summaries of KPIs against their targets, for group chats and email.

A digest (``digests:`` in the rules) fires at the ticks of its cron expression in the rules'
timezone. Its report holds, from each series' latest standing (see
:mod:`kpistream.core.targets`):

* the headline: every series of the digest's KPIs that have no dimensions (company level),
  against each target: value, attainment, pace, forecast with its interval, probability;
* the board: the series of KPIs with dimensions (regions, reps), ranked by attainment
  against pace, with their owners;
* the biggest deviations: the series furthest from pace, each explained by its children in
  the KPI tree (their own gaps to pace, ranked with shares) when they have targets.

``run`` sends it at wall-clock ticks; ``backtest`` and ``kpistream digest`` make the same
report from replayed events at ticks of event time.

>>> from kpistream.core.loader import load_rules_text
>>> from kpistream.core.values import TargetStatus
>>> rules = load_rules_text('''
... sources: [{name: s, topic: t}]
... kpis: [{name: gmv, title: GMV, source: s, agg: sum(x), window: 1h,
...         targets: [{period: month, value: 1000}]}]
... digests: [{name: morning, cron: "0 9 * * *", language: en, notify: ["json://localhost"]}]
... ''')
>>> status = TargetStatus("month", 0, 2_592_000_000, 864_000_000, 1000.0, 300.0, 0.3, 0.333,
...                       900.0, 850.0, 950.0, 0.02, "weekly")
>>> report = build_digest(rules, rules.digests[0], {"gmv": {(): (status,)}}, 864_000_000)
>>> print(render_digest(report).text.splitlines()[3])
- GMV · month (1970-01): 300 / 1,000 = 30.0% attained (pace 33.3%, behind), forecast 900 \
(80% interval 850 – 950), 2% likely to hit
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from kpistream.core.contributions import Contribution, rank
from kpistream.core.notify.render import Message, amount, standing_text
from kpistream.core.ruleset import Digest, Kpi, RuleSet
from kpistream.core.tree import part_series
from kpistream.core.values import ClosedWindow, SeriesKey, TargetStatus

__all__ = ["DigestLine", "DigestReport", "Standings", "build_digest", "check_cron",
           "cron_ticks", "render_digest", "reports_over", "standings_at"]

#: the standings of every KPI with targets: kpi -> series -> one status per target
Standings = Mapping[str, Mapping[SeriesKey, tuple[TargetStatus, ...]]]

_WORDS = {
    "zh": {"headline": "目标达成", "board": "排行（按进度）", "gaps": "最大偏差",
           "of_pace": "{} 对进度", "owner": "负责人", "gap": "距进度 {}",
           "why": "主要来自", "none": "（暂无目标数据）", "at": "截至 {}",
           "day": "日", "week": "周", "month": "月", "quarter": "季度",
           "partial": "（期初缺失）"},
    "en": {"headline": "Targets", "board": "Board (against pace)", "gaps": "Biggest deviations",
           "of_pace": "{} of pace", "owner": "owner", "gap": "{} against pace",
           "why": "mostly from", "none": "(no target data yet)", "at": "as of {}",
           "day": "day", "week": "week", "month": "month", "quarter": "quarter",
           "partial": " (period start missing)"},
}


@dataclass(frozen=True, slots=True)
class DigestLine:
    """One series' standing against one target."""

    kpi: str
    title: str
    owner: str | None
    labels: tuple[tuple[str, str], ...]
    status: TargetStatus

    @property
    def gap(self) -> float:
        """The value against what was due by now (negative: behind pace)."""
        return self.status.value - self.status.target * self.status.expected_attainment

    @property
    def pace_index(self) -> float:
        """Attainment over pace (1.0 on pace); the attainment itself before anything is due."""
        s = self.status
        return s.attainment / s.expected_attainment if s.expected_attainment > 0 else 1.0

    @property
    def name(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.title} {shown}".strip()


@dataclass(frozen=True, slots=True)
class Deviation:
    """A series far from pace, and the parts of the business its gap comes from."""

    line: DigestLine
    parts: tuple[Contribution, ...] = ()


@dataclass(frozen=True, slots=True)
class DigestReport:
    """What one digest says at one tick."""

    name: str
    title: str
    at_ms: int
    timezone: str
    language: str
    headline: tuple[DigestLine, ...]
    board: tuple[DigestLine, ...]
    deviations: tuple[Deviation, ...]


def check_cron(text: str) -> str | None:
    """The problem with a cron expression, or None when it is valid.

    >>> check_cron("0 9 * * 1-5"), check_cron("0 25 * * *")
    (None, 'invalid cron expression "0 25 * * *": Bad hour; expected five fields: minute hour \
day-of-month month day-of-week, e.g. 0 9 * * * (09:00 daily)')
    """
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as e:
        return (f'invalid cron expression "{text}": {e}; expected five fields: minute hour '
                "day-of-month month day-of-week, e.g. 0 9 * * * (09:00 daily)")
    return None


def cron_ticks(cron: str, timezone: str, after_ms: int, until_ms: int) -> Iterator[int]:
    """The ticks of ``cron`` (local time in ``timezone``) in ``(after_ms, until_ms]``.

    >>> [t - 1_700_000_000_000 for t in cron_ticks("*/30 * * * *", "UTC", 1_700_000_000_000,
    ...                                             1_700_003_600_000)]
    [1000000, 2800000]
    """
    start = datetime.fromtimestamp(after_ms / 1000, ZoneInfo(timezone))
    for moment in CronSim(cron, start):
        tick = int(moment.timestamp() * 1000)
        if tick > until_ms:
            return
        if tick > after_ms:
            yield tick


def standings_at(windows: Iterable[ClosedWindow], at_ms: int) -> dict[str, dict]:
    """Each series' latest standing among the windows that ended by ``at_ms``."""
    latest: dict[str, dict] = {}
    for window in windows:
        if window.standings and window.end_ms <= at_ms:
            latest.setdefault(window.kpi, {}).update(window.standings)
    return latest


def reports_over(rules: RuleSet, windows: Sequence[ClosedWindow]) -> list[DigestReport]:
    """Every digest at every tick of event time the windows span (backtest)."""
    ordered = sorted((w for w in windows if w.standings), key=lambda w: w.end_ms)
    if not ordered or not rules.digests:
        return []
    first, last = ordered[0].end_ms, ordered[-1].end_ms
    reports = []
    for digest in rules.digests:
        latest: dict[str, dict] = {}
        position = 0
        for tick in cron_ticks(digest.cron, rules.timezone, first, last):
            while position < len(ordered) and ordered[position].end_ms <= tick:
                window = ordered[position]
                latest.setdefault(window.kpi, {}).update(window.standings)
                position += 1
            reports.append(build_digest(rules, digest, latest, tick))
    return sorted(reports, key=lambda r: (r.at_ms, r.name))


def build_digest(rules: RuleSet, digest: Digest, standings: Standings, at_ms: int
                 ) -> DigestReport:
    """The report of ``digest`` from each series' latest standing, at ``at_ms``."""
    kpis = [rules.kpis[n] for n in digest.kpis] if digest.kpis else [
        k for k in rules.kpis.values() if k.targets]
    lines = [line for kpi in kpis for line in _lines(kpi, standings.get(kpi.name, {}))]
    headline = tuple(line for line in lines if not line.labels)
    board = tuple(sorted((line for line in lines if line.labels),
                         key=lambda line: (line.status.period, -line.pace_index, line.name)))
    furthest = sorted((line for line in lines if line.gap < 0),
                      key=lambda line: (line.gap / line.status.target, line.name))
    deviations = tuple(Deviation(line, _parts(rules, line, standings))
                       for line in furthest[:digest.top])
    owner = rules.owners.get(digest.owner) if digest.owner else None
    language = digest.language or (owner.language if owner else "zh")
    return DigestReport(digest.name, digest.title or digest.name, at_ms, rules.timezone,
                        language, headline, board[:digest.top * 4], deviations)


def _lines(kpi: Kpi, standings: Mapping[SeriesKey, tuple[TargetStatus, ...]]
           ) -> list[DigestLine]:
    title = kpi.title or kpi.name
    return [DigestLine(kpi.name, title, kpi.owner, tuple(zip(kpi.labels, key, strict=True)), s)
            for key in sorted(standings) for s in standings[key]]


def _parts(rules: RuleSet, line: DigestLine, standings: Standings) -> tuple[Contribution, ...]:
    """The children whose own gaps to pace make up the parent's, ranked with shares."""
    parent = rules.kpis[line.kpi]
    labels = dict(zip(parent.by, (v for _, v in line.labels), strict=True))
    parts: dict[str, tuple[float, float]] = {}
    for child in (k for k in rules.kpis.values() if k.parent == parent.name):
        series = standings.get(child.name, {})
        for name, key in part_series(parent, child, labels, series):
            status = next((s for s in series[key] if s.period == line.status.period), None)
            if status is not None:
                parts[name] = (status.value, status.target * status.expected_attainment)
    return rank(parts, line.gap, top=3) if parts else ()


def render_digest(report: DigestReport) -> Message:
    """The report as a title, plain text and Markdown, in its language."""
    words = _WORDS.get(report.language, _WORDS["en"])
    when = datetime.fromtimestamp(report.at_ms / 1000, ZoneInfo(report.timezone))
    title = f"[kpistream] {report.title} · {when:%Y-%m-%d %H:%M} ({report.timezone})"
    sections: list[tuple[str, list[str]]] = []
    if report.headline:
        sections.append((words["headline"], [f"- {_headline(line, report, words)}"
                                             for line in report.headline]))
    if report.board:
        sections.append((words["board"], [f"{i}. {_board(line, words)}"
                                          for i, line in enumerate(report.board, 1)]))
    if report.deviations:
        sections.append((words["gaps"], [f"- {_deviation(d, words)}"
                                         for d in report.deviations]))
    if not sections:
        sections.append((words["headline"], [words["none"]]))
    text = "\n\n".join([title, *(f"{head}\n" + "\n".join(body) for head, body in sections)])
    markdown = "\n\n".join([f"### {title}", *(f"**{head}**\n\n" + "\n".join(body)
                                              for head, body in sections)])
    return Message(title, text, markdown)


def _period(status: TargetStatus, report: DigestReport, words: dict[str, str]) -> str:
    start = datetime.fromtimestamp(status.period_start_ms / 1000, ZoneInfo(report.timezone))
    shape = {"day": "%m-%d", "week": "%m-%d", "month": "%Y-%m", "quarter": "%Y-%m"}
    return f"{words[status.period]} ({start.strftime(shape[status.period])})"


def _headline(line: DigestLine, report: DigestReport, words: dict[str, str]) -> str:
    s = line.status
    return (f"{line.name} · {_period(s, report, words)}: {amount(s.value)} / "
            f"{amount(s.target)} = {standing_text(s, report.language, report.timezone)}")


def _board(line: DigestLine, words: dict[str, str]) -> str:
    s = line.status
    owner = f" · {words['owner']} {line.owner}" if line.owner else ""
    partial = words["partial"] if s.tracked_from_ms is not None else ""
    return (f"{line.name} · {words[s.period]}: {s.attainment:.1%} "
            f"({words['of_pace'].format(f'{line.pace_index:.0%}')}){partial}{owner}")


def _deviation(d: Deviation, words: dict[str, str]) -> str:
    s = d.line.status
    text = f"{d.line.name} · {words[s.period]}: {words['gap'].format(amount(d.line.gap))}"
    if d.parts:
        text += f"; {words['why']} " + ", ".join(
            f"{c.name} {amount(c.delta)} ({c.share:.0%})" for c in d.parts)
    return text

