"""A broker outage mid-stream: the daemon rides it out without a restart.

The broker process (an embedded broker of this test's own) is frozen with SIGSTOP for 30 s
while a worker is reading: /readyz must turn false, then true again after SIGCONT, and the
windows' values must still equal the truth, with nothing lost and nothing counted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request

import pytest
from daemon_support import Daemon, poll
from scale_support import BASE_MS, Cluster, events, truth

from kpistream.shell.broker import EmbeddedBroker

OUTAGE_S = 30.0


@pytest.fixture
async def own_broker():
    async with EmbeddedBroker() as running:
        yield running


def ready(worker: Daemon) -> bool | None:
    """/readyz's verdict, or None when the endpoint does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/readyz", timeout=2) as r:
            return json.loads(r.read())["ready"]
    except urllib.error.HTTPError as e:
        return json.loads(e.read())["ready"]
    except OSError:
        return None


async def test_a_frozen_broker_is_ridden_out(own_broker, tmp_path):
    cluster = Cluster(own_broker, tmp_path, workers=1)
    (worker,) = cluster.workers
    try:
        data = events(minutes=6, per_minute=2_000, busy=set(), seed=5)
        first = [e for e in data if e["ts"] < BASE_MS + 3 * 60_000]
        cluster.produce(first)
        await poll(lambda: worker.value("kpistream_events_total") == len(first),
                   deadline_s=60, what="the first half to be read")
        await poll(lambda: ready(worker), deadline_s=30, what="the worker to be ready")
        os.kill(own_broker.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            await poll(lambda: ready(worker) is False, deadline_s=OUTAGE_S,
                       what="/readyz to report the broker gone")
            # the outage itself: the broker stays frozen for OUTAGE_S
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - frozen_at)))
            assert worker.proc.poll() is None, "the worker died during the outage"
        finally:
            os.kill(own_broker.pid, signal.SIGCONT)
        await poll(lambda: ready(worker), deadline_s=60, what="/readyz to recover")
        cluster.produce([e for e in data if e["ts"] >= BASE_MS + 3 * 60_000])
        cluster.close_the_hour()
        assert await cluster.hour_values() == truth(data)
        assert worker.proc.poll() is None  # the same process throughout
    finally:
        output = cluster.workers[0].stop()
    assert "Traceback" not in output, output
