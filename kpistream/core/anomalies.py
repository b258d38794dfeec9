"""The anomaly models of one KPI: one :class:`SeriesDetector` per series, fed each window.

Each closed window's value is judged against the series' learned band, then learned from,
unless the window overlaps an excluded range (a holiday, a known event): there the model
neither learns nor judges (no band, score 0). A value that is not finite (an overflowed
sum) is skipped. A series' model is dropped once the series has been silent for
``forget_after_ms`` (by default the longer of the KPI's ``series_ttl`` and eight days, so a
weekly cycle survives a quiet weekend).

Feedback (``kpistream feedback --alert ID --not-anomaly``) names a flagged window: the last
``FLAGGED_KEPT`` windows judged anomalous are remembered per series with their values, and
:meth:`KpiAnomalies.accept` teaches the model that such a value was normal, once per window
(feedback read again after a restart changes nothing twice).

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

import math
from collections.abc import Sequence

from kpistream.core.anomaly import AnomalyConfig, Judgement, SeriesDetector
from kpistream.core.values import ClosedWindow, SeriesKey

__all__ = ["ANOMALY_NAMES", "FLAGGED_KEPT", "KpiAnomalies", "judgement_env"]

#: Names an alert condition of a KPI with ``anomaly:`` may read.
ANOMALY_NAMES = ("expected", "lower", "upper", "anomaly_score", "is_anomaly")
EIGHT_DAYS_MS = 8 * 86_400_000
#: flagged windows remembered per series for feedback
FLAGGED_KEPT = 32


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
        #: series -> window end -> value, of the recent windows judged anomalous
        self.flagged: dict[SeriesKey, dict[int, float]] = {}
        #: (series, window end) already accepted as normal
        self.accepted: set[tuple[SeriesKey, int]] = set()

    def judge(self, window: ClosedWindow) -> dict[SeriesKey, Judgement]:
        """Judge then learn every series' value of a closed window."""
        excluded = self.excluded(window.start_ms, window.end_ms)
        verdicts: dict[SeriesKey, Judgement] = {}
        for key, value in window.values.items():
            if not math.isfinite(value):
                continue  # an overflowed sum: judged nothing, and not learnt
            detector = self.detectors.get(key)
            if detector is None:
                detector = self.detectors[key] = SeriesDetector(self.config)
            verdict = detector.observe(window.end_ms, value, learn=not excluded)
            if excluded:  # a known event: no band, no score, no verdict
                verdict = Judgement(None, None, None, 0.0, False, verdict.model)
            elif verdict.is_anomaly:
                self._flag(key, window.end_ms, value)
            verdicts[key] = verdict
            self.last_seen[key] = window.end_ms
        self._forget(window.end_ms)
        return verdicts

    def accept(self, key: SeriesKey, end_ms: int) -> str:
        """Feedback: the series' window ending at ``end_ms`` was no anomaly.

        Returns ``accepted``, ``already`` (done before) or ``unknown`` (no such flagged
        window of this series here: another worker's series, or long forgotten).
        """
        if (key, end_ms) in self.accepted:
            return "already"
        value = self.flagged.get(key, {}).get(end_ms)
        detector = self.detectors.get(key)
        if value is None or detector is None:
            return "unknown"
        detector.accept(end_ms, value)
        self.accepted.add((key, end_ms))
        return "accepted"

    def flagged_series(self) -> list[SeriesKey]:
        """The series with flagged windows (what feedback can name)."""
        return list(self.flagged)

    def _flag(self, key: SeriesKey, end_ms: int, value: float) -> None:
        flagged = self.flagged.setdefault(key, {})
        flagged[end_ms] = value
        if len(flagged) > FLAGGED_KEPT:
            del flagged[min(flagged)]

    def excluded(self, start_ms: int, end_ms: int) -> bool:
        """Whether ``[start_ms, end_ms)`` overlaps an excluded range."""
        return any(start < end_ms and end > start_ms for start, end in self.exclude)

    def state(self) -> dict:
        return {"detectors": self.detectors, "last_seen": self.last_seen,
                "flagged": self.flagged, "accepted": self.accepted}

    def load(self, state: dict) -> None:
        self.detectors, self.last_seen = state["detectors"], state["last_seen"]
        self.flagged, self.accepted = state["flagged"], state["accepted"]

    def _forget(self, now_ms: int) -> None:
        horizon = now_ms - self.forget_after_ms
        if not self.last_seen or min(self.last_seen.values()) >= horizon:
            return
        for key in [k for k, seen in self.last_seen.items() if seen < horizon]:
            del self.detectors[key], self.last_seen[key]
            self.flagged.pop(key, None)
        self.accepted = {(k, end) for k, end in self.accepted if end >= horizon}
