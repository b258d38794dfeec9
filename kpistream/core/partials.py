"""Stage one of two: each source partition's events aggregated into panes, handed on when final.

A worker reads some partitions of a source. For each partition it decodes the events,
aggregates them per KPI, pane and series (one polars query per batch), and holds the pane
states until the partition's progress passes the pane's end plus the KPI's lateness. Then the
pane is *final*: it goes out in a :class:`PaneBatch` with the partition's progress, and the
merge stage (:class:`~kpistream.core.engine.Engine`) combines the panes of every partition
into windows. One worker or ten, the same events make the same panes, so they make the same
windows.

A pane is final exactly once per partition, whatever the batches looked like: an event is late
when it is older than its partition's progress minus the KPI's lateness, and progress is a
function of the partition's events in order (and of the clock, for an idle partition only).
So a partition replayed from a checkpoint hands on the very same panes again, and the merge
stage tells repeats from new panes by the partition's progress alone.

>>> from kpistream.core.loader import load_rules_text
>>> rules = load_rules_text('''
... sources: [{name: orders, topic: t}]
... kpis: [{name: n, source: orders, agg: count(), window: 1m, lateness: 0s}]
... ''')
>>> stage = SourcePartitions(rules.sources["orders"], rules.kpis_of("orders"), 15_000)
>>> stage.ingest([(0, [b'{"ts": 1700000010000}', b'{"ts": 1700000070000}'])], None, 0).ok
2
>>> [(b.partition, b.progress, b.rows) for b in stage.flush(None)]
[(0, 1700000070000, {'n': [(1699999980000, 1)]})]
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import polars as pl

from kpistream.core.decode import Decoder, field_column
from kpistream.core.ruleset import Kpi, Source
from kpistream.core.values import SeriesKey
from kpistream.core.watermarks import Marker, PartitionProgress
from kpistream.core.windows import OTHER

__all__ = ["IngestResult", "PaneBatch", "SourcePartitions"]


@dataclass
class IngestResult:
    """How a batch's events were counted, and why the invalid ones were rejected."""

    ok: int = 0
    invalid: int = 0
    late: int = 0
    filtered: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class PaneBatch:
    """The panes of one source partition that became final, and the partition's marker.

    ``rows`` holds, per KPI, ``(pane_start, *label_values, *partial)`` rows: the rows
    :meth:`KpiWindows.add <kpistream.core.windows.KpiWindows.add>` merges.
    """

    source: str
    partition: int
    marker: Marker
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    #: the progress of the partition's batch before this one (None: the first since a fresh
    #: start): the merge takes a batch only after the one it follows, so none is skipped
    follows: int | None = None

    @property
    def progress(self) -> int | None:
        return self.marker.progress


class _HeldPanes:
    """The panes of one KPI in one partition that are not final yet."""

    def __init__(self, kpi: Kpi) -> None:
        self.kpi = kpi
        self.width = len(kpi.by)
        self.other: SeriesKey = (OTHER,) * self.width
        #: pane start -> series -> aggregation state
        self.panes: dict[int, dict[SeriesKey, object]] = {}
        #: series in the held panes (the cardinality guard counts them)
        self.series: set[SeriesKey] = set()

    def add(self, rows: Sequence[tuple]) -> int:
        """Merge polars partial rows ``(pane, *labels, *partials)`` into the held panes;
        returns how many were folded into ``__other__``.

        When the rows may reach ``max_series``, they go in label order, so which new label
        sets keep a series of their own does not depend on polars' grouping order.
        """
        folded = 0
        agg, width, series = self.kpi.agg, self.width, self.series
        limit = self.kpi.max_series
        if width and len(series) + len(rows) > limit:
            rows = sorted(rows, key=lambda row: (row[1:1 + width], row[0]))
        for row in rows:
            pane, key = row[0], row[1:1 + width]
            if width and key not in series:
                if key != self.other and len(series) - (self.other in series) >= limit:
                    key = self.other  # the cardinality guard (the merge stage has its own)
                    folded += 1
                series.add(key)
            states = self.panes.setdefault(pane, {})
            state = states.get(key)
            states[key] = agg.merge(agg.empty() if state is None else state, row[1 + width:])
        return folded

    def take(self, limit_ms: int) -> list[tuple]:
        """Remove the panes ending at or before ``limit_ms``, as rows for the merge stage."""
        calendar, agg = self.kpi.calendar, self.kpi.agg
        final = sorted(p for p in self.panes if calendar.pane_end(p) <= limit_ms)
        rows = [(pane, *key, *agg.as_partial(state))
                for pane in final for key, state in self.panes.pop(pane).items()]
        if final and self.width:
            self.series = {key for states in self.panes.values() for key in states}
        return rows

    def first_end(self) -> int | None:
        return min((self.kpi.calendar.pane_end(p) for p in self.panes), default=None)


