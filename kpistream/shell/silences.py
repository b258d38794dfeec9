"""Runtime silences: ``kpistream silence add|expire|list`` and the topic the daemon follows.

A silence made at runtime is one JSON record in a topic (key: its id); a later record with the
same id replaces it (expiring a silence writes it again with ``ends_ms`` = now). The daemon
reads the topic to its fetch high watermark at start, then follows it, so a silence takes
effect within a poll and survives restarts. Silences kept in git live in rule files instead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kpistream.core.notify.model import Silence
from kpistream.errors import UsageError
from kpistream.shell.broker import ensure_topics
from kpistream.shell.topics import read_tail

__all__ = ["SilenceLog", "parse_matchers", "silence_from_json", "silence_to_json"]


def parse_matchers(texts: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``alert=gmv_low region=east`` → sorted pairs; raise UsageError when malformed.

    >>> parse_matchers(["region=east", "alert=gmv_low"])
    (('alert', 'gmv_low'), ('region', 'east'))
    """
    pairs = []
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise UsageError(f'matcher "{text}": expected NAME=VALUE, e.g. alert=gmv_low or '
                             "region=east")
        pairs.append((name.strip(), value.strip()))
    if not pairs:
        raise UsageError("a silence needs at least one --match NAME=VALUE")
    return tuple(sorted(pairs))


def silence_to_json(s: Silence) -> bytes:
    return orjson.dumps({"id": s.id, "matchers": dict(s.matchers), "starts_ms": s.starts_ms,
                         "ends_ms": s.ends_ms, "comment": s.comment,
                         "created_by": s.created_by})


def silence_from_json(data: bytes) -> Silence:
    d = orjson.loads(data)
    return Silence(d["id"], tuple(sorted(d["matchers"].items())), d["starts_ms"], d["ends_ms"],
                   d.get("comment", ""), d.get("created_by", ""))


class SilenceLog:
    """The silences topic: write, read to the end, and follow."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic

    async def add(self, matchers: tuple[tuple[str, str], ...], *, starts_ms: int, ends_ms: int,
                  comment: str, created_by: str) -> Silence:
        if ends_ms <= starts_ms:
            raise UsageError("a silence must end after it starts")
        silence = Silence(uuid.uuid4().hex[:12], matchers, starts_ms, ends_ms, comment,
                          created_by)
        await self._write(silence)
        return silence

    async def expire(self, silence_id: str, now_ms: int) -> Silence:
        current = (await self.read()).get(silence_id)
        if current is None:
            raise UsageError(f'no silence "{silence_id}"; see kpistream silence list')
        ended = Silence(current.id, current.matchers, min(current.starts_ms, now_ms), now_ms,
                        current.comment, current.created_by)
        await self._write(ended)
        return ended

    async def read(self) -> dict[str, Silence]:
        """Every silence by id (the latest record of each)."""
        return (await self.read_all())[0]

    async def read_all(self) -> tuple[dict[str, Silence], int]:
        """Every silence by id, and the offset to follow from."""
        await ensure_topics(self.bootstrap, {self.topic: 1})
        records = await read_tail(self.bootstrap, self.topic, first=1 << 30)
        silences = {s.id: s for s in (silence_from_json(r.value) for r in records if r.value)}
        return silences, (records[-1].offset + 1 if records else 0)

    async def follow(self, offset: int, apply: Callable[[Silence], None]) -> None:
        """Apply every record from ``offset`` on, forever (cancel to stop)."""
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
                        apply(silence_from_json(record.value))
        except asyncio.CancelledError:
            raise
        finally:
            await consumer.stop()

    async def _write(self, silence: Silence) -> None:
        await ensure_topics(self.bootstrap, {self.topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.topic, silence_to_json(silence),
                                         key=silence.id.encode())
        finally:
            await producer.stop()
