"""Digests in the shell: files for preview and backtests, and sending them live.

:class:`DigestService` runs in every worker and sends only while its worker merges (the
merge stage holds every series' standing). At each tick of a digest's cron (wall clock, the
rules' timezone) it renders the report from the engine's standings and delivers it through
Apprise, with the attainment chart attached, to the digest owner's URLs and its own
``notify`` URLs. The last tick delivered is checkpointed with the merge stage, so a digest
is never lost (a worker that takes over sends the tick that was due) and repeats at most
once per crash. A tick missed while no worker ran is sent once on start, the latest only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import mode

from kpistream.core.digest import (
    DigestReport,
    build_digest,
    cron_ticks,
    render_digest,
    standings_at,
)
from kpistream.core.engine import Engine
from kpistream.core.notify.model import Notification
from kpistream.core.notify.render import Message
from kpistream.core.ruleset import Digest, RuleSet
from kpistream.core.values import ClosedWindow
from kpistream.shell.delivery import RetryPolicy, Sender, counter_sink
from kpistream.shell.exporter import Exporter

__all__ = ["DigestService", "digest_chart", "digest_files", "report_at"]

log = logging.getLogger("kpistream.digests")
#: rows drawn in a digest's chart
CHART_ROWS = 16
#: a digest whose channels all failed is tried again after this long, until the next tick
RETRY_S = 30.0
DEFAULT_RETRY = RetryPolicy()


def digest_chart(report: DigestReport) -> bytes | None:
    """The attainment-against-pace bars of the headline and the board, or None if empty."""
    from kpistream.shell.charts import attainment_png  # matplotlib: loaded at first use

    rows = [(f"{line.name} · {line.status.period}", line.status.attainment,
             line.status.expected_attainment)
            for line in (*report.headline, *report.board)][:CHART_ROWS]
    return attainment_png(rows, title=report.title) if rows else None


def digest_files(report: DigestReport, out_dir: Path) -> list[Path]:
    """Write ``NAME-YYYYMMDDTHHMM.md`` (and ``.png``, the chart) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    when = datetime.fromtimestamp(report.at_ms / 1000, ZoneInfo(report.timezone))
    stem = out_dir / f"{report.name}-{when:%Y%m%dT%H%M}"
    markdown = stem.with_suffix(".md")
    markdown.write_text(render_digest(report).markdown + "\n", encoding="utf-8")
    written = [markdown]
    png = digest_chart(report)
    if png is not None:
        chart = stem.with_suffix(".png")
        chart.write_bytes(png)
        written.append(chart)
    return written


def report_at(rules: RuleSet, windows: Iterable[ClosedWindow], at_ms: int, name: str | None
              ) -> list[DigestReport]:
    """Every digest (or the one called ``name``) as of ``at_ms``, from replayed windows."""
    digests = [d for d in rules.digests if name is None or d.name == name]
    standings = standings_at(windows, at_ms)
    return [build_digest(rules, d, standings, at_ms) for d in digests]


class DigestService(mode.Service):
    """Sends each digest at its cron ticks while this worker merges."""

    name = "digests"

    def __init__(self, rules: RuleSet, engine: Callable[[], Engine | None], exporter: Exporter,
                 *, environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time, retry: RetryPolicy = DEFAULT_RETRY,
                 out: TextIO | None = None, **kwargs) -> None:
        self.rules = rules
        #: where a digest is also printed when it is sent (the daemon's console)
        self.out = out
        self._engine = engine
        self._counter = exporter.digests
        self._clock = clock
        #: the last tick delivered (or skipped as older than the first start), per digest
        self.sent: dict[str, int] = {}
        self._busy: set[str] = set()
        self._retry_after: dict[str, float] = {}
        self._messages: dict[str, tuple[Message, bytes | None]] = {}
        self.sender = Sender(render=lambda n: self._messages[n.id][0],
                             environ=os.environ if environ is None else environ,
                             count=counter_sink(exporter.notifications), retry=retry,
                             chart=lambda n: self._messages[n.id][1])
        super().__init__(**kwargs)

    def use_rules(self, rules: RuleSet) -> None:
        self.rules = rules

    @mode.Service.timer(1.0)
    async def _tick(self) -> None:
        self.due()

    def due(self) -> list[asyncio.Task]:
        """Start sending every digest whose tick has come; the tasks started."""
        engine = self._engine()
        if engine is None:
            return []
        now_ms = int(self._clock() * 1000)
        started = []
        for digest in self.rules.digests:
            last = self.sent.setdefault(digest.name, now_ms)
            ticks = list(cron_ticks(digest.cron, self.rules.timezone, last, now_ms))
            if not ticks or digest.name in self._busy:
                continue
            if self._clock() < self._retry_after.get(digest.name, 0.0):
                continue
            self._busy.add(digest.name)
            standings = {name: t.standings() for name, t in engine.targets.items()}
            report = build_digest(self.rules, digest, standings, ticks[-1])
            started.append(asyncio.ensure_future(self._send(digest, report)))
        return started

    async def _send(self, digest: Digest, report: DigestReport) -> None:
        try:
            n = self._notification(digest, report)
            png = await asyncio.to_thread(digest_chart, report)
            self._messages[n.id] = (render_digest(report), png)
            delivery = await self.sender.send(n)
            failed = [o for o in delivery.outcomes if o.result == "failed" and o.attempts > 0]
            if failed:
                log.warning("digest %s: %d channel(s) failed (%s); trying again in %.0f s",
                            digest.name, len(failed),
                            "; ".join(f"{o.channel}: {o.reason}" for o in failed), RETRY_S)
                self._retry_after[digest.name] = self._clock() + RETRY_S
                self._counter.labels(digest.name, "failed").inc()
                return
            self.sent[digest.name] = report.at_ms
            self._counter.labels(digest.name, "sent").inc()
            if self.out is not None:
                print(self._messages[n.id][0].text, file=self.out, flush=True)
            self._messages.pop(n.id, None)
        finally:
            self._busy.discard(digest.name)

    def _notification(self, digest: Digest, report: DigestReport) -> Notification:
        owner = self.rules.owners.get(digest.owner) if digest.owner else None
        urls = (*(owner.notify if owner else ()), *digest.notify)
        return Notification(f"digest:{digest.name}:{report.at_ms}", digest.owner or "digest",
                            urls, report.language, (), report.at_ms,
                            timezone=self.rules.timezone)

    def snapshot(self) -> dict:
        return {"sent": dict(self.sent)}

    def restore(self, state: dict) -> None:
        self.sent.update(state["sent"])
