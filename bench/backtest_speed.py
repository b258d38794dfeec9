"""Replay speed of ``kpistream backtest`` on a day of order events (``make bench``).

Issue 6 asks that a backtest replay a day of events (1 million) in under a minute. This bench
writes N (default 1,000,000) seeded, realistic order events to a JSONL file in a temporary
directory: the fields of ``bench/engine_throughput.py`` (``ts`` in epoch ms, ``order_id``,
``user_id``, ``region`` (10), ``channel`` (5), ``city``, ``store``, ``status``, ``amount``),
event times over one day with a daily rhythm (quiet at night, busy in the evening), in order
with up to 3 s of jitter. It then runs ``kpistream backtest --rules bench/rules/throughput.yaml``
(source ``orders``: 10 KPIs by ``[region, channel]``, 1-minute windows) as a child process,
once with the HTML report and once with ``--no-report``, and prints the wall time and
events per second of each (process start-up and writing the outputs included).

Options: ``--events N``, ``--seed S``, ``--keep DIR`` (write the events and outputs there).
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine_throughput import JITTER_MS, STATUS_WEIGHTS, STATUSES, order_event

BENCH = Path(__file__).resolve().parent
RULES = BENCH / "rules" / "throughput.yaml"
DAY_START_MS = 1_731_801_600_000  # 2024-11-17T00:00:00Z
DAY_MS = 86_400_000
MINUTE_MS = 60_000


def minute_counts(n: int) -> list[int]:
    """Events per minute of the day: a daily rhythm peaking at 20:00, summing to ``n``."""
    weights = [1.2 + math.cos(2 * math.pi * (m / 1440 - 20 / 24)) for m in range(1440)]
    total = sum(weights)
    counts = [int(n * w / total) for w in weights]
    counts[20 * 60] += n - sum(counts)
    return counts


def write_events(path: Path, n: int, seed: int) -> None:
    """``n`` order events as JSON lines over one day, in time order give or take 3 s."""
    rng = random.Random(seed)
    statuses = rng.choices(STATUSES, STATUS_WEIGHTS, k=n)
    i = 0
    with path.open("wb") as f:
        for minute, count in enumerate(minute_counts(n)):
            base = DAY_START_MS + minute * MINUTE_MS
            lines = []
            for j in range(count):
                ts = base + j * (MINUTE_MS - JITTER_MS) // max(count, 1) + \
                    rng.randrange(JITTER_MS)
                lines.append(order_event(rng, ts, f"o{seed}-{i:07d}", statuses[i]))
                i += 1
            f.write(b"\n".join(lines) + b"\n" if lines else b"")


def run_backtest(events: Path, out: Path, *extra: str) -> tuple[float, str]:
    """Run the backtest as a child process; return its wall time in seconds and stdout."""
    command = [sys.executable, "-m", "kpistream", "backtest", "--rules", str(RULES),
               "--events", f"orders={events}", "--out", str(out), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"backtest failed ({done.returncode}): {done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    """Generate the events, time both runs, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--keep", type=Path, help="directory for the events and outputs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        events = work / "orders.jsonl"
        start = time.perf_counter()
        write_events(events, args.events, args.seed)
        print(f"generated {args.events:,} events over one day in "
              f"{time.perf_counter() - start:.1f} s ({events.stat().st_size / 1e6:.0f} MB)")
        for name, extra in (("with report", ()), ("no report", ("--no-report",))):
            elapsed, stdout = run_backtest(events, work / name.replace(" ", "_"), *extra)
            print(f"backtest {name}: {elapsed:.1f} s wall, {args.events / elapsed:,.0f} events/s"
                  f" ({'under' if elapsed < 60 else 'OVER'} the 60 s goal)")
            print("  " + stdout.splitlines()[0])


if __name__ == "__main__":
    main()
