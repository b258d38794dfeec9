"""Prometheus exposition of KPI values, alert states and pipeline counters.

KPIs have different dimensions, so ``kpistream_kpi_value`` is rendered by a custom
collector from a snapshot the daemon updates after each step, on a registry of its own
(no global default registry).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kpistream.core.anomaly import Judgement
from kpistream.core.durations import format_duration
from kpistream.core.engine import IngestResult, Step
from kpistream.core.ruleset import RuleSet
from kpistream.core.values import SeriesKey, TargetStatus

__all__ = ["Exporter"]

STATUSES = ("ok", "invalid", "late", "filtered")
#: The anomaly model's view of each series' latest window: metric name -> (help, attribute).
BAND_METRICS = {
    "kpistream_kpi_expected": ("Value the KPI's anomaly model expected for the latest window.",
                               "expected"),
    "kpistream_kpi_lower": ("Lower edge of the learned normal band.", "lower"),
    "kpistream_kpi_upper": ("Upper edge of the learned normal band.", "upper"),
    "kpistream_kpi_anomaly_score": ("How abnormal the latest window is, 0 (normal) to 1.",
                                    "score"),
}

#: Each series' standing against each target (label ``period``): name -> (help, attribute).
TARGET_METRICS = {
    "kpistream_kpi_target": ("The series' target for the period.", "target"),
    "kpistream_kpi_period_value": ("The KPI's value so far in the period (sum of its windows).",
                                   "value"),
    "kpistream_kpi_attainment_ratio": ("Period value so far over the target.", "attainment"),
    "kpistream_kpi_expected_attainment_ratio": (
        "Pace: the share of the target due by now, from the series' learned profile.",
        "expected_attainment"),
    "kpistream_kpi_forecast": ("Forecast of the period's end value.", "forecast"),
    "kpistream_kpi_forecast_lower": ("Lower edge of the forecast's 80% interval.",
                                     "forecast_lower"),
    "kpistream_kpi_forecast_upper": ("Upper edge of the forecast's 80% interval.",
                                     "forecast_upper"),
    "kpistream_kpi_target_hit_probability": ("Probability that the period ends at or above "
                                             "the target.", "hit_probability"),
}
Standings = tuple[TargetStatus, ...] | None


class _Snapshot(Collector):
    """Renders the latest value per KPI series and alert state per alert series."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        #: kpi -> series -> (value, window end, the anomaly model's judgement or None, the
        #: standings against targets or None)
        self.values: dict[str, dict[SeriesKey, tuple[float, int, Judgement | None, Standings]]]
        self.values = {k: {} for k in rules.kpis}
        #: (alert, severity, series) -> 1 firing, 0 resolved
        self.firing: dict[tuple[str, str, SeriesKey], int] = {}

    def collect(self) -> Iterator[Metric]:
        value = GaugeMetricFamily("kpistream_kpi_value",
                                  "Value of the KPI's most recently closed window.")
        end = GaugeMetricFamily("kpistream_kpi_window_end_timestamp_seconds",
                                "End time of the window behind kpistream_kpi_value.")
        bands = {name: GaugeMetricFamily(name, text) for name, (text, _) in BAND_METRICS.items()}
        targets = {name: GaugeMetricFamily(name, text)
                   for name, (text, _) in TARGET_METRICS.items()}
        rules = self.rules  # a reload may swap rules and values while a scrape runs
        for name, series in list(self.values.items()):
            kpi = rules.kpis.get(name)
            if kpi is None:
                continue
            labels = kpi.labels
            for key, (v, end_ms, judgement, standings) in list(series.items()):
                if len(key) != len(labels):
                    continue
                sample_labels = {"kpi": name, **dict(zip(labels, key, strict=True))}
                value.add_sample("kpistream_kpi_value", sample_labels, v)
                end.add_sample("kpistream_kpi_window_end_timestamp_seconds", sample_labels,
                               end_ms / 1000)
                if judgement is not None:
                    _add_band(bands, sample_labels, judgement)
                for status in standings or ():
                    _add_standing(targets, {**sample_labels, "period": status.period}, status)
        yield value
        yield end
        yield from bands.values()
        yield from targets.values()
        yield self._alerts()

    def _alerts(self) -> Metric:
        family = GaugeMetricFamily("kpistream_alert_firing",
                                   "1 while the alert fires for the series, 0 otherwise.")
        for rule in self.rules.alerts:
            labels = self.rules.kpis[rule.kpi].labels
            for severity in rule.severities:
                firing = {k for (a, s, k), v in self.firing.items()
                          if v and a == rule.name and s == severity}
                for key in sorted(set(self.values.get(rule.kpi, {})) | firing):
                    if len(key) != len(labels):
                        continue  # a series of the KPI before a reload changed its by:
                    state = int(key in firing)
                    family.add_sample("kpistream_alert_firing", {
                        "alert": rule.name, "kpi": rule.kpi, "severity": severity,
                        **dict(zip(labels, key, strict=True))}, state)
        return family


