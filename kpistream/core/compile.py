"""Cross-file checks and compilation of validated rule files into a RuleSet.

Per-file shape errors come from pydantic in :mod:`kpistream.core.loader`; here live the
checks that need the whole set: unique names, references, field types shared by the KPIs of
one source, derived KPIs' windows and dimensions, cycles, and expression errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter

from kpistream.core import expr as ex
from kpistream.core.aggregates import AggError, parse_agg
from kpistream.core.anomaly import AnomalyConfig
from kpistream.core.calendar import calendar_for
from kpistream.core.compile_alerts import (
    compile_alert,
    compile_owner,
    compile_silence,
    unknown_reference,
)
from kpistream.core.digest import check_cron
from kpistream.core.documents import Located, RuleDocument, check_timezone, iter_items
from kpistream.core.durations import format_duration
from kpistream.core.hints import did_you_mean
from kpistream.core.known_events import CALENDARS, calendar_ranges
from kpistream.core.ruleset import Digest, Kpi, RuleSet, Source, Target, label_name
from kpistream.core.spec import KpiSpec
from kpistream.errors import Problem

__all__ = ["RESERVED_LABELS", "compile_rules"]
RESERVED_LABELS = frozenset({"kpi", "alert", "severity", "period"})
DAY_MS = 86_400_000
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def compile_rules(
    docs: list[RuleDocument], problems: list[Problem], digest: str, files: tuple[str, ...]
) -> RuleSet:
    """Check the documents as one set and compile them; append problems found."""
    timezone = check_timezone(docs, problems)
    sources = _unique(iter_items(docs, "sources"), "source", problems)
    kpis = _unique(iter_items(docs, "kpis"), "kpi", problems)
    alerts = _unique(iter_items(docs, "alerts"), "alert", problems)
    owners = _unique(iter_items(docs, "owners"), "owner", problems)
    silences = list(iter_items(docs, "silences"))
    fields: dict[str, dict[str, ex.FieldType]] = {name: {} for name in sources}
    compiled: dict[str, Kpi] = {}
    for item in kpis.values():
        kpi = _compile_kpi(item, sources, kpis, owners, fields, timezone, problems)
        if kpi is not None:
            compiled[kpi.name] = kpi
    ordered = _topological(compiled, kpis, problems)
    _check_derived(ordered, kpis, problems)
    _check_parents(ordered, kpis, problems)
    return RuleSet(
        timezone=timezone,
        sources={n: _source(i.spec, fields[n]) for n, i in sources.items()},
        kpis=ordered,
        alerts=tuple(a for a in (compile_alert(i, ordered, kpis, owners, problems)
                                 for i in alerts.values()) if a),
        owners={n: compile_owner(i, timezone) for n, i in owners.items()},
        silences=tuple(s for s in (compile_silence(i, n, problems)
                                   for n, i in enumerate(silences)) if s),
        digests=tuple(d for d in (_compile_digest(i, kpis, owners, problems)
                                  for i in _unique(iter_items(docs, "digests"), "digest",
                                                   problems).values()) if d),
        files=files,
        text_digest=digest,
    )


def _unique(items: Iterable[Located], kind: str, problems: list[Problem]) -> dict[str, Located]:
    seen: dict[str, Located] = {}
    for item in items:
        first = seen.get(item.spec.name)
        if first is None:
            seen[item.spec.name] = item
            continue
        where = f"{first.doc.path}:{first.doc.at(first.loc, '').line}"
        problems.append(item.problem("name", f'duplicate {kind} name "{item.spec.name}", '
                                     f"first defined at {where}; names are unique across files"))
    return seen


def _source(spec, fields: dict[str, ex.FieldType]) -> Source:
    return Source(spec.name, spec.topic, spec.time_field, spec.partitions, dict(fields))


def _compile_kpi(item, sources, kpis, owners, fields, timezone, problems) -> Kpi | None:
    spec = item.spec
    errors_before = len(problems)
    try:
        calendar = calendar_for(spec.window, spec.hop, timezone)
    except ValueError as e:
        problems.append(item.problem("hop" if spec.hop else "window", str(e)))
        calendar = None
    _check_labels(item, problems)
    if spec.owner is not None and spec.owner not in owners:
        problems.append(unknown_reference(item, "owner", spec.owner, owners, "owners"))
    common = dict(
        name=spec.name, window_ms=spec.window, hop_ms=spec.hop, calendar=calendar,
        by=tuple(spec.by), lateness_ms=spec.lateness, series_ttl_ms=spec.series_ttl,
        max_series=spec.max_series,
        title=spec.title, unit=spec.unit, owner=spec.owner, definition=spec.definition,
        description=spec.description, version=spec.version, parent=spec.parent,
        targets=_targets(item, problems),
    )
    if spec.anomaly is not None:
        common.update(_anomaly(item, timezone, problems))
    if spec.expr is not None:
        kpi = _derived_kpi(item, kpis, common, problems)
    else:
        kpi = _source_kpi(item, sources, fields, common, problems)
    return kpi if len(problems) == errors_before else None


def _targets(item, problems: list[Problem]) -> tuple[Target, ...]:
    """``targets:`` per period; a period's value is the sum of its windows, so the KPI must
    be a tumbling ``count()`` or ``sum()`` whose window divides a day."""
    spec = item.spec
    if not spec.targets:
        return ()
    if not _additive(spec):
        problems.append(item.problem("targets", "targets need a KPI aggregated with count() or "
                                     "sum(): a period's value is the sum of its windows; put "
                                     "the target on the KPIs a formula reads"))
        return ()
    if spec.hop is not None or spec.window > DAY_MS or DAY_MS % spec.window:
        problems.append(item.problem("targets", "targets need a tumbling window (no hop) that "
                                     "divides a day, such as 1m, 1h or 1d"))
        return ()
    targets, periods = [], set()
    for i, target in enumerate(spec.targets):
        where = (*item.loc, "targets", i)
        if target.period in periods:
            problems.append(item.doc.at((*where, "period"), f"a second target for period "
                                        f'"{target.period}"; one target per period'))
            continue
        periods.add(target.period)
        if target.value is None and not target.values:
            problems.append(item.doc.at(where, "a target needs value (every series) or values "
                                        "(per series)"))
            continue
        values = {}
        for key, amount in target.values.items():
            parts = tuple(key.split("/")) if spec.by else ()
            if len(parts) != len(spec.by) or not spec.by:
                problems.append(item.doc.at((*where, "values", key), f'"{key}" does not name a '
                                            f"series: give the values of {spec.by or 'no'} "
                                            "dimensions joined with /", key=True))
                continue
            values[parts] = amount
        targets.append(Target(target.period, target.value, values))
    return tuple(targets)


def _check_parents(ordered: dict[str, Kpi], kpis, problems) -> None:
    """``parent:`` names a KPI of the same window whose dimensions are among this one's, and
    the links form a tree."""
    for kpi in ordered.values():
        if kpi.parent is None:
            continue
        item = kpis[kpi.name]
        parent = ordered.get(kpi.parent)
        if kpi.parent not in kpis:
            problems.append(unknown_reference(item, "parent", kpi.parent, kpis, "kpis"))
        elif parent is None:
            continue
        elif not set(parent.by) <= set(kpi.by):
            problems.append(item.problem("parent", f'parent "{parent.name}" is by '
                                         f"{list(parent.by)}; a child keeps its parent's "
                                         f"dimensions and may add some, got {list(kpi.by)}"))
        elif (parent.window_ms, parent.hop_ms) != (kpi.window_ms, kpi.hop_ms):
            problems.append(item.problem("parent", f'window differs from parent "{parent.name}"'
                                         "; a child has its parent's window and hop"))
        else:
            _check_cycle(kpi, ordered, item, problems)


def _check_cycle(kpi: Kpi, ordered: dict[str, Kpi], item, problems) -> None:
    """Report a cycle of parent links once, at the KPI of the cycle whose name sorts first."""
    path, node = [kpi.name], kpi.parent
    while node is not None and node in ordered:
        if node in path:
            cycle = path[path.index(node):]
            if node == kpi.name and kpi.name == min(cycle):
                problems.append(item.problem("parent", "parent links form a cycle: "
                                             + " -> ".join([*cycle, node])))
            return
        path.append(node)
        node = ordered[node].parent


def _compile_digest(item: Located, kpis, owners, problems: list[Problem]) -> Digest | None:
    spec = item.spec
    before = len(problems)
    for i, name in enumerate(spec.kpis):
        if name not in kpis:
            problems.append(item.doc.at((*item.loc, "kpis", i), f'unknown kpi "{name}"; define '
                                        f"it under kpis{did_you_mean(name, kpis)}"))
        elif not kpis[name].spec.targets:
            problems.append(item.doc.at((*item.loc, "kpis", i), f'kpi "{name}" has no targets; '
                                        "a digest reports KPIs against their targets"))
    if not spec.kpis and not any(k.spec.targets for k in kpis.values()):
        problems.append(item.problem(None, "no KPI has targets: give KPIs targets: for the "
                                     "digest to report on"))
    if spec.owner is not None and spec.owner not in owners:
        problems.append(unknown_reference(item, "owner", spec.owner, owners, "owners"))
    if spec.owner is None and not spec.notify:
        problems.append(item.problem(None, "a digest needs recipients: owner (that owner's "
                                     "notify URLs) or notify (Apprise URLs)"))
    cron_problem = check_cron(spec.cron)
    if cron_problem is not None:
        problems.append(item.problem("cron", cron_problem))
    if len(problems) > before:
        return None
    return Digest(spec.name, spec.cron, tuple(spec.kpis), spec.title, spec.owner,
                  tuple(spec.notify), spec.language, spec.top)


def _additive(spec: KpiSpec) -> bool:
    """Whether the KPI aggregates with ``count()`` or ``sum()``: its windows add up to a
    period's value, and its noise grows with the square root of its number of events.

    >>> _additive(KpiSpec(name="a", source="s", agg="sum(amount)", window="1m"))
    True
    """
    return bool(spec.agg) and spec.agg.split("(")[0].strip() in ("count", "sum")


def _anomaly(item, timezone: str, problems: list[Problem]) -> dict:
    """``anomaly:`` as the Kpi fields ``anomaly`` (model options) and ``anomaly_exclude``."""
    spec = item.spec.anomaly
    step = item.spec.hop or item.spec.window
    seasonality = _seasonality(spec.seasonality)
    for period in seasonality or ():
        if period < 4 * step:
            problems.append(item.problem("anomaly", f"seasonality {format_duration(period)} "
                                         "spans fewer than 4 windows of this KPI; use a "
                                         "longer period or a shorter window"))
    noise = spec.noise
    if noise == "auto":
        noise = "poisson" if _additive(item.spec) else "constant"
    config = AnomalyConfig(
        sensitivity=spec.sensitivity, direction=spec.direction, warmup=spec.warmup,
        seasonality=seasonality, timezone=timezone, window_ms=step, noise=noise)
    exclude: list[tuple[int, int]] = []
    for i, entry in enumerate(spec.exclude):
        where = (*item.loc, "anomaly", "exclude", i)
        if isinstance(entry, str):
            if entry in CALENDARS:
                exclude += calendar_ranges(entry, timezone)
            else:
                problems.append(item.doc.at(where, f'unknown calendar "{entry}"; built-in '
                                             f"calendars are {', '.join(sorted(CALENDARS))}"
                                             f"{did_you_mean(entry, CALENDARS)}"))
        elif entry.ends <= entry.starts:
            problems.append(item.doc.at(where, "an excluded range must end after it starts"))
        else:
            exclude.append((int(entry.starts.timestamp() * 1000),
                            int(entry.ends.timestamp() * 1000)))
    return {"anomaly": config, "anomaly_exclude": tuple(sorted(exclude))}


def _seasonality(value: str | int | list[int]) -> tuple[int, ...] | None:
    """``auto`` -> None (detected), ``none`` -> (), a period or a list -> the periods in ms.

    >>> _seasonality("auto"), _seasonality("none"), _seasonality(86_400_000)
    (None, (), (86400000,))
    """
    if value == "auto":
        return None
    if value == "none":
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _derived_kpi(item, kpis, common, problems) -> Kpi | None:
    spec = item.spec
    for key in ("source", "agg", "where"):
        if getattr(spec, key) is not None:
            problems.append(item.problem(key, f"a derived KPI (with expr) takes no {key}; "
                                         "its inputs bring their own"))
    try:
        tree = ex.parse(spec.expr)
        formula = ex.to_python(tree, allowed_names=[k for k in kpis if k != spec.name])
    except ex.ExprError as e:
        problems.append(item.problem("expr", f"expr: {e.message}", column=e.column))
        return None
    inputs = tuple(sorted(ex.names(tree)))
    return Kpi(**common, formula=formula, inputs=inputs, computation=spec.expr)


def _source_kpi(item, sources, fields, common, problems) -> Kpi | None:
    spec = item.spec
    if spec.source is None or spec.agg is None:
        problems.append(item.problem(None, "needs either source and agg (an aggregate of "
                                     "events) or expr (a formula over other KPIs)"))
        return None
    if spec.source not in sources:
        problems.append(unknown_reference(item, "source", spec.source, sources, "sources"))
        return None
    try:
        agg = parse_agg(spec.agg)
    except AggError as e:
        problems.append(item.problem("agg", str(e)))
        return None
    where, wanted = None, {}
    if spec.where is not None:
        try:
            tree = ex.parse(spec.where)
            wanted = ex.infer_field_types(tree, result=ex.FieldType.BOOL)
            where = ex.to_polars(tree)
        except ex.ExprError as e:
            problems.append(item.problem("where", f"where: {e.message}", column=e.column))
            return None
    if agg.field is not None and agg.field_type is not None:
        wanted = {**wanted, agg.field: agg.field_type}
    wanted.update({f: ex.FieldType.STRING for f in spec.by})
    _merge_fields(item, fields[spec.source], wanted, problems)
    computation = f"{spec.agg} where {spec.where}" if spec.where else spec.agg
    return Kpi(**common, source=spec.source, where=where, agg=agg, computation=computation)


def _merge_fields(item, known: dict[str, ex.FieldType], wanted, problems) -> None:
    for name, kind in wanted.items():
        have = known.setdefault(name, kind)
        if have != kind:
            problems.append(item.problem(None, f'reads field "{name}" as {kind.name.lower()}, '
                                         f"but another KPI of source \"{item.spec.source}\" "
                                         f"reads it as {have.name.lower()}"))


def _check_labels(item, problems) -> None:
    for i, name in enumerate(item.spec.by):
        label = label_name(name)
        if not _LABEL.match(label) or label.startswith("__") or label in RESERVED_LABELS:
            problems.append(item.doc.at((*item.loc, "by", i), f'dimension "{name}" cannot be a '
                                        "Prometheus label; use letters, digits and _ (not "
                                        "starting with __), and none of kpi, alert, severity, "
                                        "period"))


def _topological(compiled: dict[str, Kpi], kpis, problems) -> dict[str, Kpi]:
    graph = {n: [i for i in k.inputs if i in compiled] for n, k in compiled.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        cycle = e.args[1]
        problems.append(kpis[cycle[0]].problem("expr", "derived KPIs form a cycle: "
                                               + " -> ".join(cycle)))
        return compiled
    return {n: compiled[n] for n in order}


def _check_derived(ordered: dict[str, Kpi], kpis, problems) -> None:
    for kpi in ordered.values():
        for name in kpi.inputs:
            source = ordered.get(name)
            if source is None:
                continue
            if (source.window_ms, source.hop_ms) != (kpi.window_ms, kpi.hop_ms):
                problems.append(kpis[kpi.name].problem("window", f'window differs from input '
                                                       f'"{name}"; a derived KPI has the same '
                                                       "window and hop as its inputs"))
            if not set(source.by) <= set(kpi.by):
                problems.append(kpis[kpi.name].problem(
                    None, f'input "{name}" has dimensions {list(source.by)} beyond by '
                    f"{list(kpi.by)}; a derived KPI's inputs have its dimensions or fewer "
                    "(a total beside its parts)"))
        known = [ordered[n] for n in kpi.inputs if n in ordered]
        if known and not any(set(k.by) == set(kpi.by) for k in known):
            problems.append(kpis[kpi.name].problem(None, f"no input has every dimension of by "
                                                   f"{list(kpi.by)}; a derived KPI's series "
                                                   "are those of an input with all of them"))
