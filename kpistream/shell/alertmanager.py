"""Forwarding alert state to Alertmanager's API v2, for teams that route everything there.

Set ``KPISTREAM_ALERTMANAGER_URL`` (e.g. ``http://alertmanager:9093``). Like Prometheus, the
forwarder posts every firing alert again every ``RESEND_S`` with ``endsAt`` a few resends
ahead, so Alertmanager keeps it active while kpistream runs and resolves it by itself if
kpistream disappears; a resolved alert is posted once with ``endsAt`` = the window end that
resolved it (kept and retried until Alertmanager takes it). Shadow-mode alerts
(``notify: false``) are not forwarded. The state is checkpointed with the engine's, so a
restarted worker goes on re-posting what was firing.

Labels: ``alertname``, ``kpi``, ``severity``, ``owner`` and the series' dimension labels, so
Alertmanager routes can match on any of them (a dimension named ``owner`` or ``alertname``
gives way to kpistream's label). A post Alertmanager refuses (4xx) is logged and counted as
``refused``, not retried; one that fails otherwise is retried at the next resend.
Annotations: ``summary``, ``description`` (value, unit and condition), ``value``, and for
anomaly alerts ``expected`` and ``band``, for KPIs with targets ``standing``, and for a
parent KPI's firing alert ``explanation`` (its parts' shares of the change).

>>> from kpistream.core.notify.routing import _example
>>> alert = alertmanager_alert(_example(), "")
>>> sorted(alert["labels"].items())  # doctest: +NORMALIZE_WHITESPACE
[('alertname', 'gmv_low'), ('kpi', 'gmv'), ('owner', 'ops'), ('region', 'east'),
 ('severity', 'critical')]
>>> alert["startsAt"], alert["annotations"]["description"]
('1970-01-01T00:01:00Z', 'gmv = 812.5 (value < 1000)')
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import mode
from prometheus_client import CollectorRegistry, Counter

from kpistream.core.durations import rfc3339
from kpistream.core.engine import Step
from kpistream.core.notify.model import AlertEvent
from kpistream.core.notify.render import (
    explanation_text,
    format_value,
    grafana_link,
    standing_text,
)

__all__ = ["AlertmanagerForwarder", "alertmanager_alert"]

log = logging.getLogger("kpistream.alertmanager")
#: firing alerts are posted again this often; their endsAt lies four resends ahead
RESEND_S = 30.0
#: resolved alerts not yet accepted are kept at most this many (oldest dropped first)
MAX_PENDING = 10_000

Payload = dict[str, object]


def alertmanager_alert(event: AlertEvent, grafana_url: str) -> Payload:
    """One alert event in Alertmanager's API v2 form (``endsAt`` set when resolved)."""
    labels = {**dict(event.labels), "alertname": event.alert, "kpi": event.kpi,
              "severity": event.severity}
    if event.owner:
        labels["owner"] = event.owner
    shown = "no value" if event.value is None else format_value(event.value)
    unit = f" {event.unit}" if event.unit and event.value is not None else ""
    description = f"{event.kpi_title or event.kpi} = {shown}{unit} ({event.condition})"
    annotations = {"summary": event.summary or description, "description": description,
                   "value": shown}
    if event.band is not None:
        band = event.band
        annotations["expected"] = format_value(band.expected)
        annotations["band"] = " .. ".join("" if x is None else format_value(x)
                                         for x in (band.lower, band.upper))
    if event.standing is not None:
        annotations["standing"] = standing_text(event.standing, "en")
    if event.explanation is not None:
        annotations["explanation"] = (f"vs {event.explanation.baseline}: "
                                      + explanation_text(event.explanation, "en"))
    alert: Payload = {"labels": labels, "annotations": annotations,
                      # events may be stamped ahead of the clock; Alertmanager refuses an
                      # alert that starts after it ends
                      "startsAt": rfc3339(min(event.since_ms, int(time.time() * 1000))),
                      "generatorURL": grafana_link(grafana_url, event) if grafana_url else ""}
    if event.state == "resolved":
        alert["endsAt"] = rfc3339(event.at_ms)
    return alert


class AlertmanagerForwarder(mode.Service):
    """A step sink that keeps Alertmanager in step with the firing alerts."""

    name = "alertmanager"

    def __init__(self, url: str, registry: CollectorRegistry, *, grafana_url: str | None = None,
                 **kwargs) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.grafana_url = grafana_url or ""
        #: fingerprint -> payload of every alert firing now
        self.firing: dict[str, Payload] = {}
        #: fingerprint -> payload of resolved alerts Alertmanager has not taken yet
        self.resolved: dict[str, Payload] = {}
        self.posts = Counter("kpistream_alertmanager_posts",
                             "Posts of alert state to Alertmanager, by result.", ["result"],
                             registry=registry)
        self._changed = asyncio.Event()
        super().__init__(**kwargs)

    def __call__(self, step: Step) -> None:
        for event in step.transitions:
            if not event.notify:
                continue
            key = f"{event.fingerprint}/{event.severity}"
            if event.state == "firing":
                self.firing[key] = alertmanager_alert(event, self.grafana_url)
                self.resolved.pop(key, None)
            else:
                self.firing.pop(key, None)
                self.resolved[key] = alertmanager_alert(event, self.grafana_url)
                while len(self.resolved) > MAX_PENDING:
                    del self.resolved[next(iter(self.resolved))]
        if step.transitions:
            self._changed.set()

    def snapshot(self) -> object:
        return {"firing": self.firing, "resolved": self.resolved}

    def restore(self, state: object) -> None:
        self.firing, self.resolved = state["firing"], state["resolved"]
        self._changed.set()

    @mode.Service.task
    async def _forward(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not self.should_stop:
                with contextlib.suppress(TimeoutError):  # resend what fires anyway
                    await asyncio.wait_for(self._changed.wait(), RESEND_S)
                self._changed.clear()
                await self._post(session)

    async def _post(self, session: aiohttp.ClientSession) -> None:
        ends = rfc3339(int((time.time() + 4 * RESEND_S) * 1000))
        resolved = dict(self.resolved)
        alerts = [{**a, "endsAt": ends} for a in self.firing.values()] + list(resolved.values())
        if not alerts:
            return
        try:
            async with session.post(self.endpoint, json=alerts) as response:
                if 400 <= response.status < 500:  # refused: sending it again cannot help
                    self.posts.labels("refused").inc()
                    log.error("Alertmanager at %s refused %d alert(s) (%d): %s", self.endpoint,
                              len(alerts), response.status, (await response.text())[:500])
                    for key in resolved:
                        self.resolved.pop(key, None)
                    return
                if response.status >= 300:
                    raise aiohttp.ClientResponseError(response.request_info, (),
                                                      status=response.status,
                                                      message=await response.text())
        except (aiohttp.ClientError, TimeoutError) as e:
            self.posts.labels("failed").inc()
            log.warning("Alertmanager at %s did not take %d alert(s): %s; retrying in %g s",
                        self.endpoint, len(alerts), e, RESEND_S)
            return
        self.posts.labels("sent").inc()
        for key in resolved:
            self.resolved.pop(key, None)
