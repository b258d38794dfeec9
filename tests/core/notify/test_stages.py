"""Each stage's pure decision as a table with a fixed now."""

from __future__ import annotations

import pytest
from notify_factories import MIN, make_event, make_owner

from kpistream.core.notify.dedup import Action, Entry, Queue, on_event, repeat_due
from kpistream.core.notify.grouping import group_due
from kpistream.core.notify.inhibit import inhibited, sources
from kpistream.core.notify.model import Silence
from kpistream.core.notify.quiet import in_quiet_hours, quiet_until
from kpistream.core.notify.routing import route
from kpistream.core.notify.silences import matches, silenced_by

H = 3_600_000
NOW = 1_000 * MIN


@pytest.mark.parametrize(("changes", "owners", "default", "expected"), [
    ({}, ["ops"], None, "ops"),
    ({"owner": None}, ["ops"], "ops", "ops"),
    ({"owner": None}, ["ops"], None, "no_route"),
    ({"owner": "sales"}, ["ops"], None, "unknown_owner"),
    ({"notify": False}, ["ops"], None, "shadow"),
    ({}, [], None, "unknown_owner"),
])
def test_route(changes, owners, default, expected):
    policies = {n: make_owner(name=n) for n in owners}
    r = route(make_event(**changes), policies, default)
    assert (r.policy.name if r.policy else r.dropped) == expected


def test_route_owner_without_urls_is_dropped():
    assert route(make_event(), {"ops": make_owner(urls=())}).dropped == "no_urls"


@pytest.mark.parametrize(("matchers", "expected"), [
    ((("alert", "gmv_low"),), True),
    ((("kpi", "gmv"),), True),
    ((("severity", "critical"),), True),
    ((("owner", "ops"),), True),
    ((("region", "east"),), True),
    ((("region", "east"), ("severity", "warning")), False),
    ((("region", "west"),), False),
    ((("city", "east"),), False),
    ((), False),
])
def test_silence_matchers(matchers, expected):
    assert matches(Silence("s", matchers, 0, 1), make_event(), "ops") is expected


@pytest.mark.parametrize(("starts", "ends", "expected"), [
    (NOW - 1, NOW + 1, True), (NOW, NOW + 1, True),
    (NOW - 5, NOW, False), (NOW + 1, NOW + 9, False),
])
def test_silence_time_range(starts, ends, expected):
    s = Silence("s", (("kpi", "gmv"),), starts, ends)
    assert (silenced_by(make_event(), "ops", [s], NOW) is s) is expected


CRIT = make_event(alert="gmv_very_low")
CRIT_KPI = make_event(alert="other_alert")


@pytest.mark.parametrize(("target", "crits", "expected"), [
    (make_event(severity="warning"), [make_event()], True),  # same alert + labels
    (make_event(severity="info"), [CRIT_KPI], True),  # same kpi + labels
    (make_event(severity="warning", labels=(("region", "west"),)), [CRIT], False),
    (make_event(severity="warning", alert="x", kpi="orders"), [CRIT], False),
    (make_event(severity="critical"), [CRIT], False),
    (make_event(severity="warning"), [], False),
])
def test_inhibition(target, crits, expected):
    assert inhibited(target, sources(crits)) is expected


FIRE, RESOLVE = make_event(), make_event(state="resolved", at_ms=20 * MIN)


@pytest.mark.parametrize(("entry", "event", "send_resolved", "expected"), [
    (None, FIRE, True, (Action.QUEUE, None)),
    (Entry(FIRE, "ops", Queue.PENDING), FIRE, True, (Action.DROP, "duplicate")),
    (Entry(FIRE, "ops", Queue.NONE, 0), FIRE, True, (Action.DROP, "duplicate")),
    (Entry(RESOLVE, "ops", Queue.PENDING, 0), FIRE, True, (Action.REVERT, "flapped")),
    (None, RESOLVE, True, (Action.DROP, "never_notified")),
    (Entry(FIRE, "ops", Queue.MUTED), RESOLVE, True, (Action.FORGET, "never_notified")),
    (Entry(FIRE, "ops", Queue.PENDING), RESOLVE, True, (Action.FORGET, "resolved_before_send")),
    (Entry(FIRE, "ops", Queue.HELD), RESOLVE, True, (Action.FORGET, "quiet_pair")),
    (Entry(FIRE, "ops", Queue.NONE, 0), RESOLVE, True, (Action.QUEUE, None)),
    (Entry(FIRE, "ops", Queue.NONE, 0), RESOLVE, False, (Action.FORGET, "send_resolved_off")),
    (Entry(RESOLVE, "ops", Queue.PENDING, 0), RESOLVE, True, (Action.DROP, "duplicate")),
])
def test_dedup(entry, event, send_resolved, expected):
    assert on_event(entry, event, send_resolved) == expected


@pytest.mark.parametrize(("entry", "interval", "expected"), [
    (Entry(FIRE, "ops", Queue.NONE, NOW - H), H, True),
    (Entry(FIRE, "ops", Queue.NONE, NOW - H + 1), H, False),
    (Entry(FIRE, "ops", Queue.NONE, NOW - H), 0, False),
    (Entry(FIRE, "ops", Queue.NONE, None), H, False),
    (Entry(FIRE, "ops", Queue.MUTED, NOW - H), H, False),
    (Entry(RESOLVE, "ops", Queue.PENDING, NOW - H), H, False),
])
def test_repeat_due(entry, interval, expected):
    assert repeat_due(entry, interval, NOW) is expected


@pytest.mark.parametrize(("first", "wait", "expected"), [
    (NOW, 0, True), (NOW - 30_000, 30_000, True), (NOW - 29_999, 30_000, False),
])
def test_group_due(first, wait, expected):
    assert group_due(first, wait, NOW) is expected


NIGHT = (22 * 60, 8 * 60)


@pytest.mark.parametrize(("quiet", "tz", "hour_utc", "expected"), [
    (NIGHT, "UTC", 21.99, None),
    (NIGHT, "UTC", 22, 32 * H),
    (NIGHT, "UTC", 23.5, 32 * H),
    (NIGHT, "UTC", 24 + 7.5, 32 * H),
    (NIGHT, "UTC", 24 + 8, None),
    (NIGHT, "Asia/Shanghai", 14, 24 * H),  # 22:00 in Shanghai, until 08:00 = 00:00 UTC
    ((9 * 60, 17 * 60), "UTC", 12, 17 * H),  # not wrapping
    ((9 * 60, 9 * 60), "UTC", 9, None),  # empty
    (None, "UTC", 23, None),
])
def test_quiet_hours(quiet, tz, hour_utc, expected):
    now = int(hour_utc * H)
    assert quiet_until(quiet, tz, now) == expected
    assert in_quiet_hours(quiet, tz, now) is (expected is not None)
