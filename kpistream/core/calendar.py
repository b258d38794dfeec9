"""Where windows start and end.

Windows shorter than a day are aligned to the epoch in UTC (a 1m window covers
``[HH:MM:00, HH:MM+1:00)``); ``1d`` and ``1w`` windows start at midnight (Monday for weeks) in
the rule set's timezone, so a day in Asia/Shanghai starts at 16:00 UTC.

A KPI's events are aggregated into *panes* (the hop, or the whole window when tumbling);
a window is the union of the panes it covers.

>>> cal = calendar_for(60_000, None, "UTC")
>>> cal.pane_start(90_000), cal.pane_end(60_000)
(60000, 120000)
>>> day = calendar_for(86_400_000, None, "Asia/Shanghai")
>>> day.pane_start(1704067200000)  # 2024-01-01T00:00Z is 08:00 in Shanghai
1704038400000
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

__all__ = ["Calendar", "DayCalendar", "FixedCalendar", "calendar_for"]

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS


class Calendar:
    """Pane alignment: vectorised for batches, scalar for closing windows."""

    #: How many panes one window spans.
    panes_per_window: int = 1

    def pane_starts(self, ts_ms: pl.Expr) -> pl.Expr:
        raise NotImplementedError

    def pane_start(self, ts_ms: int) -> int:
        raise NotImplementedError

    def pane_end(self, start_ms: int) -> int:
        """The end of the pane starting at ``start_ms`` (the next pane's start)."""
        raise NotImplementedError

    def window_start(self, end_ms: int) -> int:
        """The start of the window ending at ``end_ms``."""
        raise NotImplementedError

    def window_end(self, first_pane_ms: int) -> int:
        """The end of the window whose first pane starts at ``first_pane_ms``."""
        end = first_pane_ms
        for _ in range(self.panes_per_window):
            end = self.pane_end(end)
        return end


@dataclass(frozen=True)
class FixedCalendar(Calendar):
    """Panes of ``hop_ms`` aligned to the epoch; windows of ``panes_per_window`` panes."""

    hop_ms: int
    panes_per_window: int = 1

    def pane_starts(self, ts_ms: pl.Expr) -> pl.Expr:
        return ts_ms - ts_ms.mod(self.hop_ms)

    def pane_start(self, ts_ms: int) -> int:
        return ts_ms - ts_ms % self.hop_ms

    def pane_end(self, start_ms: int) -> int:
        return start_ms + self.hop_ms

    def window_start(self, end_ms: int) -> int:
        return end_ms - self.hop_ms * self.panes_per_window


@dataclass(frozen=True)
class DayCalendar(Calendar):
    """Whole days (or weeks from Monday) starting at midnight in ``timezone``."""

    days: int
    timezone: str

    def pane_starts(self, ts_ms: pl.Expr) -> pl.Expr:
        local = pl.from_epoch(ts_ms, "ms").dt.replace_time_zone("UTC").dt.convert_time_zone(
            self.timezone
        )
        return local.dt.truncate("1w" if self.days == 7 else "1d").dt.epoch("ms")

    def pane_start(self, ts_ms: int) -> int:
        local = datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(self.timezone))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.days == 7:
            midnight -= timedelta(days=midnight.weekday())
        return _epoch_ms(midnight.replace(fold=0))

    def pane_end(self, start_ms: int) -> int:
        local = datetime.fromtimestamp(start_ms / 1000, ZoneInfo(self.timezone))
        # the next midnight: where a DST change skips midnight, a day starts at 01:00
        return self.pane_start(_epoch_ms(local + timedelta(days=self.days, hours=12)))

    def window_start(self, end_ms: int) -> int:
        return self.pane_start(end_ms - 1)


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def calendar_for(window_ms: int, hop_ms: int | None, timezone: str) -> Calendar:
    """The calendar of a KPI; raise ``ValueError`` for windows it cannot align.

    >>> calendar_for(3_600_000, 300_000, "UTC").panes_per_window
    12
    >>> calendar_for(60_000, 7_000, "UTC")
    Traceback (most recent call last):
    ...
    ValueError: window 60000ms is not a whole number of hops of 7000ms;
    choose a hop that divides the window
    """
    if window_ms >= DAY_MS:
        if window_ms not in (DAY_MS, WEEK_MS):
            raise ValueError(f"windows of a day or longer must be 1d or 1w, got {window_ms}ms")
        if hop_ms is not None and hop_ms != window_ms:
            raise ValueError("hop is not supported for windows of a day or longer")
        return DayCalendar(window_ms // DAY_MS, timezone)
    if window_ms <= 0:
        raise ValueError(f"window must be longer than 0ms, got {window_ms}ms")
    hop = window_ms if hop_ms is None else hop_ms
    if hop <= 0 or hop > window_ms or window_ms % hop:
        raise ValueError(
            f"window {window_ms}ms is not a whole number of hops of {hop}ms; "
            "choose a hop that divides the window"
        )
    return FixedCalendar(hop, window_ms // hop)
