"""Stage two: merge every worker's final panes into windows, and run what follows on them.

The panes topic has one partition, so one worker of the group merges at a time (its own
consumer group, ``<group id>.merge``): it closes the windows, runs derived KPIs, anomaly
models and alerts, exports KPI values and delivers notifications. That keeps one owner per
series, and alert grouping across KPIs, with no protocol of our own; the work it does grows
with series and windows, not with events (see ``bench/scale_out.py``).

Its state (the engine's and the delivery's) is checkpointed with the panes topic offset it
covers; a worker that takes the partition over restores it and reads on from there, so its
results are the same, and notifications may repeat once (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import mode
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from kpistream.core.engine import Engine, Step
from kpistream.core.partials import PaneBatch
from kpistream.core.ruleset import RuleSet
from kpistream.errors import BrokerUnavailable, KpistreamError
from kpistream.settings import Settings
from kpistream.shell.broker import topic_partitions
from kpistream.shell.checkpoint import CheckpointStore
from kpistream.shell.exporter import Exporter
from kpistream.shell.feedback import FeedbackLog
from kpistream.shell.ingest import Pacer, ensure_panes_topic, group_consumer

__all__ = ["MERGE_SLICE", "MergeService", "StatefulPart", "StepSink"]

log = logging.getLogger("kpistream.merge")
StepSink = Callable[[Step], None]
#: the checkpoint slice of the merge stage
MERGE_SLICE = "merge"


class StatefulPart(Protocol):
    """A part of the daemon whose state is checkpointed with the merge stage's."""

    name: str

    def snapshot(self) -> object: ...

    def restore(self, state: object) -> None: ...


