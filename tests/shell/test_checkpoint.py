"""Checkpoints on the embedded broker: the newest complete slice comes back, parts and all."""

from __future__ import annotations

import os
import uuid

from aiokafka import TopicPartition

from kpistream.shell import checkpoint
from kpistream.shell.checkpoint import CheckpointStore


async def test_the_newest_complete_checkpoint_of_this_key_comes_back(broker, monkeypatch):
    monkeypatch.setattr(checkpoint, "_PART_BYTES", 1000)  # force several parts
    monkeypatch.setattr(checkpoint, "_FIRST_TAIL", 4)  # force the tail to widen
    topic = f"cp-{uuid.uuid4().hex[:8]}"
    mine = CheckpointStore(broker.bootstrap, topic, "group-a")
    other = CheckpointStore(broker.bootstrap, topic, "group-b")
    await mine.start()
    await other.start()
    try:
        assert await mine.load(["orders/3"]) == {}
        tp = TopicPartition("orders", 3)
        states = [os.urandom(2500 + i) for i in range(3)]
        for i, state in enumerate(states):
            await mine.save({"orders/3": (state, {tp: 100 * i}),
                             "orders/1": (b"one", {TopicPartition("orders", 1): i})})
        for _ in range(10):  # another group's checkpoints in between do not count
            await other.save({"orders/3": (os.urandom(3000), {tp: 7})})
        restored = await mine.load(["orders/3", "orders/1", "orders/0"])
        assert set(restored) == {"orders/3", "orders/1"}  # orders/0 was never saved
        assert restored["orders/3"].state == states[-1]
        assert restored["orders/3"].offsets == {tp: 200}
        assert restored["orders/1"].offsets == {TopicPartition("orders", 1): 2}
    finally:
        await mine.stop()
        await other.stop()


async def test_an_empty_state_round_trips(broker):
    store = CheckpointStore(broker.bootstrap, f"cp-{uuid.uuid4().hex[:8]}", "g")
    await store.start()
    try:
        await store.save({"merge": (b"", {})})
        restored = (await store.load(["merge"]))["merge"]
        assert (restored.state, restored.offsets) == (b"", {})
    finally:
        await store.stop()


async def test_a_checkpoint_cut_short_by_a_crash_is_ignored(broker):
    store = CheckpointStore(broker.bootstrap, f"cp-{uuid.uuid4().hex[:8]}", "g")
    await store.start()
    try:
        await store.save({"merge": (b"good", {TopicPartition("t", 0): 5})})
        # the first of two parts of a newer checkpoint, as a crash mid-save leaves it
        await store._producer.send_and_wait(store.topic, b"half", key=b"g|merge", headers=[
            ("cp-id", b"newer"), ("cp-part", b"0/2")], partition=store._partition(b"g|merge"))
        restored = (await store.load(["merge"]))["merge"]
        assert (restored.state, restored.offsets) == (b"good", {TopicPartition("t", 0): 5})
    finally:
        await store.stop()
