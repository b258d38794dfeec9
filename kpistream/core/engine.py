"""The engine: batches of raw events in, closed windows and alert transitions out.

Synchronous and clock-free: the caller passes processing time (``now_ms``) when it has one.
``kpistream run`` feeds it Kafka batches, ``kpistream backtest`` file batches; nothing else
differs, so both give the same numbers.

Two stages, which one process runs back to back and a consumer group runs apart (see
``kpistream.shell.ingest``): stage one (:mod:`kpistream.core.partials`) aggregates each
source partition's events into panes and hands on the panes that are final; stage two, the
engine proper, merges every partition's panes into windows (:meth:`Engine.merge`), closes
them when the source's watermark (:mod:`kpistream.core.watermarks`) passes their end plus
the KPI's lateness, and runs derived KPIs, anomaly models and alerts on the closed windows.

>>> from kpistream.core.loader import load_rules_text
>>> rules = load_rules_text('''
... sources: [{name: orders, topic: t}]
... kpis: [{name: n, source: orders, agg: count(), by: [region], window: 1m, lateness: 0s}]
... ''')
>>> engine = Engine(rules)
>>> engine.ingest("orders", [b'{"ts": 1700000000, "region": "east"}',
...                           b'{"ts": "2023-11-14T22:14:30Z", "region": "east"}'])
IngestResult(ok=2, invalid=0, late=0, filtered=0, rejected=[])
>>> [(w.end_ms, w.values) for w in engine.advance().windows]
[(1700000040000, {('east',): 1.0})]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from kpistream.core.alerts import CHART_POINTS, AlertEvaluator, AlertGroup
from kpistream.core.anomalies import EIGHT_DAYS_MS, KpiAnomalies
from kpistream.core.baselines import KpiHistory
from kpistream.core.derived import DerivedWindows
from kpistream.core.notify.model import AlertEvent, fingerprint, parse_alert_id
from kpistream.core.partials import IngestResult, PaneBatch, SourcePartitions
from kpistream.core.ruleset import Kpi, RuleSet
from kpistream.core.targets import KpiTargets
from kpistream.core.tree import Explainer, parts_of
from kpistream.core.values import ClosedWindow
from kpistream.core.watermarks import Watermark
from kpistream.core.windows import KpiWindows

__all__ = ["Engine", "IngestResult", "Step"]

FOREVER_MS = 2**62
SNAPSHOT_VERSION = 3


@dataclass
class Step:
    """What closing windows produced: KPI values and alert transitions, in time order."""

    windows: list[ClosedWindow] = field(default_factory=list)
    transitions: list[AlertEvent] = field(default_factory=list)


class Engine:
    """Runs a rule set over batches of events from any number of sources."""

    def __init__(self, rules: RuleSet, *, idle_timeout_ms: int = 15_000,
                 max_future_ms: int = 3_600_000) -> None:
        self.rules = rules
        self.idle_timeout_ms = idle_timeout_ms
        self.max_future_ms = max_future_ms
        #: stage one, for sources read in this process (backtests, tests, one worker)
        self.sources = {n: SourcePartitions(s, rules.kpis_of(n), idle_timeout_ms)
                        for n, s in rules.sources.items()}
        #: stage two: each source's watermark from its partitions' markers
        self.watermarks = {n: Watermark() for n in rules.sources}
        self.windows = {
            k.name: KpiWindows(k.name, k.agg, k.calendar, k.series_ttl_ms, len(k.by),
                               max_series=k.max_series)
            for k in rules.kpis.values() if not k.derived}
        #: final panes that came after their window had closed (their partition was idle,
        #: or unread for a while), per KPI
        self.late_panes = dict.fromkeys(self.windows, 0)
        #: batches left out because one before them was lost
        self.gaps = 0
        self.derived = {k.name: _derived(k, rules) for k in rules.kpis.values() if k.derived}
        self.histories = _histories(rules)
        self.anomalies = {
            k.name: KpiAnomalies(k.anomaly, k.anomaly_exclude,
                                 max(k.series_ttl_ms, EIGHT_DAYS_MS))
            for k in rules.kpis.values() if k.anomaly is not None}
        self.targets = {k.name: KpiTargets(k, rules.timezone)
                        for k in rules.kpis.values() if k.targets}
        self.explainers = {rule.name: Explainer(rules, rule) for rule in rules.alerts
                           if rule.absent_for_ms is None and parts_of(rules, rules.kpis[rule.kpi])}
        self.alerts = [AlertEvaluator(rule, rules, self.histories[rule.kpi])
                       for rule in rules.alerts]
        by_kpi: dict[str, list[AlertEvaluator]] = {}
        for evaluator in self.alerts:
            if not evaluator.rule.inputs:
                by_kpi.setdefault(evaluator.rule.kpi, []).append(evaluator)
        self.alert_groups = {kpi: AlertGroup(kpi, group) for kpi, group in by_kpi.items()}
        self.composite = [e for e in self.alerts if e.rule.inputs]
        #: feedback on windows not closed yet: alert id -> (kpi, window end)
        self.pending_feedback: dict[str, tuple[str, int]] = {}

    def ingest(self, source: str, values: Sequence[bytes], now_ms: int | None = None, *,
               partition: int = 0) -> IngestResult:
        """Add a batch of raw messages of one partition of ``source``, in partition order."""
        return self.ingest_partitions(source, [(partition, values)], now_ms)

    def ingest_partitions(self, source: str, batches: Sequence[tuple[int, Sequence[bytes]]],
                          now_ms: int | None = None) -> IngestResult:
        """Add one poll's batches of several partitions of ``source`` at once (faster)."""
        return self.sources[source].ingest(batches, now_ms, self.max_future_ms)

    def assign(self, source: str, partitions: Iterable[int], now_ms: int | None = None) -> None:
        """The partitions of ``source`` this process reads (after a rebalance)."""
        partitions = list(partitions)
        self.sources[source].assign(partitions, now_ms)
        self.watermarks[source].expect(partitions)

    def expect(self, source: str, partitions: Iterable[int]) -> None:
        """Every partition of ``source``, read here or elsewhere: windows wait for each."""
        self.watermarks[source].expect(partitions)

    def watermark(self, source: str) -> int | None:
        return self.watermarks[source].current

    def folded(self) -> dict[str, int]:
        """Rows of new label sets folded into ``__other__`` since start, per aggregated KPI
        (by either stage's cardinality guard)."""
        folded = {name: w.folded for name, w in self.windows.items()}
        for stage in self.sources.values():
            for name, count in stage.folded.items():
                folded[name] += count
        return folded

    def merge(self, batches: Iterable[PaneBatch], now_ms: int | None = None) -> None:
        """Take final panes from stage one (here or any worker's), each exactly once.

        A batch's panes that end at or before its partition's previous progress minus the
        KPI's lateness were merged before (a partition replayed from a checkpoint repeats
        them) and are skipped; panes of windows closed already are counted in
        :attr:`late_panes`. A batch that follows one not merged yet (that one was lost on
        the way; its sender goes back to its checkpoint and sends both again) is left out
        whole and counted in :attr:`gaps`.
        """
        for batch in batches:
            watermark = self.watermarks.get(batch.source)
            if watermark is None:
                continue  # a source removed by a reload
            before = watermark.progress(batch.partition)
            if batch.follows is not None and (before is None or batch.follows > before):
                self.gaps += 1
                continue
            for name, rows in batch.rows.items():
                windows = self.windows.get(name)
                if windows is not None:
                    windows.add(self._fresh(name, windows, rows, before))
            watermark.update(batch.partition, batch.marker, now_ms)

    def _fresh(self, name: str, windows: KpiWindows, rows: list[tuple], before: int | None
               ) -> list[tuple]:
        pane_end = windows.calendar.pane_end
        if before is not None:
            seen = before - self.rules.kpis[name].lateness_ms
            rows = [row for row in rows if pane_end(row[0]) > seen]
        closed = windows.closed_through
        if closed is None or not rows:
            return rows
        fresh = [row for row in rows if pane_end(row[0]) > closed]
        self.late_panes[name] += len(rows) - len(fresh)
        return fresh

    def advance(self, now_ms: int | None = None) -> Step:
        """Hand on the panes this process's partitions made final, and close every window the
        watermarks allow (idle partitions left out, given ``now_ms``)."""
        for stage in self.sources.values():
            self.merge(stage.flush(now_ms), now_ms)
        step = Step()
        for source, watermark in self.watermarks.items():
            watermark.advance(now_ms, self.idle_timeout_ms)
            if watermark.current is None:
                continue
            cap = watermark.cap
            for kpi in self.rules.kpis_of(source):
                limit = watermark.current - kpi.lateness_ms
                if cap is not None:
                    limit = min(limit, cap - 1)
                step.windows.extend(self.windows[kpi.name].close(limit))
        return self._downstream(step)

    def finish(self) -> Step:
        """End of input (backtest): close every window that holds data."""
        for stage in self.sources.values():
            for batch in stage.flush(None):
                self.merge([batch])
            for number, partition in stage.partitions.items():
                rows = {name: held.take(FOREVER_MS) for name, held in partition.held.items()}
                self.merge([PaneBatch(stage.source.name, number, partition.marker(), rows)])
        step = Step()
        for windows in self.windows.values():
            last = windows.last_end()
            if last is not None:
                step.windows.extend(windows.close(last))
            windows.closed_through = FOREVER_MS
        return self._downstream(step)

    def given(self, windows: Sequence[ClosedWindow]) -> Step:
        """Take closed windows of aggregated KPIs as given (rule unit tests that state KPI
        values instead of events): derived KPIs and alerts follow as if they had closed."""
        for window in windows:
            state = self.windows[window.kpi]
            state.closed_through = max(state.closed_through or window.end_ms, window.end_ms)
        return self._downstream(Step(windows=sorted(windows, key=lambda w: w.end_ms)))

    def snapshot(self) -> dict:
        """All state as plain data, each KPI and alert under the signature of its definition.

        Restoring it (:meth:`restore`) into an engine of the same or an edited rule set
        continues exactly where this one stands; a KPI or alert whose definition changed
        starts afresh.
        """
        kpis = {name: (self.rules.kpis[name].signature, w.state())
                for name, w in self.windows.items()}
        kpis |= {name: (self.rules.kpis[name].signature, d.join.state())
                 for name, d in self.derived.items()}
        return {
            "version": SNAPSHOT_VERSION,
            "sources": {n: {"partitions": stage.state(), "watermark": self.watermarks[n].state()}
                        for n, stage in self.sources.items()},
            "kpis": kpis,
            "alerts": {e.rule.name: (e.rule.signature, e.state()) for e in self.alerts},
            "histories": {k: (self.rules.kpis[k].signature, h.state())
                          for k, h in self.histories.items()},
            "anomalies": {k: (self.rules.kpis[k].anomaly_signature, a.state())
                          for k, a in self.anomalies.items()},
            "targets": {k: (self.rules.kpis[k].signature, t.state())
                        for k, t in self.targets.items()},
        }

    def restore(self, snapshot: dict) -> None:
        """Continue from :meth:`snapshot`'s state (unchanged definitions only)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {snapshot.get('version')!r} is not "
                             f"{SNAPSHOT_VERSION}; start without it")
        for name, state in snapshot["sources"].items():
            if name in self.sources:
                self.sources[name].load(state["partitions"])
                self.watermarks[name].load(state["watermark"])
        for name, (signature, state) in snapshot["kpis"].items():
            kpi = self.rules.kpis.get(name)
            if kpi is None or kpi.signature != signature:
                continue
            if name in self.windows:
                self.windows[name].load(state)
            else:
                self.derived[name].join.load(state)
        for evaluator in self.alerts:
            signature, state = snapshot["alerts"].get(evaluator.rule.name, (None, None))
            if signature == evaluator.rule.signature:
                evaluator.load(state)
        for name, (signature, state) in snapshot["histories"].items():
            if name in self.histories and self.rules.kpis[name].signature == signature:
                self.histories[name].load(state)
        for name, (signature, state) in snapshot.get("anomalies", {}).items():
            if name in self.anomalies and self.rules.kpis[name].anomaly_signature == signature:
                self.anomalies[name].load(state)
        for name, (signature, state) in snapshot.get("targets", {}).items():
            if name in self.targets and self.rules.kpis[name].signature == signature:
                self.targets[name].load(state)

    def feedback(self, alert_id: str) -> str:
        """Feedback "not an anomaly" on an alert (its id as :attr:`AlertEvent.id` made it):
        the series' model learns the flagged window's value as normal.

        Returns ``accepted``, ``already``, ``unknown`` (see :meth:`KpiAnomalies.accept`), or
        ``pending`` when the window is not closed here yet (feedback read at start, before
        the replay from the checkpoint reaches it): it is tried again once it closes.
        """
        name, fp, end_ms = parse_alert_id(alert_id)
        rule = next((a for a in self.rules.alerts if a.name == name), None)
        models = None if rule is None else self.anomalies.get(rule.kpi)
        if models is None:
            return "unknown"
        labels = self.rules.kpis[rule.kpi].labels
        for key in models.flagged_series():
            if fingerprint(name, tuple(sorted(zip(labels, key, strict=True)))) == fp:
                return models.accept(key, end_ms)
        closed = self.closed_through(rule.kpi)
        if closed is None or closed < end_ms:
            self.pending_feedback[alert_id] = (rule.kpi, end_ms)
            return "pending"
        return "unknown"

    def closed_through(self, kpi: str) -> int | None:
        state = self.windows.get(kpi) or self.derived.get(kpi)
        return state.closed_through if state else None

    def _downstream(self, step: Step) -> Step:
        for derived in self.derived.values():
            for window in step.windows:
                if window.kpi in derived.inputs:
                    derived.offer(window)
            limits = {i: self.closed_through(i) for i in derived.inputs}
            step.windows.extend(derived.close(limits))
        step.windows = [self._assessed(w) for w in sorted(step.windows, key=lambda w: w.end_ms)]
        for window in step.windows:
            group = self.alert_groups.get(window.kpi)
            if group is not None:
                step.transitions.extend(group.step(window))
            history = self.histories.get(window.kpi)
            if history is not None:
                history.add(window.end_ms, window.values)
        for evaluator in self.composite:
            for window in step.windows:
                evaluator.offer(window)
            limits = {i: self.closed_through(i) for i in evaluator.inputs}
            step.transitions.extend(evaluator.evaluate(limits))
        step.transitions.sort(key=lambda e: e.at_ms)
        if self.explainers:
            step.transitions = [self._explained(t) for t in step.transitions]
        self._retry_feedback()
        return step

    def _explained(self, event: AlertEvent) -> AlertEvent:
        """A parent KPI's firing event with the parts that explain its change."""
        explainer = self.explainers.get(event.alert)
        if explainer is None or event.state != "firing":
            return event
        labels = dict(event.labels)
        key = tuple(labels[name] for name in self.rules.kpis[event.kpi].labels)
        return replace(event, explanation=explainer.explain(self.histories, key, event.at_ms))

    def _retry_feedback(self) -> None:
        """Apply pending feedback whose window has closed (else it was not this worker's)."""
        for alert_id, (kpi, end_ms) in list(self.pending_feedback.items()):
            closed = self.closed_through(kpi)
            if closed is not None and closed >= end_ms:
                del self.pending_feedback[alert_id]
                self.feedback(alert_id)

    def _assessed(self, window: ClosedWindow) -> ClosedWindow:
        """The window with its series judged by their anomaly models and measured against
        their targets, where the KPI has them."""
        models = self.anomalies.get(window.kpi)
        if models is not None:
            window = replace(window, judgements=models.judge(window))
        targets = self.targets.get(window.kpi)
        if targets is not None:
            window = replace(window, standings=targets.update(window))
        return window


