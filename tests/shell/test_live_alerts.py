"""Alerts end to end: events on the embedded broker → `kpistream run` → a real HTTP webhook
and a real SMTP server; then kill -9 and restart: nothing lost, nothing repeated."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from daemon_support import Daemon, Shop, poll


@pytest.fixture
def shop(broker, tmp_path, http_receiver, smtp_receiver):
    return Shop(broker, tmp_path, http_receiver, smtp_receiver)


async def checkpointed_after(daemon: Daemon, moment: float) -> None:
    await poll(lambda: daemon.value("kpistream_checkpoint_last_timestamp_seconds") > moment,
               deadline_s=20, what="a checkpoint")


async def test_an_owner_gets_one_message_per_incident_across_a_crash(
        shop, http_receiver, smtp_receiver):
    daemon = shop.daemon()
    try:
        for index, orders in enumerate([5, 1, 5]):  # minute 1 has too few orders
            shop.minute(index, orders)
        (firing,) = await http_receiver.wait_for(1, timeout_s=60)
        body = firing.json
        assert body["title"] == "[kpistream] 🔴 firing · critical · Paid orders (too_few_orders)"
        for text in ("Paid orders", "region=east", "= 1 orders", "value < 3",
                     "checkout may be broken", "Owner: ops", "2023-11-14 22:15", "for 1 min"):
            assert text in body["message"], (text, body["message"])
        (mail,) = await smtp_receiver.wait_for(1, timeout_s=30)
        assert mail.subject == body["title"]
        assert [name for name, _, _ in mail.attachments] == ["chart.png"]
        await checkpointed_after(daemon, time.time())
    finally:
        daemon.kill9()

    restarted = shop.daemon()
    try:
        shop.minute(3, 5)  # closes minute 2 (5 orders): the alert resolves
        requests = await http_receiver.wait_for(2, timeout_s=60)
        assert [r.json["type"] for r in requests] == ["failure", "success"]
        resolved = requests[1].json["message"]
        assert "= 5 orders" in resolved and "for 2 min" in resolved, resolved
        await checkpointed_after(restarted, time.time())
    finally:
        output = restarted.stop()
    assert len(http_receiver.requests) == 2, output  # the firing was not sent again


async def test_a_notification_pending_at_a_crash_is_delivered_after_restart(
        shop, http_receiver):
    http_receiver.fail_next(1000)  # the webhook is down
    shop.env["MAIL"] = ""  # this test watches the webhook only
    daemon = shop.daemon()
    try:
        for index, orders in enumerate([5, 1, 5]):
            shop.minute(index, orders)
        await http_receiver.wait_for(1, timeout_s=60)  # tried, and failed
        await poll(lambda: daemon.value("kpistream_notification_outbox") == 1, deadline_s=20,
                   what="the notification to wait in the outbox")
        await checkpointed_after(daemon, time.time())
    finally:
        daemon.kill9()
    http_receiver.fail_next(0)
    http_receiver._failures.clear()  # the webhook is back
    failed = len(http_receiver.requests)
    restarted = shop.daemon()
    try:
        requests = await http_receiver.wait_for(failed + 1, timeout_s=60)
        delivered = [r for r in requests if r.status == 200]
        assert len(delivered) == 1
        assert delivered[0].json["type"] == "failure"
        await poll(lambda: restarted.value("kpistream_notification_outbox") == 0,
                   deadline_s=20, what="the outbox to empty")
    finally:
        restarted.stop()
    assert len([r for r in http_receiver.requests if r.status == 200]) == 1


def silence_cli(shop, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "kpistream", "silence", *args, "--broker",
                           shop.broker.url], env={**os.environ, **shop.env},
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


async def test_a_runtime_silence_mutes_until_it_is_expired(shop, http_receiver):
    shop.env["MAIL"] = ""
    shop.env["KPISTREAM_SILENCES_TOPIC"] = f"sil-{shop.topic}"
    daemon = shop.daemon()
    try:
        await poll(lambda: daemon.scrape(), deadline_s=30, what="the daemon to serve metrics")
        silence_id = silence_cli(shop, "add", "--match", "alert=too_few_orders", "--match",
                                 "region=east", "--for", "1h", "--comment", "deploying").strip()
        await poll(lambda: daemon.value("kpistream_silences_active") == 1, deadline_s=30,
                   what="the daemon to pick the silence up")
        assert silence_id in silence_cli(shop, "list")
        for index, orders in enumerate([5, 1, 5]):
            shop.minute(index, orders)
        await poll(lambda: daemon.value("kpistream_notifications_dropped_total",
                                        reason="silenced") >= 1, deadline_s=60,
                   what="the firing to be silenced")
        assert http_receiver.requests == []
        assert "expired" in silence_cli(shop, "expire", silence_id)
        (firing,) = await http_receiver.wait_for(1, timeout_s=30)  # still firing: sent now
        assert firing.json["type"] == "failure"
        assert silence_id not in silence_cli(shop, "list")
    finally:
        daemon.stop()


async def test_a_checkpoint_that_cannot_be_restored_is_set_aside(shop):
    from kpistream.shell.checkpoint import CheckpointStore

    store = CheckpointStore(shop.broker.bootstrap, shop.env["KPISTREAM_CHECKPOINT_TOPIC"],
                            shop.env["KPISTREAM_GROUP_ID"])
    await store.start()
    try:
        await store.save({"merge": (b"not a pickle", {}),
                          f"source/{shop.topic}/0": (b"nor this", {})})
    finally:
        await store.stop()
    daemon = shop.daemon()
    try:
        shop.minute(0, 5)
        shop.minute(1, 5)
        await poll(lambda: daemon.value("kpistream_windows_closed_total", kpi="paid") >= 1,
                   deadline_s=60, what="the daemon to run without the checkpoint")
    finally:
        output = daemon.stop()
    assert "merge checkpoint cannot be restored (UnpicklingError" in output, output
    assert "merging afresh" in output
    assert f"checkpoint of source/{shop.topic}/0 cannot be restored (UnpicklingError" in output
    assert "reading it afresh" in output
