"""Stage one, the hot path: consume the source partitions this worker is given, in batches,
and hand each partition's final panes to the merge stage through the panes topic.

One ``getmany`` returns up to ``batch_max_records`` messages; each topic's share is decoded
and aggregated as one batch (see :mod:`kpistream.core.partials`). A partition's state (its
panes not final yet and its progress) is checkpointed with its offset as one slice, so it
moves with the partition: after a rebalance or a crash, the next reader restores the slice,
seeks to its offset and makes the same panes again; the merge stage skips the repeats.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable, Iterable

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from kpistream.core.partials import SourcePartitions
from kpistream.core.ruleset import RuleSet
from kpistream.errors import BrokerUnavailable, KpistreamError
from kpistream.settings import Settings
from kpistream.shell.broker import ensure_topics
from kpistream.shell.checkpoint import CheckpointStore
from kpistream.shell.exporter import Exporter

__all__ = ["IngestService", "Pacer", "ensure_panes_topic", "group_consumer", "source_slice"]

log = logging.getLogger("kpistream.ingest")
#: checkpoints take at most 1/20 of the time
CHECKPOINT_TIME_SHARE = 20
#: a consume loop that has not polled for this long is stuck: /healthz fails
STALL_S = 120.0
#: how often, and how patiently, readiness asks the broker for metadata
BROKER_CHECK_S = 5.0


def source_slice(tp: TopicPartition) -> str:
    """The checkpoint slice of a source partition."""
    return f"source/{tp.topic}/{tp.partition}"


async def ensure_panes_topic(bootstrap: str, settings: Settings) -> None:
    """The panes topic: one partition, kept a day (the merge checkpoint covers far less)."""
    await ensure_topics(bootstrap, {settings.panes: 1},
                        configs={"retention.ms": str(24 * 3600 * 1000)})


class Pacer:
    """When the next checkpoint is due: every ``interval_s``, stretched so that checkpoints
    take at most 1/``CHECKPOINT_TIME_SHARE`` of the time (a large state is written less
    often)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.due = 0.0

    def wrote(self, started: float, took: float) -> None:
        self.due = started + max(self.interval_s, took * CHECKPOINT_TIME_SHARE)


