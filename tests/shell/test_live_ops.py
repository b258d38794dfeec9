"""Operations end to end: /healthz and /readyz, and alert state forwarded to a real
Alertmanager (Debian's prometheus-alertmanager), resolves included."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from daemon_support import Daemon, free_port, poll, produce

T = 1_700_000_040_000  # a minute boundary
MIN = 60_000
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RULES = """
sources: [{name: orders, topic: TOPIC, partitions: 1}]
kpis:
  - {name: paid, title: Paid orders, unit: orders, source: orders, agg: count(), by: [region],
     window: 1m, lateness: 0s, owner: ops}
alerts:
  - {name: too_few_orders, kpi: paid, when: value < 3, severity: critical,
     summary: checkout may be broken}
owners:
  - {name: ops, notify: []}
"""


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def alertmanager(tmp_path: Path):
    """A real Alertmanager on loopback that routes everything nowhere."""
    if not Path(ALERTMANAGER).exists():
        pytest.fail(f"{ALERTMANAGER} is missing: make test installs Debian's "
                    "prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text("route: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n")
    port = free_port()
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def our_alerts(url: str) -> list[dict]:
    _, alerts = get(f"{url}/api/v2/alerts")
    return [a for a in alerts if a["labels"].get("alertname") == "too_few_orders"]


async def test_probes_and_alertmanager_follow_the_alert(broker, tmp_path, alertmanager):
    topic = f"ops-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shop.yaml").write_text(RULES.replace("TOPIC", topic))
    await poll(lambda: _up(alertmanager), deadline_s=30, what="Alertmanager to start")
    daemon = Daemon(rules, broker.url, {
        "KPISTREAM_GROUP_ID": f"g-{topic}", "KPISTREAM_IDLE_TIMEOUT": "1h",
        "KPISTREAM_CHECKPOINT_TOPIC": f"cp-{topic}", "KPISTREAM_DELIVERY_LOG_TOPIC": f"dl-{topic}",
        "KPISTREAM_ALERTMANAGER_URL": alertmanager})
    base = f"http://127.0.0.1:{daemon.port}"
    try:
        _, body = await poll(lambda: _ready(base), deadline_s=60, what="/readyz")
        assert body == {"ready": True, "checks": {"rules_loaded": True, "broker_connected": True,
                                                  "partitions_assigned": True}}
        assert get(f"{base}/healthz") == (200, {"alive": True})

        def minute(index: int, orders: int) -> None:
            path = tmp_path / f"m{index}.jsonl"
            path.write_bytes(b"".join(orjson.dumps({"ts": T + index * MIN + i,
                                                    "region": "east"}) + b"\n"
                                      for i in range(orders)))
            produce(broker.url, topic, path)

        for index, orders in enumerate([5, 1, 5]):  # minute 1 has too few orders
            minute(index, orders)
        (alert,) = await poll(lambda: our_alerts(alertmanager), deadline_s=60,
                              what="the alert in Alertmanager")
        assert alert["labels"] == {"alertname": "too_few_orders", "kpi": "paid",
                                   "severity": "critical", "owner": "ops", "region": "east"}
        assert alert["annotations"]["summary"] == "checkout may be broken"
        assert alert["annotations"]["description"] == "Paid orders = 1 orders (value < 3)"
        assert alert["startsAt"].startswith("2023-11-14T22:15:00")
        assert alert["status"]["state"] == "active"

        minute(3, 5)  # closes minute 2 (5 orders): resolved
        await poll(lambda: not our_alerts(alertmanager), deadline_s=60,
                   what="the alert to resolve in Alertmanager")
        assert daemon.value("kpistream_alertmanager_posts_total", result="sent") >= 2
    finally:
        daemon.stop()


def _up(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:  # poll retries OSError
        return r.status == 200


def _ready(base: str):
    status, body = get(f"{base}/readyz")
    return (status, body) if status == 200 else None