def _add_band(families: dict[str, GaugeMetricFamily], labels: dict[str, str],
              judgement: Judgement) -> None:
    """One series' band samples; none but the score while its model warms up."""
    for name, (_, attribute) in BAND_METRICS.items():
        x = getattr(judgement, attribute)
        if x is not None:
            families[name].add_sample(name, labels, x)


def _add_standing(families: dict[str, GaugeMetricFamily], labels: dict[str, str],
                  status: TargetStatus) -> None:
    for name, (_, attribute) in TARGET_METRICS.items():
        families[name].add_sample(name, labels, getattr(status, attribute))


class _FoldedCollector(Collector):
    """``kpistream_kpi_series_folded_total``: what the cardinality guard folded, per KPI."""

    def __init__(self) -> None:
        #: stage -> what its guard folded per KPI
        self.stages: dict[str, Callable[[], Mapping[str, int]]] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "kpistream_kpi_series_folded",
            "Batch rows of new label sets merged into the series __other__ because the KPI "
            "had max_series series.", labels=["kpi", "stage"])
        for stage, folded in sorted(self.stages.items()):
            for kpi, n in sorted(folded().items()):
                family.add_metric([kpi, stage], n)
        yield family


class _NotifierCollector(Collector):
    """``kpistream_notifications_dropped_total`` and ``kpistream_notification_outbox``."""

    def __init__(self) -> None:
        self.notifier = None
        self.outbox: Mapping = {}

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily("kpistream_notifications_dropped",
                                      "Alert events not notified, by reason (silenced, "
                                      "inhibited, shadow, ...).", labels=["reason"])
        for reason, n in sorted((self.notifier.dropped if self.notifier else {}).items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield GaugeMetricFamily("kpistream_notification_outbox",
                                "Notifications waiting for delivery.", value=len(self.outbox))
        now_ms = time.time() * 1000
        silences = self.notifier.silences if self.notifier else ()
        yield GaugeMetricFamily("kpistream_silences_active", "Silences in force now.",
                                value=sum(s.starts_ms <= now_ms < s.ends_ms for s in silences))


class Exporter:
    """The daemon's metrics; ``registry`` is served by the HTTP endpoint."""

    def __init__(self, rules: RuleSet, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.snapshot = _Snapshot(rules)
        self.registry.register(self.snapshot)
        self.events = Counter("kpistream_events_total", "Events read, by source and status.",
                              ["source", "status"], registry=self.registry)
        self.windows_closed = Counter("kpistream_windows_closed_total",
                                      "KPI windows closed.", ["kpi"], registry=self.registry)
        self.watermark = Gauge("kpistream_source_watermark_timestamp_seconds",
                               "Largest event time seen (moved by the clock when idle).",
                               ["source"], registry=self.registry)
        self.lag = Gauge("kpistream_source_lag_messages",
                         "Messages behind the fetch high watermark.", ["source"],
                         registry=self.registry)
        self.info = Gauge("kpistream_rules_info", "The live rule set (version = content hash).",
                          ["version"], registry=self.registry)
        self.kpi_info = Gauge("kpistream_kpi_info", "1 per KPI of the live rule set, with its "
                              "title, unit, owner, window, business definition (口径), "
                              "version and parent in the KPI tree.",
                              ["kpi", "title", "unit", "owner", "window", "definition",
                               "version", "parent"], registry=self.registry)
        self.series = Gauge("kpistream_kpi_series", "Series currently reported per KPI.",
                            ["kpi"], registry=self.registry)
        self.late_panes = Counter("kpistream_kpi_late_panes",
                                  "Final panes of a partition that reached the merge stage after "
                                  "their window had closed (the partition was idle, or unread "
                                  "for a while).", ["kpi"], registry=self.registry)
        self.checkpointed = Gauge("kpistream_checkpoint_last_timestamp_seconds",
                                  "When the last checkpoint (state + offsets) was written.",
                                  registry=self.registry)
        self.checkpoint_seconds = Histogram("kpistream_checkpoint_duration_seconds",
                                            "Time to snapshot and write one checkpoint.",
                                            registry=self.registry)
        self.notifications = Counter("kpistream_notifications",
                                     "Notification attempts per channel and result.",
                                     ["channel", "result"], registry=self.registry)
        self.digests = Counter("kpistream_digests", "Digests sent (result sent) or tried and "
                               "failed on every channel (failed, tried again).",
                               ["digest", "result"], registry=self.registry)
        self.feedback = Counter("kpistream_anomaly_feedback",
                                "Anomaly feedback records applied by this worker, by result "
                                "(accepted, already, unknown = another worker's series).",
                                ["result"], registry=self.registry)
        self._folded = _FoldedCollector()
        self.registry.register(self._folded)
        self._notifier = _NotifierCollector()
        self.registry.register(self._notifier)
        self.use_rules(rules)

    def watch_folded(self, folded: Callable[[], Mapping[str, int]], stage: str) -> None:
        """Export a stage's cardinality guard's folded rows per KPI, as ``folded()`` tells."""
        self._folded.stages[stage] = folded

    def watch_notifier(self, notifier, outbox: Mapping) -> None:
        """Export what the alert notifier dropped (by reason) and the outbox size."""
        self._notifier.notifier, self._notifier.outbox = notifier, outbox

    def use_rules(self, rules: RuleSet) -> None:
        """Export for this rule set from now on (KPIs it no longer has disappear)."""
        before = self.snapshot.rules.kpis
        self.snapshot.values = {  # a KPI whose dimensions changed starts with no series
            k: self.snapshot.values.get(k, {}) if k in before
            and before[k].labels == kpi.labels else {} for k, kpi in rules.kpis.items()}
        self.snapshot.rules = rules
        self.info.clear()
        self.info.labels(rules.version).set(1)
        self.kpi_info.clear()
        for kpi in rules.kpis.values():
            self.kpi_info.labels(kpi.name, kpi.title or "", kpi.unit or "", kpi.owner or "",
                                 format_duration(kpi.window_ms), kpi.definition or "",
                                 kpi.version or "", kpi.parent or "").set(1)
        for source in rules.sources:
            for status in STATUSES:
                self.events.labels(source, status)

    def disown(self) -> None:
        """Another worker merges now: its KPI series and alert states are not ours to export."""
        self.snapshot.values = {k: {} for k in self.snapshot.rules.kpis}
        self.snapshot.firing = {}
        self.series.clear()
        self.watermark.clear()

    def restored(self, firing: Iterable[tuple[str, str, SeriesKey]]) -> None:
        """Alerts firing in a restored checkpoint: they make no new transition."""
        for key in firing:
            self.snapshot.firing[key] = 1

    def count(self, source: str, result: IngestResult) -> None:
        for status in STATUSES:
            n = getattr(result, status)
            if n:
                self.events.labels(source, status).inc(n)

    def publish(self, step: Step) -> None:
        """Take a step's closed windows and alert transitions into the snapshot."""
        values = self.snapshot.values
        for window in step.windows:
            series = values.setdefault(window.kpi, {})
            judgements = window.judgements or {}
            standings = window.standings or {}
            for key, v in window.values.items():
                series[key] = (v, window.end_ms, judgements.get(key), standings.get(key))
            self.windows_closed.labels(window.kpi).inc()
            self._expire(window.kpi, window.end_ms)
        for t in step.transitions:
            names = self.snapshot.rules.kpis[t.kpi].labels
            key = tuple(dict(t.labels)[n] for n in names)
            self.snapshot.firing[(t.alert, t.severity, key)] = int(t.state == "firing")

    def _expire(self, kpi: str, latest_end_ms: int) -> None:
        ttl = self.snapshot.rules.kpis[kpi].series_ttl_ms
        series = self.snapshot.values[kpi]
        for key in [k for k, (_, end, *_) in series.items() if end < latest_end_ms - ttl]:
            del series[key]
        self.series.labels(kpi).set(len(series))
