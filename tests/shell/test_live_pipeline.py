"""End to end on the embedded broker: `kpistream produce` → `kpistream run` → /metrics.

The daemon runs as a real subprocess; events go in through the produce command; the scraped
``kpistream_kpi_value`` of the last closed window must equal the truth computed here.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

BASE_S = 1_700_000_040  # a minute boundary
RULES = """
sources:
  - {name: orders, topic: TOPIC, time_field: ts}
kpis:
  - {name: paid, source: orders, where: 'status == "paid"', agg: count(), by: [region],
     window: 1m, lateness: 10m}
  - {name: gmv, source: orders, where: 'status == "paid"', agg: sum(amount), by: [region],
     window: 1m, lateness: 10m}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def poll(condition, *, deadline_s: float, what: str):
    """Await ``condition()`` becoming truthy, checking every 50 ms until the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            last = condition()
            if last:
                return last
        except OSError:
            pass
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last seen: {last}")


def produce(broker, topic: str, path: Path, *key: str) -> None:
    subprocess.run([sys.executable, "-m", "kpistream", "produce", "--broker", broker.url,
                    "--topic", topic, *key, str(path)], check=True, capture_output=True,
                   timeout=60)


def events(n: int, seed: int = 3) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        out.append({"ts": BASE_S * 1000 + i * 180_000 // n, "region": rnd.choice("abc"),
                    "status": rnd.choice(["paid", "paid", "created"]),
                    "amount": round(rnd.uniform(1, 500), 2)})
    return out


@pytest.fixture
def daemon(broker, tmp_path):
    topic = f"live-{uuid.uuid4().hex[:8]}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "orders.yaml").write_text(RULES.replace("TOPIC", topic))
    port = free_port()
    env = {**os.environ, "KPISTREAM_GROUP_ID": f"g-{topic}", "KPISTREAM_IDLE_TIMEOUT": "1h",
           "KPISTREAM_SESSION_TIMEOUT": "6s"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpistream", "run", "--rules", str(tmp_path / "rules"),
         "--broker", broker.url, "--metrics-addr", f"127.0.0.1:{port}",
         "--start-from", "earliest"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield topic, port, proc
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


async def test_scraped_kpis_equal_truth(broker, daemon, tmp_path):
    topic, port, proc = daemon
    data = events(3000)
    bad = [b"not json", b'{"region": "a"}', b'{"ts": "yesterday", "status": "paid"}',
           b'{"ts": 1700000100, "status": "paid", "amount": "lots", "region": "a"}']
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps(e) for e in data] + bad) + b"\n")
    produce(broker, topic, path, "--key", "region")

    def counted():
        m = scrape(port)
        return sum(v for (name, _), v in m.items() if name == "kpistream_events_total")
    await poll(lambda: counted() == len(data) + len(bad), deadline_s=60,
               what="the daemon to count every event")

    # an event far enough ahead on every partition (unkeyed lines go round the partitions)
    # closes the windows of minutes 0, 1, 2 but not minute 3
    closer = tmp_path / "closer.jsonl"
    closer.write_bytes(4 * (orjson.dumps({"ts": (BASE_S + 780) * 1000, "status": "x",
                                          "region": "a"}) + b"\n"))
    produce(broker, topic, closer)
    last_end = (BASE_S + 180) * 1000
    truth = defaultdict(float)
    for e in data:
        if e["status"] == "paid" and last_end - 60_000 <= e["ts"] < last_end:
            truth[("paid", e["region"])] += 1
            truth[("gmv", e["region"])] += e["amount"]

    def closed():
        m = scrape(port)
        ends = {k: v for k, v in m.items()
                if k[0] == "kpistream_kpi_window_end_timestamp_seconds"}
        return m if ends and all(v == last_end / 1000 for v in ends.values()) and \
            len(ends) == len(truth) else None
    metrics = await poll(closed, deadline_s=30, what="windows up to minute 3 to close")

    scraped = {(dict(labels)["kpi"], dict(labels)["region"]): v for (name, labels), v
               in metrics.items() if name == "kpistream_kpi_value"}
    assert scraped.keys() == truth.keys()
    for key, want in truth.items():
        assert scraped[key] == pytest.approx(want, rel=1e-12), key
    status = {dict(labels)["status"]: v for (name, labels), v in metrics.items()
              if name == "kpistream_events_total"}
    assert status["invalid"] == len(bad)
    assert status["ok"] == sum(e["status"] == "paid" for e in data)
    assert status["filtered"] == len(data) - status["ok"] + 4
    assert proc.poll() is None, "the daemon must survive invalid events"
