"""Target periods (day, week, month, quarter) in the rules' timezone.

>>> from datetime import datetime, timezone
>>> from kpistream.core.durations import rfc3339
>>> ts = int(datetime(2026, 1, 31, 17, 0, tzinfo=timezone.utc).timestamp() * 1000)
>>> [rfc3339(b) for b in period_bounds("month", ts, "UTC")]
['2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z']
>>> [rfc3339(b) for b in period_bounds("month", ts, "Asia/Shanghai")]  # 01:00 on Feb 1 there
['2026-01-31T16:00:00Z', '2026-02-28T16:00:00Z']
>>> [rfc3339(b) for b in period_bounds("week", ts, "UTC")]  # weeks start on Monday
['2026-01-26T00:00:00Z', '2026-02-02T00:00:00Z']
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["PERIODS", "local_day", "period_bounds"]

PERIODS = ("day", "week", "month", "quarter")


def period_bounds(period: str, ts_ms: int, timezone: str) -> tuple[int, int]:
    """``[start, end)`` in epoch ms of the ``period`` holding ``ts_ms``, at local midnight."""
    day = local_day(ts_ms, timezone)[0]
    start = datetime.fromtimestamp(day / 1000, ZoneInfo(timezone))
    if period == "day":
        first, after = start, start + timedelta(days=1)
    elif period == "week":
        first = start - timedelta(days=start.weekday())
        after = first + timedelta(days=7)
    elif period == "month":
        first = start.replace(day=1)
        after = _add_months(first, 1)
    elif period == "quarter":
        first = start.replace(day=1, month=3 * ((start.month - 1) // 3) + 1)
        after = _add_months(first, 3)
    else:
        raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
    return _midnight(first, timezone), _midnight(after, timezone)


@lru_cache(maxsize=4096)
def _day_bounds(day_index: int, timezone: str) -> tuple[int, int]:
    return _midnight_of(day_index, timezone), _midnight_of(day_index + 1, timezone)


def local_day(ts_ms: int, timezone: str) -> tuple[int, int]:
    """``[start, end)`` of the local day holding ``ts_ms`` (23 or 25 hours across DST).

    >>> from kpistream.core.durations import rfc3339
    >>> [rfc3339(b) for b in local_day(0, "Asia/Shanghai")]
    ['1969-12-31T16:00:00Z', '1970-01-01T16:00:00Z']
    """
    local = datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(timezone))
    start, end = _day_bounds(local.date().toordinal(), timezone)
    return start, end


def _midnight_of(ordinal: int, timezone: str) -> int:
    day = datetime.fromordinal(ordinal)
    return int(day.replace(tzinfo=ZoneInfo(timezone)).timestamp() * 1000)


def _midnight(moment: datetime, timezone: str) -> int:
    naive = datetime(moment.year, moment.month, moment.day)
    return int(naive.replace(tzinfo=ZoneInfo(timezone)).timestamp() * 1000)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1, day=1)