class MergeService(mode.Service):
    """Owns the merge stage while this worker holds the panes topic's partition."""

    def __init__(self, settings: Settings, rules: RuleSet, bootstrap: Callable[[], str],
                 exporter: Exporter, sinks: Sequence[StepSink] = (),
                 parts: Sequence[StatefulPart] = (), **kwargs) -> None:
        self.settings = settings
        self.rules = rules
        self.engine = self._engine(rules)
        self._bootstrap = bootstrap
        self.exporter = exporter
        exporter.watch_folded(lambda: self.engine.folded(), stage="merge")
        self.sinks = list(sinks)
        #: other state checkpointed with the engine's (alert delivery), by name
        self.parts = {part.name: part for part in parts}
        self.consumer: AIOKafkaConsumer | None = None
        self.checkpoints: CheckpointStore | None = None
        self.tp = TopicPartition(settings.panes, 0)
        #: True while this worker merges
        self.owner = False
        #: next panes topic offset to read: what a checkpoint covers
        self.offset: int | None = None
        self._pacer = Pacer(settings.checkpoint_interval / 1000)
        self._idle = asyncio.Lock()
        #: a take-over failed (the broker did not answer): the consume loop tries again
        self.taking_over = False
        self._late: dict[str, int] = {}
        #: every anomaly feedback given (alert ids): a new owner applies them all
        self._feedback_ids: list[str] = []
        #: a validated rule set waiting to be swapped in between two polls (hot reload)
        self.pending_rules: RuleSet | None = None
        super().__init__(**kwargs)

    def _engine(self, rules: RuleSet) -> Engine:
        return Engine(rules, idle_timeout_ms=self.settings.idle_timeout,
                      max_future_ms=self.settings.max_future)

    async def on_start(self) -> None:
        bootstrap = self._bootstrap()
        await ensure_panes_topic(bootstrap, self.settings)
        if self.settings.checkpoint_interval:
            self.checkpoints = CheckpointStore(bootstrap, self.settings.checkpoint_topic,
                                               self.settings.group_id)
            await self.checkpoints.start()
        await self._follow_feedback(bootstrap)
        self.consumer = group_consumer(bootstrap, self.settings, f"{self.settings.group_id}.merge")
        self.consumer.subscribe([self.settings.panes], listener=_Rebalance(self))

    async def on_stop(self) -> None:
        if self.consumer is not None:
            async with self._idle:
                if self.owner and self.checkpoints is not None:
                    await self.checkpoint()
            await self.consumer.stop()
        if self.checkpoints is not None:
            await self.checkpoints.stop()

    async def take_over(self) -> None:
        """This worker merges from now on: restore the merge checkpoint, read on from it.
        When the broker does not answer, the consume loop tries again."""
        async with self._idle:
            await self._try_take_over()

    async def _try_take_over(self) -> None:
        try:
            await self._take_over()
        except (KafkaError, KpistreamError) as e:
            log.warning("taking the merge over failed (%s: %s); trying again",
                        type(e).__name__, e)
            self.taking_over = True

    async def _take_over(self) -> None:
        assert self.consumer is not None
        self.taking_over = False
        self.engine = self._engine(self.rules)
        found = {} if self.checkpoints is None else await self.checkpoints.load([MERGE_SLICE])
        checkpoint = found.get(MERGE_SLICE)
        if checkpoint is not None and self._restore(checkpoint.state):
            self.offset = checkpoint.offsets[self.tp]
            self.consumer.seek(self.tp, self.offset)
            log.info("merge stage restored from checkpoint %s", checkpoint.id)
        else:
            await self.consumer.seek_to_beginning(self.tp)
            self.offset = None
        await self._expect_partitions()
        self.owner = True
        for alert_id in self._feedback_ids:  # the models restored here learn them
            self._apply_feedback(alert_id)
        log.info("this worker merges the panes of every partition")

    def _restore(self, data: bytes) -> bool:
        try:
            state = pickle.loads(data)
            self.engine.restore(state["engine"])
            for name, part in self.parts.items():
                if name in state:
                    part.restore(state[name])
        except (pickle.UnpicklingError, ValueError, KeyError, TypeError, AttributeError,
                ImportError, EOFError) as e:
            log.warning("merge checkpoint cannot be restored (%s: %s); merging afresh from "
                        "the start of the panes topic", type(e).__name__, e)
            self.engine = self._engine(self.rules)
            return False
        self.exporter.restored((e.rule.name, severity, key) for e in self.engine.alerts
                               for severity, key in e.firing())
        return True

    async def hand_over(self) -> None:
        """Another worker merges from now on: checkpoint, and stop exporting our series."""
        async with self._idle:
            if not self.owner:
                return
            if self.checkpoints is not None:
                try:
                    await self.checkpoint()
                except KpistreamError as e:
                    log.warning("checkpoint before handing over failed: %s", e)
            self.owner = False
            self.exporter.disown()
            self.engine = self._engine(self.rules)
            log.info("merging handed over")

    async def _expect_partitions(self) -> None:
        """Windows wait for every partition of every source, whoever reads it."""
        topics = {source.topic for source in self.rules.sources.values()}
        partitions = await topic_partitions(self._bootstrap(), topics)
        for name, source in self.rules.sources.items():
            if source.topic not in partitions:
                raise BrokerUnavailable(f"no metadata for topic {source.topic}")
            self.engine.expect(name, partitions[source.topic])

    async def checkpoint(self) -> None:
        """Write the merge state with the panes topic offset it covers."""
        assert self.checkpoints is not None and self.consumer is not None
        started = time.monotonic()
        state = {"engine": self.engine.snapshot(),
                 **{name: part.snapshot() for name, part in self.parts.items()}}
        if self.offset is None:
            self.offset = await self.consumer.position(self.tp)
        await self.checkpoints.save({MERGE_SLICE: (
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), {self.tp: self.offset})})
        took = time.monotonic() - started
        self._pacer.wrote(started, took)
        self.exporter.checkpointed.set(time.time())
        self.exporter.checkpoint_seconds.observe(took)

    @mode.Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        # started here, not in on_start: joining the group (which the broker may hold for
        # seconds) then overlaps with stage one's start and join
        await self.consumer.start()
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=self.settings.poll_timeout,
                                                  max_records=self.settings.batch_max_records)
            async with self._idle:
                if self.should_stop:
                    break
                if self.taking_over:
                    await self._try_take_over()
                    continue
                if not self.owner:
                    continue
                try:
                    await self._step(batches.get(self.tp, []))
                except (KafkaError, KpistreamError) as e:  # the state stays in memory
                    log.warning("merge stage: %s: %s; trying again later", type(e).__name__, e)
                    self._pacer.wrote(time.monotonic(), 0.0)

    async def _step(self, records: list) -> None:
        """Merge the records read from the next offset on (a poll that spans a take-over may
        hold others), then checkpoint when due."""
        records = [r for r in records if self.offset is None or r.offset >= self.offset]
        if records:
            self.offset = records[-1].offset + 1
        if self.pending_rules is not None:
            await self.swap_rules(self.pending_rules)
        self.process([b for r in records if (b := _pane_batch(r)) is not None])
        if self.checkpoints and time.monotonic() >= self._pacer.due:
            await self.checkpoint()

    def process(self, batches: list) -> Step:
        """Merge the panes, close windows, hand the step to the sinks."""
        now_ms = int(time.time() * 1000)
        self.engine.merge(batches, now_ms)
        step = self.engine.advance(now_ms)
        for source in self.rules.sources:
            watermark = self.engine.watermark(source)
            if watermark is not None:
                self.exporter.watermark.labels(source).set(watermark / 1000)
        for kpi, late in self.engine.late_panes.items():
            if late > self._late.get(kpi, 0):
                self.exporter.late_panes.labels(kpi).inc(late - self._late.get(kpi, 0))
        self._late = dict(self.engine.late_panes)
        for sink in self.sinks:
            sink(step)
        return step

    async def swap_rules(self, rules: RuleSet) -> None:
        """Run ``rules`` from now on; unchanged KPIs and alerts keep their state."""
        self.pending_rules = None
        self._retire_alerts(rules)
        engine = self._engine(rules)
        engine.restore(self.engine.snapshot())
        self.engine, self.rules = engine, rules
        self._late = dict(engine.late_panes)
        if self.owner:
            await self._expect_partitions()
        self.exporter.use_rules(rules)
        users = {id(x): x for x in (*self.sinks, *self.parts.values())}
        for user in users.values():  # those that render or route by the rules
            use_rules = getattr(user, "use_rules", None)
            if use_rules is not None:
                use_rules(rules)
        log.info("rules version %s live", rules.version)

    def _retire_alerts(self, rules: RuleSet) -> None:
        """Alerts removed or changed by a reload resolve what they had firing."""
        kept = {r.name: r.signature for r in rules.alerts}
        step = Step()
        for evaluator in self.engine.alerts:
            if kept.get(evaluator.rule.name) != evaluator.rule.signature:
                at_ms = self.engine.closed_through(evaluator.rule.kpi) or int(time.time() * 1000)
                step.transitions += evaluator.retire(at_ms)
        if step.transitions:
            for sink in self.sinks:
                sink(step)

    async def _follow_feedback(self, bootstrap: str) -> None:
        """Apply all anomaly feedback given so far, then follow the topic."""
        feedback = FeedbackLog(bootstrap, self.settings.feedback_topic)
        alert_ids, offset = await feedback.read_all()
        self._feedback_ids.extend(alert_ids)
        self.add_future(feedback.follow(offset, self._on_feedback))

    def _on_feedback(self, alert_id: str) -> None:
        self._feedback_ids.append(alert_id)
        if self.owner:
            self._apply_feedback(alert_id)

    def _apply_feedback(self, alert_id: str) -> None:
        try:
            result = self.engine.feedback(alert_id)
        except ValueError as e:
            log.warning("feedback ignored: %s", e)
            return
        self.exporter.feedback.labels(result).inc()
        if result == "accepted":
            log.info("feedback on %s: the model learnt that window as normal", alert_id)
        else:
            log.debug("feedback on %s: %s here", alert_id, result)


def _pane_batch(record) -> PaneBatch | None:
    """A record's pane batch; anything else in the topic is logged and skipped."""
    try:
        batch = pickle.loads(record.value)
    except Exception as e:  # whatever a foreign record holds, it must not stop the merge
        log.warning("panes topic offset %d is not a pane batch (%s); skipped", record.offset, e)
        return None
    if not isinstance(batch, PaneBatch):
        log.warning("panes topic offset %d is not a pane batch; skipped", record.offset)
        return None
    return batch


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: MergeService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.service.tp in revoked:
            await self.service.hand_over()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.service.tp in assigned:
            await self.service.take_over()
