"""Times as the outputs print them: RFC 3339 in UTC with ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["rfc3339"]


def rfc3339(ms: int) -> str:
    """Format epoch milliseconds, with fractions only when there are any.

    >>> rfc3339(1704067200000), rfc3339(1704067200250)
    ('2024-01-01T00:00:00Z', '2024-01-01T00:00:00.250Z')
    """
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"
