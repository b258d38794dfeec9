"""Scale-out and crashes on the embedded broker: N workers give the numbers of one, and
kill -9 of workers at random moments loses no event and counts none twice.

Workers are real ``kpistream run`` processes in one consumer group over a 6-partition topic.
Events are produced unkeyed, so every series is spread over every partition: each window's
value needs the panes of all six partitions, merged once. The truth is computed here.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from daemon_support import poll
from scale_support import BASE_MS, MIN_MS, Cluster, busy_ends, events, truth


@pytest.fixture
def cluster_factory(broker, tmp_path):
    made: list[Cluster] = []

    def make(workers: int) -> Cluster:
        made.append(Cluster(broker, tmp_path, workers))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()


@pytest.mark.parametrize("workers", [2, 3])  # one worker: test_live_outage.py
async def test_n_workers_give_the_truth(cluster_factory, workers):
    cluster = cluster_factory(workers)
    data = events(minutes=6, per_minute=4_000, busy={2}, seed=workers)
    for minute in range(0, 6, 2):  # in parts, as traffic comes
        cluster.produce([e for e in data if minute <= (e["ts"] - BASE_MS) // MIN_MS < minute + 2])
    cluster.close_the_hour()
    assert await cluster.hour_values() == truth(data)
    assert cluster.exporters() == 1
    await poll(lambda: set(cluster.firings()) == busy_ends(data), deadline_s=30,
               what="busy_minute to fire")
    assert list(cluster.firings().values()) == [1]
    counted = [w.value("kpistream_events_total", status="ok") for w in cluster.workers]
    assert all(counted), counted  # the partitions were shared out: every worker read events


async def test_kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice(
        cluster_factory):
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    print(f"seed {seed}")
    cluster = cluster_factory(2)
    data = events(minutes=40, per_minute=5_000, busy={7, 23, 31}, seed=seed)
    assert len(data) >= 200_000
    chunks = 10
    size = len(data) // chunks + 1
    crashes = 0
    for i in range(chunks):
        cluster.produce(data[i * size:(i + 1) * size])
        if i % 2 == 1 or i == chunks - 1:
            await asyncio.sleep(rnd.uniform(0, 3))  # the crash's random moment
            cluster.kill_and_restart(rnd.randrange(len(cluster.workers)))
            crashes += 1
    assert crashes >= 5
    cluster.close_the_hour()
    assert await cluster.hour_values() == truth(data)
    assert cluster.exporters() == 1  # a worker that stopped merging exports no KPI series
    expected = busy_ends(data)
    await poll(lambda: set(cluster.firings()) == expected, deadline_s=60,
               what="every busy minute to fire")
    firings = cluster.firings()
    assert sum(firings.values()) - len(expected) <= crashes, firings
