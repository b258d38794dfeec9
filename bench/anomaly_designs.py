"""Alternative anomaly detector designs, used only to compare with the production one.

Thresholds were set by a coarse sweep on NAB dev (z 3..8, HST 0.9..0.995), each at its
best. Every design is built from River components and offers ``observe(end_ms, value)``
returning a :class:`~kpistream.core.anomaly.Judgement`, like
:class:`~kpistream.core.anomaly.SeriesDetector`. ``DESIGNS`` maps a name to a factory
taking the series' window length in ms; ``bench/anomaly_compare.py`` scores them on NAB.

>>> d = DESIGNS["rolling-zscore"](60_000)
>>> [d.observe(k * 60_000, float(k % 2)).is_anomaly for k in range(1, 4)]
[False, False, False]
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable

from river import anomaly, preprocessing, stats, time_series, utils

from kpistream.core.anomaly import AnomalyConfig, Judgement, SeriesDetector
from kpistream.core.anomaly.detector import DAY_MS, MODEL_NAME, RAW_CAP

#: windows before any design judges (the production default, for a fair comparison)
WARMUP = 200


def _band(name: str, expected: float, half: float, value: float) -> Judgement:
    """Judgement for a symmetric band ``expected ± half``."""
    dev = abs(value - expected)
    ratio = dev / half if half > 0 else math.inf
    score = 1.0 if math.isinf(ratio) else ratio / (1.0 + ratio)
    return Judgement(expected, expected - half, expected + half, score, dev > half, name)


WARMING = Judgement(None, None, None, 0.0, False, "warmup")


class RollingZScore:
    """Windowed Gaussian: z-score against the mean/std of the last ``window`` values."""

    def __init__(self, window: int = 1_000, z: float = 6.0) -> None:
        self.var = utils.Rolling(stats.Var(), window_size=window)
        self.mean = utils.Rolling(stats.Mean(), window_size=window)
        self.z, self.seen = z, 0

    def observe(self, end_ms: int, value: float) -> Judgement:
        """Judge against the window, then add the value to it."""
        judgement = WARMING
        if self.seen >= WARMUP:
            half = self.z * math.sqrt(max(self.var.get(), 0.0))
            judgement = _band("rolling-zscore", self.mean.get(), half, value)
        self.var.update(value)
        self.mean.update(value)
        self.seen += 1
        return judgement


class HoltWintersResidual:
    """River HoltWinters one-step forecast; residual z-scored by an EW variance."""

    def __init__(self, window_ms: int, z: float = 8.0) -> None:
        season = DAY_MS // window_ms if DAY_MS // window_ms <= 300 else 0
        self.ready = max(WARMUP, season + 2)
        self.model = time_series.HoltWinters(
            alpha=0.3, beta=0.01, gamma=0.1 if season else None, seasonality=season)
        self.var = stats.EWVar(0.01)
        self.z, self.seen = z, 0

    def observe(self, end_ms: int, value: float) -> Judgement:
        """Judge against the forecast, then learn the value."""
        judgement = WARMING
        if self.seen >= self.ready:
            expected = self.model.forecast(1)[0]
            judgement = _band("holt-winters", expected, self.z * math.sqrt(self.var.get()), value)
            self.var.update(value - expected)
        self.model.learn_one(value)
        self.seen += 1
        return judgement


class HalfSpaceTreesDesign:
    """River HalfSpaceTrees on the min-max scaled value and its change (seeded)."""

    def __init__(self, threshold: float = 0.995) -> None:
        self.scaler = preprocessing.MinMaxScaler()
        self.trees = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42)
        self.threshold, self.previous, self.seen = threshold, None, 0

    def observe(self, end_ms: int, value: float) -> Judgement:
        """Score the scaled point, then learn it; no band (trees have none)."""
        change = 0.0 if self.previous is None else value - self.previous
        self.previous = value
        x = {"value": value, "change": change}
        self.scaler.learn_one(x)
        scaled = self.scaler.transform_one(x)
        score = self.trees.score_one(scaled)
        self.trees.learn_one(scaled)
        self.seen += 1
        if self.seen <= WARMUP:
            return WARMING
        return Judgement(None, None, None, score, score > self.threshold, "half-space-trees")


class SnarimaxResidual:
    """River SNARIMAX(2,1,1) one-step forecast; residual z-scored by an EW variance."""

    def __init__(self, z: float = 8.0) -> None:
        self.model = time_series.SNARIMAX(p=2, d=1, q=1)
        self.var = stats.EWVar(0.01)
        self.z, self.seen = z, 0

    def observe(self, end_ms: int, value: float) -> Judgement:
        """Judge against the forecast, then learn the value."""
        judgement = WARMING
        if self.seen >= WARMUP:
            expected = self.model.forecast(1)[0]
            judgement = _band("snarimax", expected, self.z * math.sqrt(self.var.get()), value)
            self.var.update(value - expected)
        self.model.learn_one(value)
        self.seen += 1
        return judgement


class GaussianLikelihood(SeriesDetector):
    """The production model with Numenta's Gaussian anomaly likelihood instead of records.

    The mean of the last ``SHORT`` raw scores is compared with the long-run mean/std of
    that mean (``river.stats.Var``); anomalous beyond ``z`` standard deviations.
    """

    SHORT = 10

    def __init__(self, config: AnomalyConfig, z: float = 4.0) -> None:
        super().__init__(config)
        self.z = z
        self.history = stats.Var()
        self.short = array("d", bytes(8 * self.SHORT))

    def _limit(self, side: int) -> float:
        """Half width, in scales, at which the likelihood reaches its threshold (either side;
        its own short window of raw scores, not the production horizons)."""
        needed = self.history.mean.get() + self.z * math.sqrt(max(self.history.get(), 1e-12))
        outage = len(self.run_residuals) if self.run_outage else 0
        previous = sum(1.0 if j <= outage else self.short[(self.seen - j) % self.SHORT]
                       for j in range(1, self.SHORT))
        return max(0.0, self.SHORT * needed - previous)

    def _push(self, raw: float, side: int) -> None:
        """Feed the short window and the long-run distribution of its mean (no records)."""
        self.short[self.seen % self.SHORT] = min(raw, RAW_CAP)
        self.seen += 1
        if self.seen >= self.SHORT:
            self.history.update(sum(self.short) / self.SHORT)

    def _forget_scores(self) -> None:
        """A closed run's raw scores count as ordinary ones (1) in the short window."""
        for j in range(2, len(self.run_residuals) + 2):
            self.short[(self.seen - j) % self.SHORT] = 1.0

    def observe(self, end_ms: int, value: float, *, learn: bool = True) -> Judgement:
        """As the production detector, under its own model name."""
        judgement = super().observe(end_ms, value, learn=learn)
        return judgement if judgement.model != MODEL_NAME else Judgement(
            judgement.expected, judgement.lower, judgement.upper, judgement.score,
            judgement.is_anomaly, "gauss-likelihood")


def _production(**options: object) -> Callable[[int], SeriesDetector]:
    """Factory of production detectors with ``options`` on top of the defaults."""
    return lambda window_ms: SeriesDetector(AnomalyConfig(window_ms=window_ms, **options))


#: design name -> factory(window_ms)
DESIGNS: dict[str, Callable[[int], object]] = {
    "rolling-zscore": lambda window_ms: RollingZScore(),
    "holt-winters-residual": HoltWintersResidual,
    "half-space-trees": lambda window_ms: HalfSpaceTreesDesign(),
    "snarimax-residual": lambda window_ms: SnarimaxResidual(),
    "ewm+gauss-likelihood": lambda window_ms: GaussianLikelihood(
        AnomalyConfig(window_ms=window_ms)),
    "seasonal-ewm records, no season": _production(seasonality=()),
    "seasonal-ewm records (default)": _production(),
}
