"""The daemon's service tree, built on faust-streaming's service layer (``mode``).

``mode.Service`` gives ordered start and reverse stop of the parts — broker (embedded unless
one is configured), metrics endpoint, ingestion, and for ``demo`` the event generator — and
supervised background tasks; :func:`run_worker` adds signal handling (Ctrl-C, SIGTERM).
``mode.Worker`` is not used: it logs start-up errors as tracebacks, and a user error (an
unreachable broker) deserves one clear line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import mode

from kpistream.core.durations import rfc3339
from kpistream.core.engine import Step
from kpistream.core.notify.model import AlertEvent
from kpistream.core.ruleset import RuleSet
from kpistream.errors import UsageError
from kpistream.settings import Settings
from kpistream.shell.alerting import AlertDelivery
from kpistream.shell.alertmanager import AlertmanagerForwarder
from kpistream.shell.broker import EmbeddedBroker, parse_bootstrap, wait_for_broker
from kpistream.shell.digests import DigestService
from kpistream.shell.endpoint import Health, make_app, serve
from kpistream.shell.exporter import Exporter
from kpistream.shell.ingest import IngestService
from kpistream.shell.merge import MergeService
from kpistream.shell.reload import RulesWatcher

__all__ = ["BrokerService", "ConsoleAlerts", "MetricsService", "Worker", "build_daemon",
           "run_worker"]

log = logging.getLogger("kpistream")


class BrokerService(mode.Service):
    """The configured broker, or an embedded one started on a free loopback port."""

    def __init__(self, url: str | None, wait_s: float = 60.0, **kwargs) -> None:
        self.url = url
        self.wait_s = wait_s
        self.embedded: EmbeddedBroker | None = None
        super().__init__(**kwargs)

    @property
    def bootstrap(self) -> str:
        if self.embedded is not None:
            return self.embedded.bootstrap
        return parse_bootstrap(self.url or "")

    async def on_start(self) -> None:
        if self.url:  # retried with a line per attempt, then a clear error
            await wait_for_broker(self.bootstrap, timeout_s=self.wait_s, log=log.warning)
            return
        self.embedded = EmbeddedBroker()
        await self.embedded.start()
        print(f"embedded broker: {self.embedded.url}", file=sys.stderr, flush=True)

    async def on_stop(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop()


class MetricsService(mode.Service):
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``HOST:PORT``
    (see :mod:`kpistream.shell.endpoint`)."""

    def __init__(self, addr: str, exporter: Exporter, health: Callable[[], Health | None],
                 **kwargs) -> None:
        self.host, self.port = _host_port(addr)
        self.exporter = exporter
        self.health = health
        self._server = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        try:
            self._server = serve(self.host, self.port,
                                 make_app(self.exporter.registry, self.health))
        except OSError as e:
            raise UsageError(f"cannot serve metrics on {self.host}:{self.port}: {e.strerror}; "
                             "choose another --metrics-addr") from e
        self.port = self._server.server_port
        log.info("metrics at http://%s:%d/metrics", self.host, self.port)

    async def on_stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class ConsoleAlerts:
    """Prints alert transitions, one line each, as they happen."""

    def __init__(self, rules: RuleSet, out: TextIO = sys.stdout) -> None:
        self.rules = rules
        self.out = out

    def use_rules(self, rules: RuleSet) -> None:
        self.rules = rules

    def __call__(self, step: Step) -> None:
        for t in step.transitions:
            print(self.line(t), file=self.out, flush=True)

    def line(self, t: AlertEvent) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in t.labels)
        value = "no value" if t.value is None else f"{t.value:g}"
        return (f"[{rfc3339(t.at_ms)}] {t.state.upper()} {t.severity} {t.alert}: "
                f"{t.kpi}{{{labels}}} = {value} (since {rfc3339(t.since_ms)})")


class Daemon(mode.Service):
    """The root service: starts its parts in order and stops them in reverse."""

    def __init__(self, parts: Sequence[mode.ServiceT], **kwargs) -> None:
        self.parts = list(parts)
        super().__init__(**kwargs)

    def on_init_dependencies(self) -> list[mode.ServiceT]:
        return self.parts


def build_daemon(settings: Settings, rules: RuleSet, *,
                 extra: Callable[[BrokerService], Sequence[mode.ServiceT]] = lambda b: (),
                 sinks: Sequence[Callable[[Step], None]] = ()) -> tuple[Daemon, Worker]:
    """Assemble broker, metrics, both stages (and ``extra`` services fed by the broker)."""
    exporter = Exporter(rules)
    broker = BrokerService(settings.broker, settings.broker_wait / 1000)
    alerting = AlertDelivery(settings, rules, exporter, lambda: broker.bootstrap)
    console = ConsoleAlerts(rules)
    forwarders = [AlertmanagerForwarder(settings.alertmanager_url, exporter.registry,
                                        grafana_url=settings.grafana_url)
                  ] if settings.alertmanager_url else []
    ingest = IngestService(settings, rules, lambda: broker.bootstrap, exporter)
    digests = DigestService(rules, lambda: merge.engine if merge.owner else None, exporter,
                            out=sys.stdout)
    merge = MergeService(settings, rules, lambda: broker.bootstrap, exporter,
                         sinks=[exporter.publish, console, alerting, *forwarders, *sinks],
                         parts=[alerting, digests, *forwarders])
    worker = Worker(ingest, merge)
    metrics = MetricsService(settings.metrics_addr, exporter, health=lambda: worker)
    watcher = RulesWatcher(settings.rules, [ingest, merge], exporter)
    return Daemon([broker, metrics, *extra(broker), alerting, digests, *forwarders, merge,
                   ingest, watcher]), worker


class Worker:
    """The two stages of one worker, as the health endpoint and tests see them."""

    def __init__(self, ingest: IngestService, merge: MergeService) -> None:
        self.ingest = ingest
        self.merge = merge

    def alive(self) -> bool:
        return self.ingest.alive()

    def readiness(self) -> dict[str, bool]:
        """Stage one's checks, and whether this worker merges as it should (a take-over
        that failed is tried again; until then no window closes anywhere)."""
        return {**self.ingest.readiness(), "merge_stage": not self.merge.taking_over}


def run_worker(daemon: Daemon) -> int:
    """Run the service tree until Ctrl-C or SIGTERM, then stop it in order; return 0.

    A :class:`~kpistream.errors.KpistreamError` raised while starting (an unreachable broker,
    a taken metrics port) propagates to the CLI, which prints it without a traceback.
    """
    logging.getLogger("mode").setLevel(logging.WARNING)
    asyncio.run(_serve(daemon))
    return 0


async def _serve(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for part in daemon.parts:
        if isinstance(part, RulesWatcher):
            loop.add_signal_handler(signal.SIGHUP, part.request)
    try:
        await daemon.start()
        stopping = asyncio.ensure_future(stop.wait())
        crashed = asyncio.ensure_future(daemon.wait_until_stopped())
        await asyncio.wait([stopping, crashed], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        crashed.cancel()
    finally:
        await daemon.stop()
    for part in [daemon, *daemon.parts]:
        if part.crash_reason is not None:
            raise part.crash_reason


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        raise UsageError(f'invalid metrics address "{addr}"; expected HOST:PORT, '
                         "e.g. 127.0.0.1:9464")
    return host or "0.0.0.0", int(port)
