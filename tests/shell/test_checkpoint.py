"""Checkpoints on the embedded broker: the newest complete one comes back, parts and all."""

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
        assert await mine.load() is None
        tp = TopicPartition("orders", 3)
        states = [os.urandom(2500 + i) for i in range(3)]
        for i, state in enumerate(states):
            await mine.save(state, {tp: 100 * i})
        for _ in range(10):  # another group's checkpoints in between do not count
            await other.save(os.urandom(3000), {tp: 7})
        restored = await mine.load()
        assert restored is not None
        assert restored.state == states[-1]
        assert restored.offsets == {tp: 200}
    finally:
        await mine.stop()
        await other.stop()


async def test_an_empty_state_round_trips(broker):
    store = CheckpointStore(broker.bootstrap, f"cp-{uuid.uuid4().hex[:8]}", "g")
    await store.start()
    try:
        await store.save(b"", {})
        restored = await store.load()
        assert (restored.state, restored.offsets) == (b"", {})
    finally:
        await store.stop()


async def test_a_checkpoint_cut_short_by_a_crash_is_ignored(broker):
    store = CheckpointStore(broker.bootstrap, f"cp-{uuid.uuid4().hex[:8]}", "g")
    await store.start()
    try:
        await store.save(b"good", {TopicPartition("t", 0): 5})
        # the first of two parts of a newer checkpoint, as a crash mid-save leaves it
        await store._producer.send_and_wait(store.topic, b"half", key=b"g", headers=[
            ("cp-id", b"newer"), ("cp-part", b"0/2")])
        restored = await store.load()
        assert (restored.state, restored.offsets) == (b"good", {TopicPartition("t", 0): 5})
    finally:
        await store.stop()
