"""``kpistream produce``: send lines of a file to a topic, one message per line, bytes unchanged."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, UnknownTopicOrPartitionError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from kpistream.errors import BrokerUnavailable, EventError, KpistreamError

__all__ = ["produce_lines", "read_lines"]

_LINGER_MS = 20
_MAX_BATCH_BYTES = 1024 * 1024
_MAX_MESSAGE_BYTES = 1_000_000  # below Kafka's default message.max.bytes, with batch overhead
_REQUEST_TIMEOUT_MS = 15_000
_SETTLE_EVERY = 64  # batches handed over before awaiting their delivery together


def read_lines(path: str) -> Iterator[bytes]:
    """Open ``path`` (``-`` for stdin) now and yield its lines as bytes, without line endings.

    Raises:
        EventError: the file cannot be opened.
    """
    if path == "-":
        return _lines(sys.stdin.buffer, close=False)
    try:
        f = open(path, "rb")  # noqa: SIM115 - _lines closes it
    except OSError as e:
        raise EventError(f"cannot read events file {path}: {e.strerror or e}") from e
    return _lines(f, close=True)


def _lines(f: BinaryIO, *, close: bool) -> Iterator[bytes]:
    try:
        for line in f:
            yield _strip_eol(line)
    finally:
        if close:
            f.close()


def _strip_eol(line: bytes) -> bytes:
    r"""Drop one trailing ``\n`` or ``\r\n``; nothing else.

    >>> _strip_eol(b'{"a": 1} \r\n')
    b'{"a": 1} '
    """
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


def _key_of(value: bytes, path: tuple[str, ...]) -> bytes | None:
    """The key for a message: the value at ``path`` of a JSON object, else None.

    Strings give their UTF-8 bytes, other values their JSON text; null gives no key.

    >>> _key_of(b'{"user": {"id": "u-7"}}', ("user", "id"))
    b'u-7'
    >>> _key_of(b'{"shop": 12}', ("shop",))
    b'12'
    >>> _key_of(b'not json', ("shop",)) is None
    True
    """
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    for name in path:
        if not isinstance(obj, dict) or name not in obj:
            return None
        obj = obj[name]
    if obj is None:
        return None
    return obj.encode() if isinstance(obj, str) else orjson.dumps(obj)


async def produce_lines(
    bootstrap: str, topic: str, lines: Iterable[bytes], *, key_field: str | None = None
) -> int:
    """Send each non-blank line to ``topic`` as one message, value unchanged; return the count.

    Keyed lines go to the partition Kafka's default partitioner picks (murmur2 of the key);
    unkeyed ones go round the partitions, one line each. One batch per partition is filled and
    sent when full, so a large file needs few requests.

    Parameters:
        bootstrap: ``host:port[,host:port...]``.
        topic: the destination topic.
        lines: message values; one trailing line ending is dropped, blank lines are skipped.
            Lines need not be valid JSON.
        key_field: when given, a line that is a JSON object with this field (dotted names
            read nested objects: ``user.id``) is keyed by it; other lines get no key.

    Raises:
        BrokerUnavailable: the broker cannot be reached.
        EventError: a line is too large to send.
        KpistreamError: the topic does not exist, or the broker refused the messages.
    """
    path = tuple(key_field.split(".")) if key_field else None
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=_LINGER_MS,
        max_batch_size=_MAX_BATCH_BYTES,
        request_timeout_ms=_REQUEST_TIMEOUT_MS,
    )
    try:
        await producer.start()
    except KafkaError as e:
        await producer.stop()
        raise BrokerUnavailable(
            f"cannot produce: broker {bootstrap} not reachable; is it running?"
        ) from e
    try:
        batcher = _Batcher(producer, topic, await _partitions(producer, bootstrap, topic))
        return await _send_all(batcher, lines, path)
    except KafkaConnectionError as e:
        raise BrokerUnavailable(f"lost broker {bootstrap} while producing to {topic}: {e}") from e
    except KafkaError as e:
        raise KpistreamError(f"producing to topic {topic} on {bootstrap} failed: {e}") from e
    finally:
        await producer.stop()


async def _partitions(producer: AIOKafkaProducer, bootstrap: str, topic: str) -> list[int]:
    """The topic's partitions, or KpistreamError saying to create the topic."""
    try:
        return sorted(await producer.partitions_for(topic))
    except UnknownTopicOrPartitionError as e:
        raise KpistreamError(
            f"topic {topic} does not exist on broker {bootstrap}; create it first"
        ) from e


async def _send_all(
    batcher: _Batcher, lines: Iterable[bytes], path: tuple[str, ...] | None
) -> int:
    """Batch every non-blank line; return how many were sent."""
    count = 0
    for number, line in enumerate(lines, 1):
        value = _strip_eol(line)
        if not value.strip():
            continue
        key = _key_of(value, path) if path else None
        size = len(value) + (len(key) if key else 0)
        if size > _MAX_MESSAGE_BYTES:
            raise EventError(
                f"line {number}: {size} bytes is too large: a message (key and value) may have "
                f"at most {_MAX_MESSAGE_BYTES} bytes; split the event"
            )
        await batcher.add(key, value)
        count += 1
    await batcher.flush()
    return count


class _Batcher:
    """Fills one record batch per partition and hands full ones to the producer."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: list[int]) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._open: dict[int, BatchBuilder] = {}
        self._pending: list[asyncio.Future] = []
        self._turn = -1  # unkeyed messages go round the partitions, one each

    async def add(self, key: bytes | None, value: bytes) -> None:
        """Append one message, sending its partition's batch first when that one is full."""
        partition = self._partition_for(key)
        if self._batch(partition).append(key=key, value=value, timestamp=None) is None:
            await self._send(partition)
            self._batch(partition).append(key=key, value=value, timestamp=None)  # takes any one

    async def flush(self) -> None:
        """Send every open batch and wait until all were delivered."""
        for partition in list(self._open):
            await self._send(partition)
        await self._settle()

    def _partition_for(self, key: bytes | None) -> int:
        if key is None:
            self._turn = (self._turn + 1) % len(self._partitions)
            return self._partitions[self._turn]
        return self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]

    def _batch(self, partition: int) -> BatchBuilder:
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self._producer.create_batch()
        return batch

    async def _send(self, partition: int) -> None:
        batch = self._open.pop(partition)
        batch.close()
        self._pending.append(
            await self._producer.send_batch(batch, self._topic, partition=partition)
        )
        if len(self._pending) >= _SETTLE_EVERY:
            await self._settle()

    async def _settle(self) -> None:
        """Await every pending delivery, raising the first failure."""
        results = await asyncio.gather(*self._pending, return_exceptions=True)
        self._pending.clear()
        for result in results:
            if isinstance(result, BaseException):
                raise result
