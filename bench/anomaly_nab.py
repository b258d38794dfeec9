"""Score an anomaly detector on the NAB dev set, the way a kpistream pipeline would.

Each CSV row is an event; the KPI is ``avg(value)`` over windows of the file's sampling
interval (median spacing rounded to whole minutes) aligned to the UTC epoch; one
detector per file; an alert is a window where ``is_anomaly`` turns true (a run of
anomalous windows is one alert) and is written at the last row inside that window.
Scoring uses ``/work/shared/eval/nab_score.py`` (imported, or as a subprocess with
``--check``).

    .venv/bin/python bench/anomaly_nab.py                 # default configuration
    .venv/bin/python bench/anomaly_nab.py --per-file --check
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpistream.core.anomaly import AnomalyConfig, SeriesDetector

DATA = Path("/work/shared/data/nab_dev")
SCORER = Path("/work/shared/eval/nab_score.py")


class Detector(Protocol):
    """What the driver needs: judge a window and say whether it is anomalous."""

    def observe(self, end_ms: int, value: float) -> object: ...


#: builds a fresh detector for a series whose windows last ``window_ms``
Factory = Callable[[int], Detector]


@dataclass
class Series:
    """One NAB file as kpistream would see it: closed windows and their last rows."""

    name: str
    timestamps: list[str]
    window_ms: int
    ends: list[int]  # window end (ms), one per non-empty window
    values: list[float]  # avg(value) of the window
    last_rows: list[int]  # index of the last row inside the window


def load_series(data: Path = DATA) -> list[Series]:
    """Every labelled file, aggregated into epoch-aligned windows."""
    names = sorted(json.loads((data / "windows.json").read_text()))
    return [_aggregate(name, data / name) for name in names]


def _aggregate(name: str, path: Path) -> Series:
    """Average rows per window of the file's median spacing (whole minutes)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    stamps = [r["timestamp"] for r in rows]
    ms = [int(datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() * 1000) for t in stamps]
    spacing = statistics.median(b - a for a, b in itertools.pairwise(ms))
    window_ms = max(1, round(spacing / 60_000)) * 60_000
    ends: list[int] = []
    sums: list[list[float]] = []
    last_rows: list[int] = []
    for i, (t, row) in enumerate(zip(ms, rows, strict=True)):
        end = (t // window_ms + 1) * window_ms
        if ends and ends[-1] == end:
            sums[-1][0] += float(row["value"])
            sums[-1][1] += 1
            last_rows[-1] = i
        else:
            ends.append(end)
            sums.append([float(row["value"]), 1])
            last_rows.append(i)
    values = [s / n for s, n in sums]
    return Series(name, stamps, window_ms, ends, values, last_rows)


def alert_rows(series: Series, factory: Factory) -> list[int]:
    """Rows where the detector's alert goes to FIRING (is_anomaly turns true)."""
    detector = factory(series.window_ms)
    rows, before, previous_end = [], False, None
    for end, value, row in zip(series.ends, series.values, series.last_rows, strict=True):
        if previous_end is not None and end - previous_end > series.window_ms:
            before = False  # a window without rows has no value: the alert resolved there
        now = bool(detector.observe(end, value).is_anomaly)
        if now and not before:
            rows.append(row)
        before, previous_end = now, end
    return rows


def _scorer():
    """The NAB scorer module, imported from its file."""
    spec = importlib.util.spec_from_file_location("nab_score", SCORER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nab_score"] = module
    spec.loader.exec_module(module)
    return module


def score(all_series: Iterable[Series], factory: Factory, data: Path = DATA) -> dict:
    """Run ``factory``'s detectors over every file; returns {name: FileScore} groups + alerts."""
    nab = _scorer()
    windows = nab.load_windows(data / "windows.json")
    scores, alerts = [], {}
    for series in all_series:
        rows = alert_rows(series, factory)
        alerts[series.name] = rows
        row_of = {nab.parse_time(t, series.name): i for i, t in enumerate(series.timestamps)}
        spans = nab.window_rows(series.name, windows[series.name], row_of)
        scores.append(nab.score_file(series.name, len(series.timestamps), spans, set(rows),
                                     nab.PROFILES["standard"]))
    return {"files": scores, "groups": nab.totals(scores), "alerts": alerts}


def check_with_subprocess(all_series: list[Series], alerts: dict[str, list[int]]) -> str:
    """Write alerts.csv and run the scorer as kpistream's evaluation does; its output."""
    by_name = {s.name: s for s in all_series}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alerts.csv"
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["file", "timestamp"])
            for name, rows in alerts.items():
                out.writerows([name, by_name[name].timestamps[r]] for r in rows)
        run = subprocess.run(
            [sys.executable, str(SCORER), "--windows", str(DATA / "windows.json"),
             "--detections", str(path)], capture_output=True, text=True, check=True)
    return run.stdout


def default_factory(config: AnomalyConfig | None = None) -> Factory:
    """Factory of production detectors with ``config`` (default config if None)."""
    base = config or AnomalyConfig()

    def make(window_ms: int) -> SeriesDetector:
        return SeriesDetector(AnomalyConfig(
            sensitivity=base.sensitivity, direction=base.direction, warmup=base.warmup,
            seasonality=base.seasonality, timezone=base.timezone, window_ms=window_ms))
    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensitivity", default="medium", choices=["low", "medium", "high"])
    parser.add_argument("--per-file", action="store_true")
    parser.add_argument("--check", action="store_true", help="also score via the scorer CLI")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    all_series = load_series()
    result = score(all_series, default_factory(AnomalyConfig(sensitivity=args.sensitivity)))
    nab = sys.modules["nab_score"]
    if args.per_file:
        print(nab.format_table(result["files"]))
        print()
    print(nab.format_table(list(result["groups"].values())))
    print(f"({time.perf_counter() - started:.1f} s)")
    if args.check:
        print(check_with_subprocess(all_series, result["alerts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
