"""Alert delivery in the daemon: alert events → notifier → outbox → Apprise, across restarts.

Each step's alert events go to the pure :class:`~kpistream.core.notify.pipeline.Notifier`
(routing, silences, inhibition, grouping, repeats, quiet hours); the notifications it makes
wait in an outbox until every channel has had its attempts. The notifier and the outbox are
checkpointed with the engine (see :class:`~kpistream.shell.ingest.IngestService`), and every
finished delivery is logged to a topic, so after a crash a notification pending at the crash
is delivered, a delivered one is not sent again (at most one repeat, for a crash between the
send and its log record), and a firing alert does not fire anew.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace

import mode
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from kpistream.core.engine import Step
from kpistream.core.notify.model import AlertEvent, Notification, OwnerPolicy, Silence
from kpistream.core.notify.pipeline import Notifier
from kpistream.core.notify.render import render
from kpistream.core.ruleset import RuleSet
from kpistream.settings import Settings
from kpistream.shell.broker import ensure_topics
from kpistream.shell.delivery import Sender, counter_sink, notification_chart
from kpistream.shell.exporter import Exporter
from kpistream.shell.silences import SilenceLog
from kpistream.shell.topics import read_tail

__all__ = ["AlertDelivery", "owner_policies"]

log = logging.getLogger("kpistream.alerting")
#: delivery log records read back on start (each: a notification id and its event keys)
_REMEMBER = 10_000
#: a notification whose channels all failed is tried again after this long, until it is old
_RETRY_LATER_S = 30.0
_GIVE_UP_S = 3600.0
_WORKERS = 4


def owner_policies(rules: RuleSet) -> dict[str, OwnerPolicy]:
    """The rule set's owners as notifier policies."""
    return {o.name: OwnerPolicy(o.name, o.notify, o.language, o.group_wait_ms,
                                o.repeat_interval_ms, o.send_resolved, o.quiet_hours,
                                rules.timezone)
            for o in rules.owners.values()}


