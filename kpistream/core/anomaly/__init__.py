"""Online per-series anomaly detection (seasonal level model + record-based surprise)."""

from kpistream.core.anomaly.detector import (
    SHIFT_WINDOWS,
    AnomalyConfig,
    Judgement,
    SeriesDetector,
)

__all__ = ["SHIFT_WINDOWS", "AnomalyConfig", "Judgement", "SeriesDetector"]
