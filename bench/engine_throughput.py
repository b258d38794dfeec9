"""Throughput and memory of the kpistream daemon against the raw aiokafka ceiling (``make bench``).

What it measures, in one run (about 1-2 minutes on 2 cores):

1. It starts an embedded broker (Tansu, in memory), creates the 4-partition topic
   ``bench.orders`` with explicit configs and produces N (default 500,000) seeded, realistic
   order events with ``produce_lines``: ``{"ts", "order_id", "user_id", "region" (10),
   "channel" (5), "city" (20), "store" (200), "status" (paid/created/cancelled), "amount"}``,
   event times in epoch ms spread over the 10 minutes before now, increasing with up to 3 s
   of jitter (within the rules' 10 s lateness, so no event is late).
2. **Ceiling**, measured again just before each daemon scenario, so that each ratio compares
   two figures taken under the same machine load: a fresh consumer group reads the whole
   topic with aiokafka ``getmany`` (``max_records=20000``, the daemon's fetch sizes) and
   ``orjson.loads`` every value. The end is reached by counting N messages, never by
   ``end_offsets()``, which this broker gets wrong (shared/BROKER-NOTES.md).
3. **Daemon**, one scenario per rule file in ``bench/rules/``: ``kpistream run --rules FILE
   --broker ... --start-from earliest --metrics-addr 127.0.0.1:PORT`` as a child process with a
   fresh ``KPISTREAM_GROUP_ID``. Every ~20 ms the bench scrapes
   ``/metrics?name[]=kpistream_events_total`` and sums every status. Then it reads the child's
   ``VmHWM`` (peak RSS) from ``/proc/PID/status``, stops it with SIGTERM and takes
   ``ru_maxrss`` and CPU time from ``os.wait4``.

   Scenarios: ``throughput`` (10 KPIs, 3 filtered, ``by: [region, channel]``, 1m windows: the
   issue's rate case), ``series_10k`` (the same KPIs by ``[region, channel, city]``: 10,000
   active series in all, the issue's memory case), ``series_100k`` (by ``[region, channel,
   store]``: 10,000 series per KPI, 100,000 in all, a stress case) and ``throughput_late10s``
   (``throughput`` with ``lateness: 10s`` instead of 15m).

   Why ``lateness: 15m``: 15m is longer than the events' 10 minutes, so no window closes
   during the run and every window stays open (a worst case for memory). Lateness is judged
   per partition (an event is late when older than its own partition's progress minus the
   lateness), so a backlog read a partition at a time makes nothing late; ``throughput_late10s``
   shows what a realistic lateness closes and drops with these events' 3 s jitter (windows close
   in stage one and are merged by the merge stage as the run goes). The table gives each
   scenario's late share and the number of series its KPIs hold for these events (computed
   here from the events with the rules' own filters).
   ``ru_maxrss`` from ``wait4`` is not used: Linux carries the pre-``exec`` image of the forked
   bench process into it.

Rates are measured from the first observation to the last, counting only what happened in
between: ``(N - count at first observation) / (time of last - time of first)``. For the ceiling
the first observation is after decoding the first batch, for the daemon the first scrape that
shows a nonzero count (so neither includes group join or start-up). Ratio = daemon / ceiling.
Goal (issue 3): ratio >= 0.5, peak RSS <= 300 MB with 10,000 active series.

The load average at start and end is recorded too: on a shared 2-core machine other work
moves every rate by tens of percent, so compare runs taken under similar load.

Output: a compact table on stdout and every figure in ``bench/out/engine_throughput.json``.
Options: ``--events N``, ``--scenario NAME`` (repeatable), ``--seed S``, ``--poll-ms MS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson
import polars as pl
from aiokafka import AIOKafkaConsumer

from kpistream.core.loader import load_rules
from kpistream.shell.broker import EmbeddedBroker, ensure_topics
from kpistream.shell.produce import produce_lines

BENCH = Path(__file__).resolve().parent
RULES = BENCH / "rules"
OUT = BENCH / "out"
KPISTREAM = Path(sys.executable).with_name("kpistream")
TOPIC = "bench.orders"  # as in the rule files
PARTITIONS = 4
SCENARIOS = ("throughput", "series_10k", "series_100k", "throughput_late10s")

REGIONS = ("east", "north", "south", "west", "central", "northeast", "northwest", "southwest",
           "southeast", "overseas")
CHANNELS = ("app", "web", "mini_program", "store_pos", "partner")
STATUSES = ("paid", "created", "cancelled")
STATUS_WEIGHTS = (0.62, 0.28, 0.10)
CITIES = 20
STORES = 200
USERS = 50_000
SPAN_MS = 10 * 60 * 1000  # event time covered by the events
JITTER_MS = 3_000

POLL_S = 0.02
MAX_RECORDS = 20_000
SESSION_TIMEOUT = "6s"  # Tansu holds a new group's join for half of it
DEADLINE_S = 300.0
STOP_TIMEOUT_S = 20.0
COUNTER = "kpistream_events_total"


# --- events ------------------------------------------------------------------------------------


def make_events(n: int, seed: int, end_ms: int) -> list[bytes]:
    """``n`` order events as JSON lines, seeded, event times in ``[end_ms - 10 min, end_ms]``."""
    rng = random.Random(seed)
    start_ms = end_ms - SPAN_MS
    statuses = rng.choices(STATUSES, STATUS_WEIGHTS, k=n)
    return [order_event(rng, start_ms + i * (SPAN_MS - JITTER_MS) // n
                        + rng.randrange(JITTER_MS), f"o{seed}-{i:07d}", statuses[i])
            for i in range(n)]


def order_event(rng: random.Random, ts: int, order_id: str, status: str) -> bytes:
    """One realistic order event as a JSON line (shared with bench/backtest_speed.py)."""
    return orjson.dumps({
        "ts": ts,
        "order_id": order_id,
        "user_id": f"u{rng.randrange(USERS):05d}",
        "region": REGIONS[rng.randrange(len(REGIONS))],
        "channel": CHANNELS[rng.randrange(len(CHANNELS))],
        "city": f"c{rng.randrange(CITIES):02d}",
        "store": f"s{rng.randrange(STORES):03d}",
        "status": status,
        "amount": round(rng.lognormvariate(4.6, 0.8), 2),
    })


async def prepare_topic(bootstrap: str, lines: list[bytes]) -> float:
    """Create the topic and produce every line; return the seconds producing took."""
    await ensure_topics(bootstrap, {TOPIC: PARTITIONS})
    start = time.perf_counter()
    sent = await produce_lines(bootstrap, TOPIC, lines)
    elapsed = time.perf_counter() - start
    if sent != len(lines):
        raise RuntimeError(f"produced {sent} of {len(lines)} events")
    return elapsed


def series_in_state(scenario: str, lines: list[bytes]) -> int:
    """How many series (KPI + label values) the scenario's KPIs hold for these events."""
    frame = pl.read_ndjson(b"\n".join(lines))
    total = 0
    for kpi in load_rules(str(RULES / f"{scenario}.yaml")).kpis.values():
        rows = frame if kpi.where is None else frame.filter(kpi.where.fill_null(False))
        total += rows.select(kpi.by).n_unique() if kpi.by else 1
    return total