class _Partition:
    """One partition's progress and held panes."""

    def __init__(self, kpis: Sequence[Kpi]) -> None:
        self.progress = PartitionProgress()
        self.held = {k.name: _HeldPanes(k) for k in kpis}
        #: the marker last handed on, and when (processing time)
        self.sent: Marker | None = None
        self.sent_ms: int | None = None

    def marker(self) -> Marker:
        ends = [e for h in self.held.values() if (e := h.first_end()) is not None]
        return Marker(self.progress.progress, self.progress.idle, min(ends, default=None))

    def state(self) -> dict:
        """The partition's state; each KPI's panes under the signature of its definition."""
        return {"progress": self.progress.state(), "sent": self.sent,
                "held": {name: (h.kpi.signature, h.panes) for name, h in self.held.items()}}

    def load(self, state: dict) -> None:
        """Continue from :meth:`state` (panes of KPIs whose definition changed are dropped)."""
        self.progress = PartitionProgress.loaded(state["progress"])
        self.sent = state["sent"]
        for name, (signature, panes) in state["held"].items():
            held = self.held.get(name)
            if held is not None and held.kpi.signature == signature:
                held.panes = panes
                held.series = {key for states in panes.values() for key in states}


class SourcePartitions:
    """Stage one for one source: the partitions of it that this worker reads."""

    def __init__(self, source: Source, kpis: list[Kpi], idle_timeout_ms: int) -> None:
        self.source = source
        self.kpis = kpis
        self.idle_timeout_ms = idle_timeout_ms
        self.decoder = Decoder(source.time_field, source.fields)
        self.max_lateness_ms = max((k.lateness_ms for k in kpis), default=0)
        self.partitions: dict[int, _Partition] = {}
        #: rows of new label sets folded into ``__other__`` since start, per KPI
        self.folded = dict.fromkeys((k.name for k in kpis), 0)

    def assign(self, partitions: Iterable[int], now_ms: int | None) -> None:
        """The partitions this worker reads now; a new one is not idle before it had the
        chance to bring data."""
        wanted = set(partitions)
        for p in list(self.partitions):
            if p not in wanted:
                del self.partitions[p]
        for p in wanted:
            self._partition(p).progress.last_arrival_ms = now_ms

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
            self._aggregate(frame, result, {p for p, _ in batches})
            highs = frame.group_by("__part").agg(pl.col("__ts").max()).iter_rows()
            for partition, high in highs:
                self._partition(partition).progress.observe(high, now_ms)
        return result

    def flush(self, now_ms: int | None, quiet: Collection[int] | None = None
              ) -> list[PaneBatch]:
        """The panes that became final, per partition, with a marker for every partition
        whose marker changed.

        Only partitions in ``quiet`` (all when None) may be idle, moving on with ``now_ms``:
        the caller names those it has read to their end, so a partition with events waiting
        (a reader that stalled, a broker that was away) does not move past them.
        """
        out = []
        for number, partition in sorted(self.partitions.items()):
            if quiet is None or number in quiet:
                partition.progress.tick(now_ms, self.idle_timeout_ms)
            else:
                partition.progress.busy(now_ms)
            progress = partition.progress.progress
            rows = {}
            if progress is not None:
                for kpi in self.kpis:
                    taken = partition.held[kpi.name].take(progress - kpi.lateness_ms)
                    if taken:
                        rows[kpi.name] = taken
            marker = partition.marker()
            if rows or self._news(partition, marker, now_ms):
                follows = partition.sent.progress if partition.sent else None
                partition.sent, partition.sent_ms = marker, now_ms
                out.append(PaneBatch(self.source.name, number, marker, rows, follows))
        return out

    def _news(self, partition: _Partition, marker: Marker, now_ms: int | None) -> bool:
        """Whether a marker without panes is worth a batch: when the partition turns idle or
        back, or holds other panes, or its progress may close a window (it crossed a pane end
        plus a KPI's lateness) — not at every poll, as an idle partition's progress moves on —
        and for an idle partition every third of the idle timeout, so that the merge stage
        knows its reader is alive (see :meth:`Watermark.settle`)."""
        sent = partition.sent
        if sent is None or (marker.idle, marker.held_from) != (sent.idle, sent.held_from):
            return True
        if marker.idle and now_ms is not None and partition.sent_ms is not None and \
                now_ms - partition.sent_ms >= self.idle_timeout_ms // 3:
            return True
        if marker.progress == sent.progress or marker.progress is None:
            return False
        if sent.progress is None:
            return True
        return any(k.calendar.pane_start(marker.progress - k.lateness_ms)
                   != k.calendar.pane_start(sent.progress - k.lateness_ms) for k in self.kpis)

    def state(self, partitions: Iterable[int] | None = None) -> dict[int, dict]:
        """The state of ``partitions`` (all by default), each on its own: a partition's state
        moves with it to the worker that reads it next."""
        chosen = self.partitions if partitions is None else partitions
        return {p: self.partitions[p].state() for p in chosen if p in self.partitions}

    def load(self, states: dict[int, dict]) -> None:
        for number, state in states.items():
            self._partition(number).load(state)

    def _partition(self, number: int) -> _Partition:
        partition = self.partitions.get(number)
        if partition is None:
            partition = self.partitions[number] = _Partition(self.kpis)
        return partition

    def _aggregate(self, frame: pl.DataFrame, result: IngestResult, partitions: set[int]
                   ) -> None:
        ts, wm = pl.col("__ts"), pl.col("__wm")
        lazy = frame.lazy().with_columns(self._event_watermarks(partitions).alias("__wm"))
        queries = [self._query(lazy, k) for k in self.kpis]
        on_time = ts >= wm - self.max_lateness_ms
        matched = pl.any_horizontal([_where(k) for k in self.kpis]) if self.kpis else pl.lit(False)
        counts = lazy.select((~on_time).sum().alias("late"), (on_time & matched).sum().alias("ok"))
        *groups, totals = pl.collect_all([*queries, counts])
        for kpi, grouped in zip(self.kpis, groups, strict=True):
            rows_by_partition: dict[int, list[tuple]] = {}
            for row in grouped.rows():
                rows_by_partition.setdefault(row[0], []).append(row[1:])
            for number, rows in rows_by_partition.items():
                self.folded[kpi.name] += self.partitions[number].held[kpi.name].add(rows)
        result.late, result.ok = totals.row(0)
        result.filtered = frame.height - result.late - result.ok

    def _event_watermarks(self, partitions: set[int]) -> pl.Expr:
        """The progress each event meets when it arrives: its partition's, from before the
        batch on (an event older than that minus a KPI's lateness is late for it)."""
        before = {p: self._partition(p).progress.progress for p in partitions}
        return pl.max_horizontal(
            pl.col("__ts").cum_max().over("__part"),
            pl.col("__part").replace_strict(before, default=None, return_dtype=pl.Int64))

    @staticmethod
    def _query(lazy: pl.LazyFrame, kpi: Kpi) -> pl.LazyFrame:
        ts = pl.col("__ts")
        keep = (ts >= pl.col("__wm") - kpi.lateness_ms) & _where(kpi)
        keys = [pl.col("__part"), kpi.calendar.pane_starts(ts).alias("__pane")]
        keys += [field_column(f).fill_null("").alias(f"__by{i}") for i, f in enumerate(kpi.by)]
        column = field_column(kpi.agg.field) if kpi.agg.field else pl.lit(None)
        partials = [e.alias(f"__p{i}") for i, e in enumerate(kpi.agg.partial_exprs(column))]
        return lazy.filter(keep).group_by(keys).agg(partials)


def _where(kpi: Kpi) -> pl.Expr:
    return pl.lit(True) if kpi.where is None else kpi.where.fill_null(False)
