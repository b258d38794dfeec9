"""Anomaly feedback: ``kpistream feedback --alert ID --not-anomaly`` and the topic behind it.

Each feedback is one JSON record in a topic (key: the alert id). Every worker reads the whole
topic at start, then follows it, and hands each record to its engine: the worker whose model
flagged that window teaches it that the value was normal (see
:meth:`kpistream.core.anomalies.KpiAnomalies.accept`), the others find nothing to do.
Applying a record twice (after a restart) changes nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

from kpistream.core.notify.model import parse_alert_id
from kpistream.errors import UsageError
from kpistream.shell.topics import RecordLog

__all__ = ["FeedbackLog"]

log = logging.getLogger("kpistream.feedback")


class FeedbackLog:
    """The feedback topic: send, read whole, follow."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.log = RecordLog(bootstrap, topic)

    async def send(self, alert_id: str, *, comment: str = "", by: str = "") -> None:
        """Record that the alert ``alert_id`` (from its message) was not an anomaly."""
        try:
            parse_alert_id(alert_id)
        except ValueError as e:
            raise UsageError(str(e)) from e
        record = {"alert_id": alert_id, "kind": "not_anomaly", "comment": comment, "by": by,
                  "at_ms": int(time.time() * 1000)}
        await self.log.append(alert_id.encode(), orjson.dumps(record))

    async def read_all(self) -> tuple[list[str], int]:
        """Every alert id given feedback so far, and the offset to follow from."""
        values, offset = await self.log.read_all()
        return [i for i in map(_alert_id, values) if i is not None], offset

    async def follow(self, offset: int, apply: Callable[[str], None]) -> None:
        """Apply every alert id from ``offset`` on, forever (cancel to stop)."""

        def on_record(value: bytes) -> None:
            alert_id = _alert_id(value)
            if alert_id is not None:
                apply(alert_id)

        await self.log.follow(offset, on_record)


def _alert_id(value: bytes) -> str | None:
    """The alert id of a feedback record; None (logged) for a record that is not one.

    >>> _alert_id(b'{"alert_id": "a:0123456789abcdef:1", "kind": "not_anomaly"}')
    'a:0123456789abcdef:1'
    >>> _alert_id(b"garbage") is None
    True
    """
    try:
        alert_id = orjson.loads(value)["alert_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        alert_id = None
    if not isinstance(alert_id, str):
        log.warning("feedback topic: skipped a record that is not feedback: %.200r", value)
        return None
    return alert_id
