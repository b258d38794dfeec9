"""Quiet hours: an owner's local time span in which non-critical notifications wait."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["in_quiet_hours", "quiet_until"]


def in_quiet_hours(quiet_hours: tuple[int, int] | None, timezone: str, now_ms: int) -> bool:
    """Whether ``now_ms`` falls in ``[start, end)`` minutes after local midnight.

    The span may wrap midnight (start > end); start == end means no quiet hours.

    >>> night = (22 * 60, 8 * 60)  # 22:00-08:00
    >>> h = 3_600_000
    >>> [in_quiet_hours(night, "UTC", t * h) for t in (7, 8, 21, 22, 23)]
    [True, False, False, True, True]
    >>> in_quiet_hours(night, "Asia/Shanghai", 15 * h)  # 23:00 in Shanghai
    True
    """
    if quiet_hours is None:
        return False
    start, end = quiet_hours
    minute = _local(timezone, now_ms)
    minute_of_day = minute.hour * 60 + minute.minute
    if start <= end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


def quiet_until(quiet_hours: tuple[int, int] | None, timezone: str, now_ms: int) -> int | None:
    """When the current quiet period ends (epoch ms), or None if not quiet now.

    >>> h = 3_600_000
    >>> quiet_until((22 * 60, 8 * 60), "UTC", 23 * h) == 32 * h
    True
    >>> quiet_until((22 * 60, 8 * 60), "UTC", 7 * h) == 8 * h
    True
    >>> quiet_until((22 * 60, 8 * 60), "UTC", 12 * h) is None
    True
    """
    if not in_quiet_hours(quiet_hours, timezone, now_ms):
        return None
    assert quiet_hours is not None
    local = _local(timezone, now_ms)
    end = local.replace(hour=quiet_hours[1] // 60, minute=quiet_hours[1] % 60, second=0,
                        microsecond=0)
    if end <= local:
        end += timedelta(days=1)  # wall-clock arithmetic in the owner's zone
    return int(end.timestamp() * 1000)


def _local(timezone: str, now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
