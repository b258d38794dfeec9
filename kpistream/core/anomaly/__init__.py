"""Online per-series anomaly detection (seasonal level model + anomaly likelihood)."""

from kpistream.core.anomaly.detector import AnomalyConfig, Judgement, SeriesDetector

__all__ = ["AnomalyConfig", "Judgement", "SeriesDetector"]
