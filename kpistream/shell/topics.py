"""kpistream's own single-partition topics (checkpoints, delivery log, silences, feedback).

The embedded broker's ListOffsets can stop short (BROKER-NOTES), so "the end" is the high
watermark that a *fetch* reports, and reading goes on until the position reaches it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from kpistream.errors import BrokerUnavailable
from kpistream.shell.broker import ensure_topics

__all__ = ["RecordLog", "read_tail"]


class RecordLog:
    """A low-volume topic of records that every worker reads whole, then follows."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic

    async def append(self, key: bytes, value: bytes) -> None:
        await ensure_topics(self.bootstrap, {self.topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.topic, value, key=key)
        finally:
            await producer.stop()

    async def read_all(self) -> tuple[list[bytes], int]:
        """Every record's value, and the offset to follow from."""
        await ensure_topics(self.bootstrap, {self.topic: 1})
        records = await read_tail(self.bootstrap, self.topic, first=1 << 30)
        return [r.value for r in records if r.value], (records[-1].offset + 1 if records else 0)

    async def follow(self, offset: int, apply: Callable[[bytes], None]) -> None:
        """Apply every record's value from ``offset`` on, forever (cancel to stop)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        tp = TopicPartition(self.topic, 0)
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, offset)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.value:
                        apply(record.value)
        finally:
            await consumer.stop()

_DEADLINE_S = 30.0


async def read_tail(bootstrap: str, topic: str, *, first: int,
                    enough: Callable[[list[ConsumerRecord]], bool] = lambda records: True,
                    fetch_bytes: int = 4 * 1024 * 1024, partition: int = 0
                    ) -> list[ConsumerRecord]:
    """The last records of ``partition`` of ``topic``: ``first`` of them, then 8 times as many
    until ``enough(records)`` says so or the whole partition has been read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=fetch_bytes,
                                fetch_max_bytes=max(fetch_bytes, 50 * 1024 * 1024))
    tp = TopicPartition(topic, partition)
    await consumer.start()
    try:
        consumer.assign([tp])
        high = await _high_watermark(consumer, tp)
        tail = first
        while True:
            start = max(0, high - tail)
            consumer.seek(tp, start)
            records = await _read_to(consumer, tp, high)
            if start == 0 or enough(records):
                return records
            tail *= 8
    finally:
        await consumer.stop()


async def _high_watermark(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    await consumer.seek_to_beginning(tp)
    deadline = time.monotonic() + _DEADLINE_S
    while time.monotonic() < deadline:
        await consumer.getmany(tp, timeout_ms=200, max_records=1)
        high = consumer.highwater(tp)
        if high is not None:
            return high
    raise BrokerUnavailable(f"no fetch answer for {tp.topic} within {_DEADLINE_S:g} s")


async def _read_to(consumer: AIOKafkaConsumer, tp: TopicPartition, high: int
                   ) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + _DEADLINE_S
    while await consumer.position(tp) < high:
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"reading {tp.topic} to offset {high} timed out")
        batch = await consumer.getmany(tp, timeout_ms=500)
        records.extend(batch.get(tp, []))
    return records
