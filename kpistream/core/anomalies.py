"""The anomaly models of one KPI: one :class:`SeriesDetector` per series, fed each window.

Each closed window's value is judged against the series' learned band, then learned from,
unless the window overlaps an excluded range (a holiday, a known event): there the model
neither learns nor flags. A series' model is dropped once the series has been silent for
``forget_after_ms`` (by default the longer of the KPI's ``series_ttl`` and eight days, so a
weekly cycle survives a quiet weekend).

>>> from kpistream.core.anomaly import AnomalyConfig
>>> from kpistream.core.values import ClosedWindow
>>> models = KpiAnomalies(AnomalyConfig(window_ms=60_000, warmup=5))
>>> for i in range(1, 40):
...     verdicts = models.judge(ClosedWindow("n", (i - 1) * 60_000, i * 60_000,
...                                          {("east",): 100.0 + i % 3}))
>>> verdicts[("east",)].expected is not None
True
>>> models.judge(ClosedWindow("n", 39 * 60_000, 40 * 60_000, {("east",): 900.0})
...              )[("east",)].is_anomaly
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kpistream.core.anomaly import AnomalyConfig, Judgement, SeriesDetector
from kpistream.core.values import ClosedWindow, SeriesKey

__all__ = ["ANOMALY_NAMES", "KpiAnomalies", "judgement_env"]

#: Names an alert condition of a KPI with ``anomaly:`` may read.
ANOMALY_NAMES = ("expected", "lower", "upper", "anomaly_score", "is_anomaly")
EIGHT_DAYS_MS = 8 * 86_400_000


def judgement_env(judgement: Judgement | None) -> dict[str, object]:
    """The condition names of one judgement (all None without one).

    >>> judgement_env(None)["is_anomaly"] is None
    True
    """
    if judgement is None:
        return dict.fromkeys(ANOMALY_NAMES)
    return {"expected": judgement.expected, "lower": judgement.lower, "upper": judgement.upper,
            "anomaly_score": judgement.score, "is_anomaly": judgement.is_anomaly}


class KpiAnomalies:
    """Every series' detector of one KPI, with the KPI's excluded time ranges."""

    def __init__(self, config: AnomalyConfig, exclude: Sequence[tuple[int, int]] = (),
                 forget_after_ms: int = EIGHT_DAYS_MS) -> None:
        self.config = config
        self.exclude = tuple(exclude)
        self.forget_after_ms = forget_after_ms
        self.detectors: dict[SeriesKey, SeriesDetector] = {}
        self.last_seen: dict[SeriesKey, int] = {}

    def judge(self, window: ClosedWindow) -> dict[SeriesKey, Judgement]:
        """Judge then learn every series' value of a closed window."""
        excluded = self.excluded(window.start_ms, window.end_ms)
        verdicts: dict[SeriesKey, Judgement] = {}
        for key, value in window.values.items():
            detector = self.detectors.get(key)
            if detector is None:
                detector = self.detectors[key] = SeriesDetector(self.config)
            verdict = detector.observe(window.end_ms, value, learn=not excluded)
            verdicts[key] = replace(verdict, is_anomaly=False) if excluded else verdict
            self.last_seen[key] = window.end_ms
        self._forget(window.end_ms)
        return verdicts

    def accept(self, key: SeriesKey, end_ms: int, value: float) -> bool:
        """Feedback: the series' value at ``end_ms`` was normal. False if it has no model."""
        detector = self.detectors.get(key)
        if detector is None:
            return False
        detector.accept(end_ms, value)
        return True

    def excluded(self, start_ms: int, end_ms: int) -> bool:
        """Whether ``[start_ms, end_ms)`` overlaps an excluded range."""
        return any(start < end_ms and end > start_ms for start, end in self.exclude)

    def state(self) -> dict:
        return {"detectors": self.detectors, "last_seen": self.last_seen}

    def load(self, state: dict) -> None:
        self.detectors, self.last_seen = state["detectors"], state["last_seen"]

    def _forget(self, now_ms: int) -> None:
        horizon = now_ms - self.forget_after_ms
        if not self.last_seen or min(self.last_seen.values()) >= horizon:
            return
        for key in [k for k, seen in self.last_seen.items() if seen < horizon]:
            del self.detectors[key], self.last_seen[key]