class IngestService(mode.Service):
    """Consumes the rule set's source topics and feeds stage one, batch by batch."""

    def __init__(self, settings: Settings, rules: RuleSet, bootstrap: Callable[[], str],
                 exporter: Exporter, **kwargs) -> None:
        self.settings = settings
        self.rules = rules
        self.stages = _stages(rules, settings)
        self._bootstrap = bootstrap
        self.exporter = exporter
        exporter.watch_folded(self.folded, stage="ingest")
        self.topics = _topics(rules)
        self.consumer: AIOKafkaConsumer | None = None
        self.panes: AIOKafkaProducer | None = None
        self.dead_letters: AIOKafkaProducer | None = None
        #: set once partitions are assigned and the first poll returned (readiness)
        self.polling = False
        self._last_poll: float | None = None
        #: held while a batch is processed and checkpointed, and while partitions move
        self._idle = asyncio.Lock()
        self._broker_answers = False
        self._lags: dict[TopicPartition, int] = {}
        self.checkpoints: CheckpointStore | None = None
        self._pacer = Pacer(settings.checkpoint_interval / 1000)
        #: the partitions this worker owns (restored), and the next offset to read in each
        self.offsets: dict[TopicPartition, int] = {}
        #: where reading started, for owned partitions no checkpoint covers yet
        self._origins: dict[TopicPartition, int] = {}
        #: panes sent since the last checkpoint: if one is lost, go back to that checkpoint
        self._sent: list[asyncio.Future] = []
        #: a broker error interrupted the hot path: go back to the last checkpoint first
        self._broken = False
        #: a validated rule set waiting to be swapped in between two polls (hot reload)
        self.pending_rules: RuleSet | None = None
        super().__init__(**kwargs)

    def folded(self) -> dict[str, int]:
        """Rows folded into ``__other__`` by this stage's cardinality guard, per KPI."""
        return {k: n for stage in self.stages.values() for k, n in stage.folded.items()}

    async def on_start(self) -> None:
        bootstrap = self._bootstrap()
        await ensure_topics(bootstrap, {s.topic: s.partitions for s in self.rules.sources.values()})
        await ensure_panes_topic(bootstrap, self.settings)
        if self.settings.checkpoint_interval:
            self.checkpoints = CheckpointStore(bootstrap, self.settings.checkpoint_topic,
                                               self.settings.group_id)
            await self.checkpoints.start()
        self.consumer = group_consumer(bootstrap, self.settings)
        self.consumer.subscribe(list(self.topics), listener=_Rebalance(self))
        try:
            await self.consumer.start()
            self.panes = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                          linger_ms=5, max_request_size=4 * 1024 * 1024)
            await self.panes.start()
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
            async with self._idle:  # the batch in hand finishes first, dead letters included
                if self.checkpoints is not None and self.offsets:
                    await self.checkpoint()
            await self.consumer.stop()  # (a rebalance on the way out takes the lock itself)
        for client in (self.checkpoints, self.panes, self.dead_letters):
            if client is not None:
                await client.stop()

    def alive(self) -> bool:
        """False when the consume loop stopped turning (a stuck worker)."""
        return self._last_poll is None or time.monotonic() - self._last_poll < STALL_S

    def readiness(self) -> dict[str, bool]:
        """The checks behind /readyz."""
        consumer = self.consumer
        return {"rules_loaded": bool(self.rules.kpis),
                "broker_connected": consumer is not None and self._broker_answers,
                "partitions_assigned": self.polling and bool(self.offsets) and not self._broken}

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

    async def checkpoint(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Write each partition's state with the offset it covers (all owned by default),
        once every pane and dead letter it handed on is on the broker; then commit."""
        assert self.checkpoints is not None and self.consumer is not None
        started = time.monotonic()
        for producer in (self.panes, self.dead_letters):
            if producer is not None:  # the offsets below cover what they were sent
                await producer.flush()
        self._check_sent()
        chosen = [tp for tp in (self.offsets if partitions is None else partitions)
                  if tp in self.offsets]
        slices = {}
        for tp in chosen:
            state = {source: self.stages[source].state([tp.partition]).get(tp.partition)
                     for source in self.topics.get(tp.topic, ())}
            slices[source_slice(tp)] = (pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL),
                                        {tp: self.offsets[tp]})
        await self.checkpoints.save(slices)
        self._sent.clear()
        for tp in chosen:  # a rewind goes back to this checkpoint now
            self._origins.pop(tp, None)
        took = time.monotonic() - started
        self._pacer.wrote(started, took)
        self.exporter.checkpointed.set(time.time())
        self.exporter.checkpoint_seconds.observe(took)
        try:  # the checkpoint holds the offsets; the commit is for tools: never wait long
            await asyncio.wait_for(self.consumer.commit(
                {tp: self.offsets[tp] for tp in chosen}), BROKER_CHECK_S)
        except (KafkaError, TimeoutError) as e:
            log.warning("offset commit failed (%s); the checkpoint has them", e)

    def _check_sent(self) -> None:
        """Raise when a pane batch could not be handed on (the merge stage then leaves out
        the batches after it, until a rewind sends them all again)."""
        if any(f.done() and f.exception() is not None for f in self._sent):
            raise BrokerUnavailable("panes were not delivered to the merge stage")

    async def restore(self, assigned: set[TopicPartition]) -> None:
        """Take over ``assigned`` partitions: their checkpointed state at its offset, or (no
        usable checkpoint) fresh state where reading them started."""
        assert self.consumer is not None
        fresh = [tp for tp in assigned if tp not in self.offsets]
        found = {} if self.checkpoints is None else await self.checkpoints.load(
            source_slice(tp) for tp in fresh)
        restored: dict[TopicPartition, int] = {}
        for tp in fresh:
            for source in self.topics.get(tp.topic, ()):  # whatever was here is outdated
                self.stages[source].partitions.pop(tp.partition, None)
            checkpoint = found.get(source_slice(tp))
            state = None if checkpoint is None else _slice_state(tp, checkpoint.state)
            if state is not None:
                for source, partition_state in state.items():
                    if source in self.stages and partition_state is not None:
                        self.stages[source].load({tp.partition: partition_state})
                offset = checkpoint.offsets[tp]
            else:
                offset = self._origins.get(tp)
                if offset is None:
                    offset = self._origins[tp] = await self._origin(tp)
            restored[tp] = offset
            self.consumer.seek(tp, offset)
        self.offsets.update(restored)  # owned (and ready) once all are restored
        self._assign(assigned)
        log.info("assigned %s (%d restored from checkpoints)", ", ".join(
            f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)) or "nothing",
            sum(source_slice(tp) in found for tp in fresh))

    async def _origin(self, tp: TopicPartition) -> int:
        """Where to read a partition no checkpoint covers: its committed offset, else where
        ``start_from`` says (not the consumer's position: a poll may have moved it past
        records it returned before the partition was restored)."""
        assert self.consumer is not None
        committed = await self.consumer.committed(tp)
        if committed is not None:
            return committed
        if self.settings.start_from == "earliest":
            return (await self.consumer.beginning_offsets([tp]))[tp]
        return await self.consumer.position(tp)

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Hand ``revoked`` partitions on: checkpoint them, then forget them here."""
        async with self._idle:
            revoked = {tp for tp in revoked if tp in self.offsets}
            if self.checkpoints is not None and revoked:
                try:
                    await self.checkpoint(revoked)
                except KpistreamError as e:  # the next reader replays from the last one
                    log.warning("checkpoint before handing on failed: %s", e)
            for tp in revoked:
                self.offsets.pop(tp, None)
                self._lags.pop(tp, None)
                for source in self.topics.get(tp.topic, ()):
                    self.stages[source].partitions.pop(tp.partition, None)

    def _assign(self, assigned: set[TopicPartition]) -> None:
        now_ms = int(time.time() * 1000)
        for topic, sources in self.topics.items():
            partitions = [tp.partition for tp in assigned if tp.topic == topic]
            for source in sources:
                self.stages[source].assign(partitions, now_ms)

    @mode.Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            batches = await self.consumer.getmany(timeout_ms=self.settings.poll_timeout,
                                                  max_records=self.settings.batch_max_records)
            self.polling = True
            previous, self._last_poll = self._last_poll, time.monotonic()
            stalled = previous is not None and \
                self._last_poll - previous > self.settings.idle_timeout / 2000
            async with self._idle:
                if self.should_stop:
                    break  # on_stop checkpoints what was processed
                try:
                    await self._step(self._owned_records(batches), stalled)
                except (KafkaError, KpistreamError) as e:
                    self._broken = self.checkpoints is not None
                    log.warning("broker trouble (%s: %s); %s", type(e).__name__, e,
                                "going back to the last checkpoint once it answers"
                                if self._broken else "carrying on")

    def _owned_records(self, batches: dict) -> dict:
        """Records of partitions this worker owns, from the offset it reads next on (a poll
        that spans a rebalance may hold others)."""
        return {tp: [m for m in messages if m.offset >= self.offsets[tp]]
                for tp, messages in batches.items() if tp in self.offsets}

    async def _step(self, batches: dict, stalled: bool) -> None:
        if self._broken:  # this poll's records come again after the rewind
            await self._rewind()
            return
        self._check_sent()
        if self.pending_rules is not None:
            await self.swap_rules(self.pending_rules)
        await self.process(batches, quiet=set() if stalled else None)
        if self.checkpoints and time.monotonic() >= self._pacer.due:
            await self.checkpoint()

    async def _rewind(self) -> None:
        """Continue from the last checkpoint of every assigned partition (what was handed on
        after it is handed on again; the merge stage skips what it already has)."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        for tp in assigned:
            self.offsets.pop(tp, None)
        self._sent.clear()
        await self.restore(assigned)
        self._broken = False

    async def process(self, batches: dict, quiet: set[TopicPartition] | None = None) -> None:
        """Ingest one poll (all partitions of a topic as one batch), hand on final panes.

        ``quiet``: the partitions that may turn idle (default: those read to their end).
        """
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
                result = self.stages[source].ingest(partitions, now_ms, self.settings.max_future)
                self.exporter.count(source, result)
                if result.rejected:
                    messages = [m for _, ms in parts for m in ms]
                    await self._dead_letter(source, messages, result.rejected)
        assert self.panes is not None
        quiet = self._read_to_end() if quiet is None else quiet
        for stage in self.stages.values():
            numbers = {tp.partition for tp in quiet if tp.topic == stage.source.topic}
            for batch in stage.flush(now_ms, numbers):
                self._sent.append(await self.panes.send(
                    self.settings.panes, pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL),
                    key=f"{batch.source}/{batch.partition}".encode()))

    def _read_to_end(self) -> set[TopicPartition]:
        """Owned partitions read up to their fetch high watermark: only these may be idle."""
        assert self.consumer is not None
        return {tp for tp, offset in self.offsets.items()
                if (high := self.consumer.highwater(tp)) is not None and offset >= high}

    async def swap_rules(self, rules: RuleSet) -> None:
        """Read for ``rules`` from now on; unchanged KPIs keep their panes."""
        self.pending_rules = None
        topics = _topics(rules)
        assert self.consumer is not None
        if set(topics) != set(self.topics):
            try:
                await ensure_topics(self._bootstrap(), {s.topic: s.partitions
                                                        for s in rules.sources.values()})
            except KpistreamError as e:  # try again at the next poll
                log.warning("rules version %s waits: %s", rules.version, e)
                self.pending_rules = rules
                return
            self.consumer.subscribe(list(topics), listener=_Rebalance(self))
        stages = _stages(rules, self.settings)
        for name, stage in stages.items():
            if name in self.stages:
                stage.load(self.stages[name].state())
        self.stages, self.rules, self.topics = stages, rules, topics
        self._assign(set(self.offsets))

    def _lag(self, tp: TopicPartition, messages: list) -> None:
        """Lag from the fetch high watermark (the broker's ListOffsets can be wrong)."""
        assert self.consumer is not None
        high = self.consumer.highwater(tp)
        if not messages or high is None:
            return
        self._lags[tp] = max(high - messages[-1].offset - 1, 0)
        for source in self.topics.get(tp.topic, ()):
            total = sum(lag for t, lag in self._lags.items() if t.topic == tp.topic)
            self.exporter.lag.labels(source).set(total)

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
    """Moves partition state with the partitions: checkpointed when revoked, restored when
    assigned. Both hold the service's lock, so no batch is processed meanwhile; records
    fetched around them are filtered by the owned offsets."""

    def __init__(self, service: IngestService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.release(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.service._idle:
            try:
                await self.service.restore(assigned)
            except (KafkaError, KpistreamError) as e:  # the consume loop tries again
                log.warning("restoring %d partition(s) failed (%s); trying again",
                            len(assigned), e)
                self.service._broken = True


def _slice_state(tp: TopicPartition, data: bytes) -> dict | None:
    """A partition's checkpointed state by source, or None when it cannot be read."""
    try:
        return pickle.loads(data)
    except (pickle.UnpicklingError, ValueError, EOFError, AttributeError, ImportError) as e:
        log.warning("checkpoint of %s cannot be restored (%s: %s); reading it afresh from the "
                    "committed offset", source_slice(tp), type(e).__name__, e)
        return None


def _stages(rules: RuleSet, settings: Settings) -> dict[str, SourcePartitions]:
    return {name: SourcePartitions(source, rules.kpis_of(name), settings.idle_timeout)
            for name, source in rules.sources.items()}


def _topics(rules: RuleSet) -> dict[str, list[str]]:
    topics: dict[str, list[str]] = {}
    for source in rules.sources.values():
        topics.setdefault(source.topic, []).append(source.name)
    return topics


def group_consumer(bootstrap: str, settings: Settings, group_id: str | None = None
                   ) -> AIOKafkaConsumer:
    """A consumer in ``group_id`` (default: the settings' group) that commits nothing itself."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        max_poll_records=settings.batch_max_records,
        group_id=group_id or settings.group_id,
        auto_offset_reset=settings.start_from,
        session_timeout_ms=settings.session_timeout,
        heartbeat_interval_ms=max(settings.session_timeout // 3, 100),
        max_partition_fetch_bytes=1024 * 1024,
        fetch_max_bytes=4 * 1024 * 1024,
        enable_auto_commit=False,  # offsets are committed after each checkpoint
    )
