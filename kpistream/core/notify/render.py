"""Messages: a notification as a title, plain text and markdown, in Chinese or English.

>>> from kpistream.core.notify.routing import _example
>>> from kpistream.core.notify.model import Notification
>>> e = _example(kpi_title="GMV 成交额", unit="CNY", since_ms=1704074400000,
...              at_ms=1704075120000)
>>> n = Notification("id1", "sales-ops", (), "zh", (e,), 1704075121000,
...                  timezone="Asia/Shanghai")
>>> print(render(n).text)
[kpistream] 🔴 告警 · 严重 · GMV 成交额 (gmv_low)
负责人: sales-ops
<BLANKLINE>
🔴 告警 · 严重 · GMV 成交额 (gmv_low)
标签: region=east
当前值: GMV 成交额 = 812.5 CNY (条件: value < 1000)
开始于: 2024-01-01 10:00 (UTC+08:00)，持续 12 分钟
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from kpistream.core.contributions import Explanation
from kpistream.core.notify.grouping import event_order
from kpistream.core.notify.model import AlertEvent, Notification
from kpistream.core.values import TargetStatus

__all__ = ["Message", "amount", "explanation_text", "format_duration", "format_value",
           "grafana_link", "render", "standing_text"]

_WORDS = {
    "zh": {
        "firing": "告警", "resolved": "恢复", "repeat": "仍在告警",
        "critical": "严重", "warning": "警告", "info": "提示",
        "labels": "标签", "value": "当前值", "recovered": "恢复值", "condition": "条件",
        "since": "开始于", "lasted": "持续", "sep": "，", "owner": "负责人", "summary": "摘要",
        "link": "查看 Grafana 面板", "no_data": "无数据",
        "expected": "预期", "band": "正常范围", "score": "异常分数", "model": "模型",
        "feedback": "误报反馈", "target": "目标",
        "day": "日", "week": "周", "month": "月", "quarter": "季度",
        "standing": "已完成 {att}（按进度应达 {pace}，{side}）{sep}期末预计 {forecast}"
                    "（80% 区间 {low} – {high}）{sep}达成概率 {p}",
        "ahead": "领先", "behind": "落后", "partial": "（本期自 {} 起统计，期初数据缺失）",
        "explained": "主要贡献（对比 {}）", "missing": "另有 {} 项缺数据",
        "count_firing": "{} 条告警", "count_resolved": "{} 条恢复", "count_repeat": "{} 条仍在告警",
    },
    "en": {
        "firing": "firing", "resolved": "resolved", "repeat": "still firing",
        "critical": "critical", "warning": "warning", "info": "info",
        "labels": "Labels", "value": "Value", "recovered": "Recovered at", "condition": "condition",
        "since": "Since", "lasted": "for", "sep": ", ", "owner": "Owner", "summary": "Summary",
        "link": "Open in Grafana", "no_data": "no data",
        "expected": "Expected", "band": "normal range", "score": "anomaly score",
        "model": "model", "feedback": "Not an anomaly?", "target": "Target",
        "day": "daily", "week": "weekly", "month": "monthly", "quarter": "quarterly",
        "standing": "{att} attained (pace {pace}, {side}){sep}forecast {forecast} "
                    "(80% interval {low} – {high}){sep}{p} likely to hit",
        "ahead": "ahead", "behind": "behind",
        "partial": " (tracked since {}: the period's start is missing)",
        "explained": "Explained by (vs {})", "missing": "{} more without data",
        "count_firing": "{} firing", "count_resolved": "{} resolved",
        "count_repeat": "{} still firing",
    },
}
_UNITS = {"zh": ("天", "小时", "分钟", "秒"), "en": ("d", "h", "min", "s")}
_ICON = {"firing": "🔴", "resolved": "✅"}


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification: ``title``, plain ``text`` and ``markdown`` bodies."""

    title: str
    text: str
    markdown: str


def render(n: Notification, *, grafana_url: str | None = None) -> Message:
    """Render ``n`` in its language (``zh``, else English), times in ``n.timezone``.

    Events are listed firing first, critical first. A reminder (``n.repeat``) counts a
    breach's duration up to ``n.created_ms``; otherwise up to the event's ``at_ms``.

    >>> from kpistream.core.notify.routing import _example
    >>> events = (_example(), _example(alert="b", severity="warning"),
    ...           _example(alert="c", state="resolved"))
    >>> n = Notification("id1", "sales-ops", (), "en", events, 240_000)
    >>> render(n).title
    '[kpistream] 2 firing / 1 resolved · sales-ops'
    """
    words = _WORDS.get(n.language, _WORDS["en"])
    blocks = [_block(e, n, words, grafana_url) for e in sorted(n.events, key=event_order)]
    title = _title(n, words)
    head = [title, f"{words['owner']}: {n.owner}"]
    text = "\n\n".join(["\n".join(head), *("\n".join(lines) for lines, _ in blocks)])
    md_head = f"### {title}\n**{words['owner']}**: {n.owner}"
    markdown = "\n\n".join([md_head, *(md for _, md in blocks)])
    return Message(title, text, markdown)


