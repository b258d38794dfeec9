"""Targets: period-to-date value, attainment, pace, and a forecast of the period's end.

A KPI with ``targets:`` (a tumbling ``count()`` or ``sum()``) is tracked per series. Each
closed window adds its value to the period-to-date value of every target (day, week, month,
quarter at local midnight in the rules' timezone) and to a learned profile of the series:

* the share of a day's total that falls in each slot of the day (an hour, or the window when
  longer), for every weekday apart once that weekday was seen twice ("a Monday morning is
  not a Friday evening"), else for all days together;
* a weekday factor (a Saturday's total against the level), and a level and trend of the
  deseasonalised daily total (Holt's linear method), updated once per completed day;
* the spread of a day's total around the expectation (exponentially weighted variance of the
  log ratio), for the forecast's interval.

From these, at every window end:

* ``expected_attainment`` (pace): the share of the period's expected total that was due by
  now, so ``attainment < 0.9 * expected_attainment`` reads "10% behind pace";
* ``forecast``: the value so far plus the expected rest of today (today's expectation,
  pulled towards today's own run rate as the day fills) and of the remaining days;
* ``forecast_lower``/``forecast_upper``: an 80% interval, from the daily spread and the
  uncertainty of the level; ``target_hit_probability``: P(period end >= target) under a
  normal distribution with that spread.

Before a series has a complete day the pace is linear in time and the forecast extrapolates
the period's run rate (``pace_model`` says which profile was used: ``linear``, ``daily``,
``weekly``).

>>> from kpistream.core.loader import load_rules_text
>>> from kpistream.core.values import ClosedWindow
>>> rules = load_rules_text('''
... sources: [{name: s, topic: t}]
... kpis: [{name: gmv, source: s, agg: sum(x), window: 1h, targets: [{period: day, value: 240}]}]
... ''')
>>> targets = KpiTargets(rules.kpis["gmv"], rules.timezone)
>>> for hour in range(6):  # 10 an hour from midnight: 60 by 06:00, a quarter of the day
...     status, = targets.update(ClosedWindow("gmv", hour * HOUR_MS, (hour + 1) * HOUR_MS,
...                                           {(): 10.0}))[()]
>>> status.value, status.attainment, status.expected_attainment, status.forecast
(60.0, 0.25, 0.25, 240.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from statistics import NormalDist
from zoneinfo import ZoneInfo

from kpistream.core.periods import PERIODS, local_day, period_bounds
from kpistream.core.ruleset import Kpi, Target
from kpistream.core.values import ClosedWindow, SeriesKey, TargetStatus

__all__ = ["TARGET_NAMES", "KpiTargets", "TargetStatus", "target_env", "target_names"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: condition names of a target (the first target's; each also with ``_<period>``)
TARGET_NAMES = ("target", "period_value", "attainment", "expected_attainment", "forecast",
                "forecast_lower", "forecast_upper", "target_hit_probability")
#: smoothing of the level, trend, weekday factors, day shapes and spread (per day seen)
LEVEL_ALPHA = 0.2
TREND_BETA = 0.05
WEEKDAY_ALPHA = 0.15
SHAPE_ALPHA = 0.1
WEEKDAY_SHAPE_ALPHA = 0.3
SPREAD_ALPHA = 0.1
#: the daily spread (variance of the log ratio) assumed before any day was seen, and its
#: weight in days against the learned one
PRIOR_SPREAD = 0.05
PRIOR_DAYS = 3
#: a weekday factor and a weekday's own day shape are used once learned from this many days
WEEKDAY_SEEN = 2
#: the forecast interval's z (80%)
INTERVAL_Z = NormalDist().inv_cdf(0.9)


def target_names(kpi: Kpi) -> tuple[str, ...]:
    """The condition names a KPI's targets give: the first target's, then per period.

    >>> from kpistream.core.ruleset import Kpi, Target
    >>> target_names(Kpi("k", 60_000, None, None, (), 0, 0,
    ...                  targets=(Target("month", 1.0),)))[-2:]
    ('forecast_upper_month', 'target_hit_probability_month')
    """
    if not kpi.targets:
        return ()
    return TARGET_NAMES + tuple(f"{n}_{t.period}" for t in kpi.targets for n in TARGET_NAMES)


def target_env(statuses: tuple[TargetStatus, ...] | None, periods: tuple[str, ...]
               ) -> dict[str, float | None]:
    """The condition names of one series' statuses (None where it has no such target)."""
    env: dict[str, float | None] = {}
    by_period = {s.period: s for s in statuses or ()}
    for period in periods:
        values = _values(by_period.get(period))
        env.update({f"{n}_{period}": v for n, v in zip(TARGET_NAMES, values, strict=True)})
    first = by_period.get(periods[0]) if periods else None
    env.update(zip(TARGET_NAMES, _values(first), strict=True))
    return env


