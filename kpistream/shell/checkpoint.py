"""Checkpoints in a Kafka topic: state and the source offsets it covers, together.

The embedded broker has no transactions, so exact results after a crash come from writing
the state and the offsets it covers as one checkpoint, restoring it, and seeking the sources
to its offsets. State is kept in *slices* that move between workers on their own: one per
source partition (stage one's held panes) and one for the merge stage. A slice larger than
one message is split into parts; it counts only when every part is there. Each slice keeps to
one partition of the topic, so restoring a slice reads the tail of its partition by the
*fetch* high watermark (the broker's ListOffsets can be wrong, see BROKER-NOTES), widening the
tail until the newest complete checkpoint of every wanted slice is found.

The state is pickled: the topic is internal to kpistream's workers of one consumer group and
must be writable by them only (protect it with ACLs on a shared cluster).
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from kpistream.errors import BrokerUnavailable
from kpistream.shell.broker import ensure_topics, topic_partitions
from kpistream.shell.topics import read_tail

__all__ = ["Checkpoint", "CheckpointStore"]

_PART_BYTES = 512 * 1024
_FIRST_TAIL = 64
#: partitions of a new checkpoint topic (an existing one keeps its own count)
_PARTITIONS = 8


@dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: the state and the next offset to read per source partition."""

    id: str
    state: bytes
    offsets: dict[TopicPartition, int]


class CheckpointStore:
    """Writes and reads the checkpoint slices of one consumer group in one topic."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self._producer: AIOKafkaProducer | None = None
        self._seq = itertools.count()
        #: the topic's partition count, read at start (or at the first load)
        self.partitions: int | None = None

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, {self.topic: _PARTITIONS},
                            configs={"retention.ms": str(24 * 3600 * 1000)})
        await self._count_partitions()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          max_request_size=_PART_BYTES * 2)
        await self._producer.start()

    async def _count_partitions(self) -> None:
        if self.partitions is None:
            found = await topic_partitions(self.bootstrap, [self.topic])
            self.partitions = len(found.get(self.topic, [0]))

    def _partition(self, key: bytes) -> int:
        """Each slice keeps to one partition (a stable hash of its key), so restoring a slice
        reads the tail of its own partition, not every slice's checkpoints."""
        assert self.partitions is not None, "start() first"
        return zlib.crc32(key) % self.partitions

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def save(self, slices: dict[str, tuple[bytes, dict[TopicPartition, int]]]) -> str:
        """Write one checkpoint of ``slices`` (name -> state and offsets) and wait until the
        broker has every part."""
        assert self._producer is not None, "start() first"
        cp_id = f"{time.time_ns():x}-{next(self._seq)}"
        sent = []
        for name, (state, offsets) in slices.items():
            parts = [state[i:i + _PART_BYTES] for i in range(0, len(state), _PART_BYTES)]
            parts = parts or [b""]
            for i, part in enumerate(parts):
                headers = [("cp-id", cp_id.encode()), ("cp-part", f"{i}/{len(parts)}".encode())]
                if i == len(parts) - 1:
                    headers.append(("cp-offsets", _encode_offsets(offsets)))
                key = self._key(name)
                sent.append(await self._producer.send(self.topic, part, key=key, headers=headers,
                                                      partition=self._partition(key)))
        try:
            for future in sent:
                await future
        except KafkaError as e:
            raise BrokerUnavailable(f"cannot write checkpoint to {self.topic}: {e}") from e
        return cp_id

    async def load(self, names: Iterable[str]) -> dict[str, Checkpoint]:
        """The newest complete checkpoint of each slice in ``names`` that has one."""
        await self._count_partitions()
        by_partition: dict[int, dict[bytes, str]] = {}
        for name in names:
            key = self._key(name)
            by_partition.setdefault(self._partition(key), {})[key] = name
        found: dict[str, Checkpoint] = {}
        for partition, keys in sorted(by_partition.items()):
            records = await read_tail(
                self.bootstrap, self.topic, first=_FIRST_TAIL * len(keys), partition=partition,
                enough=lambda rs, keys=keys: len(self._newest(rs, keys)) == len(keys),
                fetch_bytes=_PART_BYTES * 32)
            found |= self._newest(records, keys)
        return found

    def _key(self, name: str) -> bytes:
        return f"{self.group}|{name}".encode()

    @staticmethod
    def _newest(records: list, keys: dict[bytes, str]) -> dict[str, Checkpoint]:
        parts: dict[tuple[bytes, str], dict[int, bytes]] = {}
        newest: dict[str, Checkpoint] = {}
        for record in records:
            name = keys.get(record.key)
            if name is None:
                continue
            headers = dict(record.headers)
            cp_id = headers["cp-id"].decode()
            index, total = map(int, headers["cp-part"].decode().split("/"))
            got = parts.setdefault((record.key, cp_id), {})
            got[index] = record.value or b""
            if "cp-offsets" in headers and len(got) == total:
                state = b"".join(got[i] for i in range(total))
                newest[name] = Checkpoint(cp_id, state, _decode_offsets(headers["cp-offsets"]))
        return newest


def _encode_offsets(offsets: dict[TopicPartition, int]) -> bytes:
    return orjson.dumps([[tp.topic, tp.partition, offset] for tp, offset in offsets.items()])


def _decode_offsets(data: bytes) -> dict[TopicPartition, int]:
    return {TopicPartition(topic, partition): offset
            for topic, partition, offset in orjson.loads(data)}
