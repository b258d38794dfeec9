"""Operations end to end: /healthz and /readyz, and alert state forwarded to a real
Alertmanager (Debian's prometheus-alertmanager), resolves included."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from daemon_support import Shop, free_port, poll

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


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


async def test_probes_and_alertmanager_follow_the_alert(broker, tmp_path, alertmanager,
                                                        http_receiver, smtp_receiver):
    shop = Shop(broker, tmp_path, http_receiver, smtp_receiver)
    shop.env.update(MAIL="", KPISTREAM_ALERTMANAGER_URL=alertmanager)
    await poll(lambda: _up(alertmanager), deadline_s=30, what="Alertmanager to start")
    daemon = shop.daemon()
    base = f"http://127.0.0.1:{daemon.port}"
    try:
        _, body = await poll(lambda: _ready(base), deadline_s=60, what="/readyz")
        assert body == {"ready": True, "checks": {"rules_loaded": True, "broker_connected": True,
                                                  "partitions_assigned": True,
                                                  "merge_stage": True}}
        assert get(f"{base}/healthz") == (200, {"alive": True})
        for index, orders in enumerate([5, 1, 5]):  # minute 1 has too few orders
            shop.minute(index, orders)
        (alert,) = await poll(lambda: our_alerts(alertmanager), deadline_s=60,
                              what="the alert in Alertmanager")
        assert alert["labels"] == {"alertname": "too_few_orders", "kpi": "paid",
                                   "severity": "critical", "owner": "ops", "region": "east"}
        assert alert["annotations"]["summary"] == "checkout may be broken"
        assert alert["annotations"]["description"] == "Paid orders = 1 orders (value < 3)"
        assert alert["startsAt"].startswith("2023-11-14T22:15:00")
        assert alert["status"]["state"] == "active"

        shop.minute(3, 5)  # closes minute 2 (5 orders): resolved
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
