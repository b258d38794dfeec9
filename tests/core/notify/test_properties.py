"""Properties of the notifier over arbitrary firing/resolved sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from notify_factories import MIN, make_event, make_owner

from kpistream.core.notify.pipeline import Notifier

H = 60 * MIN
ALERTS = [("a", "critical", "gmv"), ("b", "warning", "gmv"), ("c", "info", "orders"),
          ("d", "warning", "visits")]

steps = st.lists(
    st.tuples(st.integers(0, len(ALERTS) - 1), st.sampled_from(["firing", "resolved"]),
              st.integers(0, 3 * H), st.booleans()),
    max_size=30,
)
policies = st.builds(
    make_owner,
    group_wait_ms=st.sampled_from([0, 30_000, 5 * MIN]),
    repeat_interval_ms=st.sampled_from([0, H, 4 * H]),
    quiet_hours=st.sampled_from([None, (22 * 60, 8 * 60), (60, 120)]),
    timezone=st.sampled_from(["UTC", "Asia/Shanghai"]),
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, policy=policies)
def test_no_duplicate_notice_and_every_sent_firing_gets_resolved(steps, policy):
    n = Notifier({"ops": policy})
    sent = []
    t = 0
    for index, state, gap, tick in steps:
        t += gap
        alert, severity, kpi = ALERTS[index]
        event = make_event(alert=alert, severity=severity, kpi=kpi, state=state, at_ms=t)
        n.offer([event], t)
        if tick:
            sent += n.due(t)
    for alert, severity, kpi in ALERTS:  # resolve whatever still fires
        event = make_event(alert=alert, severity=severity, kpi=kpi, state="resolved", at_ms=t + 1)
        n.offer([event], t + 1)
    for later in range(t + 1, t + 3 * 24 * H, 10 * MIN):
        sent += n.due(later)

    notices = [(x.owner, e.fingerprint, e.state, e.at_ms)
               for x in sent if not x.repeat for e in x.events]
    assert len(notices) == len(set(notices))
    last_notice = {fp: state for _, fp, state, _ in notices}
    assert all(state == "resolved" for state in last_notice.values())
    assert len({x.id for x in sent}) == len(sent)
