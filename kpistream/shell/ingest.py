"""The hot path: consume every source topic in batches with aiokafka and drive the engine.

One ``getmany`` returns up to ``batch_max_records`` messages per call; each topic's share is
decoded and aggregated as one batch (see :mod:`kpistream.core.engine`), then windows are
closed and the step is handed to the sinks (exporter, alert console, delivery).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from kpistream.core.engine import Engine, Step
from kpistream.core.ruleset import RuleSet
from kpistream.errors import BrokerUnavailable
from kpistream.settings import Settings
from kpistream.shell.broker import ensure_topics, wait_for_broker
from kpistream.shell.exporter import Exporter

__all__ = ["IngestService", "StepSink"]

log = logging.getLogger("kpistream.ingest")
StepSink = Callable[[Step], None]


class IngestService(mode.Service):
    """Consumes the rule set's source topics and feeds the engine, batch by batch."""

    def __init__(self, settings: Settings, rules: RuleSet, bootstrap: Callable[[], str],
                 exporter: Exporter, sinks: Sequence[StepSink] = (), **kwargs) -> None:
        self.settings = settings
        self.rules = rules
        self.engine = Engine(rules, idle_timeout_ms=settings.idle_timeout,
                             max_future_ms=settings.max_future)
        self._bootstrap = bootstrap
        self.exporter = exporter
        self.sinks = list(sinks)
        self.topics: dict[str, list[str]] = {}
        for source in rules.sources.values():
            self.topics.setdefault(source.topic, []).append(source.name)
        self.consumer: AIOKafkaConsumer | None = None
        self.dead_letters: AIOKafkaProducer | None = None
        #: set once partitions are assigned and the first poll returned (readiness)
        self.polling = False
        self._lags: dict[TopicPartition, int] = {}
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        bootstrap = self._bootstrap()
        await wait_for_broker(bootstrap, timeout_s=self.settings.broker_wait / 1000,
                              log=log.warning)
        await ensure_topics(bootstrap, {s.topic: s.partitions for s in self.rules.sources.values()})
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
        if self.consumer is not None:
            await self.consumer.stop()
        if self.dead_letters is not None:
            await self.dead_letters.stop()

    @mode.Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=self.settings.poll_timeout,
                                                  max_records=self.settings.batch_max_records)
            self.polling = True
            await self.process(batches)

    async def process(self, batches: dict) -> Step:
        """Ingest one poll's batches (one per partition), close windows, hand the step on."""
        now_ms = int(time.time() * 1000)
        for tp, messages in batches.items():
            values = [m.value for m in messages]
            for source in self.topics.get(tp.topic, ()):
                result = self.engine.ingest(source, values, now_ms, partition=tp.partition)
                self.exporter.count(source, result)
                if result.rejected:
                    await self._dead_letter(source, messages, result.rejected)
            self._lag(tp, messages)
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
        group_id=settings.group_id,
        auto_offset_reset=settings.start_from,
        session_timeout_ms=settings.session_timeout,
        heartbeat_interval_ms=max(settings.session_timeout // 3, 100),
        max_partition_fetch_bytes=1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
        enable_auto_commit=True,
    )
