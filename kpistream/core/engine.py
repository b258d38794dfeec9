"""The engine: batches of raw events in, closed windows and alert transitions out.

Synchronous and clock-free: the caller passes processing time (``now_ms``) when it has one.
``kpistream run`` feeds it Kafka batches, ``kpistream backtest`` file batches; nothing else
differs, so both give the same numbers.

Watermarks are per source (see :mod:`kpistream.core.watermarks`): the smallest of its
partitions' largest event times. An event is *late* for a KPI when it is older than
``watermark - lateness`` at its arrival; a window closes when its end is at or before
``watermark - lateness``. Partitions quiet for ``idle_timeout_ms`` of processing time are left
out, so windows still close when traffic stops.

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

import polars as pl

from kpistream.core.alerts import CHART_POINTS, AlertEvaluator, AlertGroup
from kpistream.core.anomalies import EIGHT_DAYS_MS, KpiAnomalies
from kpistream.core.baselines import KpiHistory
from kpistream.core.decode import Decoder, field_column
from kpistream.core.derived import DerivedWindows
from kpistream.core.notify.model import AlertEvent, fingerprint, parse_alert_id
from kpistream.core.ruleset import Kpi, RuleSet, Source
from kpistream.core.values import ClosedWindow
from kpistream.core.watermarks import Watermarks
from kpistream.core.windows import KpiWindows

__all__ = ["Engine", "IngestResult", "Step"]

FOREVER_MS = 2**62
SNAPSHOT_VERSION = 2


@dataclass
class IngestResult:
    """How a batch's events were counted, and why the invalid ones were rejected."""

    ok: int = 0
    invalid: int = 0
    late: int = 0
    filtered: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Step:
    """What closing windows produced: KPI values and alert transitions, in time order."""

    windows: list[ClosedWindow] = field(default_factory=list)
    transitions: list[AlertEvent] = field(default_factory=list)


class SourceRunner:
    """Decodes one source's batches and keeps the window state of its KPIs."""

    def __init__(self, source: Source, kpis: list[Kpi], idle_timeout_ms: int) -> None:
        self.source = source
        self.kpis = kpis
        self.decoder = Decoder(source.time_field, source.fields)
        self.windows = {
            k.name: KpiWindows(k.name, k.agg, k.calendar, k.series_ttl_ms, len(k.by),
                               max_series=k.max_series)
            for k in kpis
        }
        self.max_lateness_ms = max((k.lateness_ms for k in kpis), default=0)
        self.watermarks = Watermarks(idle_timeout_ms)

    @property
    def watermark(self) -> int | None:
        return self.watermarks.current

    def ingest(self, batches: Sequence[tuple[int, Sequence[bytes]]], now_ms: int | None,
               max_future_ms: int) -> IngestResult:
        """Ingest ``(partition, messages)`` batches as one: decoded and aggregated together.

        ``rejected`` indexes count through the batches in order.
        """
        values = [v for _, messages in batches for v in messages]
        max_time = None if now_ms is None else now_ms + max_future_ms
        decoded = self.decoder.decode(values, max_time_ms=max_time)
        result = IngestResult(invalid=len(decoded.invalid), rejected=decoded.invalid)
        frame = decoded.frame
        if frame.height:
            partitions = pl.concat([pl.repeat(p, len(m), dtype=pl.Int32, eager=True)
                                    for p, m in batches])
            frame = frame.with_columns(partitions.gather(frame["__row"]).alias("__part"))
            self._aggregate(frame, result, self._event_watermarks(
                {p for p, _ in batches}, now_ms))
            highs = frame.group_by("__part").agg(pl.col("__ts").max()).iter_rows()
            self.watermarks.observe(dict(highs), now_ms)
        return result

    def _event_watermarks(self, partitions: set[int], now_ms: int | None) -> pl.Expr:
        """The watermark each event meets when it arrives.

        Its own partition's running maximum (from before the batch on), capped by the other
        live partitions' progress before the batch, and never below the watermark already
        reached (windows up to it are closed). A live partition without data caps at -inf:
        then only the reached watermark counts.
        """
        own = {p: self.watermarks.high(p) for p in partitions}
        floor = {p: float(self.watermarks.others_floor(p, now_ms)) for p in partitions}
        part = pl.col("__part")
        running = pl.max_horizontal(
            pl.col("__ts").cum_max().over("__part"),
            part.replace_strict(own, default=None, return_dtype=pl.Int64))
        capped = pl.min_horizontal(running.cast(pl.Float64),
                                   part.replace_strict(floor, return_dtype=pl.Float64))
        if self.watermark is not None:
            capped = pl.max_horizontal(capped, pl.lit(float(self.watermark)))
        return capped

    def _aggregate(self, frame: pl.DataFrame, result: IngestResult, watermarks: pl.Expr
                   ) -> None:
        ts, wm = pl.col("__ts"), pl.col("__wm")
        lazy = frame.lazy().with_columns(watermarks.alias("__wm"))
        queries = [self._query(lazy, k) for k in self.kpis]
        on_time = ts >= wm - self.max_lateness_ms
        matched = pl.any_horizontal([_where(k) for k in self.kpis]) if self.kpis else pl.lit(False)
        counts = lazy.select((~on_time).sum().alias("late"), (on_time & matched).sum().alias("ok"))
        *groups, totals = pl.collect_all([*queries, counts])
        for kpi, grouped in zip(self.kpis, groups, strict=True):
            self.windows[kpi.name].add(grouped.rows())
        result.late, result.ok = totals.row(0)
        result.filtered = frame.height - result.late - result.ok

    @staticmethod
    def _query(lazy: pl.LazyFrame, kpi: Kpi) -> pl.LazyFrame:
        ts = pl.col("__ts")
        keep = (ts >= pl.col("__wm") - kpi.lateness_ms) & _where(kpi)
        keys = [kpi.calendar.pane_starts(ts).alias("__pane")]
        keys += [field_column(f).fill_null("").alias(f"__by{i}") for i, f in enumerate(kpi.by)]
        column = field_column(kpi.agg.field) if kpi.agg.field else pl.lit(None)
        partials = [e.alias(f"__p{i}") for i, e in enumerate(kpi.agg.partial_exprs(column))]
        return lazy.filter(keep).group_by(keys).agg(partials)


