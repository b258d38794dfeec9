"""Digests sent at their cron ticks to real receivers: a local SMTP server and HTTP hook."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from pathlib import Path

import orjson
from prometheus_client import generate_latest

from kpistream.core.engine import Engine
from kpistream.core.loader import load_rules_text
from kpistream.core.values import ClosedWindow
from kpistream.shell.delivery import RetryPolicy
from kpistream.shell.digests import DigestService
from kpistream.shell.exporter import Exporter

HOUR = 3_600_000
MIDNIGHT = 1_764_518_400_000  # 2025-12-01T00:00 in Asia/Shanghai
PNG = b"\x89PNG\r\n\x1a\n"
RULES = """
timezone: Asia/Shanghai
sources: [{name: orders, topic: t, partitions: 1}]
kpis:
  - {name: gmv, title: GMV, source: orders, agg: sum(amount), window: 1h, lateness: 0s,
     owner: sales, targets: [{period: day, value: 700}]}
  - {name: gmv_region, title: GMV by region, source: orders, agg: sum(amount), by: [region],
     window: 1h, lateness: 0s, parent: gmv, owner: sales,
     targets: [{period: day, value: 240, values: {east: 480}}]}
owners:
  - name: sales
    language: en
    notify:
      - MAIL
      - HOOK
digests:
  - {name: noon, cron: "0 12 * * *", owner: sales, title: Noon digest}
"""


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def setup(smtp_receiver, http_receiver):
    mail = (f"mailto://{smtp_receiver.user}:{smtp_receiver.password}@127.0.0.1:"
            f"{smtp_receiver.port}?mode=insecure&to=boss@example.com&from=kpi@example.com")
    hook = f"json://{http_receiver.url.removeprefix('http://')}/digest"
    rules = load_rules_text(RULES.replace("MAIL", f'"{mail}"').replace("HOOK", f'"{hook}"'))
    engine = Engine(rules)
    for hour in range(11):
        start = MIDNIGHT + hour * HOUR
        engine.given([ClosedWindow("gmv", start, start + HOUR, {(): 20.0}),
                      ClosedWindow("gmv_region", start, start + HOUR,
                                   {("east",): 10.0, ("west",): 10.0})])
    return rules, engine


async def sent(service: DigestService) -> int:
    tasks = service.due()
    await asyncio.gather(*tasks)
    return len(tasks)


async def test_a_digest_reaches_email_and_a_webhook_at_its_tick(smtp_receiver, http_receiver):
    rules, engine = setup(smtp_receiver, http_receiver)
    clock = Clock(MIDNIGHT + 11 * HOUR + 59 * 60_000)
    exporter = Exporter(rules)
    service = DigestService(rules, lambda: engine, exporter, environ={}, clock=clock)
    assert await sent(service) == 0  # 11:59: not yet
    clock.ms += 60_000
    assert await sent(service) == 1  # 12:00
    [request] = await http_receiver.wait_for(1)
    assert request.json["title"] == "[kpistream] Noon digest · 2025-12-01 12:00 (Asia/Shanghai)"
    assert ("- GMV · day (12-01): 220 / 700 = 31.4% attained (pace 45.8%, behind)"
            in request.json["message"])
    assert "GMV · day: -100.8 against pace; mostly from region=east -110 (109%)" in (
        request.json["message"])
    [mail] = await smtp_receiver.wait_for(1)
    assert mail.rcpt_tos == ("boss@example.com",)
    assert mail.subject == "[kpistream] Noon digest · 2025-12-01 12:00 (Asia/Shanghai)"
    [(name, content_type, data)] = mail.attachments
    assert (name, content_type, data[:8]) == ("chart.png", "image/png", PNG)
    clock.ms += 60_000
    assert await sent(service) == 0  # sent once per tick
    metrics = generate_latest(exporter.registry).decode()
    assert 'kpistream_digests_total{digest="noon",result="sent"} 1.0' in metrics
    service.sender.close()


async def test_a_failing_channel_is_tried_again_and_a_restart_does_not_resend(
        smtp_receiver, http_receiver):
    rules, engine = setup(smtp_receiver, http_receiver)
    clock = Clock(MIDNIGHT + 11 * HOUR)
    exporter = Exporter(rules)
    fast = RetryPolicy(attempts=2, base_delay_s=0.01)
    service = DigestService(rules, lambda: engine, exporter, environ={}, clock=clock,
                            retry=fast)
    assert await sent(service) == 0
    http_receiver.fail_next(2)  # both attempts of the tick fail
    clock.ms += HOUR
    assert await sent(service) == 1
    assert service.sent["noon"] < clock.ms  # not delivered: the tick is still due
    clock.ms += 10_000
    assert await sent(service) == 0  # waits before trying again
    clock.ms += 30_000
    assert await sent(service) == 1
    assert len(await http_receiver.wait_for(3)) == 3  # 2 failed attempts, then delivered
    assert len(smtp_receiver.messages) == 1  # the mail was not sent twice
    state = pickle.loads(pickle.dumps(service.snapshot()))
    restarted = DigestService(rules, lambda: engine, Exporter(rules), environ={}, clock=clock)
    restarted.restore(state)
    assert await sent(restarted) == 0
    service.sender.close()
    restarted.sender.close()


def test_the_digest_command_renders_one_from_event_files(tmp_path: Path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(
        RULES.replace("MAIL", "mailto://u:p@127.0.0.1:9").replace("HOOK", "json://127.0.0.1:9"))
    events = tmp_path / "orders.jsonl"
    rows = [{"ts": (MIDNIGHT + h * HOUR) // 1000 + 60, "region": r, "amount": 10}
            for h in range(20) for r in ("east", "west")]
    events.write_text("".join(orjson.dumps(e).decode() + "\n" for e in rows))
    done = subprocess.run(
        [sys.executable, "-m", "kpistream", "digest", "--rules", str(rules_dir), "--events",
         f"orders={events}", "--at", "2025-12-01T12:00:00+08:00", "--out", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["[kpistream] Noon digest · 2025-12-01 12:00 (Asia/Shanghai)", "",
                         "Targets", lines[3]]
    assert lines[3].startswith("- GMV · day (12-01): 240 / 700 = 34.3% attained (pace 50.0%")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "noon-20251201T1200.md", "noon-20251201T1200.png"]