class AlertDelivery(mode.Service):
    """Turns each step's alert events into delivered notifications."""

    name = "alerting"

    def __init__(self, settings: Settings, rules: RuleSet, exporter: Exporter, bootstrap,
                 *, environ: Mapping[str, str] | None = None, **kwargs) -> None:
        self.settings = settings
        self.rules = rules
        self.exporter = exporter
        self._bootstrap = bootstrap
        self.notifier = Notifier(owner_policies(rules), rules.silences)
        self.runtime_silences: dict[str, Silence] = {}
        self.outbox: dict[str, tuple[Notification, float]] = {}
        self.delivered: dict[str, None] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.sender = Sender(
            render=functools.partial(render, grafana_url=settings.grafana_url),
            environ=os.environ if environ is None else environ,
            count=counter_sink(exporter.notifications),
            chart=functools.partial(notification_chart, timezone=rules.timezone))
        self.log_producer: AIOKafkaProducer | None = None
        exporter.watch_notifier(self.notifier, self.outbox)
        super().__init__(**kwargs)

    # -- the step sink and the clock ------------------------------------------------------

    def __call__(self, step: Step) -> None:
        """Offer a step's alert events and queue what is due now."""
        now_ms = _now_ms()
        if step.transitions:
            self.notifier.offer(step.transitions, now_ms)
        self._flush(now_ms)

    @mode.Service.timer(0.25)
    async def _tick(self) -> None:
        self._flush(_now_ms())  # group_wait, repeats, quiet hours ending

    def _flush(self, now_ms: int) -> None:
        for due in self.notifier.due(now_ms):
            n = self._not_yet_delivered(due)
            if n is None or n.id in self.outbox:
                continue
            self.outbox[n.id] = (n, time.monotonic())
            self.queue.put_nowait(n.id)

    def _not_yet_delivered(self, n: Notification) -> Notification | None:
        """``n`` without the alert events already delivered (a replay after a crash can group
        them differently), or None when nothing is left. Reminders go by their id."""
        if n.repeat:
            return None if n.id in self.delivered else n
        events = tuple(e for e in n.events if _event_key(e) not in self.delivered)
        if not events:
            return None
        return n if len(events) == len(n.events) else replace(n, events=events)

    # -- delivery -------------------------------------------------------------------------

    async def on_start(self) -> None:
        bootstrap = self._bootstrap()
        topic = self.settings.delivery_log_topic
        await ensure_topics(bootstrap, {topic: 1})
        records = await read_tail(bootstrap, topic, first=_REMEMBER)
        key = self.settings.group_id.encode()
        for record in records[-_REMEMBER:]:
            if record.key == key and record.value:
                self._remember(_logged_keys(record.value))
        self.log_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await self.log_producer.start()
        silences = SilenceLog(bootstrap, self.settings.silences_topic)
        self.runtime_silences, offset = await silences.read_all()
        self._apply_silences()
        self.add_future(silences.follow(offset, self._on_silence))
        for _ in range(_WORKERS):
            self.add_future(self._deliver_forever())

    async def on_stop(self) -> None:
        self.sender.close()
        if self.log_producer is not None:
            await self.log_producer.stop()

    async def _deliver_forever(self) -> None:
        while not self.should_stop:
            notification_id = await self.queue.get()
            entry = self.outbox.get(notification_id)
            if entry is None:
                continue
            try:
                await self._deliver(*entry)
            except Exception:  # a bug must not stop this worker: the outbox keeps it
                log.exception("delivering notification %s failed; trying again in %.0f s",
                              notification_id, _RETRY_LATER_S)
                asyncio.get_running_loop().call_later(_RETRY_LATER_S, self.queue.put_nowait,
                                                      notification_id)

    async def _deliver(self, n: Notification, queued_at: float) -> None:
        delivery = await self.sender.send(n)
        # a channel tried and failed may come back; a URL that is not usable (a missing
        # ${VAR}, a URL Apprise rejects) will not, and is logged by the sender
        failed = [o for o in delivery.outcomes if o.result == "failed" and o.attempts > 0]
        if not failed or time.monotonic() - queued_at > _GIVE_UP_S:
            if failed:
                log.error("giving up on notification %s for %s after %.0f s", n.id, n.owner,
                          _GIVE_UP_S)
            await self._log_delivered(n)
            self.outbox.pop(n.id, None)
            return
        log.warning("notification %s for %s: %d channel(s) failed (%s); trying again in "
                    "%.0f s", n.id, n.owner, len(failed),
                    "; ".join(f"{o.channel}: {o.reason}" for o in failed), _RETRY_LATER_S)
        asyncio.get_running_loop().call_later(_RETRY_LATER_S, self.queue.put_nowait, n.id)

    async def _log_delivered(self, n: Notification) -> None:
        keys = [n.id] if n.repeat else [n.id, *(_event_key(e) for e in n.events)]
        self._remember(keys)
        if self.log_producer is None:
            return
        try:
            await self.log_producer.send_and_wait(
                self.settings.delivery_log_topic, orjson.dumps(keys),
                key=self.settings.group_id.encode())
        except KafkaError as e:  # a repeat after a crash is the worst that can follow
            log.warning("could not log delivery of %s: %s", n.id, e)

    def _remember(self, keys: list[str]) -> None:
        for key in keys:
            self.delivered[key] = None
        while len(self.delivered) > _REMEMBER * 10:
            del self.delivered[next(iter(self.delivered))]

    def use_rules(self, rules: RuleSet) -> None:
        """New owners and file silences after a reload; alert states live in the engine."""
        self.rules = rules
        self.notifier.owners = owner_policies(rules)
        self._apply_silences()

    def _on_silence(self, silence: Silence) -> None:
        self.runtime_silences[silence.id] = silence
        self._apply_silences()
        log.info("silence %s: %s until %s (%s)", silence.id, dict(silence.matchers),
                 silence.ends_ms, silence.comment)

    def _apply_silences(self) -> None:
        self.notifier.set_silences([*self.rules.silences, *self.runtime_silences.values()])

    # -- checkpointed state (see IngestService.parts) -------------------------------------

    def snapshot(self) -> dict:
        return {"notifier": self.notifier.snapshot(),
                "outbox": [n for n, _ in self.outbox.values()]}

    def restore(self, state: dict) -> None:
        self.notifier = Notifier.restore(state["notifier"], owner_policies(self.rules))
        self._apply_silences()
        self.exporter.watch_notifier(self.notifier, self.outbox)
        for restored in state["outbox"]:
            n = self._not_yet_delivered(restored)
            if n is not None and n.id not in self.outbox:
                self.outbox[n.id] = (n, time.monotonic())
                self.queue.put_nowait(n.id)


def _logged_keys(value: bytes) -> list[str]:
    try:
        keys = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def _event_key(e: AlertEvent) -> str:
    return f"{e.fingerprint}|{e.severity}|{e.state}|{e.at_ms}"


def _now_ms() -> int:
    return int(time.time() * 1000)
