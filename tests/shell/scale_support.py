"""Scale-out runs: workers of one consumer group over a 6-partition topic, seeded orders and
the truth computed from them (the scale-out and outage tests share them)."""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
from daemon_support import Daemon, poll, produce

HOUR_MS = 3_600_000
MIN_MS = 60_000
BASE_MS = 1_699_999_200_000  # an hour boundary
PARTITIONS = 6
REGIONS = [f"r{i}" for i in range(8)]
BUSY = 7_000  # per_minute above this fires busy_minute
RULES = f"""
sources:
  - {{name: orders, topic: TOPIC, partitions: {PARTITIONS}}}
kpis:
  - {{name: orders_total, source: orders, agg: count(), by: [region], window: 1h, lateness: 10m}}
  - {{name: cents_total, source: orders, agg: sum(cents), by: [region], window: 1h,
     lateness: 10m}}
  - {{name: largest, source: orders, agg: max(cents), by: [region], window: 1h, lateness: 10m}}
  - {{name: buyers, source: orders, agg: count_distinct(user), window: 1h, lateness: 10m}}
  - {{name: per_minute, source: orders, agg: count(), window: 1m, lateness: 5s}}
alerts:
  - {{name: busy_minute, kpi: per_minute, when: value > {BUSY}}}
"""


def events(minutes: int, per_minute: int, busy: set[int], seed: int) -> list[dict]:
    """Orders in time order; the ``busy`` minutes have twice as many."""
    rnd = random.Random(seed)
    out = []
    for minute in range(minutes):
        n = per_minute * (2 if minute in busy else 1)
        out += [{"ts": BASE_MS + minute * MIN_MS + i * MIN_MS // n, "region": rnd.choice(REGIONS),
                 "user": f"u{rnd.randrange(20_000)}", "cents": rnd.randrange(1, 100_000)}
                for i in range(n)]
    return out


def truth(data: list[dict]) -> dict[tuple[str, tuple], float]:
    """The 1h windows' values (everything is in the first hour) as the scrape keys them."""
    values: dict[tuple[str, tuple], float] = defaultdict(float)
    biggest: dict[str, int] = defaultdict(int)
    for e in data:
        region = (("region", e["region"]),)
        values[("orders_total", region)] += 1
        values[("cents_total", region)] += e["cents"]
        biggest[e["region"]] = max(biggest[e["region"]], e["cents"])
    for region, cents in biggest.items():
        values[("largest", (("region", region),))] = cents
    values[("buyers", ())] = len({e["user"] for e in data})
    return dict(values)


def busy_ends(data: list[dict]) -> set[str]:
    """When busy_minute fires: the end of every minute above BUSY, as the console prints it."""
    per_minute = Counter((e["ts"] - BASE_MS) // MIN_MS for e in data)
    return {datetime.fromtimestamp((BASE_MS + (m + 1) * MIN_MS) / 1000, UTC)
            .strftime("%Y-%m-%dT%H:%M:%S") for m, n in per_minute.items() if n > BUSY}


class Cluster:
    """Workers of one consumer group, each a process with its own metrics port and log."""

    def __init__(self, broker, tmp_path: Path, workers: int) -> None:
        self.broker, self.tmp_path = broker, tmp_path
        self.topic = f"scale-{uuid.uuid4().hex[:8]}"
        self.rules = tmp_path / "rules"
        self.rules.mkdir()
        (self.rules / "orders.yaml").write_text(RULES.replace("TOPIC", self.topic))
        self.env = {"KPISTREAM_GROUP_ID": f"g-{self.topic}", "KPISTREAM_IDLE_TIMEOUT": "1h",
                    "KPISTREAM_CHECKPOINT_INTERVAL": "500ms",
                    "KPISTREAM_CHECKPOINT_TOPIC": f"cp-{self.topic}"}
        self.started = 0
        self.workers = [self._start() for _ in range(workers)]
        self.files = 0

    def _start(self) -> Daemon:
        self.started += 1
        return Daemon(self.rules, self.broker.url, self.env,
                      log=self.tmp_path / f"worker-{self.started}.log")

    def kill_and_restart(self, index: int) -> None:
        self.workers[index].kill9()
        self.workers[index] = self._start()

    def produce(self, data: list[dict]) -> None:
        self.files += 1
        path = self.tmp_path / f"events-{self.files}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in data))
        produce(self.broker.url, self.topic, path)

    def close_the_hour(self) -> None:
        """One event per partition, far enough ahead to close the first hour everywhere."""
        self.produce([{"ts": BASE_MS + HOUR_MS + 11 * MIN_MS, "region": "r0", "user": "u0",
                       "cents": 1}] * PARTITIONS)

    async def hour_values(self) -> dict[tuple[str, tuple], float]:
        """The 1h windows' values, once the worker that merges has closed the first hour."""
        end_s = (BASE_MS + HOUR_MS) / 1000

        def closed():
            for worker in self.workers:
                m = worker.scrape()
                ends = [v for (n, labels), v in m.items()
                        if n == "kpistream_kpi_window_end_timestamp_seconds"
                        and dict(labels)["kpi"] != "per_minute"]
                if ends and all(e == end_s for e in ends):
                    return {(dict(labels)["kpi"], tuple(kv for kv in labels if kv[0] != "kpi")): v
                            for (n, labels), v in m.items() if n == "kpistream_kpi_value"
                            and dict(labels)["kpi"] != "per_minute"}
            return None

        return await poll(closed, deadline_s=180, what="the first hour to close")

    def exporters(self) -> int:
        """How many workers export KPI values (one merges; the others must export none)."""
        return sum(any(n == "kpistream_kpi_value" for n, _ in w.scrape()) for w in self.workers)

    def firings(self) -> Counter:
        """busy_minute FIRING lines of every worker that ever ran, by window end."""
        lines = Counter()
        for log in self.tmp_path.glob("worker-*.log"):
            lines.update(re.findall(r"^\[(\S+)Z\] FIRING \S+ busy_minute:", log.read_text(
                errors="replace"), flags=re.MULTILINE))
        return lines

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