def _title(n: Notification, words: dict[str, str]) -> str:
    if len(n.events) == 1:
        return f"[kpistream] {_heading(n.events[0], n.repeat, words)}"
    if n.repeat:
        counts = [words["count_repeat"].format(len(n.events))]
    else:
        firing = sum(e.state == "firing" for e in n.events)
        counts = [words[f"count_{state}"].format(k) for state, k in
                  (("firing", firing), ("resolved", len(n.events) - firing)) if k]
    return f"[kpistream] {' / '.join(counts)} · {n.owner}"


def _heading(e: AlertEvent, repeat: bool, words: dict[str, str]) -> str:
    state = words["repeat"] if repeat and e.state == "firing" else words[e.state]
    severity = words.get(e.severity, e.severity)
    return f"{_ICON.get(e.state, '')} {state} · {severity} · {e.kpi_title or e.kpi} ({e.alert})"


def _block(e: AlertEvent, n: Notification, words: dict[str, str], grafana_url: str | None
           ) -> tuple[list[str], str]:
    """The plain lines and the markdown of one event."""
    lang = n.language if n.language in _UNITS else "en"
    end_ms = n.created_ms if n.repeat and e.state == "firing" else e.at_ms
    shown = words["no_data"] if e.value is None else format_value(e.value)
    if e.value is not None and e.unit:
        shown += f" {e.unit}"
    fields: list[tuple[str, str]] = []
    if e.labels:
        fields.append((words["labels"], ", ".join(f"{k}={v}" for k, v in e.labels)))
    label = words["recovered"] if e.state == "resolved" else words["value"]
    fields.append((label, f"{e.kpi_title or e.kpi} = {shown} "
                          f"({words['condition']}: {e.condition})"))
    if e.band is not None:
        fields.append((words["expected"], _band_text(e, words)))
        if e.state == "firing" and e.band.flagged:
            fields.append((words["feedback"],
                           f"kpistream feedback --alert {e.id} --not-anomaly"))
    if e.standing is not None:
        s = e.standing
        fields.append((f"{words['target']} ({words[s.period]}) {format_value(s.target)}",
                       standing_text(s, n.language, n.timezone)))
    if e.explanation is not None:
        fields.append((words["explained"].format(e.explanation.baseline),
                       explanation_text(e.explanation, n.language)))
    since = f"{_local_time(e.since_ms, n.timezone)}{words['sep']}{words['lasted']} " \
            f"{format_duration(end_ms - e.since_ms, lang)}"
    fields.append((words["since"], since))
    if e.summary:
        fields.append((words["summary"], e.summary))
    link = grafana_link(grafana_url, e) if grafana_url else None
    heading = _heading(e, n.repeat, words)
    lines = [heading, *(f"{k}: {v}" for k, v in fields)]
    md = [f"#### {heading}", *(f"- **{k}**: {v}" for k, v in fields)]
    if link:
        lines.append(f"{words['link']}: {link}")
        md.append(f"- [{words['link']}]({link})")
    return lines, "\n".join(md)


def _band_text(e: AlertEvent, words: dict[str, str]) -> str:
    """The anomaly model's view, e.g. ``1200 (normal range 1000 – 1400), anomaly score 0.98,
    model seasonal``."""
    band = e.band
    edges = " – ".join("…" if x is None else format_value(x) for x in (band.lower, band.upper))
    return (f"{format_value(band.expected)} ({words['band']} {edges}){words['sep']}"
            f"{words['score']} {band.score:.2f}{words['sep']}{words['model']} {band.model}")


def explanation_text(explanation: Explanation, language: str) -> str:
    """The parts of a change with their deltas and shares, best first.

    >>> from kpistream.core.contributions import Contribution
    >>> e = Explanation("ago(1d)", (Contribution("region=east", 20.0, 100.0, -80.0, 0.8),
    ...                             Contribution("region=west", 80.0, 100.0, -20.0, 0.2)))
    >>> explanation_text(e, "en")
    'region=east -80 (80%), region=west -20 (20%)'
    """
    words = _WORDS.get(language, _WORDS["en"])
    parts = [f"{c.name} {'+' if c.delta > 0 else ''}{format_value(c.delta)} ({c.share:.0%})"
             for c in explanation.parts]
    if explanation.missing:
        parts.append(words["missing"].format(explanation.missing))
    return words["sep"].join(parts)


