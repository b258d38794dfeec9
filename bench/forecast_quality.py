"""Forecast quality of targets: month-end MAPE at day 10 and day 20, and the calibration of
``target_hit_probability``.

A seeded synthetic year of hourly windows per series, in Asia/Shanghai: a daily shape (quiet
nights, a lunch and an evening peak), a weekly factor (weekends higher or lower per
series), a yearly trend between -10% and +30%, a slowly wandering level (a random walk of
the log level) and day-to-day and hour-to-hour noise. Each month's target is the month's
expected total under the true model at the month's start, times a random factor
(sd 6%), so some months are easy and some out of reach.

The windows go through the engine's merge stage (``Engine.given``: closed windows in, the
same downstream path as ``run`` and ``backtest``). At the end of day 10 and day 20 of every
month the forecast and the hit probability are recorded; at the month's end the actual
value decides. The first month of each series is its warm-up and is not scored.

    .venv/bin/python bench/forecast_quality.py [--series 24] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.values import ClosedWindow

HOUR_MS = 3_600_000
TZ = ZoneInfo("Asia/Shanghai")
YEAR = 2025
RULES = """
timezone: Asia/Shanghai
sources: [{name: orders, topic: t}]
kpis:
  - name: gmv
    source: orders
    agg: sum(amount)
    by: [series]
    window: 1h
    series_ttl: 400d
    targets: [{period: month, values: VALUES}]
"""
#: the share of a day's total in each hour: quiet nights, peaks at 12:00 and 20:00
SHAPE = [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7, 1.0, 1.2, 1.4, 1.6, 1.9, 1.6, 1.3, 1.2,
         1.2, 1.3, 1.5, 1.8, 2.0, 1.8, 1.2, 0.6]
SHAPE = [s / sum(SHAPE) for s in SHAPE]
DAY_NOISE = 0.08
HOUR_NOISE = 0.10
WALK = 0.01
TARGET_SPREAD = 0.06
CHECK_DAYS = (10, 20)


class Series:
    """One synthetic KPI: its true daily expectation, and its noisy hourly values."""

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd
        self.base = rnd.uniform(5_000, 50_000)
        self.growth = rnd.uniform(-0.10, 0.30) / 365
        weekend = rnd.uniform(-0.25, 0.35)
        self.weekly = [1.0] * 5 + [1 + weekend] * 2
        self.weekly = [w * 7 / sum(self.weekly) for w in self.weekly]
        self.walk = 0.0

    def expected_day(self, day_index: int, weekday: int) -> float:
        """The true expected total of a day, without the walk's future steps."""
        return self.base * math.exp(self.walk) * (1 + self.growth * day_index) \
            * self.weekly[weekday]

    def day(self, day_index: int, weekday: int) -> list[float]:
        self.walk += self.rnd.gauss(0, WALK)
        total = self.expected_day(day_index, weekday) * math.exp(self.rnd.gauss(0, DAY_NOISE))
        return [max(0.0, total * s * (1 + self.rnd.gauss(0, HOUR_NOISE))) for s in SHAPE]


def month_target(series: Series, day_index: int, first: datetime, rnd: random.Random) -> float:
    days = (first.replace(month=first.month % 12 + 1, year=first.year + first.month // 12)
            if first.month < 12 else first.replace(year=first.year + 1, month=1)) - first
    expected = sum(series.expected_day(day_index + d, (first + timedelta(days=d)).weekday())
                   for d in range(days.days))
    return expected * math.exp(rnd.gauss(0, TARGET_SPREAD))


def run(n_series: int, seed: int) -> dict:
    rnd = random.Random(seed)
    series = [Series(random.Random(rnd.random())) for _ in range(n_series)]
    targets: dict[tuple[str, int], float] = {}
    start = datetime(YEAR, 1, 1, tzinfo=TZ)
    for month in range(1, 13):
        first = start.replace(month=month)
        day_index = (first - start).days
        for i, s in enumerate(series):
            targets[(str(i), month)] = month_target(s, day_index, first, rnd)
    checks: dict[tuple[str, int, int], tuple[float, float, float]] = {}
    actual: dict[tuple[str, int], float] = {}
    engine = None
    day = start
    day_index = 0
    while day.year == YEAR:
        hours = [s.day(day_index, day.weekday()) for s in series]
        month = day.month
        if day.day == 1:
            engine = _with_targets(engine, targets, month)
        for hour in range(24):
            begin = int((day + timedelta(hours=hour)).timestamp() * 1000)
            window = ClosedWindow("gmv", begin, begin + HOUR_MS,
                                  {(str(i),): h[hour] for i, h in enumerate(hours)})
            step = engine.given([window])
        standings = step.windows[0].standings
        for (key,), (status,) in standings.items():
            actual[(key, month)] = status.value
            if day.day in CHECK_DAYS:
                checks[(key, month, day.day)] = (status.forecast, status.hit_probability,
                                                 status.target)
        day += timedelta(days=1)
        day_index += 1
    return score(checks, actual)


def _with_targets(engine: Engine | None, targets, month: int) -> Engine:
    """The rules with this month's targets, as a team would edit them in git at the month's
    start; the new engine continues from the old one's state, as a hot reload does."""
    values = {k: round(t, 2) for (k, m), t in targets.items() if m == month}
    fresh = Engine(load_rules_text(RULES.replace("VALUES", json.dumps(values))))
    if engine is not None:
        fresh.restore(engine.snapshot())
    return fresh


def score(checks, actual) -> dict:
    result: dict = {}
    for check_day in CHECK_DAYS:
        errors = [abs(f - actual[(k, m)]) / actual[(k, m)]
                  for (k, m, d), (f, _, _) in checks.items() if d == check_day and m > 1]
        result[f"mape_day{check_day}"] = statistics.mean(errors)
    deciles = []
    for low in range(10):
        rows = [(p, actual[(k, m)] >= t) for (k, m, d), (_, p, t) in checks.items()
                if m > 1 and low / 10 <= p < (low + 1) / 10 + (low == 9) * 1e-9]
        if rows:
            mean_p = statistics.mean(p for p, _ in rows)
            hit = sum(h for _, h in rows) / len(rows)
            deciles.append({"decile": f"{low / 10:.1f}-{(low + 1) / 10:.1f}", "n": len(rows),
                            "mean_p": mean_p, "hit_rate": hit, "gap": hit - mean_p})
    result["calibration"] = deciles
    result["months_scored"] = len({(k, m) for k, m, _ in checks if m > 1})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args.series, args.seed)
    seconds = time.perf_counter() - started
    updates = args.series * 365 * 24
    result["us_per_series_window"] = seconds / updates * 1e6
    print(f"forecast quality: {args.series} series x 11 scored months (seed {args.seed}), "
          f"{seconds:.1f} s: {result['us_per_series_window']:.1f} µs per series and window "
          "(generation, engine downstream and target tracking together)")
    for day in CHECK_DAYS:
        print(f"  month-end MAPE at day {day}: {result[f'mape_day{day}']:.2%}")
    print("  calibration of target_hit_probability (both check days):")
    print("    decile    n    mean p  hit rate   gap")
    for row in result["calibration"]:
        print(f"    {row['decile']}  {row['n']:4d}  {row['mean_p']:6.1%}  {row['hit_rate']:7.1%}"
              f"  {row['gap'] * 100:+5.1f}")
    worst = max(abs(r["gap"]) for r in result["calibration"])
    print(f"  worst decile gap: {worst * 100:.1f} points")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
