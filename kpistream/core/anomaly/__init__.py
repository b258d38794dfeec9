"""Online per-series anomaly detection (seasonal level model + record-based surprise)."""

from kpistream.core.anomaly.detector import (
    MODEL_VERSION,
    SHIFT_WINDOWS,
    AnomalyConfig,
    Judgement,
    SeriesDetector,
)

__all__ = ["MODEL_VERSION", "SHIFT_WINDOWS", "AnomalyConfig", "Judgement", "SeriesDetector"]
