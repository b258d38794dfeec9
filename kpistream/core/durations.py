"""Times as written in rule files and on the command line.

Durations: ``500ms``, ``30s``, ``1m``, ``1h30m``, ``1d``, ``1w``; moments: RFC 3339 with an
offset.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["DURATION_UNITS_MS", "format_duration", "parse_duration_ms", "parse_moment",
           "rfc3339"]

DURATION_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
                     "w": 604_800_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+")


def parse_duration_ms(text: str) -> int:
    """Parse a duration into milliseconds; raise ``ValueError`` with a hint when malformed.

    >>> parse_duration_ms("1m"), parse_duration_ms("1h30m"), parse_duration_ms("250ms")
    (60000, 5400000, 250)
    >>> parse_duration_ms("5 minutes")
    Traceback (most recent call last):
    ...
    ValueError: invalid duration "5 minutes"; expected a number and a unit such as 30s, 1m,
    1h30m, 1d (units: ms, s, m, h, d, w)
    """
    text = text.strip() if isinstance(text, str) else str(text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f'invalid duration "{text}"; expected a number and a unit such as 30s, 1m, 1h30m, '
            "1d (units: ms, s, m, h, d, w)"
        )
    return sum(int(n) * DURATION_UNITS_MS[u] for n, u in _PART.findall(text))


def format_duration(ms: int) -> str:
    """Format milliseconds back into the shortest rule-file duration.

    >>> format_duration(60000), format_duration(5400000), format_duration(86400000)
    ('1m', '1h30m', '1d')
    """
    if ms == 0:
        return "0s"
    out = []
    for unit in ("w", "d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, DURATION_UNITS_MS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def parse_moment(value: object) -> datetime:
    """An RFC 3339 time with an offset; raise ``ValueError`` with an example otherwise.

    >>> parse_moment("2026-11-23T18:00:00+08:00").timestamp()
    1795428000.0
    >>> parse_moment("tomorrow")
    Traceback (most recent call last):
    ...
    ValueError: expected an RFC 3339 time with an offset, e.g. 2026-11-23T18:00:00+08:00,
    got 'tomorrow'
    """
    moment = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"expected an RFC 3339 time with an offset, e.g. "
                         f"2026-11-23T18:00:00+08:00, got {value!r}")
    return moment


def rfc3339(ms: int) -> str:
    """Format epoch milliseconds, with fractions only when there are any.

    >>> rfc3339(1704067200000), rfc3339(1704067200250)
    ('2024-01-01T00:00:00Z', '2024-01-01T00:00:00.250Z')
    """
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"