def _where(kpi: Kpi) -> pl.Expr:
    return pl.lit(True) if kpi.where is None else kpi.where.fill_null(False)


class Engine:
    """Runs a rule set over batches of events from any number of sources."""

    def __init__(self, rules: RuleSet, *, idle_timeout_ms: int = 15_000,
                 max_future_ms: int = 3_600_000) -> None:
        self.rules = rules
        self.idle_timeout_ms = idle_timeout_ms
        self.max_future_ms = max_future_ms
        self.sources = {n: SourceRunner(s, rules.kpis_of(n), idle_timeout_ms)
                        for n, s in rules.sources.items()}
        self.windows = {k: w for r in self.sources.values() for k, w in r.windows.items()}
        self.derived = {k.name: _derived(k, rules) for k in rules.kpis.values() if k.derived}
        self.histories = _histories(rules)
        self.anomalies = {
            k.name: KpiAnomalies(k.anomaly, k.anomaly_exclude,
                                 max(k.series_ttl_ms, EIGHT_DAYS_MS))
            for k in rules.kpis.values() if k.anomaly is not None}
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
        """The partitions of ``source`` this worker reads (after a rebalance)."""
        self.sources[source].watermarks.assign(partitions, now_ms)

    def advance(self, now_ms: int | None = None) -> Step:
        """Close every window the watermarks allow (idle partitions left out, given ``now_ms``)."""
        for runner in self.sources.values():
            runner.watermarks.advance(now_ms)
        step = Step()
        for runner in self.sources.values():
            if runner.watermark is None:
                continue
            for kpi in runner.kpis:
                limit = runner.watermark - kpi.lateness_ms
                step.windows.extend(self.windows[kpi.name].close(limit))
        return self._downstream(step)

    def finish(self) -> Step:
        """End of input (backtest): close every window that holds data."""
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
            "sources": {n: r.watermarks.state() for n, r in self.sources.items()},
            "kpis": kpis,
            "alerts": {e.rule.name: (e.rule.signature, e.state()) for e in self.alerts},
            "histories": {k: (self.rules.kpis[k].signature, h.state())
                          for k, h in self.histories.items()},
            "anomalies": {k: (self.rules.kpis[k].anomaly_signature, a.state())
                          for k, a in self.anomalies.items()},
        }

    def restore(self, snapshot: dict) -> None:
        """Continue from :meth:`snapshot`'s state (unchanged definitions only)."""
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {snapshot.get('version')!r} is not "
                             f"{SNAPSHOT_VERSION}; start without it")
        for name, state in snapshot["sources"].items():
            if name in self.sources:
                self.sources[name].watermarks.load(state)
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
        step.windows = [self._judged(w) for w in sorted(step.windows, key=lambda w: w.end_ms)]
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
        self._retry_feedback()
        return step

    def _retry_feedback(self) -> None:
        """Apply pending feedback whose window has closed (else it was not this worker's)."""
        for alert_id, (kpi, end_ms) in list(self.pending_feedback.items()):
            closed = self.closed_through(kpi)
            if closed is not None and closed >= end_ms:
                del self.pending_feedback[alert_id]
                self.feedback(alert_id)

    def _judged(self, window: ClosedWindow) -> ClosedWindow:
        models = self.anomalies.get(window.kpi)
        return window if models is None else replace(window, judgements=models.judge(window))


def _histories(rules: RuleSet) -> dict[str, KpiHistory]:
    """A shared history per KPI that alerts read: as long as their baselines and charts need."""
    histories: dict[str, KpiHistory] = {}
    for rule in rules.alerts:
        kpi = rules.kpis[rule.kpi]
        hop = kpi.hop_ms or kpi.window_ms
        keep = max(rule.lookback_ms, CHART_POINTS * hop)
        current = histories.get(rule.kpi)
        if current is None or current.keep_ms < keep:
            histories[rule.kpi] = KpiHistory(hop, keep)
    return histories


def _derived(kpi: Kpi, rules: RuleSet) -> DerivedWindows:
    inputs = {name: rules.kpis[name].by for name in kpi.inputs}
    zero = {n for n in kpi.inputs if (a := rules.kpis[n].agg) is not None and a.zero_when_empty}
    return DerivedWindows(kpi.name, kpi.formula, inputs, kpi.by, zero_inputs=zero)