def _values(status: TargetStatus | None) -> tuple[float | None, ...]:
    if status is None:
        return (None,) * len(TARGET_NAMES)
    return (status.target, status.value, status.attainment, status.expected_attainment,
            status.forecast, status.forecast_lower, status.forecast_upper,
            status.hit_probability)


@dataclass(slots=True)
class _Profile:
    """A series' learned daily shape, weekday factors, level, trend and spread."""

    slots_per_day: int
    shape: list[float] | None = None
    weekday_shapes: dict[int, list[float]] = field(default_factory=dict)
    weekday_factor: list[float] = field(default_factory=lambda: [1.0] * 7)
    weekday_seen: list[int] = field(default_factory=lambda: [0] * 7)
    level: float | None = None
    trend: float = 0.0
    spread: float = PRIOR_SPREAD
    days: int = 0

    def day_shape(self, weekday: int) -> list[float] | None:
        if self.weekday_seen[weekday] >= WEEKDAY_SEEN and weekday in self.weekday_shapes:
            return self.weekday_shapes[weekday]
        return self.shape

    def factor(self, weekday: int) -> float:
        return self.weekday_factor[weekday] if self.weekday_seen[weekday] >= WEEKDAY_SEEN else 1.0

    def expected_day(self, weekday: int, days_ahead: int) -> float | None:
        """The expected total of a day ``days_ahead`` after the last learned one."""
        if self.level is None:
            return None
        return max(0.0, self.level + days_ahead * self.trend) * self.factor(weekday)

    def variance(self) -> float:
        """The daily spread, shrunk towards the prior while few days were seen."""
        return (self.days * self.spread + PRIOR_DAYS * PRIOR_SPREAD) / (self.days + PRIOR_DAYS)

    def model(self) -> str:
        if self.shape is None:
            return "linear"
        return "weekly" if any(s >= WEEKDAY_SEEN for s in self.weekday_seen) else "daily"

    def learn(self, weekday: int, slots: list[float]) -> None:
        """Learn from one complete day's slot values."""
        total = sum(slots)
        expected = self.expected_day(weekday, 1)
        if expected is not None and expected > 0 and total > 0:
            ratio = math.log(total / expected)
            self.spread += SPREAD_ALPHA * (ratio * ratio - self.spread)
        if total > 0:
            shares = [v / total for v in slots]
            self.shape = _blend(self.shape, shares, SHAPE_ALPHA)
            self.weekday_shapes[weekday] = _blend(self.weekday_shapes.get(weekday), shares,
                                                  WEEKDAY_SHAPE_ALPHA)
        if self.level is not None and self.level > 0:
            seen = self.weekday_seen[weekday]
            alpha = WEEKDAY_ALPHA if seen else 1.0
            factor = self.weekday_factor[weekday]
            self.weekday_factor[weekday] = factor + alpha * (total / self.level - factor)
        self.weekday_seen[weekday] += 1
        deseasonalised = total / self.factor(weekday)
        if self.level is None:
            self.level = deseasonalised
        else:
            before = self.level
            self.level = (LEVEL_ALPHA * deseasonalised
                          + (1 - LEVEL_ALPHA) * (self.level + self.trend))
            self.trend += TREND_BETA * (self.level - before - self.trend)
        self.days += 1


def _blend(old: list[float] | None, new: list[float], alpha: float) -> list[float]:
    if old is None or len(old) != len(new):
        return list(new)
    return [o + alpha * (n - o) for o, n in zip(old, new, strict=True)]


