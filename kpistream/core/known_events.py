"""Known events (public holidays, shopping festivals) that anomaly models should not learn.

Built-in calendars live in ``kpistream/calendars/*.yaml``: per calendar a list of
``{name, from, to}`` days, both ends inclusive, read in the rules' timezone.

>>> ranges = calendar_ranges("cn_shopping_festivals", "Asia/Shanghai")
>>> from kpistream.core.durations import rfc3339
>>> [rfc3339(ms) for ms in ranges[0]]  # 618 in 2024, a Shanghai day
['2024-06-17T16:00:00Z', '2024-06-18T16:00:00Z']
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

from ruamel.yaml import YAML

__all__ = ["CALENDARS", "calendar_ranges"]

#: Built-in calendar name -> the package file holding it.
CALENDARS = {"cn_holidays": "cn.yaml", "cn_shopping_festivals": "cn.yaml",
             "cn_workdays": "cn.yaml"}


@functools.cache
def _days(name: str) -> tuple[tuple[date, date], ...]:
    text = resources.files("kpistream").joinpath("calendars", CALENDARS[name]).read_text("utf-8")
    return tuple((e["from"], e["to"]) for e in YAML(typ="safe").load(text)[name])


def calendar_ranges(name: str, timezone: str) -> tuple[tuple[int, int], ...]:
    """The ``[start_ms, end_ms)`` ranges of a built-in calendar's days in ``timezone``."""
    zone = ZoneInfo(timezone)

    def midnight(day: date) -> int:
        return int(datetime.combine(day, time(), zone).timestamp() * 1000)

    return tuple((midnight(first), midnight(last + timedelta(days=1)))
                 for first, last in _days(name))
