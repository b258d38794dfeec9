"""The demo generator: deterministic, realistic in shape, and its incidents show in the events."""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kpistream.core import demo_events
from kpistream.core.demo_events import (
    CHANNELS,
    METHODS,
    ORDERS_TOPIC,
    PAYMENTS_TOPIC,
    REGIONS,
    TOPICS,
    VISITS_TOPIC,
    DemoGenerator,
    Incident,
    IncidentKind,
)

SH_0400 = 1_718_395_200_000  # 2024-06-15 04:00 Asia/Shanghai (20:00 UTC the day before)
SH_2000 = 1_718_452_800_000  # 2024-06-15 20:00 Asia/Shanghai
MINUTE = 60_000

FIELDS = {
    ORDERS_TOPIC: {"ts": int, "order_id": str, "user_id": str, "region": str, "channel": str,
                   "status": str, "amount": float},
    VISITS_TOPIC: {"ts": int, "user_id": str, "region": str, "channel": str, "page": str},
    PAYMENTS_TOPIC: {"ts": int, "order_id": str, "region": str, "channel": str, "method": str,
                     "result": str, "amount": float},
}


@pytest.fixture(scope="module")
def gen() -> DemoGenerator:
    return DemoGenerator(seed=7, rate_per_s=100.0)


@pytest.fixture(scope="module")
def evening(gen: DemoGenerator) -> dict[str, list[dict]]:
    """Three minutes of evening-peak traffic (a payment incident inside)."""
    return gen.events_between(SH_2000, SH_2000 + 3 * MINUTE)


def incident_of(gen: DemoGenerator, kind: IncidentKind) -> Incident:
    return next(i for i in gen.incidents_between(SH_2000, SH_2000 + 20 * MINUTE) if i.kind is kind)


def around(gen: DemoGenerator, incident: Incident) -> dict[str, list[dict]]:
    """Events of the incident and of the quiet stretch of the same length before it."""
    return gen.events_between(2 * incident.start_ms - incident.end_ms, incident.end_ms)


def during(events: list[dict], incident: Incident) -> list[dict]:
    return [e for e in events if incident.active_at(e["ts"])]


def before(events: list[dict], incident: Incident) -> list[dict]:
    """Events in the quiet stretch of the same length right before the incident."""
    length = incident.end_ms - incident.start_ms
    return [e for e in events if incident.start_ms - length <= e["ts"] < incident.start_ms]


# -- determinism -------------------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events() -> None:
    a = DemoGenerator(seed=3).events_between(SH_2000, SH_2000 + 5_000)
    assert a == DemoGenerator(seed=3).events_between(SH_2000, SH_2000 + 5_000)
    assert a != DemoGenerator(seed=4).events_between(SH_2000, SH_2000 + 5_000)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 29_999), max_size=6))
def test_consecutive_intervals_equal_one_interval(cuts: list[int]) -> None:
    t0, t1 = SH_2000 + 50_000, SH_2000 + 80_000  # spans an incident start
    whole = DemoGenerator(seed=5, rate_per_s=20.0).events_between(t0, t1)
    pieces = DemoGenerator(seed=5, rate_per_s=20.0)
    bounds = [t0, *sorted(t0 + c for c in cuts), t1]
    joined: dict[str, list[dict]] = {topic: [] for topic in TOPICS}
    for a, b in itertools.pairwise(bounds):
        for topic, events in pieces.events_between(a, b).items():
            joined[topic].extend(events)
    assert joined == whole


def test_results_do_not_depend_on_cache_or_call_order() -> None:
    fresh = DemoGenerator(seed=9).events_between(SH_2000, SH_2000 + 3_000)
    warm = DemoGenerator(seed=9)
    warm.events_between(SH_2000 + 600_000, SH_2000 + 700_000)  # evicts nothing relevant
    warm.events_between(SH_2000 - 2_000, SH_2000 + 10_000)
    assert warm.events_between(SH_2000, SH_2000 + 3_000) == fresh


def test_returned_events_are_copies(gen: DemoGenerator) -> None:
    first = gen.events_between(SH_2000, SH_2000 + 1_000)
    first[ORDERS_TOPIC][0]["amount"] = -1.0
    assert gen.events_between(SH_2000, SH_2000 + 1_000)[ORDERS_TOPIC][0]["amount"] > 0


