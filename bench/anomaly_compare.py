"""Compare anomaly detector designs on the NAB dev set; prints one row per design.

    .venv/bin/python bench/anomaly_compare.py            # every design (about a minute)
    .venv/bin/python bench/anomaly_compare.py holt-winters-residual

Designs are in ``bench/anomaly_designs.py``; the last row is the production default.
Scoring is ``bench/anomaly_nab.py`` (the pipeline's windows, firing transitions, NAB
standard profile). Last run (NAB dev, 33 files, one configuration each)::

    design                           TOTAL AWSCloudw AdExchang KnownCaus   Traffic    Tweets
    rolling-zscore                    40.5      47.3      36.8      11.7      69.0      41.5
    holt-winters-residual             41.7      39.8      36.8      22.7      39.1      57.7
    half-space-trees                  -1.9      28.8      36.0    -214.6      50.8      66.0
    snarimax-residual                  1.2      35.8      39.1     -78.2      29.3      -6.1
    ewm+gauss-likelihood              50.8      43.2      60.4      56.5      56.8      49.5
    seasonal-ewm records, no season   59.2      54.1      50.0      25.5      84.1      77.7
    seasonal-ewm records (default)    66.1      53.1      80.6      49.8      81.7      78.0
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anomaly_nab
from anomaly_designs import DESIGNS

#: published NAB scoreboard figures (all 58 files, corpus-tuned threshold), for context
PUBLISHED = "NAB published (full corpus): windowed Gaussian 40, RCF 52, HTM 70, CAD-OSE 70"


def compare(names: list[str]) -> list[tuple[str, dict, float]]:
    """Score each named design; returns (name, groups, seconds) rows."""
    all_series = anomaly_nab.load_series()
    rows = []
    for name in names:
        started = time.perf_counter()
        result = anomaly_nab.score(all_series, DESIGNS[name])
        rows.append((name, result["groups"], time.perf_counter() - started))
    return rows


def format_rows(rows: list[tuple[str, dict, float]]) -> str:
    """Fixed-width table: total and per-category scores, recall, false alerts, time."""
    categories = [c for c in rows[0][1] if c != "TOTAL"]
    short = [c.removeprefix("real")[:9] for c in categories]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'design':{width}} {'TOTAL':>6} " + " ".join(f"{c:>9}" for c in short)
             + f" {'recall':>6} {'FP':>5} {'sec':>5}"]
    for name, groups, seconds in rows:
        total = groups["TOTAL"]
        lines.append(f"{name:{width}} {total.score:6.1f} "
                     + " ".join(f"{groups[c].score:9.1f}" for c in categories)
                     + f" {total.recall:6.2f} {total.false_positives:5d} {seconds:5.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    names = argv or list(DESIGNS)
    unknown = [n for n in names if n not in DESIGNS]
    if unknown:
        print(f"unknown design(s) {unknown}; known: {list(DESIGNS)}", file=sys.stderr)
        return 2
    print(format_rows(compare(names)))
    print(PUBLISHED)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
