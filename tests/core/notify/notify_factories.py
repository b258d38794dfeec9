"""Factories for notifier tests: events and owner policies with explicit times."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kpistream.core.notify.model import AlertEvent, OwnerPolicy

MIN = 60_000


def make_event(**changes: Any) -> AlertEvent:
    """A firing critical gmv_low for region=east, owned by ops, at 10 min."""
    base = AlertEvent("gmv_low", "gmv", (("region", "east"),), "firing", "critical",
                      10 * MIN, 7 * MIN, 812.5, "value < 1000", "ops")
    return replace(base, **changes)


def make_owner(**changes: Any) -> OwnerPolicy:
    base = OwnerPolicy("ops", ("json://localhost/hook",), repeat_interval_ms=60 * MIN)
    return replace(base, **changes)