# -- shape -------------------------------------------------------------------------------


def test_every_field_present_and_typed(evening: dict[str, list[dict]]) -> None:
    assert tuple(evening) == TOPICS
    for topic, events in evening.items():
        assert events, topic
        for e in events:
            assert {k: type(v) for k, v in e.items()} == FIELDS[topic]
            assert e["region"] in REGIONS and e["channel"] in CHANNELS
    assert {e["status"] for e in evening[ORDERS_TOPIC]} == {"paid", "created", "cancelled"}
    assert {e["method"] for e in evening[PAYMENTS_TOPIC]} == set(METHODS)
    assert {e["result"] for e in evening[PAYMENTS_TOPIC]} == {"success", "failed"}
    assert all(e["amount"] > 0 for e in evening[ORDERS_TOPIC])


def test_ts_inside_interval_and_sorted(gen: DemoGenerator) -> None:
    t0, t1 = SH_2000 + 1_234, SH_2000 + 61_567
    for events in gen.events_between(t0, t1).values():
        stamps = [e["ts"] for e in events]
        assert stamps == sorted(stamps)
        assert t0 <= stamps[0] and stamps[-1] < t1


def test_empty_interval_gives_empty_lists(gen: DemoGenerator) -> None:
    assert gen.events_between(SH_2000, SH_2000) == {topic: [] for topic in TOPICS}


def test_payments_refer_to_paid_or_cancelled_orders(evening: dict[str, list[dict]]) -> None:
    status = {o["order_id"]: o["status"] for o in evening[ORDERS_TOPIC]}
    paid_ids = {p["order_id"] for p in evening[PAYMENTS_TOPIC] if p["result"] == "success"}
    known = [i for i in paid_ids if i in status]
    assert len(known) > 0.9 * len(paid_ids)
    assert all(status[i] == "paid" for i in known)


def test_night_trough_is_far_below_evening_peak() -> None:
    quiet = DemoGenerator(seed=7, incident_every_ms=0)
    night = quiet.events_between(SH_0400, SH_0400 + MINUTE)
    peak = quiet.events_between(SH_2000 + 3_600_000, SH_2000 + 3_600_000 + MINUTE)  # 21:00
    assert 5 * len(night[VISITS_TOPIC]) < len(peak[VISITS_TOPIC])
    assert 4 * len(night[ORDERS_TOPIC]) < len(peak[ORDERS_TOPIC])


def test_rate_follows_rate_per_s_times_seasonality() -> None:
    fast = DemoGenerator(seed=7, rate_per_s=2_000.0, incident_every_ms=0)
    events = fast.events_between(SH_2000, SH_2000 + 2_000)
    per_s = sum(map(len, events.values())) / 2
    expected = 2_000.0 * demo_events.seasonality(SH_2000)
    assert 0.9 * expected < per_s < 1.1 * expected


def test_weights_differ_by_region_and_channel(evening: dict[str, list[dict]]) -> None:
    regions = Counter(v["region"] for v in evening[VISITS_TOPIC])
    channels = Counter(v["channel"] for v in evening[VISITS_TOPIC])
    assert regions["east"] > regions["south"] > regions["north"] > regions["west"]
    assert channels["app"] > channels["mini_program"] > channels["web"]


