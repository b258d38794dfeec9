"""The notifier end to end, with explicit times, like Alertmanager's notify_test.go."""

from __future__ import annotations

import json

from notify_factories import MIN, make_event, make_owner

from kpistream.core.notify.model import Notification, Silence
from kpistream.core.notify.pipeline import Notifier

H = 60 * MIN


def summary(ns: list[Notification]) -> list[tuple[str, bool, list[tuple[str, str, str]]]]:
    return [(n.owner, n.repeat, [(e.alert, e.severity, e.state) for e in n.events]) for n in ns]


def fire(alert="gmv_low", severity="critical", at=10 * MIN, **kw):
    return make_event(alert=alert, severity=severity, at_ms=at, **kw)


def resolve(alert="gmv_low", severity="critical", at=20 * MIN, **kw):
    return make_event(alert=alert, severity=severity, at_ms=at, state="resolved", **kw)


def test_routing_drops_are_counted_never_raised():
    n = Notifier({"ops": make_owner(), "mute": make_owner(name="mute", urls=())})
    n.offer([fire(owner=None), fire(owner="nobody"), fire(owner="mute"),
             fire(alert="shadow", notify=False)], 0)
    assert n.due(0) == []
    assert n.dropped == {"no_route": 1, "unknown_owner": 1, "no_urls": 1, "shadow": 1}


def test_default_owner():
    n = Notifier({"ops": make_owner()}, default_owner="ops")
    n.offer([fire(owner=None)], 0)
    assert summary(n.due(0)) == [("ops", False, [("gmv_low", "critical", "firing")])]


def test_grouping_across_offers_within_group_wait():
    n = Notifier({"ops": make_owner(group_wait_ms=30_000)})
    n.offer([fire("a")], 1_000)
    n.offer([fire("b", severity="warning", kpi="orders")], 20_000)
    assert n.due(30_999) == []
    n.offer([fire("c")], 31_000)
    out = n.due(31_000)
    assert summary(out) == [("ops", False, [
        ("a", "critical", "firing"), ("c", "critical", "firing"), ("b", "warning", "firing")])]
    n.offer([fire("d")], 40_000)  # a new group starts
    assert n.due(69_999) == []
    assert summary(n.due(70_000)) == [("ops", False, [("d", "critical", "firing")])]


def test_group_wait_zero_one_notification_per_offer_per_owner():
    n = Notifier({"ops": make_owner(), "bi": make_owner(name="bi")})
    n.offer([fire("a"), fire("b"), fire("c", owner="bi")], 0)
    assert summary(n.due(0)) == [("bi", False, [("c", "critical", "firing")]),
                                 ("ops", False, [("a", "critical", "firing"),
                                                 ("b", "critical", "firing")])]


def test_duplicate_firing_is_not_sent_again_and_repeat_interval():
    n = Notifier({"ops": make_owner(repeat_interval_ms=H)})
    n.offer([fire()], 0)
    assert len(n.due(0)) == 1
    n.offer([fire(at=11 * MIN)], MIN)
    assert n.due(H - 1) == []
    assert summary(n.due(H)) == [("ops", True, [("gmv_low", "critical", "firing")])]
    assert n.due(2 * H - 1) == []  # never more often
    assert [x.repeat for x in n.due(2 * H + 5)] == [True]
    assert n.dropped == {"duplicate": 1}


def test_resolved_notice_and_send_resolved_off():
    n = Notifier({"ops": make_owner(), "quiet": make_owner(name="quiet", send_resolved=False)})
    n.offer([fire("a"), fire("b", owner="quiet")], 0)
    n.due(0)
    n.offer([resolve("a"), resolve("b", owner="quiet")], MIN)
    assert summary(n.due(MIN)) == [("ops", False, [("a", "critical", "resolved")])]
    assert n.dropped == {"send_resolved_off": 1}


def test_resolve_of_silenced_alert_is_not_sent():
    n = Notifier({"ops": make_owner()}, [Silence("s", (("region", "east"),), 0, H)])
    n.offer([fire()], 0)
    assert n.due(0) == []
    n.offer([resolve()], MIN)
    assert n.due(MIN) == []
    assert n.dropped == {"silenced": 1, "never_notified": 1}


def test_still_firing_alert_is_sent_when_its_silence_expires():
    n = Notifier({"ops": make_owner()}, [Silence("s", (("kpi", "gmv"),), 0, H)])
    n.offer([fire()], 0)
    assert n.due(0) == []
    n.expire("s", 10 * MIN)
    assert summary(n.due(10 * MIN)) == [("ops", False, [("gmv_low", "critical", "firing")])]