@dataclass(slots=True)
class _Today:
    """The local day a series is in, and its slot values so far."""

    start_ms: int
    end_ms: int
    weekday: int
    slots: list[float]
    #: the day was seen from its start (a partial first day teaches no shape)
    whole: bool


@dataclass(slots=True)
class _SeriesTargets:
    profile: _Profile
    today: _Today | None = None
    #: per period (all four, so a target added later finds its value so far):
    #: (period start, period end, value so far)
    periods: dict[str, tuple[int, int, float]] = field(
        default_factory=lambda: dict.fromkeys(PERIODS, (0, 0, 0.0)))
    #: per period: what its pace and forecast need, for today
    plans: dict[str, _Plan] = field(default_factory=dict)
    #: the start of the first window tracked
    tracked_from_ms: int | None = None


class KpiTargets:
    """The targets of one KPI, tracked for every series that has one."""

    def __init__(self, kpi: Kpi, timezone: str) -> None:
        self.kpi = kpi
        self.timezone = timezone
        self.slot_ms = max(kpi.window_ms, HOUR_MS)
        self.series: dict[SeriesKey, _SeriesTargets] = {}
        self.latest: dict[SeriesKey, tuple[TargetStatus, ...]] = {}

    def update(self, window: ClosedWindow) -> dict[SeriesKey, tuple[TargetStatus, ...]]:
        """Take one closed window (in window order); the standing of each series in it."""
        statuses = {}
        for key, value in window.values.items():
            targets = [t.of(key) for t in self.kpi.targets]
            if all(t is None for t in targets):
                continue
            state = self.series.get(key)
            if state is None:
                state = self.series[key] = _SeriesTargets(_Profile(DAY_MS // self.slot_ms))
            statuses[key] = self._update_series(state, targets, window, value)
        self.latest.update(statuses)
        return statuses

    def standings(self) -> dict[SeriesKey, tuple[TargetStatus, ...]]:
        """Each series' latest standing, one status per target (in the KPI's order)."""
        return dict(self.latest)

    def state(self) -> dict:
        return {"series": self.series, "latest": self.latest}

    def load(self, state: dict) -> None:
        self.series, self.latest = state["series"], state["latest"]

    def _update_series(self, state: _SeriesTargets, targets: list[float | None],
                       window: ClosedWindow, value: float) -> tuple[TargetStatus, ...]:
        start, end = window.start_ms, window.end_ms
        if state.tracked_from_ms is None:
            state.tracked_from_ms = start
        today = state.today
        if today is None or start >= today.end_ms:
            today = state.today = self._day(start, today is None)
        slot = min((start - today.start_ms) // self.slot_ms, len(today.slots) - 1)
        today.slots[slot] += value
        if end >= today.end_ms:  # the day is complete: learn it, and look at the next one
            if today.whole:
                state.profile.learn(today.weekday, today.slots)
            today = state.today = self._day(today.end_ms, False)
        for period, (p_start, p_end, so_far) in state.periods.items():
            if start >= p_end:
                p_start, p_end = period_bounds(period, start, self.timezone)
                so_far = 0.0
            state.periods[period] = (p_start, p_end, so_far + value)
        return tuple(self._status(spec, amount, state, *state.periods[spec.period], end)
                     for spec, amount in zip(self.kpi.targets, targets, strict=True)
                     if amount is not None)

    def _day(self, ts_ms: int, first: bool) -> _Today:
        start, end = local_day(ts_ms, self.timezone)
        weekday = datetime.fromtimestamp(start / 1000, ZoneInfo(self.timezone)).weekday()
        return _Today(start, end, weekday, [0.0] * (DAY_MS // self.slot_ms),
                      whole=not first or ts_ms == start)

    def _status(self, spec: Target, amount: float, state: _SeriesTargets, p_start: int,
                p_end: int, so_far: float, now: int) -> TargetStatus:
        profile, today = state.profile, state.today
        plan = state.plans.get(spec.period)
        if plan is None or (plan.day_ms, plan.period_ms) != (today.start_ms, p_start):
            plan = state.plans[spec.period] = _plan(profile, today, p_start, p_end,
                                                    self.timezone)
        due = self._due(profile, today, now)
        pace = (plan.passed + plan.current * due) / plan.total
        mean, variance = _forecast(profile, plan, sum(today.slots), due, so_far, pace)
        spread = math.sqrt(max(variance, 0.0))
        if spread > 0:
            hit = 1 - NormalDist(mean, spread).cdf(amount)
        else:
            hit = 1.0 if mean >= amount else 0.0
        return TargetStatus(
            period=spec.period, period_start_ms=p_start, period_end_ms=p_end, at_ms=now,
            target=amount, value=so_far, attainment=so_far / amount, expected_attainment=pace,
            forecast=mean, forecast_lower=mean - INTERVAL_Z * spread,
            forecast_upper=mean + INTERVAL_Z * spread, hit_probability=hit,
            pace_model=profile.model(),
            tracked_from_ms=state.tracked_from_ms if state.tracked_from_ms > p_start else None)

    def _due(self, profile: _Profile, today: _Today, now: int) -> float:
        """The share of today's expected total due by ``now``."""
        elapsed = (now - today.start_ms) / self.slot_ms
        whole = min(int(elapsed), len(today.slots))
        shape = profile.day_shape(today.weekday)
        if shape is None:
            return min(elapsed / len(today.slots), 1.0)
        due = sum(shape[:whole])
        if whole < len(shape):
            due += shape[whole] * (elapsed - whole)
        return due


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a period's pace and forecast need that changes only once a day."""

    day_ms: int
    period_ms: int
    #: weekday weights of the period's days before today, of today, and of all
    passed: float
    current: float
    total: float
    #: today's expected total, and the expected totals of the days after it
    today: float | None
    later: float
    later_squares: float


def _plan(profile: _Profile, today: _Today, p_start: int, p_end: int, timezone: str
          ) -> _Plan:
    passed = current = total = later = squares = 0.0
    for weekday, when in _period_days(p_start, p_end, today.start_ms, timezone):
        weight = profile.factor(weekday)
        total += weight
        if when < 0:
            passed += weight
        elif when == 0:
            current += weight
        else:
            expected = profile.expected_day(weekday, when + 1) or 0.0
            later += expected
            squares += expected * expected
    return _Plan(today.start_ms, p_start, passed, current, total,
                 profile.expected_day(today.weekday, 1), later, squares)


def _forecast(profile: _Profile, plan: _Plan, today_so_far: float, due: float,
              so_far: float, pace: float) -> tuple[float, float]:
    """The period end's expected value and variance.

    The rest of today is today's expectation pulled towards today's own run rate as the day
    fills; each later day adds its expected total and its own spread, and all of them share
    the uncertainty of the level they were projected from.
    """
    if plan.today is None:  # no day learned yet: extrapolate the period's run rate
        if pace <= 0:
            return so_far, 0.0
        rest = so_far / pace - so_far
        return so_far + rest, PRIOR_SPREAD * rest * rest
    variance = profile.variance()
    today = plan.today
    if plan.current and today > 0 and due > 0:
        today *= 1 + due * (today_so_far / (today * due) - 1)
    left_today = today * (1 - due) if plan.current else 0.0
    rest = left_today + plan.later
    daily = variance * (plan.later_squares + today * today * (1 - due) * plan.current)
    level = variance * LEVEL_ALPHA / (2 - LEVEL_ALPHA) * rest * rest
    return so_far + rest, daily + level


@lru_cache(maxsize=1024)
def _period_days(p_start: int, p_end: int, today_ms: int, timezone: str
                 ) -> tuple[tuple[int, int], ...]:
    """Each local day of a period as (weekday, days after today: negative before it)."""
    tz = ZoneInfo(timezone)
    first = datetime.fromtimestamp(p_start / 1000, tz).date().toordinal()
    last = datetime.fromtimestamp((p_end - 1) / 1000, tz).date().toordinal()
    today = datetime.fromtimestamp(today_ms / 1000, tz).date().toordinal()
    return tuple((datetime.fromordinal(o).weekday(), o - today) for o in range(first, last + 1))
