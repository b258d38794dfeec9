"""What a change to the rule files does to KPI definitions, for review in pull requests.

``kpistream check --diff OLD_DIR NEW_DIR`` compares two rule sets KPI by KPI and alert by
alert: which fields changed (old → new), and what that does at reload, which a reviewer
cannot see in a YAML diff: a KPI whose computation changed restarts its windows, its anomaly
models warm up again, and its numbers move, so its ``version`` should change too.

>>> from kpistream.core.loader import load_rules_text
>>> old = load_rules_text('''
... sources: [{name: s, topic: t}]
... kpis: [{name: gmv, source: s, agg: sum(x), window: 1m, version: "1"}]
... ''')
>>> new = load_rules_text('''
... sources: [{name: s, topic: t}]
... kpis: [{name: gmv, source: s, agg: sum(x), where: x > 0, window: 1m, version: "1"}]
... ''')
>>> print(render_diff(diff_rules(old, new)))
## KPI `gmv`: changed
- computation: `sum(x)` → `sum(x) where x > 0`
- **state restarts**: its windows and alert states start empty at reload
- **the computation changed but version did not** (still 1): bump it, so readers know the \
numbers moved
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from kpistream.core.durations import format_duration
from kpistream.core.ruleset import Alert, Kpi, RuleSet
from kpistream.core.values import format_value

__all__ = ["Change", "FieldChange", "diff_rules", "render_diff"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field, as shown to a reviewer, before and after ("" when absent)."""

    field: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Change:
    """A KPI or alert added, removed or changed, and what that does at reload."""

    kind: str  # "KPI" or "alert"
    name: str
    status: str  # "added", "removed" or "changed"
    fields: tuple[FieldChange, ...] = ()
    notes: tuple[str, ...] = field(default=())


def _duration(ms: int | None) -> str:
    return format_duration(ms) if ms else ""


def _targets(kpi: Kpi) -> str:
    parts = []
    for t in kpi.targets:
        each = ", ".join(f"{'/'.join(k)}: {format_value(v)}"
                         for k, v in sorted(t.values.items()))
        default = "" if t.value is None else format_value(t.value)
        parts.append(f"{t.period} {default}{f' ({each})' if each else ''}".strip())
    return "; ".join(parts)


def _anomaly(kpi: Kpi) -> str:
    a = kpi.anomaly
    if a is None:
        return ""
    seasonality = "auto" if a.seasonality is None else (
        ", ".join(format_duration(p) for p in a.seasonality) or "none")
    return (f"sensitivity {a.sensitivity}, direction {a.direction}, warmup "
            f"{a.warmup or 'default'}, seasonality {seasonality}, noise {a.noise}")


KPI_FIELDS: dict[str, Callable[[Kpi], str]] = {
    "title": lambda k: k.title or "",
    "definition": lambda k: k.definition or "",
    "computation": lambda k: k.computation,
    "source": lambda k: k.source or "",
    "window": lambda k: _duration(k.window_ms),
    "hop": lambda k: _duration(k.hop_ms),
    "by": lambda k: ", ".join(k.by),
    "lateness": lambda k: _duration(k.lateness_ms),
    "series_ttl": lambda k: _duration(k.series_ttl_ms),
    "unit": lambda k: k.unit or "",
    "owner": lambda k: k.owner or "",
    "version": lambda k: k.version or "",
    "parent": lambda k: k.parent or "",
    "targets": _targets,
    "anomaly": _anomaly,
}
ALERT_FIELDS: dict[str, Callable[[Alert], str]] = {
    "kpi": lambda a: a.kpi,
    "when": lambda a: a.condition_text,
    "for": lambda a: _duration(a.for_ms),
    "keep_firing_for": lambda a: _duration(a.keep_firing_for_ms),
    "resolve_when": lambda a: a.resolve_text or "",
    "severity": lambda a: "/".join(a.severities),
    "owner": lambda a: a.owner or "",
    "explain": lambda a: a.explain or "",
    "notify": lambda a: "yes" if a.notify else "no (shadow)",
}