def test_inhibition_and_its_release_when_the_critical_resolves():
    n = Notifier({"ops": make_owner()})
    # the warning comes first in the batch: still inhibited
    n.offer([fire("gmv_warn", severity="warning"), fire("gmv_crit")], 0)
    assert summary(n.due(0)) == [("ops", False, [("gmv_crit", "critical", "firing")])]
    n.offer([fire("other_warn", severity="info")], MIN)  # same kpi + labels
    assert n.due(MIN) == []
    n.offer([resolve("gmv_crit")], 2 * MIN)
    assert summary(n.due(2 * MIN)) == [("ops", False, [
        ("gmv_warn", "warning", "firing"), ("other_warn", "info", "firing"),
        ("gmv_crit", "critical", "resolved")])]
    assert n.dropped == {"inhibited": 2}


def test_shadow_critical_inhibits_nothing():
    n = Notifier({"ops": make_owner()})
    n.offer([fire("crit", notify=False), fire("warn", severity="warning")], 0)
    assert summary(n.due(0)) == [("ops", False, [("warn", "warning", "firing")])]


def test_quiet_hours_wrap_midnight_hold_non_critical_until_the_end():
    owner = make_owner(quiet_hours=(22 * 60, 8 * 60), timezone="Asia/Shanghai",
                       repeat_interval_ms=24 * H)
    n = Notifier({"ops": owner})
    t = 15 * H  # 23:00 in Shanghai
    n.offer([fire("warn", severity="warning", kpi="orders"), fire("crit")], t)
    assert summary(n.due(t)) == [("ops", False, [("crit", "critical", "firing")])]
    assert n.held == {"ops": 1}
    assert n.due(24 * H - 1) == []
    assert summary(n.due(24 * H)) == [("ops", False, [("warn", "warning", "firing")])]


def test_held_firing_resolving_in_quiet_hours_is_dropped_as_a_pair():
    n = Notifier({"ops": make_owner(quiet_hours=(22 * 60, 8 * 60))})
    n.offer([fire(severity="info")], 23 * H)
    assert n.due(23 * H) == []
    n.offer([resolve(severity="info")], 25 * H)
    assert n.due(32 * H) == []
    assert n.dropped == {"quiet_pair": 1}


def test_notification_ids_are_deterministic():
    def run() -> list[str]:
        n = Notifier({"ops": make_owner(repeat_interval_ms=H)})
        n.offer([fire("a"), fire("b")], 0)
        ids = [x.id for x in n.due(0)]
        return ids + [x.id for x in n.due(H)] + [x.id for x in n.due(2 * H)]

    first = run()
    assert first == run() and len(set(first)) == 3


SCRIPT = [
    (0, [fire("a"), fire("w", severity="warning", owner="night")]),
    (10_000, [fire("b", owner="night", severity="info")]),
    (MIN, [fire("c", severity="warning"), fire("a", at=11 * MIN)]),
    (2 * MIN, [resolve("a")]),
    (3 * H, [resolve("c", severity="warning"), resolve("b", owner="night", severity="info")]),
    (30 * H, [resolve("w", severity="warning", owner="night")]),
]
TICKS = sorted({t for t, _ in SCRIPT} | {t + d for t, _ in SCRIPT for d in (30_000, H)}
               | set(range(0, 40 * H, H)))


def run_script(restart_at: int | None) -> list[Notification]:
    owners = {"ops": make_owner(group_wait_ms=30_000, repeat_interval_ms=H),
              "night": make_owner(name="night", quiet_hours=(22 * 60, 8 * 60),
                                  timezone="Asia/Shanghai", language="en")}
    silences = [Silence("s", (("alert", "c"),), 0, 2 * H)]
    n = Notifier(owners, silences)
    out: list[Notification] = []
    offers = dict(SCRIPT)
    for t in TICKS:
        if restart_at is not None and t == restart_at:
            n = Notifier.restore(json.loads(json.dumps(n.snapshot())), owners, silences)
        n.offer(offers.get(t, []), t)
        out += n.due(t)
    assert json.loads(json.dumps(n.snapshot())) == n.snapshot()
    return out


def test_snapshot_restore_round_trip_equals_uninterrupted_run():
    expected = run_script(None)
    assert len(expected) > 5
    for restart in TICKS[1::3]:
        assert run_script(restart) == expected, restart
