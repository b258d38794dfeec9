"""Anomaly detection live: `kpistream run` on the embedded broker gives the bands `backtest`
gives, across a kill -9; the alert message carries its feedback id, and feedback widens the
series' band."""

from __future__ import annotations

import math
import os
import random
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from daemon_support import Daemon, poll, produce

from kpistream.core.durations import rfc3339
from kpistream.core.loader import load_rules
from kpistream.shell.backtest import EventFile, run_backtest
from kpistream.shell.broker import ensure_topics

T = 1_700_000_040_000  # a minute boundary
MIN = 60_000
SPIKE = 90
RULES = """
sources: [{name: meter, topic: TOPIC, partitions: 1}]
kpis:
  - {name: load, title: Load, source: meter, agg: avg(x), window: 1m, lateness: 0s,
     owner: ops, anomaly: {warmup: 20}}
alerts:
  - {name: odd_load, kpi: load, when: is_anomaly}
owners:
  - {name: ops, language: en, notify: ["${HOOK}"], repeat_interval: 1d}
"""


def minute_events() -> list[bytes]:
    rnd = random.Random(3)
    return [orjson.dumps({"ts": T + i * MIN + 1_000,
                          "x": round(100 + 5 * math.sin(i / 30) + rnd.gauss(0, 1)
                                     + (60 if i == SPIKE else 0), 3)})
            for i in range(120)]


class Meter:
    def __init__(self, broker, tmp_path: Path, http_receiver) -> None:
        self.broker, self.tmp_path = broker, tmp_path
        self.topic = f"anomaly-{uuid.uuid4().hex[:8]}"
        self.rules = tmp_path / "rules"
        self.rules.mkdir()
        (self.rules / "meter.yaml").write_text(RULES.replace("TOPIC", self.topic))
        self.env = {
            "KPISTREAM_GROUP_ID": f"g-{self.topic}", "KPISTREAM_IDLE_TIMEOUT": "1h",
            "KPISTREAM_CHECKPOINT_INTERVAL": "200ms",
            "KPISTREAM_CHECKPOINT_TOPIC": f"cp-{self.topic}",
            "KPISTREAM_DELIVERY_LOG_TOPIC": f"dl-{self.topic}",
            "KPISTREAM_FEEDBACK_TOPIC": f"fb-{self.topic}",
            "HOOK": f"json://{http_receiver.url.removeprefix('http://')}/hook",
        }
        self.events = minute_events()

    def send(self, first: int, last: int) -> None:
        path = self.tmp_path / f"m{first}.jsonl"
        path.write_bytes(b"\n".join(self.events[first:last]) + b"\n")
        produce(self.broker.url, self.topic, path)

    def backtest_bands(self) -> dict[str, tuple[float, float, float]]:
        """window end -> (expected, lower, upper), from `backtest` over every event."""
        path = self.tmp_path / "all.jsonl"
        path.write_bytes(b"\n".join(self.events) + b"\n")
        out = self.tmp_path / "out"
        run_backtest(load_rules(self.rules), [EventFile("meter", path)], out)
        bands = {}
        for line in (out / "bands.csv").read_text().splitlines()[1:]:
            _, end, _, _, expected, lower, upper, *_ = line.split(",")
            if expected:
                bands[end] = (float(expected), float(lower), float(upper))
        return bands


def live_band(daemon: Daemon) -> tuple[float, float, float]:
    return tuple(daemon.value(f"kpistream_kpi_{n}", kpi="load")
                 for n in ("expected", "lower", "upper"))


async def closed_through(daemon: Daemon, minute: int) -> None:
    end_s = (T + minute * MIN) / 1000
    await poll(lambda: daemon.value("kpistream_kpi_window_end_timestamp_seconds",
                                    kpi="load") == end_s,
               deadline_s=60, what=f"the window ending at minute {minute}")


def close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b, strict=True))


async def test_bands_survive_a_kill_and_feedback_widens_them(broker, tmp_path, http_receiver):
    meter = Meter(broker, tmp_path, http_receiver)
    await ensure_topics(broker.bootstrap, {meter.topic: 1})  # not auto-created with 4
    truth = meter.backtest_bands()
    daemon = Daemon(meter.rules, broker.url, meter.env)
    try:
        meter.send(0, 70)
        await closed_through(daemon, 69)
        assert close(live_band(daemon), truth[rfc3339(T + 69 * MIN)])
        moment = time.time()
        await poll(lambda: daemon.value("kpistream_checkpoint_last_timestamp_seconds") > moment,
                   deadline_s=20, what="a checkpoint")
    finally:
        daemon.kill9()

    restarted = Daemon(meter.rules, broker.url, meter.env)
    try:
        meter.send(70, SPIKE + 2)  # closes the spike's window: the alert fires
        (firing,) = await http_receiver.wait_for(1, timeout_s=30)
        meter.send(SPIKE + 2, 100)
        await closed_through(restarted, 99)
        assert close(live_band(restarted), truth[rfc3339(T + 99 * MIN)])
        message = firing.json["message"]
        assert "Expected: " in message and "normal range" in message, message
        alert_id = re.search(r"feedback --alert (\S+) --not-anomaly", message).group(1)
        assert alert_id.endswith(f":{(T + (SPIKE + 1) * MIN) // 1000}")

        subprocess.run([sys.executable, "-m", "kpistream", "feedback", "--alert", alert_id,
                        "--not-anomaly", "--broker", broker.url], check=True,
                       capture_output=True, timeout=60, env={**os.environ, **meter.env})
        await poll(lambda: restarted.value("kpistream_anomaly_feedback_total",
                                           result="accepted") == 1,
                   deadline_s=30, what="the feedback to be applied")
        meter.send(100, 106)
        await closed_through(restarted, 105)
        _, lower, upper = live_band(restarted)
        _, truth_lower, truth_upper = truth[rfc3339(T + 105 * MIN)]
        assert upper - lower > truth_upper - truth_lower  # the band widened
    finally:
        restarted.stop()
