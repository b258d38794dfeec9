"""The values that flow out of the window state: closed windows, and alert states."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kpistream.core.anomaly import Judgement

__all__ = ["AlertState", "ClosedWindow", "SeriesKey", "TargetStatus", "format_value"]

#: A series is identified within its KPI by its label values, in the KPI's ``by`` order.
SeriesKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One series' standing against one target, as of one window end."""

    period: str
    period_start_ms: int
    period_end_ms: int
    at_ms: int
    target: float
    #: the period-to-date value
    value: float
    attainment: float
    #: pace: the share of the target due by now, from the series' learned profile
    expected_attainment: float
    forecast: float
    forecast_lower: float
    forecast_upper: float
    hit_probability: float
    #: what the pace was learned from: ``linear``, ``daily`` or ``weekly``
    pace_model: str
    #: when tracking began, if after the period's start (the value misses the period's
    #: beginning: kpistream keeps no raw history to fill it)
    tracked_from_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """Every series' value of one KPI for one closed window ``[start_ms, end_ms)``."""

    kpi: str
    start_ms: int
    end_ms: int
    values: dict[SeriesKey, float]
    #: series that had events in the window (absence alerts read it)
    active: frozenset[SeriesKey] = frozenset()
    #: KPIs with ``anomaly:``: each series' judgement against its learned band
    judgements: Mapping[SeriesKey, Judgement] | None = None
    #: KPIs with ``targets:``: each series' standing against each of its targets
    standings: Mapping[SeriesKey, tuple[TargetStatus, ...]] | None = None


class AlertState(Enum):
    """Where an alert stands for one series (Prometheus' inactive, pending, firing)."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


def format_value(value: float) -> str:
    """A decimal rendering stable across batchings: 12 significant digits, no exponent.

    >>> format_value(3.0), format_value(0.1 + 0.2), format_value(1234567.891), format_value(2e-7)
    ('3', '0.3', '1234567.891', '0.0000002')
    """
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.12g}"
    if "e" in text:
        text = format(Decimal(text), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
