"""The alert state machine: inactive → pending → firing → resolved, per alert and series.

Evaluated at each closed window of the alert's KPI, as the contract says: pending at the
first close where ``when`` holds, firing at the first close at least ``for`` later while it
held at every close in between, resolved at the first close where it no longer holds (or the
series has no value).

>>> from kpistream.core.ruleset import Alert
>>> from kpistream.core.values import ClosedWindow
>>> rule = Alert("low", "gmv", lambda env: env["value"] < 10, "value < 10", 120_000,
...              "critical", None)
>>> m = AlertMachine(rule)
>>> for end, v in [(60_000, 5.0), (120_000, 4.0), (180_000, 3.0), (240_000, 50.0)]:
...     for t in m.evaluate(ClosedWindow("gmv", end - 60_000, end, {("east",): v})):
...         print(t.state, t.at_ms, t.value, t.since_ms)
firing 180000 3.0 60000
resolved 240000 50.0 60000
"""

from __future__ import annotations

from dataclasses import dataclass

from kpistream.core.ruleset import Alert
from kpistream.core.values import AlertState, AlertTransition, ClosedWindow, SeriesKey

__all__ = ["AlertMachine", "SeriesAlert"]


@dataclass
class SeriesAlert:
    """The state of one alert for one series."""

    state: AlertState
    since_ms: int


class AlertMachine:
    """Evaluates one alert rule over its KPI's closed windows."""

    def __init__(self, rule: Alert) -> None:
        self.rule = rule
        self.series: dict[SeriesKey, SeriesAlert] = {}

    def evaluate(self, window: ClosedWindow) -> list[AlertTransition]:
        """Advance every series' state with this window; return the transitions."""
        out: list[AlertTransition] = []
        for key, value in window.values.items():
            holds = self._holds(value)
            transition = self._step(key, holds, value, window.end_ms)
            if transition:
                out.append(transition)
        for key in [k for k in self.series if k not in window.values]:
            transition = self._step(key, False, None, window.end_ms)
            if transition:
                out.append(transition)
        return out

    def firing(self) -> dict[SeriesKey, SeriesAlert]:
        return {k: s for k, s in self.series.items() if s.state is AlertState.FIRING}

    def _holds(self, value: float) -> bool:
        try:
            return self.rule.when({"value": value}) is True
        except (ArithmeticError, ValueError):
            return False

    def _step(self, key: SeriesKey, holds: bool, value: float | None, at_ms: int
              ) -> AlertTransition | None:
        current = self.series.get(key)
        if not holds:
            if current is None:
                return None
            del self.series[key]
            if current.state is AlertState.FIRING:
                return self._transition(key, "resolved", at_ms, value, current.since_ms)
            return None
        if current is None:
            current = self.series[key] = SeriesAlert(AlertState.PENDING, at_ms)
        if current.state is AlertState.PENDING and at_ms - current.since_ms >= self.rule.for_ms:
            current.state = AlertState.FIRING
            return self._transition(key, "firing", at_ms, value, current.since_ms)
        return None

    def _transition(self, key: SeriesKey, state: str, at_ms: int, value: float | None,
                    since_ms: int) -> AlertTransition:
        rule = self.rule
        return AlertTransition(rule.name, rule.kpi, key, state, at_ms, value, rule.severity,
                               since_ms)
