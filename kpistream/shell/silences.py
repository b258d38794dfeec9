"""Runtime silences: ``kpistream silence add|expire|list`` and the topic the daemon follows.

A silence made at runtime is one JSON record in a topic (key: its id); a later record with the
same id replaces it (expiring a silence writes it again with ``ends_ms`` = now). The daemon
reads the topic to its fetch high watermark at start, then follows it, so a silence takes
effect within a poll and survives restarts. Silences kept in git live in rule files instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import orjson

from kpistream.core.notify.model import Silence
from kpistream.errors import UsageError
from kpistream.shell.topics import RecordLog

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
        self.log = RecordLog(bootstrap, topic)

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
        values, offset = await self.log.read_all()
        return {s.id: s for s in map(silence_from_json, values)}, offset

    async def follow(self, offset: int, apply: Callable[[Silence], None]) -> None:
        """Apply every silence from ``offset`` on, forever (cancel to stop)."""
        await self.log.follow(offset, lambda value: apply(silence_from_json(value)))

    async def _write(self, silence: Silence) -> None:
        await self.log.append(silence.id.encode(), silence_to_json(silence))
