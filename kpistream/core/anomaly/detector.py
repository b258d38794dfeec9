"""Per-series online anomaly detector: seasonal level model + record-based surprise.

One :class:`SeriesDetector` per KPI series judges each closed window, then learns from it.
The model ("seasonal-ewm") composes River statistics and small arrays:

- *expected value*: an exponentially weighted level plus, when it predicts better, a
  daily or weekly profile (``array('d')`` of coarse bins, linearly interpolated), picked
  automatically by comparing the candidates' smoothed absolute errors once a profile has
  seen a whole period and judged a window per bin;
- *scale*: ``river.stats.EWMean`` of the absolute residual (mean absolute deviation; it
  grows after a burst, which makes the detector less jumpy right after an incident). With
  ``noise: poisson`` (chosen for ``count()`` and ``sum()`` KPIs) residuals are measured in
  units of ``sqrt(expected / level)``: the spread of a count or of a sum of amounts grows
  with the square root of its number of events, so a band at the 04:00 trough is narrower
  than at the 21:00 peak. With one spread for the whole day, a demo channel's visits at
  night sat inside a band wider than their level, and a channel's outage then was missed;
- *surprise*: the residual in scales (raw score) and, on its side of the expected value,
  the mean over the last ``HORIZONS`` windows of that side's raw scores (0 for a window on
  the other side), to catch runs of moderate deviations as Numenta's anomaly likelihood
  does, but only runs on one side: a burst of noise both ways is no shift, and when both
  sides were mixed it narrowed the band on each and flagged the next ordinary window
  (with ``EXTREME`` 3: NAB dev 64.38 mixed, 66.78 per side; false alerts on a demo day
  with an incident every 20 minutes 11 mixed, 3 per side). Each is compared with its own
  past maximum, which fades with a half-life of ``MEMORY`` windows. A window is anomalous
  when one of them beats the series' own record: a stationary series then breaks a
  record only on the order of once per ``MEMORY`` windows per surprise whatever its noise
  distribution (heavy tails included), while any change larger than what the series has
  done recently is caught. Records are kept per side (below and above the expected value): a
  sum's rare big orders are its upper tail and do not hide a drop. Sensitivity scales the
  records (low x1.25, medium x1, high x0.8);
- *band*: the values at which a surprise would reach its record on that side, so
  ``is_anomaly`` is exactly "value outside the band" (which need not be symmetric).

Robustness: the level learns from values clipped to ``min(band, LEVEL_CLIP scales)`` (an
anomaly does not teach the model it is normal). During warm-up, when there is no band yet,
a residual beyond the narrowest band (``_floor(1)`` scales) is an outlier: its surprise
stays out of the records and it enters the scale clipped to that band, so incidents seen
while warming up do not widen the band afterwards. Windows outside the band form a *run*;
the run's surprises and scale updates are deferred to its end, so a whole run is judged
against the records from before it and stays one alert. A run whose every value is at most
``OUTAGE_SHARE`` of the expected value is an outage: it teaches neither the records nor the
scale (while it lasts, its raw scores count as ordinary ones in the longer horizons), so
recurring outages are each caught. Once any run closes, its raw scores count as ordinary
ones too: it has been alerted, and the windows after it are judged on their own, not
flagged because an incident still weighs on the 15- and 60-window means. After
``SHIFT_WINDOWS`` (12) consecutive windows outside the band on the same side, the levels
jump by the run's mean residual: a persistent level shift is alerted for 12 windows and is
the new normal from the 13th window on. Its surprises then enter the records, so the
detector is less sensitive afterwards, fading with the records' half-life (``MEMORY``
windows). Shifts too small to leave the band are followed by the EW level (time constant
20 windows).
Gaps are harmless (the seasonal phase comes from the timestamp); zeros are ordinary
values (the model is additive, no division by the value).

>>> d = SeriesDetector(AnomalyConfig(warmup=20))
>>> for k in range(1, 301):
...     j = d.observe(k * 60_000, 10.0 + (k % 3))
>>> j.is_anomaly, round(j.expected), j.model
(False, 11, 'seasonal-ewm')
>>> d.observe(301 * 60_000, 40.0).is_anomaly
True
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from river import stats

__all__ = ["MODEL_VERSION", "SHIFT_WINDOWS", "AnomalyConfig", "Judgement", "SeriesDetector"]

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MODEL_NAME = "seasonal-ewm"
#: version of the models' state; it is part of a KPI's anomaly signature, so checkpointed
#: models of another version are not restored (the series start fresh models)
MODEL_VERSION = 4

#: surprise horizons in windows: one window, and the mean of the last ones
HORIZONS = (1, 15, 60)
#: half-life, in windows, of the records the surprises are compared with
MEMORY = 12_000
#: consecutive windows outside the band, on one side, after which the level follows them
SHIFT_WINDOWS = 12
#: default warm-up, in windows (fits in NAB's probation of the shortest files)
DEFAULT_WARMUP = 200
#: per-window smoothing factor of the level
LEVEL_ALPHA = 0.05
#: per-window smoothing factor of the scale (mean absolute residual)
SCALE_ALPHA = 0.005
#: largest per-window smoothing factor of each candidate's error (it is at most 1 / the
#: number of windows in a week), used to pick the model
SELECT_ALPHA = 0.01
#: a seasonal candidate must beat the plain level by this factor to be used
SELECT_MARGIN = 0.9
#: per-period learning rate of a seasonal profile bin
PROFILE_PERIODS = 3.0
#: raw scores are capped here inside multi-window means (one spike is the 1-window job)
RAW_CAP = 10.0
#: smallest record of the one-window raw score is 1 + FLOOR_SPREAD (raw scores average 1 by
#: construction of the scale, and spread about 1), of the mean of h > 1 one-sided scores
#: SIDED_FLOOR + FLOOR_SPREAD / sqrt(h)
FLOOR_SPREAD = 4.0
#: base of the longer horizons' smallest records (a one-sided score is 0 on the other side, so
#: it averages about 0.5): NAB dev 65.58 at 1, 66.12 at 1.5; false alerts per series-week on
#: the synthetic KPIs without anomalies (30 series) 2.61 at 1, 1.78 at 1.5; on a demo day with
#: an incident every 20 minutes (12 h of learning) 7 at 1, 3 at 1.5
SIDED_FLOOR = 1.5
#: what a forgotten raw score counts as in the one-sided means: about their average
ORDINARY_SCORE = 0.5
#: an out-of-band run whose peak surprise exceeds its record this many times is an
#: incident, not a tail: it leaves the record alone. NAB dev with the longer horizons per
#: side: 62.57 at 2, 64.11 at 2.25, 66.12 at 2.5, 66.71 at 2.75, 66.78 at 3, 63.16 at 4; demo
#: payment-failure incidents caught in a day (12 h of learning) 71, 70, 70, 69, 62, 43 of 72
#: (a lower factor stops the records of a thin series climbing from one incident to the next)
EXTREME = 2.5
#: a run whose every value is at most this share of the expected value is an outage (a
#: region losing most of its orders): it teaches neither the records nor the scale
OUTAGE_SHARE = 0.3
#: the longer horizons narrow the band to no less than this many scales on each side: a slow
#: drift keeps their means at their records, and at zero width any noise left the band
#: (NAB dev 63.59 at 0.5, 64.38 at 1, 64.06 at 1.5; false alerts on a demo day 3, 1, 3)
NARROWEST = 1.0
#: with ``noise: poisson``, the spread at an expected value e is the scale times
#: sqrt(e / level), the level being the candidate's mean over its period; the ratio is floored
#: here so that a season falling to 0 keeps a band
UNIT_FLOOR = 0.01
#: the half widths (below, above) while warming up: no band
UNBOUNDED = (math.inf, math.inf)
#: sensitivity -> factor applied to the records
SENSITIVITY = {"low": 1.25, "medium": 1.0, "high": 0.8}
#: the level moves at most this many scales towards a value in one window
LEVEL_CLIP = 6.0
#: scale updates before warm-up starts treating residuals beyond the narrowest band as
#: outliers (a younger scale is too rough to judge them)
ROBUST_AFTER = 10
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
    noise: Literal["constant", "poisson"] = "constant"


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
    """Level plus an optional seasonal profile of one period (``period_ms`` 0 = none).

    During the first period each bin learns the mean of the values themselves; then the
    profile is centred (each bin's offset from the period's mean, which becomes the level).
    Learning what a level that moves every window leaves over instead gave a profile of
    that level's lag, not of the season: a demo channel's visits were predicted no better
    by the day's profile than by the level alone. From then on a bin learns as a running
    mean of its visits' residuals, then exponentially with
    a time constant of ``PROFILE_PERIODS`` periods, so a weekly profile is usable after
    one week instead of three. Its error, which decides whether it is used, is a
    running mean from the moment it has seen a whole period, then an EW mean over about
    a week (so that daily and weekly profiles are compared over whole weeks).
    """

    __slots__ = ("bins", "centred", "error", "error_alpha", "errors", "first_ms", "level",
                 "period_ms", "profile", "profile_alpha", "visits")

    def __init__(self, period_ms: int, window_ms: int) -> None:
        self.period_ms = period_ms
        self.level = math.nan
        self.error = 0.0
        self.errors = 0
        self.error_alpha = min(SELECT_ALPHA, window_ms / WEEK_MS)
        self.first_ms = -1
        self.centred = not period_ms
        if period_ms:
            self.bins = max(2, min(period_ms // window_ms, 48 * math.ceil(period_ms / DAY_MS)))
            self.profile = array("d", bytes(8 * self.bins))
            self.visits = array("f", bytes(4 * self.bins))
            visits_per_period = period_ms / window_ms / self.bins
            self.profile_alpha = 1.0 - math.exp(-1.0 / (PROFILE_PERIODS * visits_per_period))
        else:
            self.bins, self.profile, self.visits = 0, array("d"), array("f")
            self.profile_alpha = 0.0

    def ready(self, end_ms: int) -> bool:
        """Whether this candidate has seen a whole period (always true without season)."""
        if not self.period_ms:
            return True
        return self.first_ms >= 0 and end_ms - self.first_ms >= self.period_ms

    def _position(self, local_ms: int) -> tuple[int, int, float]:
        """Two neighbouring bins around ``local_ms`` and the weight of the second."""
        x = (local_ms % self.period_ms) / self.period_ms * self.bins - 0.5
        low = math.floor(x)
        return low % self.bins, (low + 1) % self.bins, x - low

    def season(self, local_ms: int) -> float:
        """Seasonal offset at ``local_ms`` (0 without season or before its first period)."""
        if not (self.period_ms and self.centred):
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
        if not self.centred:
            if not self.ready(end_ms):
                self._learn_first(local_ms, value)
                return
            self._centre()
        season = self.season(local_ms)
        if self.ready(end_ms):
            self.errors += 1
            rate = max(self.error_alpha, 1.0 / self.errors)
            self.error += rate * (abs(value - self.level - season) - self.error)
        gap = value - self.level - season
        self.level += LEVEL_ALPHA * gap
        if self.period_ms:
            a, b, w = self._position(local_ms)
            self._learn_bin(a, 1.0 - w, gap)
            self._learn_bin(b, w, gap)

    def _learn_first(self, local_ms: int, value: float) -> None:
        """First period: each bin learns the running mean of the values themselves (the fast
        level would absorb the seasonal shape if the bins learnt what it leaves over)."""
        self.level += LEVEL_ALPHA * (value - self.level)
        a, b, w = self._position(local_ms)
        self._learn_bin(a, 1.0 - w, value - self.profile[a])
        self._learn_bin(b, w, value - self.profile[b])

    def _centre(self) -> None:
        """After the first period: the profile becomes each bin's offset from the period's
        mean, and the level that mean (bins never visited get no offset; a series silent for
        the whole period keeps its level and a flat profile)."""
        total = sum(self.visits)
        if total > 0:
            mean = sum(v * p for v, p in zip(self.visits, self.profile, strict=True)) / total
            for i, visits in enumerate(self.visits):
                self.profile[i] = self.profile[i] - mean if visits > 0 else 0.0
            self.level = mean
        self.centred = True

    def _learn_bin(self, index: int, weight: float, gap: float) -> None:
        """Move one bin by its share ``weight`` of ``gap``: running mean, then EW."""
        if weight <= 0.0:
            return
        visits = self.visits[index] + weight
        self.visits[index] = visits
        self.profile[index] += weight * max(self.profile_alpha, 1.0 / visits) * gap


class SeriesDetector:
    """Online detector of one series: ``observe`` each window in time order.

    Picklable and deterministic (no randomness), so a backtest and a live run agree.
    """

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self.warmup = DEFAULT_WARMUP if config.warmup is None else config.warmup
        self.factor = SENSITIVITY[config.sensitivity]
        periods = _periods(config)
        self.forced = config.seasonality is not None and bool(periods)
        self.candidates = [_Candidate(p, config.window_ms) for p in periods]
        if not self.forced:
            self.candidates.insert(0, _Candidate(0, config.window_ms))
        self.scale = stats.EWMean(SCALE_ALPHA)
        self.scale_updates = 0
        #: per side, the last raw scores of deviations on that side (0 for the other side's)
        self.recent = _rings()
        #: per side (0 below the expected value, 1 above), the record of each horizon
        self.records = array("d", bytes(16 * len(HORIZONS)))
        self.decay = 0.5 ** (1.0 / MEMORY)
        self.seen = 0
        self.tolerance = 1.0
        self.run_side = 0
        self.run_residuals = array("d")
        self.run_units = array("d")
        self.run_peaks = array("d")
        self.run_outage = True
        self._tz = None if config.timezone == "UTC" else ZoneInfo(config.timezone)

    def __getstate__(self) -> dict:
        state = dict(vars(self))
        state["_tz"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        if self.config.timezone != "UTC":
            self._tz = ZoneInfo(self.config.timezone)

    # ------------------------------------------------------------------ public API

    def observe(self, end_ms: int, value: float, *, learn: bool = True) -> Judgement:
        """Judge the window ending at ``end_ms``, then learn from it unless ``learn`` is False.

        >>> d = SeriesDetector(AnomalyConfig(warmup=3))
        >>> d.observe(60_000, 5.0)
        Judgement(expected=None, lower=None, upper=None, score=0.0, is_anomaly=False, \
model='seasonal-ewm')
        """
        local_ms = self._local_ms(end_ms)
        model = self._best(end_ms)
        if math.isnan(model.level):
            if learn:
                self._learn(end_ms, local_ms, value, value, UNBOUNDED, 1.0)
            return Judgement(None, None, None, 0.0, False, MODEL_NAME)
        expected = model.predict(local_ms)
        unit = self._unit(model, expected)
        warm = self.seen >= self.warmup
        half = self._half_widths(expected, unit) if warm else UNBOUNDED
        if learn:
            self._learn(end_ms, local_ms, value, expected, half, unit)
        if not warm:
            return Judgement(None, None, None, 0.0, False, MODEL_NAME)
        return self._judge(expected, half, value)

    def accept(self, end_ms: int, value: float) -> None:
        """Feedback "this was not an anomaly" on the window ending at ``end_ms``.

        Exactly: ``value`` is learnt as a normal point (level, seasonal profiles and
        scale move towards it without clipping, its surprise enters the one-window record
        of its side so a similar deviation no longer beats it; the window is not counted
        again in the longer horizons), a pending run of out-of-band windows is
        closed (its deferred surprises and scale updates are applied, so it can no longer
        become a level shift), and every later band is widened by multiplying the
        series' tolerance by 1.2 (at most 3.0 in total; it is never reset).
        """
        local_ms = self._local_ms(end_ms)
        model = self._best(end_ms)
        expected = value if math.isnan(model.level) else model.predict(local_ms)
        unit = self._unit(model, expected)
        self._close_run()
        residual = value - expected
        self._update_scale(abs(residual), unit)
        surprise = self._directed(residual) / (self._scale(expected, unit) * self.tolerance)
        spike = _at(_side(residual), 0)  # HORIZONS[0] is the one-window horizon
        self.records[spike] = max(self.records[spike], surprise)
        for cand in self.candidates:
            cand.learn(end_ms, local_ms, value)
        self.tolerance = min(MAX_TOLERANCE, self.tolerance * ACCEPT_FACTOR)

    # ------------------------------------------------------------------ judging

    def _local_ms(self, end_ms: int) -> int:
        """Middle of the window in the configured zone's wall-clock milliseconds."""
        middle = end_ms - self.config.window_ms // 2
        if self._tz is None:
            return middle
        offset = datetime.fromtimestamp(middle / 1000, self._tz).utcoffset()
        return middle + int(offset.total_seconds() * 1000) if offset else middle

    def _best(self, end_ms: int) -> _Candidate:
        """The candidate with the smallest smoothed error among those ready."""
        best = self.candidates[0]
        for cand in self.candidates[1:]:
            if not cand.ready(end_ms) or cand.errors < cand.bins:
                continue  # its error means little before a period and a window per bin
            if not best.ready(end_ms) or cand.error < SELECT_MARGIN * best.error:
                best = cand
        return best

    def _unit(self, model: _Candidate, expected: float) -> float:
        """Spread of this window relative to the series' mean spread: 1 with constant noise;
        with ``noise: poisson`` ``sqrt(expected / level)``, as the spread of a count (and
        of a sum of amounts) grows with the square root of how many events it has.

        >>> d = SeriesDetector(AnomalyConfig(noise="poisson"))
        >>> model = _Candidate(0, 60_000)
        >>> model.level = 400.0
        >>> d._unit(model, 100.0), d._unit(model, 0.0)
        (0.5, 0.1)
        """
        if self.config.noise == "constant" or not model.level > 0:
            return 1.0
        return math.sqrt(max(abs(expected) / model.level, UNIT_FLOOR))

    def _scale(self, expected: float, unit: float) -> float:
        """Spread of residuals, floored so constant series stay usable.

        The EWMean starts at the first residual (0), so it is divided by the weight its
        later updates have gathered (the usual bias correction of an EW average); without
        it the scale is too small early on and the detector is jumpy after warm-up.
        """
        weight = 1.0 - (1.0 - SCALE_ALPHA) ** max(self.scale_updates - 1, 1)
        return max(unit * self.scale.get() / weight, 1e-9 * (abs(expected) + 1.0))

    def _half_widths(self, expected: float, unit: float) -> tuple[float, float]:
        """Half widths of the band below and above ``expected``: the residuals at which a
        surprise reaches its record on that side.

        For the mean over ``h`` windows of one side's scores the current raw score must
        reach ``h * record - (sum of that side's previous h - 1 scores)``, but no less than
        ``NARROWEST``: a run of deviations above the expected value narrows the upper side
        only (a burst of noise both ways is no shift).
        """
        scale = self._scale(expected, unit) * self.tolerance
        return scale * self._limit(0), scale * self._limit(1)

    def _limit(self, side: int) -> float:
        """Half width on one side, in scales."""
        previous = self._previous(side)
        limit = math.inf
        for k, horizon in enumerate(HORIZONS):
            record = self.factor * max(_floor(horizon), self.records[_at(side, k)])
            if horizon == 1:
                limit = min(limit, record)
            else:
                limit = min(limit, max(NARROWEST, horizon * record - previous[k]))
        return limit

    def _previous(self, side: int) -> list[float]:
        """Per horizon ``h``, the sum of ``side``'s capped scores of the previous ``h - 1``
        windows; those of a run that is an outage so far count as ordinary
        (``ORDINARY_SCORE``), as they will once it closes."""
        ordered, size = self._ordered(side), max(HORIZONS)
        outage = len(self.run_residuals) if self.run_outage else 0
        sums = []
        for horizon in HORIZONS:
            fresh = min(outage, horizon - 1)
            sums.append(ORDINARY_SCORE * fresh + sum(ordered[size - horizon + 1:size - fresh]))
        return sums

    def _ordered(self, side: int) -> array:
        """``side``'s ring of recent raw scores from the oldest to the newest."""
        ring, at = self.recent[side], self.seen % max(HORIZONS)
        return ring[at:] + ring[:at]

    def _judge(self, expected: float, half: tuple[float, float], value: float) -> Judgement:
        """Band, score and verdict for ``value``; direction decides which side counts.

        The score is ``d / (1 + d)`` with ``d`` = deviation / half width on its side: 0.5
        at the band's edge, towards 1 far outside.
        """
        residual = value - expected
        dev, width = self._directed(residual), half[_side(residual)]
        ratio = dev / width if width > 0 else (math.inf if dev > 0 else 1.0)
        score = 1.0 if math.isinf(ratio) else ratio / (1.0 + ratio)
        return Judgement(expected, expected - half[0], expected + half[1], score, dev > width,
                         MODEL_NAME)

    def _directed(self, residual: float) -> float:
        """Size of the residual on the side(s) that count for ``direction``."""
        direction = self.config.direction
        if direction == "up":
            return max(residual, 0.0)
        if direction == "down":
            return max(-residual, 0.0)
        return abs(residual)

    # ------------------------------------------------------------------ learning

    def _learn(self, end_ms: int, local_ms: int, value: float, expected: float,
               half: tuple[float, float], unit: float) -> None:
        """Learn one window: surprises, records and scale, then every candidate's level.

        A value beyond ``min(band, LEVEL_CLIP scales)`` starts or extends a run: the level
        learns the clipped value and the run's surprises and scale updates wait for the
        run's end, so the whole run is judged against the records from before it.
        """
        scale = self._scale(expected, unit)
        residual = value - expected
        side = _side(residual)
        surprises = self._push(self._directed(residual) / (scale * self.tolerance), side)
        limit = min(half[side], LEVEL_CLIP * scale)
        if math.isinf(half[side]):
            self._learn_warming(abs(residual), surprises, scale, side, unit)
            target = expected + max(-limit, min(limit, residual))
        elif abs(residual) <= half[side]:
            self._close_run()
            self._update_records(surprises, 1, side)
            self._update_scale(abs(residual), unit)
            target = expected + max(-limit, min(limit, residual))
        else:
            target = self._extend_run(residual, surprises, expected, limit, unit)
        for cand in self.candidates:
            cand.learn(end_ms, local_ms, target)

    def _learn_warming(
        self, deviation: float, surprises: list[float] | None, scale: float, side: int,
        unit: float,
    ) -> None:
        """Records and scale during warm-up, with the narrowest band as a provisional one.

        A deviation beyond ``_floor(1)`` scales (once the scale has ``ROBUST_AFTER``
        updates) is an outlier: the records skip it and the scale learns it clipped to that
        band. Without this, a demo series whose channel drops to 0 every hour ended warm-up
        with a spread several times its noise and its outages inside the band.
        """
        bound = _floor(1) * scale
        if self.scale_updates >= ROBUST_AFTER and deviation > bound:
            self._update_scale(bound, unit)
            return
        self._update_records(surprises, 1, side)
        self._update_scale(deviation, unit)

    def _update_scale(self, deviation: float, unit: float) -> None:
        """Feed the scale's EWMean with ``deviation`` in ``unit``s and count its updates."""
        self.scale.update(deviation / unit)
        self.scale_updates += 1

    def _push(self, raw: float, side: int) -> list[float] | None:
        """Store the raw score on its side (0 on the other); the surprise of each horizon on
        that side (None while records wait)."""
        size = max(HORIZONS)
        self.recent[side][self.seen % size] = min(raw, RAW_CAP)
        self.recent[1 - side][self.seen % size] = 0.0
        self.seen += 1
        if self.seen < self.warmup // 2:
            return None
        ordered = self._ordered(side)
        return [raw if horizon == 1 else sum(ordered[size - horizon:]) / horizon
                for horizon in HORIZONS]

    def _update_records(self, surprises: list[float] | None, windows: int, side: int) -> None:
        """Fade ``side``'s records over ``windows`` and raise them to ``surprises`` (a
        series' spikes and its drops have tails of their own, such as a sum's rare big
        orders; the other side's records are left as they are)."""
        if surprises is None:
            return
        fade = self.decay ** windows
        for k, surprise in enumerate(surprises):
            i = _at(side, k)
            self.records[i] = max(surprise, self.records[i] * fade)

    def _extend_run(
        self, residual: float, surprises: list[float] | None, expected: float, limit: float,
        unit: float,
    ) -> float:
        """Add a window to the run; after ``SHIFT_WINDOWS`` adopt the new level.

        Returns the value the levels learn: clipped to ``limit``, or the value itself once
        the levels have jumped by the run's mean residual.
        """
        side = 1 if residual > 0 else -1
        if side != self.run_side:
            self._close_run()
            self.run_side = side
        self.run_residuals.append(residual)
        self.run_units.append(unit)
        self.run_outage = self.run_outage and expected > 0 and (
            expected + residual <= OUTAGE_SHARE * expected)
        if surprises is not None:
            self.run_peaks = array("d", (max(a, b) for a, b in zip(
                self.run_peaks or surprises, surprises, strict=True)))
        if len(self.run_residuals) < SHIFT_WINDOWS:
            return expected + side * limit
        shift = sum(self.run_residuals) / len(self.run_residuals)
        for cand in self.candidates:
            cand.level += shift
        self.recent = _rings()
        self._close_run()
        return expected + residual

    def _close_run(self) -> None:
        """End a run that was no level shift: apply its deferred surprises and scale.

        A run raises a record to its peak only when the peak is at most ``EXTREME`` times
        the record (a tail of the series); a more extreme run is an incident and leaves the
        record as it was, so it does not make the series blind to the next one of its size.
        """
        if self.run_residuals and not self.run_outage:
            for residual, unit in zip(self.run_residuals, self.run_units, strict=True):
                self._update_scale(abs(residual), unit)
            side = _side(self.run_side)
            records = [self.records[_at(side, k)] for k in range(len(HORIZONS))]
            peaks = [peak if peak <= EXTREME * max(record, _floor(horizon))
                     else max(record, _floor(horizon))
                     for peak, record, horizon in zip(self.run_peaks, records, HORIZONS,
                                                      strict=True)] if self.run_peaks else None
            self._update_records(peaks, len(self.run_residuals), side)
        self._forget_scores()
        self._forget_run()

    def _forget_scores(self) -> None:
        """A closed run's raw scores leave the recent ones (as ordinary scores,
        ``ORDINARY_SCORE`` on both sides): it has been alerted, and otherwise the 15- and
        60-window surprises would stay beyond their records for up to an hour after it and
        flag every window that is not exactly as expected (a series hit by an incident every
        few minutes was never quiet). This window (in band, pushed just before the run
        closed) stays."""
        size = max(HORIZONS)
        for j in range(2, len(self.run_residuals) + 2):
            for ring in self.recent:
                ring[(self.seen - j) % size] = ORDINARY_SCORE

    def _forget_run(self) -> None:
        """Drop the current run of clipped windows."""
        self.run_side = 0
        self.run_residuals = array("d")
        self.run_units = array("d")
        self.run_peaks = array("d")
        self.run_outage = True


def _side(residual: float) -> int:
    """Which side of the expected value a residual falls on: 0 below, 1 above (or on it)."""
    return 1 if residual >= 0 else 0


def _at(side: int, k: int) -> int:
    """Index in ``SeriesDetector.records`` of the record of horizon ``HORIZONS[k]`` on
    ``side``."""
    return side * len(HORIZONS) + k


def _floor(horizon: int) -> float:
    """The smallest record of the mean of ``horizon`` raw scores (see ``FLOOR_SPREAD``)."""
    return (1.0 if horizon == 1 else SIDED_FLOOR) + FLOOR_SPREAD / math.sqrt(horizon)


def _rings() -> tuple[array, array]:
    """Empty rings of the last raw scores below and above the expected value."""
    return array("d", bytes(8 * max(HORIZONS))), array("d", bytes(8 * max(HORIZONS)))


def _periods(config: AnomalyConfig) -> list[int]:
    """Seasonal periods to try: the configured ones, or day and week when they fit."""
    periods = list(config.seasonality) if config.seasonality is not None else [DAY_MS, WEEK_MS]
    return [p for p in periods if p >= 4 * config.window_ms]
