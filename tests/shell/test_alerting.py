"""Alert delivery's bookkeeping: what a restart may send again, and what it may not."""

from __future__ import annotations

from kpistream.core.loader import load_rules_text
from kpistream.core.notify.model import AlertEvent, Notification
from kpistream.settings import Settings
from kpistream.shell.alerting import AlertDelivery, _event_key
from kpistream.shell.exporter import Exporter

RULES = """
sources: [{name: s, topic: t}]
kpis: [{name: n, source: s, agg: count(), by: [r], window: 1m, owner: ops}]
alerts: [{name: low, kpi: n, when: value < 1}]
owners: [{name: ops, notify: ["json://127.0.0.1:9/x"]}]
"""


def event(series: str, at_ms: int, state: str = "firing") -> AlertEvent:
    return AlertEvent("low", "n", (("r", series),), state, "warning", at_ms, at_ms - 60_000,
                      0.0, "value < 1", "ops")


def notification(nid: str, *events: AlertEvent, repeat: bool = False) -> Notification:
    return Notification(nid, "ops", ("json://127.0.0.1:9/x",), "en", events, 0, repeat)


def delivery() -> AlertDelivery:
    rules = load_rules_text(RULES)
    return AlertDelivery(Settings(), rules, Exporter(rules), lambda: "127.0.0.1:9",
                         environ={})


def test_events_delivered_in_another_grouping_are_not_sent_again():
    alerting = delivery()
    a, b = event("a", 120_000), event("b", 120_000)
    alerting._remember(["first", _event_key(a)])  # delivered before the crash, alone
    regrouped = alerting._not_yet_delivered(notification("second", a, b))
    assert regrouped is not None and regrouped.events == (b,)
    assert alerting._not_yet_delivered(notification("third", a)) is None


def test_reminders_go_by_their_own_id():
    alerting = delivery()
    a = event("a", 120_000)
    alerting._remember(["first", _event_key(a)])
    reminder = notification("reminder-1", a, repeat=True)
    assert alerting._not_yet_delivered(reminder) is reminder
    alerting._remember(["reminder-1"])
    assert alerting._not_yet_delivered(reminder) is None
