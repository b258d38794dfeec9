"""The PNG chart attached to a notification: the first event's recent series."""

from __future__ import annotations

import re

from kpistream.core.notify.model import AlertEvent, Notification

__all__ = ["notification_chart", "threshold_of"]

_THRESHOLD = re.compile(r"^\s*value\s*(?:<=|>=|<|>|==|!=)\s*(-?\d+(?:\.\d+)?)\s*$")


def threshold_of(condition: str) -> float | None:
    """The constant a simple ``value <op> N`` condition compares against, else None.

    >>> threshold_of("value < 1000"), threshold_of("value < avg_over(1h)")
    (1000.0, None)
    """
    match = _THRESHOLD.match(condition)
    return float(match.group(1)) if match else None


def notification_chart(n: Notification, *, timezone: str = "UTC") -> bytes | None:
    """A PNG of the first event that has at least two history points, or None."""
    event = next((e for e in n.events if len(e.history) >= 2), None)
    if event is None:
        return None
    from kpistream.shell.charts import chart_png  # matplotlib: ~40 MB, loaded at first use

    return chart_png(
        event.history,
        title=_title(event),
        threshold=threshold_of(event.condition),
        unit=event.unit,
        timezone=timezone,
    )


def _title(event: AlertEvent) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in event.labels)
    name = event.kpi_title or event.kpi
    return f"{name} ({labels})" if labels else name
