"""Per-series online anomaly detector: seasonal level model + anomaly likelihood.

One :class:`SeriesDetector` per KPI series judges each closed window, then learns from it.
The model ("seasonal-ewm") is a composition of River statistics and small arrays:

- *expected value*: an exponentially weighted level plus, when it predicts better, a
  daily or weekly profile (``array('d')`` of coarse bins, linearly interpolated), picked
  automatically by comparing the candidates' smoothed absolute errors;
- *scale*: ``river.stats.EWMean`` of the absolute residual (a robust spread);
- *likelihood*: residuals become raw scores ``|r| / scale``; the mean of the last
  ``SHORT`` raw scores is compared with the long-run distribution of that mean
  (``river.stats.Var``), as in Numenta's anomaly likelihood, so that both a single large
  deviation and a run of moderate ones are caught while the normal noise of the series
  sets the bar;
- *band*: the values at which either the likelihood or the plain raw score would cross
  the sensitivity's threshold, so ``is_anomaly`` is exactly "value outside the band".

Robustness: residuals are clipped to the band before learning (an anomaly does not teach
the model it is normal); after ``SHIFT_WINDOWS`` consecutive windows outside the band on
the same side the level jumps to the new values (a level shift becomes the new normal).

>>> d = SeriesDetector(AnomalyConfig(warmup=20))
>>> for k in range(1, 101):
...     j = d.observe(k * 60_000, 10.0 + (k % 3))
>>> j.is_anomaly, round(j.expected, 1), j.model
(False, 11.0, 'seasonal-ewm')
>>> d.observe(101 * 60_000, 40.0).is_anomaly
True
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from river import stats

__all__ = ["AnomalyConfig", "Judgement", "SeriesDetector"]

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MODEL_NAME = "seasonal-ewm"

#: windows averaged into the short-term raw score (Numenta's averaging window)
SHORT = 10
#: consecutive windows outside the band, on one side, after which the level follows them
SHIFT_WINDOWS = 12
#: default warm-up, in windows (fits in NAB's probation of the shortest files)
DEFAULT_WARMUP = 150
#: per-window smoothing factor of the level
LEVEL_ALPHA = 0.1
#: per-window smoothing factor of the scale (mean absolute residual)
SCALE_ALPHA = 0.02
#: per-window smoothing factor of each candidate's error, used to pick the model
SELECT_ALPHA = 0.01
#: a seasonal candidate must beat the plain level by this factor to be used
SELECT_MARGIN = 0.9
#: per-period learning rate of a seasonal profile bin
PROFILE_PERIODS = 3.0
#: raw scores are clipped here before entering the long-run distribution
RAW_CAP = 10.0
#: sensitivity -> (likelihood z threshold, plain raw-score threshold)
THRESHOLDS = {"low": (4.5, 12.0), "medium": (3.7, 9.0), "high": (3.0, 6.0)}
#: accept() multiplies the tolerance by this, up to MAX_TOLERANCE
ACCEPT_FACTOR = 1.2
MAX_TOLERANCE = 3.0


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    """Options of one KPI's detector; the defaults are the best measured configuration.

    >>> AnomalyConfig().sensitivity, AnomalyConfig(direction="up").direction
    ('medium', 'up')
    """

    sensitivity: Literal["low", "medium", "high"] = "medium"
    direction: Literal["up", "down", "both"] = "both"
    warmup: int | None = None
    seasonality: tuple[int, ...] | None = None
    timezone: str = "UTC"
    window_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class Judgement:
    """The verdict on one window; bands are ``None`` while warming up."""

    expected: float | None
    lower: float | None
    upper: float | None
    score: float
    is_anomaly: bool
    model: str


class _Candidate:
    """Level plus an optional seasonal profile of one period (``period_ms`` 0 = none)."""

    __slots__ = ("bins", "error", "first_ms", "level", "period_ms", "profile", "profile_alpha")

    def __init__(self, period_ms: int, window_ms: int) -> None:
        self.period_ms = period_ms
        self.level = math.nan
        self.error = 0.0
        self.first_ms = -1
        if period_ms:
            self.bins = max(2, min(period_ms // window_ms, 48 * math.ceil(period_ms / DAY_MS)))
            self.profile = array("d", bytes(8 * self.bins))
            visits_per_period = period_ms / window_ms / self.bins
            self.profile_alpha = 1.0 - math.exp(-1.0 / (PROFILE_PERIODS * visits_per_period))
        else:
            self.bins, self.profile, self.profile_alpha = 0, array("d"), 0.0

    def ready(self, end_ms: int) -> bool:
        """Whether this candidate has seen a whole period (always true without season)."""
        if not self.period_ms:
            return True
        return self.first_ms >= 0 and end_ms - self.first_ms >= self.period_ms

    def _position(self, local_ms: int) -> tuple[int, int, float]:
        """Two neighbouring bins around ``local_ms`` and the weight of the second."""
        x = (local_ms % self.period_ms) / self.period_ms * self.bins - 0.5
        low = math.floor(x)
        frac = x - low
        return low % self.bins, (low + 1) % self.bins, frac

    def season(self, local_ms: int) -> float:
        """Seasonal offset at ``local_ms`` (0 without season)."""
        if not self.period_ms:
            return 0.0
        a, b, w = self._position(local_ms)
        return self.profile[a] * (1.0 - w) + self.profile[b] * w

    def predict(self, local_ms: int) -> float:
        """Expected value at ``local_ms``."""
        return self.level + self.season(local_ms)

    def learn(self, end_ms: int, local_ms: int, value: float) -> None:
        """Move level and profile towards ``value`` (already clipped by the caller)."""
        if self.first_ms < 0:
            self.first_ms = end_ms
        if math.isnan(self.level):
            self.level = value
            return
        season = self.season(local_ms)
        self.error += SELECT_ALPHA * (abs(value - self.level - season) - self.error)
        self.level += LEVEL_ALPHA * (value - season - self.level)
        if self.period_ms:
            a, b, w = self._position(local_ms)
            gap = value - self.level - season
            self.profile[a] += self.profile_alpha * (1.0 - w) * gap
            self.profile[b] += self.profile_alpha * w * gap


class SeriesDetector:
    """Online detector of one series: ``observe`` each window in time order.

    Picklable and deterministic (no randomness), so a backtest and a live run agree.
    """

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self.warmup = DEFAULT_WARMUP if config.warmup is None else config.warmup
        self.z_likelihood, self.z_raw = THRESHOLDS[config.sensitivity]
        periods = _periods(config)
        self.forced = config.seasonality is not None and bool(periods)
        self.candidates = [_Candidate(p, config.window_ms) for p in periods]
        if not self.forced:
            self.candidates.insert(0, _Candidate(0, config.window_ms))
        self.scale = stats.EWMean(SCALE_ALPHA)
        self.history = stats.Var()
        self.recent = array("d", bytes(8 * SHORT))
        self.seen = 0
        self.tolerance = 1.0
        self.run_side = 0
        self.run_length = 0
        self.run_sum = 0.0
        self._tz = None if config.timezone == "UTC" else ZoneInfo(config.timezone)

    def __getstate__(self) -> dict:
        state = {name: getattr(self, name) for name in vars(self)}
        state["_tz"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        if self.config.timezone != "UTC":
            self._tz = ZoneInfo(self.config.timezone)

    # ------------------------------------------------------------------ public API

    def observe(self, end_ms: int, value: float, *, learn: bool = True) -> Judgement:
        """Judge the window ending at ``end_ms``, then learn from it unless ``learn`` is False."""
        local_ms = self._local_ms(end_ms)
        model = self._best(end_ms)
        if math.isnan(model.level):
            if learn:
                self._learn(end_ms, local_ms, value, value, math.inf)
            return Judgement(None, None, None, 0.0, False, MODEL_NAME)
        expected = model.predict(local_ms)
        warm = self.seen >= self.warmup
        half = self._half_width(expected) if warm else math.inf
        if learn:
            self._learn(end_ms, local_ms, value, expected, half)
        if not warm:
            return Judgement(None, None, None, 0.0, False, MODEL_NAME)
        return self._judge(expected, half, value)

    def accept(self, end_ms: int, value: float) -> None:
        """Feedback "this was not an anomaly".

        Learns ``value`` as a normal point (no clipping: level, profiles and scale move
        towards it), ends any run of out-of-band windows, and widens every later band by
        multiplying the series' tolerance by 1.2 (at most 3.0 in total).
        """
        local_ms = self._local_ms(end_ms)
        model = self._best(end_ms)
        expected = value if math.isnan(model.level) else model.predict(local_ms)
        self._learn(end_ms, local_ms, value, expected, math.inf)
        self.tolerance = min(MAX_TOLERANCE, self.tolerance * ACCEPT_FACTOR)
        self.run_side = self.run_length = 0
        self.run_sum = 0.0

    # ------------------------------------------------------------------ internals

    def _local_ms(self, end_ms: int) -> int:
        """Middle of the window in the configured zone's wall-clock milliseconds."""
        middle = end_ms - self.config.window_ms // 2
        if self._tz is None:
            return middle
        from datetime import datetime

        offset = datetime.fromtimestamp(middle / 1000, self._tz).utcoffset()
        return middle + int(offset.total_seconds() * 1000) if offset else middle

    def _best(self, end_ms: int) -> _Candidate:
        """The candidate with the smallest smoothed error among those ready."""
        best = self.candidates[0]
        for cand in self.candidates[1:]:
            if not cand.ready(end_ms):
                continue
            margin = 1.0 if self.forced and not best.ready(end_ms) else SELECT_MARGIN
            if not best.ready(end_ms) or cand.error < margin * best.error:
                best = cand
        return best

    def _scale(self, expected: float) -> float:
        """Robust spread of residuals, floored so constant series stay usable."""
        return max(self.scale.get(), 1e-9 * (abs(expected) + 1.0))

    def _half_width(self, expected: float) -> float:
        """Half width of the band: where either score crosses its threshold."""
        scale = self._scale(expected) * self.tolerance
        raw_limit = self.z_raw
        prior = sum(self.recent) - self.recent[self.seen % SHORT]
        mean, var = self.history.mean.get(), self.history.get()
        needed = mean + self.z_likelihood * math.sqrt(max(var, 1e-12))
        lik_limit = max(0.0, SHORT * needed - prior)
        return scale * min(raw_limit, lik_limit)

    def _judge(self, expected: float, half: float, value: float) -> Judgement:
        """Band, score and verdict for ``value``; direction decides which side counts."""
        direction = self.config.direction
        dev = value - expected
        if direction == "up":
            dev = max(dev, 0.0)
        elif direction == "down":
            dev = max(-dev, 0.0)
        dev = abs(dev)
        ratio = dev / half if half > 0 else (math.inf if dev > 0 else 1.0)
        score = 1.0 if math.isinf(ratio) else ratio / (1.0 + ratio)
        lower, upper = expected - half, expected + half
        return Judgement(expected, lower, upper, score, dev > half, MODEL_NAME)

    def _raw(self, residual: float, scale: float) -> float:
        """Raw score of a residual, counting only the configured direction."""
        direction = self.config.direction
        if direction == "up":
            residual = max(residual, 0.0)
        elif direction == "down":
            residual = max(-residual, 0.0)
        return min(abs(residual) / (scale * self.tolerance), RAW_CAP)

    def _learn(
        self, end_ms: int, local_ms: int, value: float, expected: float, half: float
    ) -> None:
        """Update the likelihood window, the scale, the run tracker and every candidate."""
        residual = value - expected
        scale = self._scale(expected)
        self.recent[self.seen % SHORT] = self._raw(residual, scale)
        self.seen += 1
        if self.seen >= SHORT:
            self.history.update(sum(self.recent) / SHORT)
        target = self._limit(value, expected, half, residual)
        if target is None:
            target = value
        else:
            self.scale.update(abs(target - expected))
        for cand in self.candidates:
            cand.learn(end_ms, local_ms, target)

    def _limit(self, value: float, expected: float, half: float, residual: float) -> float | None:
        """Value to learn from: clipped to the band; None after a level shift (levels moved)."""
        if abs(residual) <= half:
            self.run_side = self.run_length = 0
            self.run_sum = 0.0
            return value
        side = 1 if residual > 0 else -1
        if side != self.run_side:
            self.run_side, self.run_length, self.run_sum = side, 0, 0.0
        self.run_length += 1
        self.run_sum += residual
        if self.run_length < SHIFT_WINDOWS:
            return expected + side * half
        shift = self.run_sum / self.run_length
        for cand in self.candidates:
            cand.level += shift
        self.recent = array("d", bytes(8 * SHORT))
        self.run_side = self.run_length = 0
        self.run_sum = 0.0
        return None


def _periods(config: AnomalyConfig) -> list[int]:
    """Seasonal periods to try: the configured ones, or day and week when they fit."""
    periods = list(config.seasonality) if config.seasonality is not None else [DAY_MS, WEEK_MS]
    return [p for p in periods if p >= 4 * config.window_ms]
