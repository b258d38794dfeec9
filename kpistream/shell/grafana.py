"""Grafana dashboards for kpistream, built as plain dicts (Grafana's dashboard JSON model).

Two kinds:

- the three fixed dashboards in ``grafana/dashboards`` (KPI overview, KPI detail with a
  ``kpi`` variable, pipeline health), which work for any rule set;
- one dashboard per rules directory (``kpistream grafana --rules DIR --out DIR``): a row per
  KPI with its title, unit, dimension variables, alert states and, for a KPI with
  ``anomaly:``, its learned band and anomaly score. So dashboards follow the rules in git.

Every panel and query reads the Prometheus data source provisioned by
``grafana/provisioning/datasources/prometheus.yaml`` (uid :data:`DATASOURCE_UID`). Rates use
Grafana's ``$__rate_interval``, at least four scrape intervals (the data source says 15s).

>>> panel = _timeseries("Value", [_target('kpistream_kpi_value{kpi="gmv"}')], unit="short")
>>> panel["datasource"]["uid"], panel["targets"][0]["expr"]
('kpistream-prometheus', 'kpistream_kpi_value{kpi="gmv"}')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kpistream.core.durations import format_duration
from kpistream.core.ruleset import Kpi, RuleSet

__all__ = ["DATASOURCE_UID", "fixed_dashboards", "grafana_unit", "render", "rules_dashboard",
           "write_dashboards"]

Json = dict[str, Any]

DATASOURCE_UID = "kpistream-prometheus"
DATASOURCE: Json = {"type": "prometheus", "uid": DATASOURCE_UID}
SCHEMA_VERSION = 39
#: rule-file units with an obvious Grafana unit; any other unit is shown as a suffix
UNITS = {"ratio": "percentunit", "percent": "percent", "%": "percent", "s": "s",
         "seconds": "s", "ms": "ms", "bytes": "bytes", "CNY": "prefix:¥", "RMB": "prefix:¥",
         "USD": "currencyUSD", "EUR": "currencyEUR", "GBP": "currencyGBP",
         "JPY": "currencyJPY"}
ALERT_STATES = [{"type": "value", "options": {
    "0": {"text": "ok", "color": "green", "index": 0},
    "1": {"text": "firing", "color": "red", "index": 1}}}]


def grafana_unit(unit: str | None) -> str:
    """The Grafana unit for a rule file's ``unit``.

    >>> grafana_unit("ratio"), grafana_unit("CNY"), grafana_unit("orders"), grafana_unit(None)
    ('percentunit', 'prefix:¥', 'suffix: orders', 'short')
    """
    if not unit:
        return "short"
    return UNITS.get(unit, f"suffix: {unit}")


# -- building blocks ---------------------------------------------------------------------


def _target(expr: str, legend: str = "__auto", ref: str = "A", *,
            instant: bool = False) -> Json:
    """One PromQL query of a panel (a table when ``instant``).

    >>> _target("up", instant=True)["format"]
    'table'
    """
    target: Json = {"datasource": DATASOURCE, "refId": ref, "expr": expr,
                    "legendFormat": legend, "range": not instant, "instant": instant}
    if instant:
        target["format"] = "table"
    return target


def _panel(kind: str, title: str, targets: Sequence[Json], *, unit: str = "short",
           description: str = "", no_value: str | None = None, **extra: Any) -> Json:
    """A panel without id and position (see :class:`_Layout`)."""
    defaults: Json = {"unit": unit}
    if no_value is not None:
        defaults["noValue"] = no_value
    panel: Json = {"type": kind, "title": title, "description": description,
                   "datasource": DATASOURCE, "targets": list(targets),
                   "fieldConfig": {"defaults": defaults, "overrides": []}, "options": {}}
    panel.update(extra)
    return panel


def _timeseries(title: str, targets: Sequence[Json], **kw: Any) -> Json:
    return _panel("timeseries", title, targets, **kw)


def _stat(title: str, targets: Sequence[Json], *, red_from: float | None = None,
          **kw: Any) -> Json:
    """The last value of each series; red from ``red_from`` when given."""
    panel = _panel("stat", title, targets, **kw)
    panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                          "values": False}, "colorMode": "value"}
    if red_from is not None:
        panel["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": [
            {"color": "green", "value": None}, {"color": "red", "value": red_from}]}
    return panel


def _table(title: str, targets: Sequence[Json], *, hide: Iterable[str] = (),
           rename: dict[str, str] | None = None, **kw: Any) -> Json:
    """An instant table of several queries merged on their labels."""
    panel = _panel("table", title, targets, **kw)
    panel["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, **{h: True for h in hide}},
                                       "renameByName": rename or {}}}]
    return panel


def _alert_states(title: str, expr: str, legend: str, **kw: Any) -> Json:
    """A state timeline of ``kpistream_alert_firing`` series: ok (green) / firing (red)."""
    panel = _panel("state-timeline", title, [_target(expr, legend)], **kw)
    panel["fieldConfig"]["defaults"]["mappings"] = ALERT_STATES
    panel["options"] = {"showValue": "never", "mergeValues": True}
    return panel


def _band(title: str, selector: str, unit: str, **kw: Any) -> Json:
    """Value, expected value and the learned band (dashed) of the series ``selector`` picks.

    >>> [t["expr"] for t in _band("Band", 'kpi="gmv"', "short")["targets"]][1:]
    ['kpistream_kpi_expected{kpi="gmv"}', 'kpistream_kpi_lower{kpi="gmv"}', \
'kpistream_kpi_upper{kpi="gmv"}']
    """
    legend = kw.pop("legend", "{{kpi}}")
    targets = [_target(f"kpistream_kpi_{m}{{{selector}}}", f"{legend} {m}", ref)
               for m, ref in (("value", "A"), ("expected", "B"), ("lower", "C"),
                              ("upper", "D"))]
    panel = _timeseries(title, targets, unit=unit, **kw)
    panel["fieldConfig"]["overrides"] = [
        _override(ref, {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}})
        for ref in ("B", "C", "D")]
    return panel


def _override(ref: str, *properties: Json) -> Json:
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": list(properties)}


def _score(title: str, selector: str, legend: str, **kw: Any) -> Json:
    panel = _timeseries(title, [_target(f"kpistream_kpi_anomaly_score{{{selector}}}", legend)],
                        unit="percentunit", **kw)
    panel["fieldConfig"]["defaults"].update({"min": 0, "max": 1})
    return panel


def _pace(title: str, selector: str, legend: str, **kw: Any) -> Json:
    """Attainment against pace per period: behind pace when the solid line is under the
    dashed one.

    >>> [t["expr"].split("{")[0] for t in _pace("Pace", 'kpi="gmv"', "")["targets"]]
    ['kpistream_kpi_attainment_ratio', 'kpistream_kpi_expected_attainment_ratio']
    """
    targets = [_target(f"kpistream_kpi_attainment_ratio{{{selector}}}",
                       f"{legend} {{{{period}}}} attainment".strip(), "A"),
               _target(f"kpistream_kpi_expected_attainment_ratio{{{selector}}}",
                       f"{legend} {{{{period}}}} pace".strip(), "B")]
    panel = _timeseries(title, targets, unit="percentunit", **kw)
    panel["fieldConfig"]["overrides"] = [
        _override("B", {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}})]
    return panel


def _forecast(title: str, selector: str, legend: str, unit: str, **kw: Any) -> Json:
    """The period-end forecast, its 80% interval (dashed) and the target (red)."""
    targets = [_target(f"kpistream_kpi_{m}{{{selector}}}", f"{legend} {{{{period}}}} {m}"
                       .strip(), ref)
               for m, ref in (("forecast", "A"), ("forecast_lower", "B"),
                              ("forecast_upper", "C"), ("target", "D"))]
    panel = _timeseries(title, targets, unit=unit, **kw)
    dashed = {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}}
    panel["fieldConfig"]["overrides"] = [
        _override("B", dashed), _override("C", dashed),
        _override("D", {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}})]
    return panel


def _row(title: str) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


class _Layout:
    """Gives panels ids and places them left to right on Grafana's 24-column grid.

    >>> layout = _Layout()
    >>> [p["gridPos"] for p in layout.place([_row("r"), _stat("a", []), _stat("b", [])],
    ...                                     width=12, height=4)]
    [{'x': 0, 'y': 0, 'w': 24, 'h': 1}, {'x': 0, 'y': 1, 'w': 12, 'h': 4}, \
{'x': 12, 'y': 1, 'w': 12, 'h': 4}]
    """

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = self.y = self.row_height = 0

    def place(self, panels: Iterable[Json], *, width: int = 12, height: int = 8) -> list[Json]:
        return [self._one(p, width, height) for p in panels]

    def _one(self, panel: Json, width: int, height: int) -> Json:
        if panel["type"] == "row":
            self._newline()
            width, height = 24, 1
        elif self.x + width > 24:
            self._newline()
        panel = {"id": len(self.panels) + 1, **panel,
                 "gridPos": {"x": self.x, "y": self.y, "w": width, "h": height}}
        self.panels.append(panel)
        self.row_height = max(self.row_height, height)
        self.x += width
        if panel["type"] == "row":
            self._newline()
        return panel

    def _newline(self) -> None:
        self.y += self.row_height
        self.x = self.row_height = 0


def _query_variable(name: str, query: str, label: str, *, all_values: bool = False) -> Json:
    """A template variable filled from Prometheus (``label_values(...)``)."""
    variable: Json = {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
                      "query": query, "definition": query, "refresh": 2, "sort": 1,
                      "hide": 0, "multi": all_values, "includeAll": all_values,
                      "current": {}, "options": [], "regex": ""}
    if all_values:
        variable["allValue"] = ".*"
        variable["current"] = {"text": ["All"], "value": ["$__all"]}
    return variable


def _annotation(name: str, expr: str, title: str) -> Json:
    """Alert annotations: Grafana draws a region wherever the series is 1 (firing)."""
    return {"name": name, "datasource": DATASOURCE, "enable": True, "iconColor": "red",
            "expr": expr, "step": "60s", "titleFormat": title, "tagKeys": "severity,kpi",
            "textFormat": "", "useValueForTime": False}


def _dashboard(uid: str, title: str, panels: list[Json], *, variables: Sequence[Json] = (),
               annotations: Sequence[Json] = (), description: str = "") -> Json:
    builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
               "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
               "name": "Annotations & Alerts", "type": "dashboard"}
    return {"uid": uid, "title": title, "description": description, "tags": ["kpistream"],
            "timezone": "browser", "editable": True, "schemaVersion": SCHEMA_VERSION,
            "version": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "annotations": {"list": [builtin, *annotations]},
            "templating": {"list": list(variables)}, "panels": panels}


# -- the fixed dashboards ----------------------------------------------------------------


def overview_dashboard() -> Json:
    """Every KPI: its current value per series, unit, owner and alert state."""
    layout = _Layout()
    layout.place([
        _stat("KPIs", [_target("count(kpistream_kpi_info)", "KPIs")]),
        _stat("Series reported", [_target("sum(kpistream_kpi_series)", "series")]),
        _stat("Alert series firing", [_target("sum(kpistream_alert_firing)", "firing")],
              red_from=1),
        _stat("Firing by severity", [_target("sum by (severity) (kpistream_alert_firing)",
                                             "{{severity}}")]),
    ], width=6, height=4)
    layout.place([
        _table("KPIs", [
            _target("kpistream_kpi_info", ref="A", instant=True),
            _target("count by (kpi) (kpistream_kpi_value)", ref="B", instant=True),
            _target("max by (kpi) (time() - kpistream_kpi_window_end_timestamp_seconds)",
                    ref="C", instant=True),
        ], hide=("__name__", "instance", "job", "Value #A"),
            rename={"Value #B": "series", "Value #C": "since last window end (s)"},
            description="From kpistream_kpi_info: one row per KPI of the live rule set."),
        _table("KPI values now", [
            _target("kpistream_kpi_value * on (kpi) group_left (title, unit, owner) "
                    "kpistream_kpi_info", ref="A", instant=True),
            _target("max without (alert, severity) (kpistream_alert_firing)", ref="B",
                    instant=True),
        ], hide=("__name__", "instance", "job"),
            rename={"Value #A": "value", "Value #B": "alert firing"},
            description="The latest closed window of every series with the KPI's unit and "
                        "owner; 'alert firing' is 1 when any alert of the series fires."),
    ], width=24, height=10)
    layout.place([
        _alert_states("Alert states", "kpistream_alert_firing * on (kpi) group_left (owner) "
                      "kpistream_kpi_info", "{{alert}} {{severity}} ({{owner}})",
                      description="Every alert series: green ok, red firing."),
        _table("Alerts per KPI", [
            _target("sum by (kpi, alert, severity) (kpistream_alert_firing) * on (kpi) "
                    "group_left (owner) kpistream_kpi_info", ref="A", instant=True),
        ], hide=("instance", "job"), rename={"Value": "series firing"}),
    ], width=12, height=10)
    layout.place([
        _table("Targets", [
            _target("kpistream_kpi_attainment_ratio", ref="A", instant=True),
            _target("kpistream_kpi_expected_attainment_ratio", ref="B", instant=True),
            _target("kpistream_kpi_forecast / kpistream_kpi_target", ref="C", instant=True),
            _target("kpistream_kpi_target_hit_probability", ref="D", instant=True),
        ], hide=("__name__", "instance", "job"),
            rename={"Value #A": "attainment", "Value #B": "pace",
                    "Value #C": "forecast / target", "Value #D": "hit probability"},
            unit="percentunit", no_value="no KPI has targets: yet",
            description="Every series with a target, per period: attained so far, due by "
                        "now (pace), the forecast's share of the target and the chance to "
                        "reach it."),
    ], width=24, height=8)
    return _dashboard("kpistream-overview", "kpistream — KPI overview", layout.panels,
                      description="Every KPI with its current value, unit, owner and alert "
                                  "state.")


def detail_dashboard() -> Json:
    """One KPI picked with ``$kpi``; its dimensions are filtered with ad hoc filters."""
    selector = 'kpi="$kpi"'
    layout = _Layout()
    layout.place([
        _stat("Latest value", [_target(f"kpistream_kpi_value{{{selector}}}")]),
        _stat("Series", [_target(f"kpistream_kpi_series{{{selector}}}", "series")]),
        _stat("Since last window end",
              [_target(f"max(time() - kpistream_kpi_window_end_timestamp_seconds{{{selector}}})",
                       "delay")], unit="s"),
        _table("Definition", [_target(f"kpistream_kpi_info{{{selector}}}", instant=True)],
               hide=("__name__", "instance", "job", "Value")),
    ], width=6, height=5)
    layout.place([
        _timeseries("Value", [_target(f"kpistream_kpi_value{{{selector}}}")],
                    description="Each series' value of its latest closed window."),
        _alert_states("Alert state", f"kpistream_alert_firing{{{selector}}}",
                      "{{alert}} {{severity}}", no_value="no alert rule on this KPI"),
        _band("Anomaly band", selector, "short", legend="",
              description="Value, what the anomaly model expected and its normal band "
                          "(dashed); the band appears after the model's warm-up."),
        _score("Anomaly score", selector, "",
               no_value="no anomaly: block on this KPI (or still warming up)"),
    ], width=12, height=9)
    variables = [_query_variable("kpi", "label_values(kpistream_kpi_value, kpi)", "KPI"),
                 {"name": "filters", "label": "Labels", "type": "adhoc",
                  "datasource": DATASOURCE, "filters": [], "hide": 0}]
    annotations = [_annotation("Alerts", f"kpistream_alert_firing{{{selector}}}",
                               "{{alert}} ({{severity}})")]
    return _dashboard("kpistream-kpi-detail", "kpistream — KPI detail", layout.panels,
                      variables=variables, annotations=annotations,
                      description="One KPI over time: values, alert states, anomaly band.")


def pipeline_dashboard() -> Json:
    """Events, lag, lateness, window closes, notifications, rule reloads, checkpoints."""
    rate = "[$__rate_interval]"
    layout = _Layout()
    layout.place([
        _stat("Workers up", [_target('sum(up{job="kpistream"})', "up")]),
        _stat("Rules valid", [_target("min(kpistream_rules_reload_success)", "valid")],
              no_value="?"),
        _stat("Rules loaded", [_target("max(kpistream_rules_last_reload_timestamp_seconds) "
                                       "* 1000", "loaded")], unit="dateTimeFromNow"),
        _stat("Last checkpoint", [_target("time() - max(kpistream_checkpoint_last_timestamp"
                                          "_seconds)", "age")], unit="s"),
    ], width=6, height=4)
    layout.place([
        _timeseries("Events/s by source and status", [_target(
            f"sum by (source, status) (rate(kpistream_events_total{rate}))",
            "{{source}} {{status}}")], unit="ops"),
        _timeseries("Late and invalid events/s", [_target(
            f'sum by (source, status) (rate(kpistream_events_total{{status=~"late|invalid"}}'
            f'{rate}))', "{{source}} {{status}}")], unit="ops"),
        _timeseries("Consumer lag", [_target("sum by (source) (kpistream_source_lag_messages)",
                                             "{{source}}")], unit="short",
                    description="Messages behind the fetch high watermark."),
        _timeseries("Watermark behind the clock", [_target(
            "time() - min by (source) (kpistream_source_watermark_timestamp_seconds)",
            "{{source}}")], unit="s"),
        _timeseries("Window-close delay", [_target(
            "max by (kpi) (time() - kpistream_kpi_window_end_timestamp_seconds)", "{{kpi}}")],
            unit="s", description="Time since the end of each KPI's latest closed window: "
                                  "lateness plus up to one hop when healthy."),
        _timeseries("Windows closed/s", [_target(
            f"sum by (kpi) (rate(kpistream_windows_closed_total{rate}))", "{{kpi}}")],
            unit="ops"),
        _timeseries("Notifications/s by channel and result", [_target(
            f"sum by (channel, result) (rate(kpistream_notifications_total{rate})) "
            "or on () vector(0)", "{{channel}} {{result}}")], unit="ops",
            description="0 until the first notification attempt."),
        _timeseries("Dropped notifications/s by reason", [_target(
            f"sum by (reason) (rate(kpistream_notifications_dropped_total{rate})) "
            "or on () vector(0)", "{{reason}}")], unit="ops",
            description="Alert events not notified (silenced, inhibited, shadow, no route); "
                        "0 until the first one."),
        _timeseries("Outbox and silences", [
            _target("sum(kpistream_notification_outbox)", "outbox"),
            _target("max(kpistream_silences_active)", "silences active", "B")]),
        _timeseries("Rule reloads", [
            _target("min(kpistream_rules_reload_success)", "last reload valid"),
            _target("changes(kpistream_rules_last_reload_timestamp_seconds[$__range])",
                    "reloads in range", "B")]),
        _timeseries("Checkpoint age", [_target(
            "time() - kpistream_checkpoint_last_timestamp_seconds", "{{instance}}")], unit="s"),
        _timeseries("Checkpoint duration", [
            _target("histogram_quantile(0.99, sum by (le) "
                    f"(rate(kpistream_checkpoint_duration_seconds_bucket{rate})))", "p99"),
            _target(f"sum(rate(kpistream_checkpoint_duration_seconds_sum{rate})) / "
                    f"sum(rate(kpistream_checkpoint_duration_seconds_count{rate}))", "mean",
                    "B")], unit="s"),
    ], width=12, height=8)
    layout.place([_table("Live rule set", [_target("kpistream_rules_info", instant=True)],
                         hide=("__name__", "Value"))], width=24, height=4)
    return _dashboard("kpistream-pipeline", "kpistream — pipeline health", layout.panels,
                      description="Is the pipeline keeping up: events, lag, late data, "
                                  "window closes, notifications, rule reloads, checkpoints.")


def fixed_dashboards() -> dict[str, Json]:
    """The dashboards that work for any rule set, by file name."""
    return {"kpi-overview.json": overview_dashboard(), "kpi-detail.json": detail_dashboard(),
            "pipeline.json": pipeline_dashboard()}


# -- the dashboard of a rule set -------------------------------------------------------


def rules_dashboard(rules: RuleSet, name: str) -> Json:
    """A row per KPI of ``rules``, with a variable per dimension label.

    >>> from kpistream.core.loader import load_rules
    >>> board = rules_dashboard(load_rules("rules/demo"), "demo")
    >>> board["uid"], [v["name"] for v in board["templating"]["list"]]
    ('kpistream-kpis-demo', ['region', 'channel'])
    """
    layout = _Layout()
    for kpi in rules.kpis.values():
        layout.place([_row(f"{kpi.title or kpi.name} ({kpi.name})")])
        layout.place(_kpi_panels(rules, kpi), width=12, height=8)
    annotations = [_annotation("Alerts", "max by (alert, kpi, severity) "
                               "(kpistream_alert_firing)", "{{alert}} ({{severity}})")]
    return _dashboard(f"kpistream-kpis-{name}", f"kpistream — KPIs of {name}", layout.panels,
                      variables=_label_variables(rules.kpis.values()),
                      annotations=annotations if rules.alerts else (),
                      description=f"Generated by `kpistream grafana` from the rules "
                                  f"{name}; do not edit, regenerate.")


def _label_variables(kpis: Iterable[Kpi]) -> list[Json]:
    """A multi-value variable per dimension label, in order of first use."""
    labels = dict.fromkeys(label for kpi in kpis for label in kpi.labels)
    return [_query_variable(label, f"label_values(kpistream_kpi_value, {label})", label,
                            all_values=True) for label in labels]


def _kpi_panels(rules: RuleSet, kpi: Kpi) -> list[Json]:
    """Value, alert states (when it has alerts), band and score (when it has anomaly:),
    attainment against pace and the forecast (when it has targets:)."""
    selector = ", ".join([f'kpi="{kpi.name}"', *(f'{lb}=~"${lb}"' for lb in kpi.labels)])
    legend = " ".join(f"{{{{{lb}}}}}" for lb in kpi.labels) or kpi.name
    unit = grafana_unit(kpi.unit)
    window = format_duration(kpi.window_ms) + (f" every {format_duration(kpi.hop_ms)}"
                                               if kpi.hop_ms else "")
    about = (f"{kpi.title or kpi.name}: {kpi.computation or kpi.name}, window {window}, "
             f"unit {kpi.unit or '-'}, owner {kpi.owner or '-'}")
    if kpi.definition:
        about += f". 口径 (v{kpi.version or '-'}): {kpi.definition}"
    panels = [_timeseries(f"{kpi.name}", [_target(f"kpistream_kpi_value{{{selector}}}",
                                                  legend)], unit=unit, description=about)]
    alerts = [a for a in rules.alerts if a.kpi == kpi.name]
    if alerts:
        text = "; ".join(f"{a.name}: {a.condition_text}" for a in alerts)
        panels.append(_alert_states(f"{kpi.name} alerts", f"kpistream_alert_firing{{{selector}}}",
                                    f"{{{{alert}}}} {{{{severity}}}} {legend}".strip(),
                                    description=text))
    if kpi.anomaly is not None:
        panels.append(_band(f"{kpi.name} anomaly band", selector, unit, legend=legend,
                            description="Value, expected value and learned normal band "
                                        "(dashed), after the model's warm-up."))
        panels.append(_score(f"{kpi.name} anomaly score", selector, legend))
    if kpi.targets:
        periods = ", ".join(t.period for t in kpi.targets)
        panels.append(_pace(f"{kpi.name} attainment vs pace", selector, legend,
                            description=f"Targets per {periods}: the period's value over the "
                                        "target (solid) and the share due by now from the "
                                        "KPI's learned profile (dashed)."))
        panels.append(_forecast(f"{kpi.name} forecast vs target", selector, legend, unit,
                                description="Forecast of the period's end value, its 80% "
                                            "interval (dashed) and the target (red)."))
    return panels


# -- files -------------------------------------------------------------------------------


def render(dashboard: Json) -> str:
    """The dashboard as stable JSON text (so a regenerated file diffs cleanly).

    >>> render({"b": 1, "a": "¥"})
    '{\\n  "b": 1,\\n  "a": "¥"\\n}\\n'
    """
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write_dashboards(rules: RuleSet, name: str, out: Path, *, fixed: bool = False) -> list[Path]:
    """Write ``kpis-NAME.json`` (and the fixed dashboards when asked) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    boards = {f"kpis-{name}.json": rules_dashboard(rules, name)}
    if fixed:
        boards.update(fixed_dashboards())
    written = []
    for filename, board in boards.items():
        path = out / filename
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written