def standing_text(s: TargetStatus, language: str, timezone: str = "UTC") -> str:
    """Where a series stands against a target, in ``zh`` or English.

    >>> s = TargetStatus("month", 0, 1, 1, 1000.0, 450.0, 0.45, 0.52, 870.0, 820.0, 920.0,
    ...                  0.021, "weekly")
    >>> standing_text(s, "en")
    '45.0% attained (pace 52.0%, behind), forecast 870 (80% interval 820 – 920), 2% likely to hit'
    >>> standing_text(s, "zh")
    '已完成 45.0%（按进度应达 52.0%，落后），期末预计 870（80% 区间 820 – 920），达成概率 2%'
    """
    words = _WORDS.get(language, _WORDS["en"])
    text = words["standing"].format(
        att=f"{s.attainment:.1%}", pace=f"{s.expected_attainment:.1%}",
        side=words["ahead" if s.attainment >= s.expected_attainment else "behind"],
        forecast=amount(s.forecast), low=amount(s.forecast_lower), high=amount(s.forecast_upper),
        p=f"{s.hit_probability:.0%}", sep=words["sep"])
    if s.tracked_from_ms is not None:
        text += words["partial"].format(_local_time(s.tracked_from_ms, timezone))
    return text


def amount(value: float) -> str:
    """A period amount for a manager: thousands separated, no fractions beyond 1,000.

    >>> amount(186661922.49), amount(-2300.0), amount(12.5), amount(429.134)
    ('186,661,922', '-2,300', '12.5', '429.1')
    """
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def format_value(value: float) -> str:
    """A KPI value, compact and exact enough for a chat message.

    >>> format_value(812.5), format_value(1000.0), format_value(0.02345), format_value(1.5e-7)
    ('812.5', '1000', '0.0235', '1.5e-07')
    """
    if value != 0 and (abs(value) < 1e-4 or abs(value) >= 1e15):
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_duration(ms: int, language: str = "zh") -> str:
    """A duration rounded down to its two largest units.

    >>> format_duration(12 * 60_000), format_duration(3_900_000, "en")
    ('12 分钟', '1 h 5 min')
    >>> format_duration(30_000, "en"), format_duration(2 * 86_400_000 + 3_600_000)
    ('30 s', '2 天 1 小时')
    """
    units = _UNITS.get(language, _UNITS["en"])
    seconds = max(ms, 0) // 1000
    parts = [seconds // 86_400, seconds % 86_400 // 3600, seconds % 3600 // 60, seconds % 60]
    nonzero = [i for i, p in enumerate(parts) if p]
    if not nonzero:
        return f"0 {units[3]}"
    first = nonzero[0]
    picked = [(parts[i], units[i]) for i in (first, first + 1) if i < 4 and parts[i]]
    if first == 2:  # minutes: seconds are noise
        picked = picked[:1]
    return " ".join(f"{p} {u}" for p, u in picked)


def grafana_link(grafana_url: str, e: AlertEvent) -> str:
    """The KPI detail dashboard (``grafana/dashboards/kpi-detail.json``) for the event's
    series, from an hour before the breach: ``kpi`` set, the labels as ad hoc filters.

    >>> from kpistream.core.notify.routing import _example
    >>> grafana_link("https://g.example.com/", _example(labels=(("region", "华东"),)))
    'https://g.example.com/d/kpistream-kpi-detail/kpi-detail?var-kpi=gmv&var-filters=region%7C%3D%7C%E5%8D%8E%E4%B8%9C&from=0&to=780000'
    """
    params = [("kpi", e.kpi)] + [("filters", f"{k}|=|{v}") for k, v in e.labels]
    query = "&".join(f"var-{k}={quote(v, safe='')}" for k, v in params)
    start = max(e.since_ms - 3_600_000, 0)
    return (f"{grafana_url.rstrip('/')}/d/kpistream-kpi-detail/kpi-detail?{query}"
            f"&from={start}&to={e.at_ms + 600_000}")


def _local_time(ms: int, timezone: str) -> str:
    """``YYYY-MM-DD HH:MM (UTC+hh:mm)`` in the zone."""
    local = datetime.fromtimestamp(ms / 1000, ZoneInfo(timezone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})"
