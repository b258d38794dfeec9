"""``kpistream demo``: the embedded broker, live demo events, and the daemon on rules/demo.

Every second the feed asks the seeded generator for the events of the last second of wall
time (daily seasonality in Asia/Shanghai, an incident every few minutes) and produces them
to the demo topics, where the daemon consumes them like any other events.
"""

from __future__ import annotations

import logging
import sys
import time

import mode
import orjson
from aiokafka import AIOKafkaProducer

from kpistream.core.demo_events import DemoGenerator, Incident
from kpistream.core.durations import rfc3339
from kpistream.core.ruleset import RuleSet
from kpistream.settings import Settings
from kpistream.shell.broker import ensure_topics
from kpistream.shell.daemon import BrokerService, Daemon, build_daemon

__all__ = ["DemoFeed", "build_demo", "build_feed"]

log = logging.getLogger("kpistream.demo")


class DemoFeed(mode.Service):
    """Produces the generator's events to the demo topics in real time."""

    def __init__(self, broker: BrokerService, rules: RuleSet, *, rate: float, **kwargs) -> None:
        self.broker = broker
        self.rules = rules
        self.generator = DemoGenerator(seed=int(time.time()) // 86_400, rate_per_s=rate)
        self.producer: AIOKafkaProducer | None = None
        self.sent = 0
        now_ms = int(time.time() * 1000)
        # from the start of this minute, so the first 1m windows are whole (a partial first
        # window would look like an outage to the alerts)
        self._last_ms = now_ms - now_ms % 60_000
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        bootstrap = self.broker.bootstrap
        await ensure_topics(bootstrap, {s.topic: s.partitions
                                        for s in self.rules.sources.values()})
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    @mode.Service.timer(1.0)
    async def _tick(self) -> None:
        now_ms = int(time.time() * 1000)
        start, self._last_ms = self._last_ms, now_ms
        for incident in self.generator.incidents_between(start, now_ms):
            if start <= incident.start_ms < now_ms:
                _announce(incident)
        assert self.producer is not None
        for topic, events in self.generator.events_between(start, now_ms).items():
            for event in events:
                await self.producer.send(topic, orjson.dumps(event))
            self.sent += len(events)


def _announce(incident: Incident) -> None:
    print(f"[{rfc3339(incident.start_ms)}] demo: incident injected until "
          f"{rfc3339(incident.end_ms)}: {incident.description}", file=sys.stdout, flush=True)


def build_demo(settings: Settings, rules: RuleSet, *, rate: float) -> Daemon:
    """The demo: the daemon plus a live feed, on an embedded broker."""
    daemon, _ = build_daemon(settings, rules,
                             extra=lambda broker: [DemoFeed(broker, rules, rate=rate)])
    print(_banner(settings), file=sys.stderr, flush=True)
    return daemon


def build_feed(settings: Settings, rules: RuleSet, *, rate: float) -> Daemon:
    """Only the live feed, to the configured broker (``kpistream demo --feed-only``): the
    event generator of a compose or Kubernetes setup whose daemons run on their own."""
    broker = BrokerService(settings.broker, settings.broker_wait / 1000)
    print(f"kpistream demo: producing {rate:g} events/s to {settings.broker}", file=sys.stderr,
          flush=True)
    return Daemon([broker, DemoFeed(broker, rules, rate=rate)])


def _banner(settings: Settings) -> str:
    addr = settings.metrics_addr
    return (
        "kpistream demo: orders, visits and payments flow through an embedded broker; KPIs close "
        "every minute and alerts print here.\n"
        f"  metrics:    http://{addr}/metrics   (kpistream_kpi_value, kpistream_alert_firing)\n"
        f"  prometheus: scrape_configs: [{{job_name: kpistream, static_configs: "
        f"[{{targets: ['{addr}']}}]}}]\n"
        "  grafana:    add that Prometheus as a data source and chart kpistream_kpi_value\n"
        "  anomalies:  gmv_by_region, visits_by_channel and region_payment_failure_rate learn\n"
        "              a band per series (kpistream_kpi_expected/lower/upper), shown after 200\n"
        "              windows of warm-up\n"
        "  stop:       Ctrl-C"
    )
