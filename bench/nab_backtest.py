"""NAB through ``kpistream backtest``: the anomaly defaults scored the way users run them.

Each series of ``shared/data/nab_dev`` becomes an events file (one event per row) and a rule
file with one KPI ``avg(value)`` over the series' sampling interval, ``anomaly: {}`` and an
alert ``when: is_anomaly``. Each alert's firing time (a window end) is mapped to the last
row of that window (the row whose value triggered it) and scored with NAB's standard
profile by ``shared/eval/nab_score.py``.

    .venv/bin/python bench/nab_backtest.py [--data DIR] [--out DIR] [--jobs 2]
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
KPISTREAM = str(Path(sys.executable).with_name("kpistream"))

RULES = """\
sources: [{{name: nab, topic: nab}}]
kpis:
  - name: value
    source: nab
    agg: avg(value)
    window: {window}
    lateness: 0s
    series_ttl: 30d
    anomaly: {{}}
alerts:
  - {{name: anomaly, kpi: value, when: is_anomaly}}
"""


def read_series(path: Path) -> list[tuple[int, str]]:
    """``(epoch ms, value text)`` rows; NAB's naive timestamps are UTC."""
    with path.open() as f:
        return [(int(datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC).timestamp()
                     * 1000), r["value"]) for r in csv.DictReader(f)]


def window_minutes(times: list[int]) -> int:
    """The median sampling interval, in whole minutes (at least one)."""
    gaps = [b - a for a, b in pairwise(times)]
    return max(1, round(statistics.median(gaps) / 60_000))


def run_file(name: str, data: Path, work: Path) -> list[str]:
    """Backtest one NAB file; the timestamps of the rows that raised alerts."""
    rows = read_series(data / name)
    times = [t for t, _ in rows]
    minutes = window_minutes(times)
    case = work / name.replace("/", "__").removesuffix(".csv")
    (case / "rules").mkdir(parents=True, exist_ok=True)
    (case / "rules" / "nab.yaml").write_text(RULES.format(window=f"{minutes}m"))
    events = case / "events.jsonl"
    events.write_text("".join(f'{{"ts":{t / 1000},"value":{v}}}\n' for t, v in rows))
    subprocess.run([KPISTREAM, "backtest", "--rules", str(case / "rules"), "--events",
                    str(events), "--out", str(case / "out"), "--no-report"], check=True,
                   capture_output=True)
    stamps = []
    with (case / "out" / "alerts.csv").open() as f:
        for alert in csv.DictReader(f):
            if alert["state"] != "firing":
                continue
            end = int(datetime.fromisoformat(alert["at"]).timestamp() * 1000)
            row = bisect.bisect_left(times, end) - 1  # the last row before the window's end
            stamps.append(datetime.fromtimestamp(times[row] / 1000, UTC)
                          .strftime("%Y-%m-%d %H:%M:%S"))
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "nab_dev")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "nab")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    names = sorted(json.loads((args.data / "windows.json").read_text()))
    with ThreadPoolExecutor(args.jobs) as pool:
        stamps = dict(zip(names, pool.map(lambda n: run_file(n, args.data, args.out), names),
                          strict=True))
    detections = args.out / "alerts.csv"
    with detections.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "timestamp"])
        out.writerows((name, stamp) for name in names for stamp in stamps[name])
    subprocess.run([sys.executable, str(SHARED / "eval" / "nab_score.py"), "--windows",
                    str(args.data / "windows.json"), "--detections", str(detections),
                    "--json", str(args.out / "score.json")], check=True)


if __name__ == "__main__":
    main()
