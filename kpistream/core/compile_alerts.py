"""Compiling ``alerts:``, ``owners:`` and ``silences:`` of a rule set, with their checks."""

from __future__ import annotations

import hashlib

from kpistream.core import expr as ex
from kpistream.core.anomalies import ANOMALY_NAMES
from kpistream.core.baselines import BASELINES, lookback_ms
from kpistream.core.documents import Located
from kpistream.core.expr.syntax import walk
from kpistream.core.hints import did_you_mean
from kpistream.core.notify.model import Silence
from kpistream.core.periods import PERIODS
from kpistream.core.ruleset import Alert, Condition, Kpi, Owner
from kpistream.core.targets import TARGET_NAMES, target_names
from kpistream.errors import Problem

__all__ = ["compile_alert", "compile_owner", "compile_silence", "unknown_reference"]

#: Names a condition reads besides other KPIs of the same dimensions.
ALERT_NAMES = ("value",)
MATCHER_KEYS = ("alert", "kpi", "severity", "owner")


def compile_alert(item: Located, kpis: dict[str, Kpi], known_kpis: dict[str, Located],
                  owners: dict[str, Located], problems: list[Problem]) -> Alert | None:
    """One alert; problems are appended, None returned when it cannot run."""
    spec = item.spec
    if spec.kpi not in known_kpis:
        problems.append(unknown_reference(item, "kpi", spec.kpi, known_kpis, "kpis"))
        return None
    if spec.owner is not None and spec.owner not in owners:
        problems.append(unknown_reference(item, "owner", spec.owner, owners, "owners"))
    kinds = [k for k in ("when", "levels", "absent_for") if getattr(spec, k) is not None]
    if len(kinds) != 1:
        problems.append(item.problem(None, "needs exactly one of when (a condition), levels "
                                     "(conditions per severity) or absent_for (silence), got "
                                     f"{', '.join(kinds) or 'none'}"))
        return None
    kpi = kpis.get(spec.kpi)
    if kpi is None:
        return None
    before = len(problems)
    texts = _condition_texts(spec)
    others = {n: k for n, k in kpis.items() if n != kpi.name and set(k.by) == set(kpi.by)
              and (k.window_ms, k.hop_ms) == (kpi.window_ms, kpi.hop_ms)}
    names = (*ALERT_NAMES, *(ANOMALY_NAMES if kpi.anomaly else ()), *target_names(kpi),
             *others)
    conditions, inputs, lookback = [], set(), 0
    for loc, severity, text in texts:
        compiled = _condition(item, loc, text, names, kpi, problems)
        if compiled is not None:
            test, reads, span = compiled
            conditions.append(Condition(severity, test, text))
            inputs |= reads & set(others)
            lookback = max(lookback, span)
    resolve = None
    if spec.resolve_when is not None:
        compiled = _condition(item, ("resolve_when",), spec.resolve_when, names, kpi, problems)
        if compiled is not None:
            resolve, reads, span = compiled
            inputs |= reads & set(others)
            lookback = max(lookback, span)
    if spec.absent_for is not None and kpi.agg is None:
        problems.append(item.problem("absent_for", "absent_for needs a KPI aggregated from a "
                                     f'source; "{kpi.name}" is derived'))
    elif spec.absent_for is not None and spec.absent_for >= kpi.series_ttl_ms:
        problems.append(item.problem("absent_for", "absent_for must be shorter than the "
                                     f'series_ttl of "{kpi.name}" ({kpi.series_ttl_ms // 1000}s)'
                                     ", or the silent series is forgotten before it alerts; "
                                     "raise series_ttl"))
    if spec.explain is not None:
        _check_explain(item, spec.explain, kpi, kpis, problems)
    if len(problems) > before:
        return None
    return Alert(
        name=spec.name, kpi=spec.kpi, conditions=tuple(conditions), severity=spec.severity,
        owner=spec.owner or kpi.owner, for_ms=spec.for_, keep_firing_for_ms=spec.keep_firing_for,
        resolve=resolve, resolve_text=spec.resolve_when, absent_for_ms=spec.absent_for,
        summary=spec.summary, notify=spec.notify, explain=spec.explain,
        inputs=tuple(sorted(inputs)), lookback_ms=lookback)


