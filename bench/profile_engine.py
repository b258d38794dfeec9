"""Profile the engine's hot path in-process, without a broker: where does a batch's time go?

Feeds the same seeded events as ``engine_throughput.py`` to ``Engine.ingest`` in batches of
20,000 (what one ``getmany`` returns to the daemon), calling ``Engine.advance`` after each
batch as the daemon does, and prints events/s per stage plus the top functions by cProfile.

    .venv/bin/python bench/profile_engine.py --scenario throughput --events 200000
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

from engine_throughput import RULES, SCENARIOS, make_events

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules

BATCH = 20_000


def run(engine: Engine, batches: list[list[bytes]], now_ms: int) -> tuple[float, float]:
    """Ingest and advance every batch; return (seconds in ingest, seconds in advance)."""
    ingest_s = advance_s = 0.0
    for values in batches:
        t0 = time.perf_counter()
        engine.ingest("orders", values, now_ms)
        t1 = time.perf_counter()
        engine.advance(now_ms)
        advance_s += time.perf_counter() - t1
        ingest_s += t1 - t0
    return ingest_s, advance_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="throughput")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=20240603)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    lines = make_events(args.events, args.seed, end_ms=now_ms)
    batches = [lines[i:i + BATCH] for i in range(0, len(lines), BATCH)]
    rules = load_rules(str(RULES / f"{args.scenario}.yaml"))

    decoder = Engine(rules).sources["orders"].decoder
    t0 = time.perf_counter()
    for values in batches:
        decoder.decode(values, max_time_ms=now_ms + 3_600_000)
    decode_s = time.perf_counter() - t0

    ingest_s, advance_s = run(Engine(rules), batches, now_ms)
    n = args.events
    print(f"{args.scenario}: {n:,} events in batches of {BATCH:,}")
    print(f"  decode only (polars read_ndjson + time parse): {n / decode_s:>9,.0f} events/s")
    print(f"  Engine.ingest (decode + aggregate):            {n / ingest_s:>9,.0f} events/s")
    print(f"  Engine.advance (close windows), total:         {advance_s:>9.3f} s")
    print(f"  ingest + advance:                              "
          f"{n / (ingest_s + advance_s):>9,.0f} events/s")

    profiler = cProfile.Profile()
    engine = Engine(rules)
    profiler.enable()
    run(engine, batches, now_ms)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
