"""End to end on the embedded broker: `kpistream produce` → `kpistream run` → /metrics.

The daemon runs as a real subprocess; events go in through the produce command; the scraped
``kpistream_kpi_value`` of the last closed window must equal the truth computed here.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict

import orjson
import pytest
from daemon_support import Daemon, poll, produce

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


def events(n: int, seed: int = 3) -> list[dict]:
    rnd = random.Random(seed)
    return [{"ts": BASE_S * 1000 + i * 180_000 // n, "region": rnd.choice("abc"),
             "status": rnd.choice(["paid", "paid", "created"]),
             "amount": round(rnd.uniform(1, 500), 2)} for i in range(n)]


@pytest.fixture
def daemon(broker, tmp_path):
    topic = f"live-{uuid.uuid4().hex[:8]}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "orders.yaml").write_text(RULES.replace("TOPIC", topic))
    running = Daemon(tmp_path / "rules", broker.url,
                     {"KPISTREAM_GROUP_ID": f"g-{topic}", "KPISTREAM_IDLE_TIMEOUT": "1h"})
    yield topic, running
    running.stop()


async def test_scraped_kpis_equal_truth(broker, daemon, tmp_path):
    topic, running = daemon
    data = events(3000)
    bad = [b"not json", b'{"region": "a"}', b'{"ts": "yesterday", "status": "paid"}',
           b'{"ts": 1700000100, "status": "paid", "amount": "lots", "region": "a"}']
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([orjson.dumps(e) for e in data] + bad) + b"\n")
    produce(broker.url, topic, path, "--key", "region")
    await poll(lambda: running.value("kpistream_events_total") == len(data) + len(bad),
               deadline_s=60, what="the daemon to count every event")

    # an event far enough ahead on every partition (unkeyed lines go round the partitions)
    # closes the windows of minutes 0, 1, 2 but not minute 3
    closer = tmp_path / "closer.jsonl"
    closer.write_bytes(4 * (orjson.dumps({"ts": (BASE_S + 780) * 1000, "status": "x",
                                          "region": "a"}) + b"\n"))
    produce(broker.url, topic, closer)
    last_end = (BASE_S + 180) * 1000
    truth = defaultdict(float)
    for e in data:
        if e["status"] == "paid" and last_end - 60_000 <= e["ts"] < last_end:
            truth[("paid", e["region"])] += 1
            truth[("gmv", e["region"])] += e["amount"]

    def closed():
        m = running.scrape()
        ends = [v for k, v in m.items() if k[0] == "kpistream_kpi_window_end_timestamp_seconds"]
        return m if len(ends) == len(truth) and set(ends) == {last_end / 1000} else None
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
    assert running.proc.poll() is None, "the daemon must survive invalid events"