def _histories(rules: RuleSet) -> dict[str, KpiHistory]:
    """A shared history per KPI that alerts read: as long as their baselines and charts need,
    and for the parts that explain a parent's alerts, as long as the explanation's baseline."""
    histories: dict[str, KpiHistory] = {}

    def keep(kpi: Kpi, span: int) -> None:
        hop = kpi.hop_ms or kpi.window_ms
        current = histories.get(kpi.name)
        if current is None or current.keep_ms < span:
            histories[kpi.name] = KpiHistory(hop, span)

    for rule in rules.alerts:
        kpi = rules.kpis[rule.kpi]
        span = max(rule.lookback_ms, CHART_POINTS * (kpi.hop_ms or kpi.window_ms))
        parts = parts_of(rules, kpi) if rule.absent_for_ms is None else ()
        if parts:
            explain = Explainer(rules, rule).lookback_ms + (kpi.hop_ms or kpi.window_ms)
            span = max(span, explain)
            for part in parts:
                keep(part, explain)
        keep(kpi, span)
    return histories


def _derived(kpi: Kpi, rules: RuleSet) -> DerivedWindows:
    inputs = {name: rules.kpis[name].by for name in kpi.inputs}
    zero = {n for n in kpi.inputs if (a := rules.kpis[n].agg) is not None and a.zero_when_empty}
    return DerivedWindows(kpi.name, kpi.formula, inputs, kpi.by, zero_inputs=zero)
