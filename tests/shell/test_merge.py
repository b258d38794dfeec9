"""The merge stage's intake: records of the panes topic in, once each, whatever else is there."""

from __future__ import annotations

import logging
import pickle

from aiokafka.structs import ConsumerRecord

from kpistream.core.loader import load_rules_text
from kpistream.core.partials import PaneBatch
from kpistream.core.watermarks import Marker
from kpistream.settings import Settings
from kpistream.shell.exporter import Exporter
from kpistream.shell.merge import MergeService

T = 1_700_000_040_000  # a minute boundary
RULES = load_rules_text("sources: [{name: s, topic: t, partitions: 1}]\n"
                        "kpis: [{name: n, source: s, agg: count(), window: 1m, lateness: 0s}]\n")


def record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord("g-panes", 0, offset, 0, 0, None, value, None, 0, len(value), [])


async def test_a_foreign_record_is_skipped_and_a_batch_fetched_again_changes_nothing(caplog):
    steps = []
    merge = MergeService(Settings(checkpoint_interval=0), RULES, lambda: "127.0.0.1:9",
                         Exporter(RULES), sinks=[steps.append])
    merge.owner = True
    merge.engine.expect("s", [0])
    panes = PaneBatch("s", 0, Marker(T + 60_000), {"n": [(T, 3)]})
    with caplog.at_level(logging.WARNING, "kpistream.merge"):
        await merge._step([record(0, b"not a pickle"), record(1, pickle.dumps({"a": 1})),
                           record(2, pickle.dumps(panes))])
        await merge._step([record(2, pickle.dumps(panes))])  # fetched again around a seek
    assert "panes topic offset 0 is not a pane batch" in caplog.text
    assert "panes topic offset 1 is not a pane batch" in caplog.text
    closed = [(w.end_ms, w.values) for step in steps for w in step.windows]
    assert closed == [(T + 60_000, {(): 3.0})]
    assert merge.offset == 3
