"""The hot path: consume every source topic in batches with aiokafka and drive the engine.

One ``getmany`` returns up to ``batch_max_records`` messages per call; each topic's share is
decoded and aggregated as one batch (see :mod:`kpistream.core.engine`), then windows are
closed and the step is handed to the sinks (exporter, alert console, delivery).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from kpistream.core.engine import Engine, Step
from kpistream.core.ruleset import RuleSet
from kpistream.errors import BrokerUnavailable, KpistreamError
from kpistream.settings import Settings
from kpistream.shell.broker import ensure_topics
from kpistream.shell.checkpoint import CheckpointStore
from kpistream.shell.exporter import Exporter
from kpistream.shell.feedback import FeedbackLog

__all__ = ["IngestService", "StatefulPart", "StepSink"]

log = logging.getLogger("kpistream.ingest")
StepSink = Callable[[Step], None]
#: checkpoints take at most 1/20 of the time
CHECKPOINT_TIME_SHARE = 20
#: a consume loop that has not polled for this long is stuck: /healthz fails
STALL_S = 120.0
#: how often, and how patiently, readiness asks the broker for metadata
BROKER_CHECK_S = 5.0


class StatefulPart(Protocol):
    """A part of the daemon whose state is checkpointed with the engine's."""

    name: str

    def snapshot(self) -> object: ...

    def restore(self, state: object) -> None: ...