def _check_explain(item: Located, text: str, kpi: Kpi, kpis: dict[str, Kpi],
                   problems: list[Problem]) -> None:
    """``explain:`` is one baseline call, on a KPI that has parts to explain it by."""
    try:
        tree = ex.parse(text)
        if not isinstance(tree, ex.Call) or tree.name not in ("prev", "ago", "avg_over"):
            raise ex.ExprError("expected one baseline: prev(), prev(N), ago(D) or avg_over(D)",
                               1)
        lookback_ms(tree, kpi.hop_ms or kpi.window_ms)
    except ex.ExprError as e:
        problems.append(item.doc.in_expression((*item.loc, "explain"), f"explain: {e.message}",
                                               e.column))
        return
    if not any(k.parent == kpi.name for k in kpis.values()) and not kpi.inputs:
        problems.append(item.problem("explain", f'KPI "{kpi.name}" has no parts to explain it '
                                     f"by: give its children parent: {kpi.name}, or make it a "
                                     "formula (expr:)"))


def _condition_texts(spec) -> list[tuple[tuple, str, str]]:
    if spec.when is not None:
        return [(("when",), spec.severity, spec.when)]
    return [(("levels", i, "when"), level.severity, level.when)
            for i, level in enumerate(spec.levels or ())]


def _condition(item: Located, loc: tuple, text: str, names, kpi: Kpi, problems):
    try:
        tree = ex.parse(text)
        _check_assessment_names(tree, kpi)
        test = ex.to_python(tree, allowed_names=names, functions=BASELINES)
        span = lookback_ms(tree, kpi.hop_ms or kpi.window_ms)
    except ex.ExprError as e:
        field = ".".join(str(p) for p in loc if not isinstance(p, int))
        problems.append(item.doc.in_expression((*item.loc, *loc), f"{field}: {e.message}",
                                               e.column))
        return None
    return test, ex.names(tree), span


def _check_assessment_names(tree: ex.Expr, kpi: Kpi) -> None:
    """Anomaly and target names on a KPI without them get an error that says what to add."""
    periods = {t.period for t in kpi.targets}
    for node in walk(tree):
        if not isinstance(node, ex.Name):
            continue
        if node.name in ANOMALY_NAMES and kpi.anomaly is None:
            raise ex.ExprError(f'{node.name} needs anomaly detection on KPI "{kpi.name}"; '
                               "add `anomaly: {}` to it", node.column)
        base, _, period = node.name.rpartition("_")
        if node.name in TARGET_NAMES and not kpi.targets:
            raise ex.ExprError(f'{node.name} needs a target on KPI "{kpi.name}"; add '
                               "`targets: [{period: month, value: ...}]` to it", node.column)
        if base in TARGET_NAMES and period in PERIODS and period not in periods:
            raise ex.ExprError(f'{node.name} needs a {period} target on KPI "{kpi.name}"; '
                               f"it has {', '.join(sorted(periods)) or 'none'}", node.column)


def compile_owner(item: Located, timezone: str) -> Owner:
    spec = item.spec
    return Owner(spec.name, tuple(spec.notify), spec.language, spec.group_wait,
                 spec.repeat_interval, spec.send_resolved, spec.quiet_hours)


def compile_silence(item: Located, index: int, problems: list[Problem]) -> Silence | None:
    spec = item.spec
    if spec.ends <= spec.starts:
        problems.append(item.problem("ends", "a silence must end after it starts"))
        return None
    starts = int(spec.starts.timestamp() * 1000)
    ends = int(spec.ends.timestamp() * 1000)
    matchers = tuple(sorted(spec.matchers.items()))
    key = f"{item.doc.path}\0{index}\0{matchers}\0{starts}\0{ends}"
    return Silence(hashlib.sha256(key.encode()).hexdigest()[:12], matchers, starts, ends,
                   spec.comment, spec.created_by or "")


def unknown_reference(item: Located, field: str, value: str, known, section: str) -> Problem:
    return item.problem(field, f'unknown {field} "{value}"; define it under {section}'
                        f"{did_you_mean(value, known)}")