def test_order_amounts_are_skewed_like_a_lognormal(evening: dict[str, list[dict]]) -> None:
    amounts = sorted(o["amount"] for o in evening[ORDERS_TOPIC])
    median, p95 = amounts[len(amounts) // 2], amounts[int(0.95 * len(amounts))]
    assert 80 < median < 180 and p95 > 3 * median
    assert sum(amounts) / len(amounts) > median


# -- incidents ---------------------------------------------------------------------------


def test_incident_schedule_rotates_kinds_every_period(gen: DemoGenerator) -> None:
    incidents = gen.incidents_between(SH_2000, SH_2000 + 40 * MINUTE)
    assert [i.kind for i in incidents] == list(IncidentKind) * 2
    for i in incidents:
        assert i.end_ms - i.start_ms == 120_000
        assert i.start_ms % 300_000 == 60_000 and i.description
    assert gen.incident_at(incidents[0].start_ms + 1) == incidents[0]
    assert gen.incident_at(incidents[0].end_ms) is None


def test_incidents_between_includes_overlapping_ones(gen: DemoGenerator) -> None:
    first = gen.incidents_between(SH_2000, SH_2000 + 5 * MINUTE)[0]
    assert gen.incidents_between(first.end_ms - 1, first.end_ms) == [first]
    assert gen.incidents_between(first.end_ms, first.end_ms + 1_000) == []


def test_incidents_can_be_disabled_and_bad_settings_are_refused() -> None:
    assert DemoGenerator(incident_every_ms=0).incidents_between(0, 10**12) == []
    with pytest.raises(ValueError, match=r"incident_duration_ms \(400000\) must not exceed"):
        DemoGenerator(incident_duration_ms=400_000)
    with pytest.raises(ValueError, match="rate_per_s must be in"):
        DemoGenerator(rate_per_s=0)


def failure_share(payments: list[dict]) -> float:
    return sum(p["result"] == "failed" for p in payments) / len(payments)


def test_payment_incident_spikes_failures_in_its_region(
    gen: DemoGenerator, evening: dict[str, list[dict]]
) -> None:
    inc = incident_of(gen, IncidentKind.PAYMENT_FAILURES)
    in_region = [p for p in evening[PAYMENTS_TOPIC] if p["region"] == inc.region]
    hit = [p for p in during(in_region, inc) if p["method"] == inc.method]
    assert failure_share(hit) > 0.8
    assert failure_share(during(in_region, inc)) > 0.3
    assert failure_share(before(in_region, inc)) < 0.05
    others = [p for p in evening[PAYMENTS_TOPIC] if p["region"] != inc.region]
    assert failure_share(during(others, inc)) < 0.05


def test_gmv_drop_cuts_the_regions_orders_not_its_visits(gen: DemoGenerator) -> None:
    inc = incident_of(gen, IncidentKind.GMV_DROP)
    events = around(gen, inc)
    orders = [o for o in events[ORDERS_TOPIC] if o["region"] == inc.region]
    visits = [v for v in events[VISITS_TOPIC] if v["region"] == inc.region]
    assert 5 * len(during(orders, inc)) < len(before(orders, inc))
    assert len(during(visits, inc)) > 0.8 * len(before(visits, inc))


def test_visits_outage_silences_the_channel(gen: DemoGenerator) -> None:
    inc = incident_of(gen, IncidentKind.VISITS_OUTAGE)
    events = around(gen, inc)
    visits = [v for v in events[VISITS_TOPIC] if v["channel"] == inc.channel]
    assert during(visits, inc) == [] and len(before(visits, inc)) > 1_000
    others = [v for v in events[VISITS_TOPIC] if v["channel"] != inc.channel]
    assert len(during(others, inc)) > 0.8 * len(before(others, inc))


def test_conversion_drop_keeps_visits_but_orders_stop_paying(gen: DemoGenerator) -> None:
    inc = incident_of(gen, IncidentKind.CONVERSION_DROP)
    events = around(gen, inc)
    visits = [v for v in events[VISITS_TOPIC] if v["channel"] == inc.channel]
    orders = [o for o in events[ORDERS_TOPIC] if o["channel"] == inc.channel]

    def paid(some: list[dict]) -> int:
        return sum(o["status"] == "paid" for o in some)

    assert len(during(visits, inc)) > 0.8 * len(before(visits, inc))
    assert len(during(orders, inc)) > 0.7 * len(before(orders, inc))
    assert 3 * paid(during(orders, inc)) < paid(before(orders, inc))


# -- purity ------------------------------------------------------------------------------


def test_module_is_pure() -> None:
    tree = ast.parse(Path(demo_events.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "random", "collections", "dataclasses", "enum",
                        "typing"}
    uses_of_random = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                      and isinstance(node.value, ast.Name) and node.value.id == "random"}
    assert uses_of_random == {"Random"}  # seeded instances only, never the global state