class IngestService(mode.Service):
    """Consumes the rule set's source topics and feeds the engine, batch by batch."""

    def __init__(self, settings: Settings, rules: RuleSet, bootstrap: Callable[[], str],
                 exporter: Exporter, sinks: Sequence[StepSink] = (),
                 parts: Sequence[StatefulPart] = (), **kwargs) -> None:
        self.settings = settings
        self.rules = rules
        self.engine = Engine(rules, idle_timeout_ms=settings.idle_timeout,
                             max_future_ms=settings.max_future)
        self._bootstrap = bootstrap
        self.exporter = exporter
        exporter.watch_folded(lambda: {k: w.folded for k, w in self.engine.windows.items()})
        self.sinks = list(sinks)
        self.topics: dict[str, list[str]] = {}
        for source in rules.sources.values():
            self.topics.setdefault(source.topic, []).append(source.name)
        self.consumer: AIOKafkaConsumer | None = None
        self.dead_letters: AIOKafkaProducer | None = None
        #: set once partitions are assigned and the first poll returned (readiness)
        self.polling = False
        self._last_poll: float | None = None
        #: held while a batch is processed and checkpointed; on_stop waits for it
        self._idle = asyncio.Lock()
        self._broker_answers = False
        self._lags: dict[TopicPartition, int] = {}
        #: other state checkpointed with the engine's (alert delivery), by name
        self.parts = {part.name: part for part in parts}
        self.checkpoints: CheckpointStore | None = None
        #: next offset to read per partition: what a checkpoint covers
        self.offsets: dict[TopicPartition, int] = {}
        self._restored: dict[TopicPartition, int] = {}
        self._next_checkpoint = 0.0
        #: a validated rule set waiting to be swapped in between two polls (hot reload)
        self.pending_rules: RuleSet | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        bootstrap = self._bootstrap()
        await ensure_topics(bootstrap, {s.topic: s.partitions for s in self.rules.sources.values()})
        await self._restore(bootstrap)
        await self._follow_feedback(bootstrap)
        self.consumer = _consumer(bootstrap, self.settings)
        self.consumer.subscribe(list(self.topics), listener=_Rebalance(self._on_assigned))
        try:
            await self.consumer.start()
            if self.settings.dead_letter_topic:
                await ensure_topics(bootstrap, {self.settings.dead_letter_topic: 1})
                self.dead_letters = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
                await self.dead_letters.start()
        except KafkaError as e:
            raise BrokerUnavailable(f"cannot consume from {bootstrap}: {e}") from e
        log.info("consuming %s from %s (group %s)", ", ".join(self.topics), bootstrap,
                 self.settings.group_id)

    async def on_stop(self) -> None:
        await self._idle.acquire()  # let the batch in hand finish: its dead letters included
        if self.consumer is not None:
            if self.checkpoints is not None and self.offsets:
                await self.checkpoint()
            await self.consumer.stop()
        if self.checkpoints is not None:
            await self.checkpoints.stop()
        if self.dead_letters is not None:
            await self.dead_letters.stop()

    async def _restore(self, bootstrap: str) -> None:
        """Load the newest checkpoint: engine and parts' state, and the offsets it covers."""
        if not self.settings.checkpoint_interval:
            return
        self.checkpoints = CheckpointStore(bootstrap, self.settings.checkpoint_topic,
                                           self.settings.group_id)
        await self.checkpoints.start()
        found = await self.checkpoints.load()
        if found is None:
            log.info("no checkpoint for group %s: starting afresh", self.settings.group_id)
            return
        try:
            state = pickle.loads(found.state)
            self.engine.restore(state["engine"])
            for name, part in self.parts.items():
                if name in state:
                    part.restore(state[name])
        except (pickle.UnpicklingError, ValueError, KeyError, TypeError, AttributeError,
                ImportError, EOFError) as e:
            log.warning("checkpoint %s cannot be restored (%s: %s); starting afresh from the "
                        "committed offsets", found.id, type(e).__name__, e)
            self.engine = Engine(self.rules, idle_timeout_ms=self.settings.idle_timeout,
                                 max_future_ms=self.settings.max_future)
            return
        self.exporter.restored((e.rule.name, severity, key) for e in self.engine.alerts
                               for severity, key in e.firing())
        self._restored = dict(found.offsets)
        self.offsets = dict(found.offsets)
        log.info("restored checkpoint %s covering %d partition(s)", found.id, len(found.offsets))

    def alive(self) -> bool:
        """False when the consume loop stopped turning (a stuck worker)."""
        return self._last_poll is None or time.monotonic() - self._last_poll < STALL_S

    def readiness(self) -> dict[str, bool]:
        """The checks behind /readyz."""
        consumer = self.consumer
        return {"rules_loaded": bool(self.rules.kpis),
                "broker_connected": consumer is not None and self._broker_answers,
                "partitions_assigned": self.polling and bool(consumer and consumer.assignment())}

    @mode.Service.task
    async def _watch_broker(self) -> None:
        """Ask the broker for metadata every few seconds: readiness follows its answers."""
        while not self.should_stop:
            if self.consumer is not None:
                try:
                    await asyncio.wait_for(self.consumer.topics(), BROKER_CHECK_S)
                    self._broker_answers = True
                except (KafkaError, OSError, TimeoutError):
                    self._broker_answers = False
            await self.sleep(BROKER_CHECK_S)

    async def _follow_feedback(self, bootstrap: str) -> None:
        """Apply all anomaly feedback given so far, then follow the topic."""
        feedback = FeedbackLog(bootstrap, self.settings.feedback_topic)
        alert_ids, offset = await feedback.read_all()
        for alert_id in alert_ids:
            self._on_feedback(alert_id)
        self.add_future(feedback.follow(offset, self._on_feedback))

    def _on_feedback(self, alert_id: str) -> None:
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

    async def checkpoint(self) -> None:
        """Write the state and the offsets it covers as one checkpoint, then commit them."""
        assert self.checkpoints is not None and self.consumer is not None
        started = time.monotonic()
        if self.dead_letters is not None:  # the offsets below cover these messages
            await self.dead_letters.flush()
        state = {"engine": self.engine.snapshot(),
                 **{name: part.snapshot() for name, part in self.parts.items()}}
        for tp in self.consumer.assignment():  # quiet partitions too, so none is skipped
            self.offsets[tp] = await self.consumer.position(tp)
        offsets = dict(self.offsets)
        await self.checkpoints.save(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL),
                                    offsets)
        took = time.monotonic() - started
        # every checkpoint_interval, but never more than 5% of the time: a large state
        # (a backlog, many series) is checkpointed less often
        self._next_checkpoint = started + max(self.settings.checkpoint_interval / 1000,
                                              took * CHECKPOINT_TIME_SHARE)
        self.exporter.checkpointed.set(time.time())
        self.exporter.checkpoint_seconds.observe(took)
        try:
            await self.consumer.commit({tp: o for tp, o in offsets.items()
                                        if tp in self.consumer.assignment()})
        except KafkaError as e:  # the checkpoint holds the offsets; the commit is for tools
            log.warning("offset commit failed (%s); the checkpoint has them", e)

    @mode.Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=self.settings.poll_timeout,
                                                  max_records=self.settings.batch_max_records)
            self.polling = True
            self._last_poll = time.monotonic()
            async with self._idle:
                if self.should_stop:
                    break  # on_stop checkpoints what was processed
                if self.pending_rules is not None:
                    await self.swap_rules(self.pending_rules)
                await self.process(batches)
                if self.checkpoints and time.monotonic() >= self._next_checkpoint:
                    await self.checkpoint()

    async def swap_rules(self, rules: RuleSet) -> None:
        """Run ``rules`` from now on; unchanged KPIs and alerts keep their state."""
        self.pending_rules = None
        topics: dict[str, list[str]] = {}
        for source in rules.sources.values():
            topics.setdefault(source.topic, []).append(source.name)
        if set(topics) != set(self.topics):
            assert self.consumer is not None
            try:
                await ensure_topics(self._bootstrap(), {s.topic: s.partitions
                                                        for s in rules.sources.values()})
            except KpistreamError as e:  # try again at the next poll
                log.warning("rules version %s waits: %s", rules.version, e)
                self.pending_rules = rules
                return
            self.consumer.subscribe(list(topics), listener=_Rebalance(self._on_assigned))
        self._retire_alerts(rules)
        engine = Engine(rules, idle_timeout_ms=self.settings.idle_timeout,
                        max_future_ms=self.settings.max_future)
        engine.restore(self.engine.snapshot())
        self.engine, self.rules, self.topics = engine, rules, topics
        if self.consumer is not None:  # every source, new ones too, waits for its partitions
            self._on_assigned(self.consumer.assignment())
        self.exporter.use_rules(rules)
        for sink in self.sinks:  # those that render or route by the rules
            use_rules = getattr(sink, "use_rules", None)
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

    async def process(self, batches: dict) -> Step:
        """Ingest one poll (all partitions of a topic as one batch), close windows, hand on."""
        now_ms = int(time.time() * 1000)
        by_topic: dict[str, list[tuple[TopicPartition, list]]] = {}
        for tp, messages in batches.items():
            if messages:
                by_topic.setdefault(tp.topic, []).append((tp, messages))
                self._lag(tp, messages)
                self.offsets[tp] = messages[-1].offset + 1
        for topic, parts in by_topic.items():
            partitions = [(tp.partition, [m.value for m in messages]) for tp, messages in parts]
            for source in self.topics.get(topic, ()):
                result = self.engine.ingest_partitions(source, partitions, now_ms)
                self.exporter.count(source, result)
                if result.rejected:
                    messages = [m for _, ms in parts for m in ms]
                    await self._dead_letter(source, messages, result.rejected)
        step = self.engine.advance(now_ms)
        for source, runner in self.engine.sources.items():
            if runner.watermark is not None:
                self.exporter.watermark.labels(source).set(runner.watermark / 1000)
        for sink in self.sinks:
            sink(step)
        return step

    def _lag(self, tp, messages: list) -> None:
        """Lag from the fetch high watermark (the broker's ListOffsets can be wrong)."""
        assert self.consumer is not None
        high = self.consumer.highwater(tp)
        if not messages or high is None:
            return
        self._lags[tp] = max(high - messages[-1].offset - 1, 0)
        for source in self.topics.get(tp.topic, ()):
            total = sum(lag for t, lag in self._lags.items() if t.topic == tp.topic)
            self.exporter.lag.labels(source).set(total)

    def _on_assigned(self, assigned) -> None:
        now_ms = int(time.time() * 1000)
        assert self.consumer is not None
        for tp in assigned:
            if tp in self._restored:  # the checkpoint's offsets win over committed ones
                self.consumer.seek(tp, self._restored.pop(tp))
        for source_topic, sources in self.topics.items():
            partitions = [tp.partition for tp in assigned if tp.topic == source_topic]
            for source in sources:
                self.engine.assign(source, partitions, now_ms)
        self._lags = {tp: lag for tp, lag in self._lags.items() if tp in assigned}
        log.info("assigned %s", ", ".join(f"{tp.topic}/{tp.partition}" for tp in
                                          sorted(assigned)) or "nothing")

    async def _dead_letter(self, source: str, messages: list, rejected: list) -> None:
        if self.dead_letters is None:
            for index, reason in rejected[:3]:
                log.warning("invalid event in %s (offset %s): %s", source,
                            messages[index].offset, reason)
            return
        topic = self.settings.dead_letter_topic
        for index, reason in rejected:
            m = messages[index]
            headers = [("kpistream-source", source.encode()), ("kpistream-reason",
                       reason.encode()), ("kpistream-origin", f"{m.topic}/{m.partition}/"
                                          f"{m.offset}".encode())]
            await self.dead_letters.send(topic, m.value or b"", key=m.key, headers=headers)


class _Rebalance(ConsumerRebalanceListener):
    """Tells the engine which partitions this worker reads, so watermarks wait for them."""

    def __init__(self, on_assigned: Callable[[set[TopicPartition]], None]) -> None:
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.on_assigned(assigned)


def _consumer(bootstrap: str, settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        max_poll_records=settings.batch_max_records,
        group_id=settings.group_id,
        auto_offset_reset=settings.start_from,
        session_timeout_ms=settings.session_timeout,
        heartbeat_interval_ms=max(settings.session_timeout // 3, 100),
        max_partition_fetch_bytes=1024 * 1024,
        fetch_max_bytes=4 * 1024 * 1024,
        enable_auto_commit=False,  # offsets are committed after each checkpoint
    )