# --- the ceiling: getmany + orjson -------------------------------------------------------------


@dataclass
class Ceiling:
    events_per_s: float
    seconds: float
    events_timed: int
    batches: int


async def measure_ceiling(bootstrap: str, n: int) -> Ceiling:
    """Read the whole topic with a fresh group, decoding every value, until ``n`` are read."""
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=f"bench-ceiling-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False,
        session_timeout_ms=6_000, heartbeat_interval_ms=2_000,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        count, batches, t0, n0 = 0, 0, 0.0, 0
        loads = orjson.loads
        deadline = time.monotonic() + DEADLINE_S
        while count < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"ceiling: read {count} of {n} events before the deadline")
            polled = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            for messages in polled.values():
                for m in messages:
                    loads(m.value)
                count += len(messages)
            if polled:
                batches += 1
                if batches == 1:
                    t0, n0 = time.perf_counter(), count
        elapsed = time.perf_counter() - t0
    finally:
        await consumer.stop()
    if count != n:
        raise RuntimeError(f"ceiling: read {count} events, expected {n}")
    return Ceiling((n - n0) / elapsed, elapsed, n - n0, batches)


# --- the daemon --------------------------------------------------------------------------------


@dataclass
class DaemonRun:
    scenario: str
    events_per_s: float
    seconds: float
    events_timed: int
    counts: dict[str, int]
    late_share: float
    series_reported: int  # kpistream_kpi_series: series of closed windows in the exporter
    peak_rss_mib: float  # VmHWM just before SIGTERM
    rss_at_first_count_mib: float
    cpu_s: float  # user + system of the whole life of the child
    exit_code: int
    scrapes: int
    scrape_ms_mean: float
    scrape_ms_max: float
    full_scrape_ms: float  # one unfiltered /metrics at the end
    full_scrape_kib: float
    log: str = field(repr=False, default="")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def _samples(text: str, name: str) -> dict[str, float]:
    """``{labels text: value}`` of one metric's samples in exposition text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = float(value)
    return out


def _status_of(labels: str) -> str:
    return labels.split('status="', 1)[1].split('"', 1)[0]


def _proc_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def run_daemon(scenario: str, broker_url: str, n: int, poll_s: float = POLL_S) -> DaemonRun:
    """Run ``kpistream run`` on ``bench/rules/SCENARIO.yaml`` until it has counted ``n``."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}/metrics"
    env = {**os.environ, "KPISTREAM_GROUP_ID": f"bench-{scenario}-{uuid.uuid4().hex[:8]}",
           "KPISTREAM_SESSION_TIMEOUT": SESSION_TIMEOUT}
    OUT.mkdir(exist_ok=True)
    log_path = OUT / f"daemon-{scenario}.log"
    argv = [str(KPISTREAM), "run", "--rules", str(RULES / f"{scenario}.yaml"),
            "--broker", broker_url, "--start-from", "earliest",
            "--metrics-addr", f"127.0.0.1:{port}"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    try:
        return _watch(proc, scenario, base, n, log_path, poll_s)
    finally:
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait()


def _watch(proc: subprocess.Popen, scenario: str, base: str, n: int, log_path: Path,
           poll_s: float) -> DaemonRun:
    url = f"{base}?name[]={COUNTER}"
    deadline = time.monotonic() + DEADLINE_S
    first: tuple[float, float] | None = None
    rss_first = 0
    scrape_times: list[float] = []
    total, counts = 0.0, {}
    while total < n:
        if proc.poll() is not None:
            raise RuntimeError(f"{scenario}: daemon exited with {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{scenario}: daemon counted {total:.0f} of {n} events before "
                               f"the deadline; see {log_path}")
        t_ask = time.perf_counter()
        text = _scrape(url)
        t_got = time.perf_counter()
        if text is not None:
            scrape_times.append(t_got - t_ask)
            counts = {_status_of(k): int(v) for k, v in _samples(text, COUNTER).items()}
            total = sum(counts.values())
            if total and first is None:
                first, rss_first = (t_got, total), _proc_kib(proc.pid, "VmRSS")
        time.sleep(poll_s)
    assert first is not None
    elapsed = t_got - first[0]
    timed = int(n - first[1])
    full_start = time.perf_counter()
    full = _scrape(base) or ""
    full_ms = (time.perf_counter() - full_start) * 1000
    series = sum(_samples(full, "kpistream_kpi_series").values())
    peak_kib = _proc_kib(proc.pid, "VmHWM")
    proc.send_signal(signal.SIGTERM)
    exit_code, usage = _reap(proc)
    return DaemonRun(
        scenario=scenario, events_per_s=timed / elapsed if elapsed > 0 else float("nan"),
        seconds=elapsed, events_timed=timed, counts=counts,
        late_share=counts.get("late", 0) / n, series_reported=int(series),
        peak_rss_mib=peak_kib / 1024, rss_at_first_count_mib=rss_first / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        exit_code=exit_code, scrapes=len(scrape_times),
        scrape_ms_mean=1000 * sum(scrape_times) / len(scrape_times),
        scrape_ms_max=1000 * max(scrape_times), full_scrape_ms=full_ms,
        full_scrape_kib=len(full.encode()) / 1024, log=str(log_path),
    )


def _reap(proc: subprocess.Popen) -> tuple[int, os.struct_rusage]:
    """Wait for the child (killing it after STOP_TIMEOUT_S); its exit code and rusage."""
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


# --- main --------------------------------------------------------------------------------------


async def setup(n: int, seed: int) -> tuple[EmbeddedBroker, dict, list[bytes]]:
    started = time.perf_counter()
    lines = make_events(n, seed, end_ms=int(time.time() * 1000))
    generated_s = time.perf_counter() - started
    broker = EmbeddedBroker()
    await broker.start()
    try:
        produce_s = await prepare_topic(broker.bootstrap, lines)
    except BaseException:
        await broker.stop()
        raise
    info = {"events": n, "seed": seed, "bytes": sum(map(len, lines)), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg()[0],
            "generate_s": generated_s, "produce_s": produce_s}
    return broker, info, lines


def report(info: dict, pairs: list[tuple[Ceiling, DaemonRun]], series: dict[str, int]) -> dict:
    """Print the table and return every figure as a JSON-ready dict."""
    n = info["events"]
    print(f"{n:,} events ({info['bytes'] / n:.0f} B each), {PARTITIONS} partitions, "
          f"produced in {info['produce_s']:.1f} s ({n / info['produce_s']:,.0f}/s); "
          f"load average {info['loadavg_start']:.1f} -> {os.getloadavg()[0]:.1f}")
    head = (f"{'scenario':<18} {'series':>7} {'ceiling/s':>9} {'daemon/s':>9} {'ratio':>6} "
            f"{'late':>6} {'peak RSS':>9} {'CPU s':>6} {'scrape':>7} {'full scrape':>16} "
            f"{'exit':>4}")
    print(head)
    print("-" * len(head))
    for c, r in pairs:
        print(f"{r.scenario:<18} {series[r.scenario]:>7,} {c.events_per_s:>9,.0f} "
              f"{r.events_per_s:>9,.0f} {r.events_per_s / c.events_per_s:>6.3f} "
              f"{r.late_share:>6.1%} {r.peak_rss_mib:>5.0f} MiB {r.cpu_s:>6.1f} "
              f"{r.scrape_ms_mean:>5.1f}ms "
              f"{r.full_scrape_ms:>6.0f}ms {r.full_scrape_kib:>5.0f}KiB {r.exit_code:>4}")
    print("series = series the KPIs hold for these events; ceiling = getmany+orjson measured "
          "just before each scenario; ratio = daemon/ceiling; late = share counted late")
    print("goal: ratio >= 0.5 (throughput), peak RSS <= 300 MB (series_10k); "
          "peak RSS = VmHWM before SIGTERM")
    return {
        "setup": {**info, "loadavg_end": os.getloadavg()[0]},
        "daemon": {r.scenario: {**asdict(r), "series": series[r.scenario], "ceiling": asdict(c),
                                "ratio": r.events_per_s / c.events_per_s} for c, r in pairs},
        "goal": {"ratio_min": 0.5, "peak_rss_mb_max": 300, "active_series": 10_000},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=20240603)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only these daemon scenarios (default: all)")
    parser.add_argument("--poll-ms", type=float, default=POLL_S * 1000,
                        help="interval between /metrics scrapes of the daemon (20)")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    broker, info, lines = loop.run_until_complete(setup(args.events, args.seed))
    scenarios = args.scenario or SCENARIOS
    series = {s: series_in_state(s, lines) for s in scenarios}
    del lines
    pairs = []
    try:
        for scenario in scenarios:
            ceiling = loop.run_until_complete(measure_ceiling(broker.bootstrap, args.events))
            pairs.append((ceiling, run_daemon(scenario, broker.url, args.events,
                                              args.poll_ms / 1000)))
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()
    figures = report(info, pairs, series)
    OUT.mkdir(exist_ok=True)
    (OUT / "engine_throughput.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {OUT / 'engine_throughput.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
