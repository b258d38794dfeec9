"""Seeded synthetic business-KPI benchmark for the production anomaly detector.

Each series is four weeks of 5-minute windows: a level with a slow trend, a business-day
daily shape, quieter weekends, Gaussian noise. One anomaly is injected in week 3 or 4:

- ``spike``: one window 8 noise sd above normal;
- ``drop``: the value halves for 6 windows (30 minutes);
- ``level_shift``: +30 % from the injection to the end;
- ``drift``: a ramp to +40 % over one day, then stays;
- ``none``: nothing (false alerts only).

Alerts are firing transitions (as kpistream counts them). Per type it prints the
detection rate (an alert between the injection start and its end plus ``GRACE``
windows), the median delay in windows, and false alerts per series per week (alerts
after warm-up outside the injection, per week of post-warm-up data).

    .venv/bin/python bench/anomaly_synthetic.py [--series 10] [--sensitivity medium]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpistream.core.anomaly import AnomalyConfig, SeriesDetector
from kpistream.core.anomaly.detector import DEFAULT_WARMUP

WINDOW_MS = 300_000
PER_DAY = 86_400_000 // WINDOW_MS
WEEKS = 4
LENGTH = WEEKS * 7 * PER_DAY
#: windows after an injection's end during which an alert still counts as a detection
GRACE = 12
KINDS = ("spike", "drop", "level_shift", "drift", "none")
#: 2024-01-01 00:00 UTC, a Monday
START_MS = 1_704_067_200_000


@dataclass
class Case:
    """One synthetic series and where its anomaly lies (windows ``start``..``end``)."""

    kind: str
    values: list[float]
    start: int
    end: int


def normal_value(k: int, level: float, noise: float, rng: random.Random) -> float:
    """Business KPI at window ``k``: trend x daily shape x weekday factor, plus noise."""
    day, minute = divmod(k, PER_DAY)
    hour = minute * 24 / PER_DAY
    daily = 0.6 + 0.5 * math.exp(-((hour - 13.0) / 4.0) ** 2)  # busy around 13:00
    weekday = 0.6 if day % 7 >= 5 else 1.0
    trend = 1.0 + 0.1 * k / LENGTH
    return level * trend * daily * weekday + rng.gauss(0.0, noise)


def make_case(kind: str, seed: int) -> Case:
    """A seeded series of ``kind`` with its injected anomaly."""
    rng = random.Random(f"{kind}-{seed}")
    level = rng.uniform(50.0, 500.0)
    noise = 0.04 * level
    values = [normal_value(k, level, noise, rng) for k in range(LENGTH)]
    start = rng.randrange(15 * PER_DAY, 25 * PER_DAY)
    end = start
    if kind == "spike":
        values[start] += 8.0 * noise
    elif kind == "drop":
        end = start + 5
        for k in range(start, end + 1):
            values[k] *= 0.5
    elif kind == "level_shift":
        end = start + PER_DAY // 2  # the shift itself never ends; credit the first 12 h
        for k in range(start, LENGTH):
            values[k] *= 1.3
    elif kind == "drift":
        end = start + PER_DAY
        for k in range(start, LENGTH):
            values[k] *= 1.0 + 0.4 * min(1.0, (k - start) / PER_DAY)
    return Case(kind, values, start, end)


def alerts(case: Case, sensitivity: str, noise: str) -> list[int]:
    """Windows where the detector's alert goes to firing."""
    detector = SeriesDetector(AnomalyConfig(sensitivity=sensitivity, window_ms=WINDOW_MS,
                                            noise=noise))
    fired, before = [], False
    for k, value in enumerate(case.values):
        now = detector.observe(START_MS + (k + 1) * WINDOW_MS, value).is_anomaly
        if now and not before:
            fired.append(k)
        before = now
    return fired


def evaluate(kind: str, series: int, sensitivity: str, noise: str) -> dict[str, float]:
    """Detection rate, median delay and false alerts per series-week for one kind."""
    detected, delays, false_alerts = 0, [], 0
    for seed in range(series):
        case = make_case(kind, seed)
        fired = alerts(case, sensitivity, noise)
        hits = [k for k in fired if case.start <= k <= case.end + GRACE] if kind != "none" else []
        if hits:
            detected += 1
            delays.append(hits[0] - case.start)
        after_injection = LENGTH if kind in ("none", "spike", "drop") else case.start
        false_alerts += sum(1 for k in fired if k not in hits and (
            k < case.start or case.end + GRACE < k < after_injection))
    weeks = series * (LENGTH - DEFAULT_WARMUP) / (7 * PER_DAY)
    return {"rate": detected / series if kind != "none" else math.nan,
            "delay": statistics.median(delays) if delays else math.nan,
            "fp_week": false_alerts / weeks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10, help="series per kind")
    parser.add_argument("--sensitivity", default="medium", choices=["low", "medium", "high"])
    parser.add_argument("--noise", default="constant", choices=["constant", "poisson"],
                        help="the detector's noise model (the series' noise is Gaussian with a "
                             "constant spread: poisson measures a mismatched model)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print(f"{args.series} series per kind, {WEEKS} weeks of 5-minute windows, "
          f"sensitivity {args.sensitivity}, noise {args.noise}")
    print(f"{'kind':12} {'detected':>8} {'delay':>6} {'FP/series/week':>15}")
    for kind in KINDS:
        r = evaluate(kind, args.series, args.sensitivity, args.noise)
        rate = "-" if math.isnan(r["rate"]) else f"{r['rate']:.0%}"
        delay = "-" if math.isnan(r["delay"]) else f"{r['delay']:.0f}"
        print(f"{kind:12} {rate:>8} {delay:>6} {r['fp_week']:15.2f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
