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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
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
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        bootstrap = self._bootstrap()
        await wait_for_broker(bootstrap, timeout_s=self.settings.broker_wait / 1000,
                              log=log.warning)
        await ensure_topics(bootstrap, {s.topic: s.partitions for s in self.rules.sources.values()})
        self.consumer = _consumer(bootstrap, self.settings, list(self.topics))
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
        """Ingest one poll's batches, close windows, and hand the step to every sink."""
        now_ms = int(time.time() * 1000)
        by_topic: dict[str, list] = {}
        for tp, messages in batches.items():
            by_topic.setdefault(tp.topic, []).extend(messages)
            self._lag(tp, messages)
        for topic, messages in by_topic.items():
            values = [m.value for m in messages]
            for source in self.topics.get(topic, ()):
                result = self.engine.ingest(source, values, now_ms)
                self.exporter.count(source, result)
                if result.rejected:
                    await self._dead_letter(source, messages, result.rejected)
        step = self.engine.advance(now_ms)
        for source, runner in self.engine.sources.items():
            if runner.watermark is not None:
                self.exporter.watermark.labels(source).set(runner.watermark / 1000)
        for sink in self.sinks:
            sink(step)
        return step

    def _lag(self, tp, messages: list) -> None:
        assert self.consumer is not None
        high = self.consumer.highwater(tp)
        if messages and high is not None:
            for source in self.topics.get(tp.topic, ()):
                self.exporter.lag.labels(source).set(max(high - messages[-1].offset - 1, 0))

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


def _consumer(bootstrap: str, settings: Settings, topics: list[str]) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=settings.group_id,
        auto_offset_reset=settings.start_from,
        session_timeout_ms=settings.session_timeout,
        heartbeat_interval_ms=max(settings.session_timeout // 3, 100),
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        enable_auto_commit=True,
    )
