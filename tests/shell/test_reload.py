"""Hot reload on a live daemon: a valid edit is swapped in keeping unchanged KPIs' state; an
invalid one is rejected and the old set keeps running."""

from __future__ import annotations

import os
import uuid

import orjson
from daemon_support import Daemon, poll, produce
from prometheus_client import generate_latest

from kpistream.core.engine import Step
from kpistream.core.loader import load_rules_text
from kpistream.core.values import ClosedWindow
from kpistream.shell.broker import ensure_topics
from kpistream.shell.exporter import Exporter

T = 1_700_000_040_000
MIN = 60_000
RULES = """
sources: [{name: orders, topic: TOPIC, partitions: 1}]
kpis:
  - {name: n, source: orders, agg: count(), window: 1m, lateness: 0s}
"""
ADDED = "  - {name: total, source: orders, agg: sum(amount), window: 1m, lateness: 0s}\n"


def info_version(daemon: Daemon) -> str | None:
    versions = [dict(labels)["version"] for (name, labels), v in daemon.scrape().items()
                if name == "kpistream_rules_info" and v == 1]
    return versions[0] if versions else None


async def test_a_rule_edit_is_swapped_in_live_and_a_broken_one_is_refused(broker, tmp_path):
    topic = f"reload-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "shop.yaml").write_text(RULES.replace("TOPIC", topic))
    # the topic exists before anything writes to it (the broker would create 4 partitions)
    await ensure_topics(broker.bootstrap, {topic: 1})
    daemon = Daemon(rules, broker.url, {"KPISTREAM_GROUP_ID": f"g-{topic}",
                                        "KPISTREAM_IDLE_TIMEOUT": "1h",
                                        "KPISTREAM_CHECKPOINT_TOPIC": f"cp-{topic}",
                                        "KPISTREAM_RULES": str(rules)})

    def send(*events: dict) -> None:
        path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
        produce(broker.url, topic, path)

    try:
        first = await poll(lambda: info_version(daemon), deadline_s=30, what="the daemon")
        send({"ts": T + 1, "amount": 1}, {"ts": T + 2, "amount": 2})  # minute 0, open
        await poll(lambda: daemon.value("kpistream_events_total") == 2, deadline_s=30,
                   what="the first events")
        (rules / "shop.yaml").write_text(RULES.replace("TOPIC", topic) + ADDED)
        second = await poll(lambda: (v := info_version(daemon)) != first and v, deadline_s=30,
                            what="the new rules to go live")
        assert daemon.value("kpistream_rules_reload_success") == 1
        send({"ts": T + 3, "amount": 4}, {"ts": T + MIN, "amount": 8})  # closes minute 0
        await poll(lambda: daemon.value("kpistream_kpi_value", kpi="n") == 3, deadline_s=10,
                   what="minute 0 to close with the count from before and after the swap")
        assert daemon.value("kpistream_kpi_value", kpi="total") == 4  # new KPI: afresh

        (rules / "broken.yaml").write_text("kpis:\n  - {name: x, window: soon}\n")
        await poll(lambda: daemon.value("kpistream_rules_reload_success") == 0,
                   deadline_s=30, what="the broken set to be refused")
        assert info_version(daemon) == second
        os.remove(rules / "broken.yaml")
        await poll(lambda: daemon.value("kpistream_rules_reload_success") == 1,
                   deadline_s=30, what="the fixed set to be accepted")
        assert daemon.proc.poll() is None
    finally:
        output = daemon.stop()
    assert 'broken.yaml:2:23: kpi "x": window: invalid duration "soon"' in output, output


def test_a_changed_or_removed_alert_resolves_what_it_had_firing():
    from kpistream.core.loader import load_rules_text
    from kpistream.settings import Settings
    from kpistream.shell.exporter import Exporter
    from kpistream.shell.merge import MergeService

    base = RULES.replace("TOPIC", "t") + "alerts:\n"
    old = load_rules_text(base + "  - {name: few, kpi: n, when: value < 5}\n"
                                 "  - {name: kept, kpi: n, when: value < 9}\n")
    steps = []
    merge = MergeService(Settings(), old, lambda: "127.0.0.1:9", Exporter(old),
                         sinks=[steps.append])
    merge.engine.ingest("orders", [orjson.dumps({"ts": T}), orjson.dumps({"ts": T + MIN})])
    fired = merge.engine.advance().transitions
    assert sorted((e.alert, e.state) for e in fired) == [("few", "firing"), ("kept", "firing")]
    new = load_rules_text(base + "  - {name: kept, kpi: n, when: value < 9}\n")  # few removed
    merge._retire_alerts(new)
    (step,) = steps
    assert [(e.alert, e.state, e.at_ms, e.value) for e in step.transitions] == [
        ("few", "resolved", T + MIN, None)]


def test_metrics_render_after_a_reload_changes_a_kpis_dimensions():
    text = "sources: [{name: s, topic: t}]\nkpis: [{name: n, source: s, agg: count(), BY " \
           "window: 1m}]\nalerts: [{name: a, kpi: n, when: value > 5}]\n"
    exporter = Exporter(load_rules_text(text.replace("BY", "by: [region],")))
    exporter.publish(Step(windows=[ClosedWindow("n", 0, 60_000, {("east",): 1.0})]))
    exporter.use_rules(load_rules_text(text.replace("BY", "by: [region, channel],")))
    scraped = generate_latest(exporter.registry).decode()
    assert "kpistream_kpi_value" in scraped and 'region="east"' not in scraped