def diff_rules(old: RuleSet, new: RuleSet) -> list[Change]:
    """Every KPI (in the new set's order, removed ones last) and alert that changed."""
    changes = _diff("KPI", old.kpis, new.kpis, KPI_FIELDS, _kpi_notes)
    changes = [_with_dependents(c, new) for c in changes]
    old_alerts = {a.name: a for a in old.alerts}
    new_alerts = {a.name: a for a in new.alerts}
    return changes + _diff("alert", old_alerts, new_alerts, ALERT_FIELDS, _alert_notes)


def _diff(kind: str, old: Mapping, new: Mapping, fields: Mapping[str, Callable],
          notes: Callable) -> list[Change]:
    changes = []
    for name, item in new.items():
        before = old.get(name)
        if before is None:
            shown = tuple(FieldChange(f, "", get(item)) for f, get in fields.items()
                          if get(item))
            changes.append(Change(kind, name, "added", shown))
            continue
        changed = tuple(FieldChange(f, get(before), get(item)) for f, get in fields.items()
                        if get(before) != get(item))
        said = notes(before, item, {c.field for c in changed})
        if changed or said:
            changes.append(Change(kind, name, "changed", changed, said))
    for name in old:
        if name not in new:
            gone = ("its series leave /metrics, so dashboards and recording rules that read "
                    "it go empty",) if kind == "KPI" else ("its firing series resolve at reload",)
            changes.append(Change(kind, name, "removed", (), gone))
    return changes


def _with_dependents(change: Change, rules: RuleSet) -> Change:
    """A KPI whose numbers move moves the KPIs computed from it, and their alerts."""
    moved = change.status == "changed" and any(f.field in ("computation", "source", "window",
                                                            "hop", "by") for f in change.fields)
    if not moved:
        return change
    reached, frontier = set(), {change.name}
    while frontier:
        frontier = {k.name for k in rules.kpis.values()
                    if set(k.inputs) & frontier and k.name not in reached}
        reached |= frontier
    alerts = sorted(a.name for a in rules.alerts if a.kpi in reached | {change.name})
    notes = list(change.notes)
    if reached:
        notes.append("derived KPIs move with it: " + ", ".join(sorted(reached)))
    if alerts:
        notes.append("alerts that read it: " + ", ".join(alerts))
    return Change(change.kind, change.name, change.status, change.fields, tuple(notes))


def _kpi_notes(old: Kpi, new: Kpi, changed: set[str]) -> tuple[str, ...]:
    notes = []
    if old.signature != new.signature:
        notes.append("**state restarts**: its windows and alert states start empty at reload")
    if old.anomaly and new.anomaly and old.anomaly_signature != new.anomaly_signature:
        notes.append("**anomaly models start afresh** and warm up again")
    if "computation" in changed and old.version == new.version:
        notes.append(f"**the computation changed but version did not** (still "
                     f"{new.version or 'unset'}): bump it, so readers know the numbers moved")
    if "definition" in changed and "computation" not in changed:
        notes.append("the wording of the definition changed; the numbers do not")
    if "targets" in changed and old.signature == new.signature:
        notes.append("attainment and forecasts use the new targets from the next window; "
                     "learned profiles are kept")
    return tuple(notes)


def _alert_notes(old: Alert, new: Alert, changed: set[str]) -> tuple[str, ...]:
    if old.signature != new.signature:
        return ("**alert state restarts**: its firing series resolve at reload and fire anew "
                "if the condition still holds",)
    return ()


def render_diff(changes: list[Change]) -> str:
    """Markdown for a pull-request comment: a heading per item, a bullet per field."""
    if not changes:
        return "no changes to KPI definitions or alerts"
    blocks = []
    for change in changes:
        lines = [f"## {change.kind} `{change.name}`: {change.status}"]
        for f in change.fields:
            if change.status == "added":
                lines.append(f"- {f.field}: `{f.new}`")
            else:
                lines.append(f"- {f.field}: {_shown(f.old)} → {_shown(f.new)}")
        lines += [f"- {note}" for note in change.notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _shown(text: str) -> str:
    return f"`{text}`" if text else "(none)"
