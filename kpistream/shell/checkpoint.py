"""Checkpoints in a Kafka topic: the daemon's state and the source offsets it covers, together.

The embedded broker has no transactions, so exact results after a crash come from writing
the state and the offsets it covers as one checkpoint, restoring it, and seeking the sources
to its offsets. A checkpoint larger than one message is split into parts; it counts only when
every part is there. Restoring reads the topic's tail by the *fetch* high watermark (the
broker's ListOffsets can be wrong, see BROKER-NOTES), widening the tail until a complete
checkpoint for this key is found.

The state is pickled: the topic is internal to kpistream's workers of one consumer group and
must be writable by them only (protect it with ACLs on a shared cluster).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from kpistream.errors import BrokerUnavailable
from kpistream.shell.broker import ensure_topics
from kpistream.shell.topics import read_tail

__all__ = ["Checkpoint", "CheckpointStore"]

_PART_BYTES = 512 * 1024
_FIRST_TAIL = 64


@dataclass(frozen=True)
class Checkpoint:
    """A restored checkpoint: the state and the next offset to read per source partition."""

    id: str
    state: bytes
    offsets: dict[TopicPartition, int]


class CheckpointStore:
    """Writes and reads the checkpoints of one key (a consumer group) in one topic."""

    def __init__(self, bootstrap: str, topic: str, key: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key.encode()
        self._producer: AIOKafkaProducer | None = None
        self._seq = itertools.count()

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, {self.topic: 1},
                            configs={"retention.ms": str(24 * 3600 * 1000)})
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          max_request_size=_PART_BYTES * 2)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def save(self, state: bytes, offsets: dict[TopicPartition, int]) -> str:
        """Write one checkpoint and wait until the broker has every part."""
        assert self._producer is not None, "start() first"
        cp_id = f"{time.time_ns():x}-{next(self._seq)}"
        parts = [state[i:i + _PART_BYTES] for i in range(0, len(state), _PART_BYTES)] or [b""]
        sent = []
        for i, part in enumerate(parts):
            headers = [("cp-id", cp_id.encode()), ("cp-part", f"{i}/{len(parts)}".encode())]
            if i == len(parts) - 1:
                headers.append(("cp-offsets", _encode_offsets(offsets)))
            sent.append(await self._producer.send(self.topic, part, key=self.key,
                                                  headers=headers))
        try:
            for future in sent:
                await future
        except KafkaError as e:
            raise BrokerUnavailable(f"cannot write checkpoint to {self.topic}: {e}") from e
        return cp_id

    async def load(self) -> Checkpoint | None:
        """The newest complete checkpoint of this key, or None."""
        records = await read_tail(self.bootstrap, self.topic, first=_FIRST_TAIL,
                                  enough=lambda rs: self._newest(rs) is not None,
                                  fetch_bytes=_PART_BYTES * 4)
        return self._newest(records)

    def _newest(self, records: list) -> Checkpoint | None:
        parts: dict[str, dict[int, bytes]] = {}
        newest = None
        for record in records:
            if record.key != self.key:
                continue
            headers = dict(record.headers)
            cp_id = headers["cp-id"].decode()
            index, total = map(int, headers["cp-part"].decode().split("/"))
            parts.setdefault(cp_id, {})[index] = record.value or b""
            if "cp-offsets" in headers and len(parts[cp_id]) == total:
                state = b"".join(parts[cp_id][i] for i in range(total))
                newest = Checkpoint(cp_id, state, _decode_offsets(headers["cp-offsets"]))
        return newest


def _encode_offsets(offsets: dict[TopicPartition, int]) -> bytes:
    return orjson.dumps([[tp.topic, tp.partition, offset] for tp, offset in offsets.items()])


def _decode_offsets(data: bytes) -> dict[TopicPartition, int]:
    return {TopicPartition(topic, partition): offset
            for topic, partition, offset in orjson.loads(data)}
